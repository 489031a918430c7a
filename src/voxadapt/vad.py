"""Voice-activity segmentation of long recordings (consultations, dictations) for long-form mode.

WebRTC's VAD (`webrtcvad`): a few kB of C, deterministic, fast on CPU, no model file and no
runtime beyond itself, so it works offline and adds nothing heavy. (Silero VAD is more robust
in noise but brings an ONNX or TorchScript runtime; segment boundaries here only have to
fall in pauses, which WebRTC's VAD finds reliably in clinic recordings.)

Segments follow the pauses: a pause of `min_pause_s` or more always ends a segment, so each
cue starts where speech starts; speech longer than `max_segment_s` is split at its quietest
frame; only fragments shorter than `min_segment_s` are joined to a neighbour. Segments never
overlap: where speech is cut without a pause, the padding of the two sides meets at the cut.

A frame counts as speech only if WebRTC says so *and* it is louder than an energy gate
(`GATE_FLOOR_DB` absolute, `GATE_BELOW_PEAK_DB` under the recording's loud frames): a steady
noise floor is not speech, and WebRTC's hangover after speech does not shorten pauses.
Recordings are read in blocks (`speech_segments_of_file`), so memory stays flat in their
length: only one flag and one energy per 30 ms frame are kept.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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


# Frames quieter than this (dBFS) are never speech; nor those this far below the 95th
# percentile of the recording's frame energies (a noise floor under loud speech).
GATE_FLOOR_DB = -55.0
GATE_BELOW_PEAK_DB = 40.0
BLOCK_S = 20.0  # seconds of audio read and resampled at a time


def _detector(aggressiveness: int):
    try:
        import webrtcvad
    except ImportError:
        from voxadapt.errors import VoxadaptError

        raise VoxadaptError(
            "long-form mode needs webrtcvad: pip install webrtcvad-wheels (or use --no-vad)"
        ) from None
    return webrtcvad.Vad(aggressiveness)


def _frame_flags(vad, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(WebRTC speech flag, energy in dBFS) of each whole 30 ms frame of 16 kHz `samples`."""
    import numpy as np

    frame = int(FRAME_S * SAMPLE_RATE)
    n = len(samples) // frame
    frames = samples[: n * frame].reshape(n, frame)
    pcm = (np.clip(frames, -1, 1) * 32767).astype("<i2")
    flags = np.array([vad.is_speech(row.tobytes(), SAMPLE_RATE) for row in pcm], dtype=bool)
    energy_db = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    return flags, energy_db


def _gated(flags: np.ndarray, energy_db: np.ndarray) -> np.ndarray:
    import numpy as np

    if not flags.any():
        return flags
    peak = float(np.percentile(energy_db, 95))
    return flags & (energy_db > max(GATE_FLOOR_DB, peak - GATE_BELOW_PEAK_DB))


def _regions(speech: np.ndarray, min_pause_frames: int) -> list[list[int]]:
    """[start, end) frame runs of speech, merging gaps shorter than a real pause."""
    import numpy as np

    regions: list[list[int]] = []
    for index in np.flatnonzero(speech):
        if regions and index - regions[-1][1] < min_pause_frames:
            regions[-1][1] = index + 1
        else:
            regions.append([int(index), int(index) + 1])
    return regions


def _split_long(region: list[int], energy: np.ndarray, max_frames: int) -> list[list[int]]:
    """Split a region longer than `max_frames` at its quietest frame (middle half first)."""
    import numpy as np

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
    flags, energy_db = _frame_flags(_detector(options.aggressiveness), samples)
    return _segments(flags, energy_db, len(samples) / SAMPLE_RATE, options)


def speech_segments_of_file(
    path: Path,
    *,
    offset: float | None = None,
    duration: float | None = None,
    options: VadOptions | None = None,
) -> list[tuple[float, float]]:
    """`speech_segments` of an audio file (or its span `offset`..`offset + duration`),
    read and resampled block by block: memory does not grow with the recording's length.
    Raises AudioError if the file cannot be read."""
    import numpy as np
    import soxr

    from voxadapt.audio import read_blocks

    options = options or VadOptions()
    vad = _detector(options.aggressiveness)
    frame = int(FRAME_S * SAMPLE_RATE)
    flags, energies, total = [], [], 0
    carry = np.zeros(0, dtype=np.float32)
    stream = None  # a soxr stream, made once the file's rate is known

    def add(resampled: np.ndarray) -> None:
        nonlocal carry, total
        total += len(resampled)
        carry = np.concatenate([carry, resampled])
        whole = len(carry) // frame * frame
        block_flags, block_energy = _frame_flags(vad, carry[:whole])
        flags.append(block_flags)
        energies.append(block_energy)
        carry = carry[whole:]

    for block, rate in read_blocks(path, BLOCK_S, offset=offset, duration=duration):
        mono = block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]
        if rate != SAMPLE_RATE and stream is None:
            stream = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        add(stream.resample_chunk(mono) if stream is not None else mono)
    # the resampler's tail (its filter delay); with no audio at all, empty flags
    tail = np.zeros(0, dtype=np.float32)
    add(stream.resample_chunk(tail, last=True) if stream is not None else tail)
    return _segments(np.concatenate(flags), np.concatenate(energies), total / SAMPLE_RATE, options)


def _segments(
    flags: np.ndarray, energy_db: np.ndarray, total_s: float, options: VadOptions
) -> list[tuple[float, float]]:
    speech = _gated(flags, energy_db)
    if not speech.any():
        return []
    energy = 10 ** (energy_db / 10)
    pad = int(options.padding_s / FRAME_S)
    max_frames = int(options.max_segment_s / FRAME_S) - 2 * pad
    regions = _regions(speech, int(options.min_pause_s / FRAME_S))
    regions = [part for region in regions for part in _split_long(region, energy, max_frames)]
    regions = _join_short(regions, int(options.min_segment_s / FRAME_S), max_frames)
    padded = [
        [
            max(0.0, start * FRAME_S - options.padding_s),
            min(total_s, end * FRAME_S + options.padding_s),
        ]
        for start, end in regions
    ]
    for before, after in itertools.pairwise(padded):
        if after[0] < before[1]:  # padding across a cut or a short pause: meet in between
            before[1] = after[0] = round((before[1] + after[0]) / 2, 6)
    return [(start, end) for start, end in padded]
