"""Voice-activity segmentation of long recordings (consultations, dictations) for long-form mode.

WebRTC's VAD (`webrtcvad`): a few kB of C, deterministic, fast on CPU, no model file and no
runtime beyond itself, so it works offline and adds nothing heavy. (Silero VAD is more robust
in noise but brings an ONNX or TorchScript runtime; segment boundaries here only have to
fall in pauses, which WebRTC's VAD finds reliably in clinic recordings.)

Segments follow the pauses: a pause of `min_pause_s` or more always ends a segment, so each
cue starts where speech starts; speech longer than `max_segment_s` is split at its quietest
frame; only fragments shorter than `min_segment_s` are joined to a neighbour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000
FRAME_S = 0.03  # webrtcvad takes 10, 20 or 30 ms frames


@dataclass(frozen=True)
class VadOptions:
    """How a long recording is cut into segments (seconds)."""

    max_segment_s: float = 30.0  # one Voxtral chunk
    min_pause_s: float = 1.0  # a pause this long always ends a segment
    min_segment_s: float = 1.5  # shorter fragments are joined to a neighbour
    padding_s: float = 0.1  # audio kept around each segment's speech
    aggressiveness: int = 2  # webrtcvad 0 (least) .. 3 (most aggressive)


def _speech_frames(samples: np.ndarray, aggressiveness: int) -> np.ndarray:
    try:
        import webrtcvad
    except ImportError:
        from voxadapt.errors import VoxadaptError

        raise VoxadaptError(
            "long-form mode needs webrtcvad: pip install webrtcvad-wheels (or use --no-vad)"
        ) from None
    vad = webrtcvad.Vad(aggressiveness)
    frame = int(FRAME_S * SAMPLE_RATE)
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    n = len(pcm) // frame
    return np.array(
        [vad.is_speech(pcm[i * frame : (i + 1) * frame].tobytes(), SAMPLE_RATE) for i in range(n)],
        dtype=bool,
    )


def _regions(speech: np.ndarray, min_pause_frames: int) -> list[list[int]]:
    """[start, end) frame runs of speech, merging gaps shorter than a real pause."""
    regions: list[list[int]] = []
    for index in np.flatnonzero(speech):
        if regions and index - regions[-1][1] < min_pause_frames:
            regions[-1][1] = index + 1
        else:
            regions.append([int(index), int(index) + 1])
    return regions


def _split_long(region: list[int], energy: np.ndarray, max_frames: int) -> list[list[int]]:
    """Split a region longer than `max_frames` at its quietest frame (middle half first)."""
    start, end = region
    if end - start <= max_frames:
        return [region]
    low, high = start + (end - start) // 4, end - (end - start) // 4
    cut = low + int(np.argmin(energy[low:high]))
    cut = min(max(cut, end - max_frames), start + max_frames)  # both parts must be able to fit
    return _split_long([start, cut], energy, max_frames) + _split_long(
        [cut, end], energy, max_frames
    )


def _join_short(regions: list[list[int]], min_frames: int, max_frames: int) -> list[list[int]]:
    """Join fragments shorter than `min_frames` to the nearer neighbour when it fits."""
    joined = [list(r) for r in regions]
    index = 0
    while index < len(joined):
        start, end = joined[index]
        if end - start >= min_frames or len(joined) == 1:
            index += 1
            continue
        before = joined[index - 1] if index > 0 else None
        after = joined[index + 1] if index + 1 < len(joined) else None
        gap_before = start - before[1] if before else None
        gap_after = after[0] - end if after else None
        if (
            before
            and (gap_after is None or gap_before <= gap_after)
            and end - before[0] <= max_frames
        ):
            before[1] = end
            del joined[index]
        elif after and after[1] - start <= max_frames:
            after[0] = start
            del joined[index]
        else:
            index += 1
    return joined


def speech_segments(
    samples: np.ndarray, options: VadOptions | None = None
) -> list[tuple[float, float]]:
    """(start, end) seconds of the speech segments of 16 kHz mono `samples`, in order."""
    options = options or VadOptions()
    frame = int(FRAME_S * SAMPLE_RATE)
    speech = _speech_frames(samples, options.aggressiveness)
    if not speech.any():
        return []
    energy = np.array(
        [float(np.mean(samples[i * frame : (i + 1) * frame] ** 2)) for i in range(len(speech))]
    )
    pad = int(options.padding_s / FRAME_S)
    max_frames = int(options.max_segment_s / FRAME_S) - 2 * pad
    regions = _regions(speech, int(options.min_pause_s / FRAME_S))
    regions = [part for region in regions for part in _split_long(region, energy, max_frames)]
    regions = _join_short(regions, int(options.min_segment_s / FRAME_S), max_frames)
    total = len(samples) / SAMPLE_RATE
    return [
        (
            max(0.0, start * FRAME_S - options.padding_s),
            min(total, end * FRAME_S + options.padding_s),
        )
        for start, end in regions
    ]
