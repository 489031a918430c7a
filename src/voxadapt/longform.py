"""Long recordings: cut into speech segments before decoding (`split_long_form`), joined
back after (`stitch`), and progress counted in seconds of the recordings (`AudioProgress`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from voxadapt.audio import AudioError
from voxadapt.decoding import AudioItem, DecodeOptions, Transcript
from voxadapt.progress import progress
from voxadapt.vad import VadOptions

log = logging.getLogger(__name__)


class AudioProgress:
    """Progress in seconds of audio (`voxadapt.progress`: a bar on a terminal, periodic log
    lines otherwise) that also counts generation steps, so a batch of long clips shows
    movement while it decodes. `leave=False` for a bar nested in another (training's
    evaluation); `enabled=False` says nothing (ranks other than 0).

    items: the recordings; segments: `split_long_form`'s segments of the long ones, which
    are then what `done` is given. The total is the recordings' durations, not their speech:
    a recording's non-speech counts as done when its last segment is (a recording without
    speech, at once), so a 52 s file with 36.5 s of speech ends on `52.0/52.0 s audio`.
    """

    def __init__(
        self,
        items: Sequence[AudioItem],
        desc: str,
        *,
        segments: dict[int, list[tuple[AudioItem, float, float]]] | None = None,
        leave: bool = True,
        enabled: bool = True,
    ) -> None:
        total = sum(item.duration for item in items)
        self.bar = progress(total, desc, "s audio", decimals=1, leave=leave, enabled=enabled)
        self.tokens = 0
        # a segment -> its recording's id; per recording: segments left, seconds not in one
        self._recording_of: dict[int, int] = {}
        self._left: dict[int, int] = {}
        self._rest_s: dict[int, float] = {}
        # segments cut from the decoded audio may outlast the header's duration: scaled down
        self._scale: dict[int, float] = {}
        without_speech = 0.0
        for item in items:
            parts = (segments or {}).get(id(item))
            if parts is None:
                continue
            speech_s = sum(part.duration for part, _, _ in parts)
            if not parts:
                without_speech += item.duration
                continue
            self._left[id(item)] = len(parts)
            self._rest_s[id(item)] = max(0.0, item.duration - speech_s)
            self._scale[id(item)] = min(1.0, item.duration / speech_s) if speech_s else 1.0
            self._recording_of.update((id(part), id(item)) for part, _, _ in parts)
        if without_speech:
            self.bar.update(without_speech)

    def token(self) -> None:
        self.tokens += 1  # generation steps: one token for every clip of the batch
        self.bar.note(f"{self.tokens} tokens")
        self.bar.update(0)

    def done(self, items: Sequence[AudioItem]) -> None:
        """`items` (recordings, or segments of long ones) are decoded."""
        seconds = 0.0
        for item in items:
            recording = self._recording_of.pop(id(item), None)
            if recording is None:
                seconds += item.duration
                continue
            seconds += item.duration * self._scale[recording]
            self._left[recording] -= 1
            if not self._left[recording]:  # its last segment: the silence is done too
                seconds += self._rest_s.pop(recording)
        self.bar.update(seconds)

    def __enter__(self) -> AudioProgress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.bar.close(stopped=exc_type is not None)


def split_long_form(
    items: Sequence[AudioItem], options: DecodeOptions, *, vad: VadOptions | None = None
) -> tuple[list[AudioItem], dict[int, list[tuple[AudioItem, float, float]]]]:
    """The items to decode: short ones as they are; ones longer than
    `options.long_form_threshold_s` (with `options.vad`) as their speech segments, cut as
    `vad` says (default: `VadOptions()`). Also, per long item, its (segment item, start,
    end) in order."""
    from voxadapt.vad import speech_segments_of_file

    decoded: list[AudioItem] = []
    segments: dict[int, list[tuple[AudioItem, float, float]]] = {}
    for item in items:
        if not (options.vad and item.duration > options.long_form_threshold_s):
            decoded.append(item)
            continue
        try:
            duration = item.duration if item.offset is not None else None
            spans = speech_segments_of_file(
                Path(item.audio), offset=item.offset, duration=duration, options=vad
            )
        except AudioError:  # reported when the engine reads it
            decoded.append(item)
            continue
        parts = segments[id(item)] = []
        for index, (start, end) in enumerate(spans):
            part = AudioItem(
                f"{item.id}#{index}",
                item.audio,
                end - start,
                language=item.language,
                offset=(item.offset or 0.0) + start,
            )
            parts.append((part, start, end))
            decoded.append(part)
        log.info("%s: %.0f s in %d speech segments", item.id, item.duration, len(parts))
    return decoded, segments


def stitch(
    parts: list[tuple[AudioItem, float, float]],
    results: dict[int, Transcript | AudioError],
) -> tuple[Transcript | AudioError, list[dict[str, Any]] | None]:
    """A long recording's transcript from its segments', in order, and the segments with
    their times (or the first segment's error)."""
    errors = (results[id(p)] for p, _, _ in parts if isinstance(results[id(p)], AudioError))
    failed = next(errors, None)
    if failed is not None:
        return failed, None
    done = [(results[id(p)], start, end) for p, start, end in parts]
    transcript = Transcript(
        " ".join(t.text for t, _, _ in done if t.text),
        None,
        sum(t.n_tokens for t, _, _ in done),
        any(t.truncated for t, _, _ in done),
        next((t.repetition_loop for t, _, _ in done if t.repetition_loop), None),
        token_ids=[i for t, _, _ in done for i in t.token_ids],
        token_logprobs=[p for t, _, _ in done for p in t.token_logprobs],
        prompt_tokens=sum(t.prompt_tokens for t, _, _ in done),
        audio_tokens=sum(t.audio_tokens for t, _, _ in done),
    )
    segments = [
        {"start": round(start, 3), "end": round(end, 3), "text": t.text} for t, start, end in done
    ]
    return transcript, segments
