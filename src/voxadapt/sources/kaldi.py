"""Kaldi data directory: wav.scp + text (+ optional utt2spk and segments).

With `segments` (`utt-id recording-id start end`), utterances are time spans of the
recordings wav.scp lists: each keeps its offset and duration, and audio loading, the feature
cache and decoding cut the span out of the recording.

The input item is the utterance id: an id in wav.scp, text or both yields exactly one
record. Lines that cannot name an id, and repeated ids, yield one rejection each.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from voxadapt.errors import SourceError
from voxadapt.sources.base import (
    Origin,
    SourceItem,
    SourceRecord,
    SourceRejection,
    iter_source_lines,
    not_a_regular_file,
    resolve_audio,
    undecodable_line,
)
from voxadapt.text import decode_line


@dataclass
class _Line:
    """One non-blank `key value...` line of a Kaldi table."""

    origin: Origin
    key: str  # the utterance id ("" if the line names none)
    value: str | None  # the rest of the line; None if it cannot be decoded
    raw: bytes

    def undecodable(self) -> SourceRejection:
        return undecodable_line(self.origin, self.raw, self.key or None)


def _decode(data: bytes) -> str | None:
    try:
        return decode_line(data)[0].strip()
    except UnicodeDecodeError:
        return None


def _read_table(path: Path) -> Iterator[_Line]:
    """Yield each non-blank line split into utterance id and value.

    The id is split off the raw bytes (ASCII whitespace never occurs inside a UTF-8 or CP949
    character), so a line whose transcript is undecodable still names its utterance.
    """
    for line_number, data in iter_source_lines(path):
        key_bytes, *rest = data.split(None, 1)  # any run of spaces or tabs
        key = _decode(key_bytes)
        yield _Line(
            Origin(str(path), line_number),
            key or "",
            _decode(rest[0] if rest else b"") if key is not None else None,
            data,
        )


def _index(
    lines: Iterator[_Line], rejections: list[SourceRejection], *, transcripts: bool
) -> dict[str, _Line]:
    """First line per utterance id; lines naming no id and repeated ids go to `rejections`.

    `transcripts`: the values are transcripts (text), kept as the rejections' raw_text.
    """
    entries: dict[str, _Line] = {}
    for line in lines:
        if not line.key:
            if line.value is None:
                rejections.append(line.undecodable())
            else:
                rejections.append(SourceRejection(line.origin, "malformed_line", "no utterance id"))
        elif line.key in entries:
            rejections.append(
                SourceRejection(
                    line.origin,
                    "duplicate",
                    f"utterance id {line.key} repeated",
                    line.value if transcripts else None,
                    id=line.key,
                )
            )
        else:
            entries[line.key] = line
    return entries


def _check_dir(data_dir: Path) -> None:
    """SourceError unless `data_dir` holds readable wav.scp and text (and segments, if any,
    is a regular file)."""
    names = ["wav.scp", "text"] + (["segments"] if (data_dir / "segments").exists() else [])
    problems = [f"{name} ({why})" for name in names if (why := not_a_regular_file(data_dir / name))]
    if problems:
        raise SourceError(f"{data_dir} is not a Kaldi data dir: {', '.join(problems)}")


def _speakers(data_dir: Path) -> dict[str, str]:
    """utt2spk as a dict; bad lines only cost their speaker label."""
    path = data_dir / "utt2spk"
    if not_a_regular_file(path):
        return {}
    return {line.key: line.value for line in _read_table(path) if line.key and line.value}


def read_kaldi(data_dir: Path) -> Iterator[SourceRecord]:
    """Yield one record per utterance id found in wav.scp or text, and per unusable line."""
    _check_dir(data_dir)
    base_dir = data_dir.absolute()
    speakers = _speakers(data_dir)
    rejections: list[SourceRejection] = []
    transcripts = _index(_read_table(data_dir / "text"), rejections, transcripts=True)
    audio = _index(_read_table(data_dir / "wav.scp"), rejections, transcripts=False)
    if (data_dir / "segments").exists():  # utterances are segments of wav.scp's recordings
        segments = _index(_read_table(data_dir / "segments"), rejections, transcripts=False)
        yield from rejections
        yield from _segment_records(segments, audio, transcripts, base_dir, speakers)
        return
    yield from rejections
    for key, wav_line in audio.items():
        yield _utterance(wav_line, transcripts.get(key), base_dir, speakers.get(key))
    for key, text_line in transcripts.items():
        if key not in audio:
            if text_line.value is None:
                yield text_line.undecodable()
            else:
                yield SourceRejection(
                    text_line.origin,
                    "missing_audio",
                    f"no wav.scp entry for {key}",
                    text_line.value,
                    id=key,
                )


def _segment_records(
    segments: dict[str, _Line],
    recordings: dict[str, _Line],
    transcripts: dict[str, _Line],
    base_dir: Path,
    speakers: dict[str, str],
) -> Iterator[SourceRecord]:
    """One record per utterance id of `segments` or `text` (`utt rec start end`, seconds)."""
    for key, line in segments.items():
        fields = (line.value or "").split()
        text_line = transcripts.get(key)
        transcript = text_line.value if text_line else None
        try:
            recording, start, end = fields[0], float(fields[1]), float(fields[2])
            valid = len(fields) == 3 and math.isfinite(start) and math.isfinite(end)
        except (IndexError, ValueError):
            valid = False
        if valid and end == -1:  # Kaldi's "to the end of the recording"
            end = math.inf
        if not valid or not 0 <= start < end:
            yield SourceRejection(
                line.origin,
                "malformed_line",
                "expected 'utt-id recording-id start end' (seconds, start < end, or end -1)",
                transcript,
                id=key,
            )
            continue
        wav_line = recordings.get(recording)
        if wav_line is None:
            yield SourceRejection(
                line.origin,
                "missing_audio",
                f"recording {recording} is not in wav.scp",
                transcript,
                id=key,
            )
            continue
        if text_line is None:
            yield SourceRejection(
                line.origin, "missing_transcript", f"no line for {key} in the text file", id=key
            )
            continue
        record = _utterance(wav_line, text_line, base_dir, speakers.get(key))
        if isinstance(record, SourceItem):
            # duration None: to the end of the recording (known once it is probed)
            duration = None if math.isinf(end) else end - start
            record.id, record.offset, record.segment_duration = key, start, duration
        else:
            record.id = key
        yield record
    for key, text_line in transcripts.items():
        if key not in segments:
            yield SourceRejection(
                text_line.origin,
                "missing_audio",
                f"no segments entry for {key}",
                text_line.value,
                id=key,
            )


def _utterance(
    wav_line: _Line, text_line: _Line | None, base_dir: Path, speaker: str | None
) -> SourceRecord:
    """The one record for an utterance id listed in wav.scp (and maybe in text).

    A problem with the wav.scp line wins over a missing or undecodable transcript.
    """
    key, path_text = wav_line.key, wav_line.value
    transcript = text_line.value if text_line else None
    if path_text is None:
        rejection = wav_line.undecodable()
        rejection.raw_text = transcript
        return rejection
    if not path_text:
        return SourceRejection(
            wav_line.origin, "malformed_line", "expected 'utt-id path'", transcript, id=key
        )
    if path_text.endswith("|"):
        return SourceRejection(
            wav_line.origin,
            "unsupported_audio_command",
            "piped wav.scp commands are not supported; write the audio to files first",
            transcript,
            id=key,
        )
    audio = resolve_audio(path_text, base_dir)
    if text_line is None:
        return SourceRejection(
            wav_line.origin,
            "missing_transcript",
            f"no line for {key} in the text file beside wav.scp",
            audio=audio,
            id=key,
        )
    if transcript is None:
        rejection = text_line.undecodable()
        rejection.audio = audio
        return rejection
    return SourceItem(
        origin=text_line.origin, audio=audio, raw_text=transcript, id=key, speaker=speaker
    )
