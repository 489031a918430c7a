"""JSON-lines manifests with the field names NeMo, lhotse exports, HF datasets and others use."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from voxadapt.sources.base import (
    Origin,
    SourceItem,
    SourceRecord,
    SourceRejection,
    iter_source_lines,
    json_kind,
    non_finite_number,
    parse_json,
    resolve_audio,
    undecodable_line,
)
from voxadapt.text import decode_line

AUDIO_KEYS = ("audio", "audio_path", "audio_filepath", "path", "wav")
TEXT_KEYS = ("text", "transcript", "transcription", "sentence")
DURATION_KEYS = ("duration", "duration_s")
SPEAKER_KEYS = ("speaker", "speaker_id", "spk")
LANGUAGE_KEYS = ("language", "lang")
ID_KEYS = ("id", "utt_id", "utterance_id", "key")
# A nested free-form object (voxadapt's own manifests, lhotse's "custom"): its keys are
# merged into the item's metadata, as manifest.Utterance.from_dict does.
METADATA_KEY = "metadata"
# Fields read as utterance attributes, not copied as metadata.
_ATTRIBUTE_KEYS = {METADATA_KEY, *ID_KEYS, *SPEAKER_KEYS, *LANGUAGE_KEYS, *DURATION_KEYS}
# Fields recomputed by prepare; the source's values are not copied as metadata.
_RECOMPUTED = {"sample_rate", "channels", "raw_text"}


class _MalformedLine(ValueError):
    """A line whose JSON parses but does not describe an utterance; the message says why."""


class _MissingTranscript(ValueError):
    """A line with audio but no transcript field at all."""


def _first(record: dict, keys: tuple[str, ...]) -> tuple[str | None, object]:
    for key in keys:
        if key in record and record[key] is not None:
            return key, record[key]
    return None, None


def read_jsonl(path: Path) -> Iterator[SourceRecord]:
    """Yield one record per non-blank line; relative audio paths start at the file's folder."""
    base_dir = path.parent.absolute()
    for line_number, data in iter_source_lines(path):
        yield _parse_line(data, Origin(str(path), line_number), base_dir)


def _parse_line(data: bytes, origin: Origin, base_dir: Path) -> SourceRecord:
    """One JSON line (without its line ending) as an item or a rejection."""
    try:
        line, _ = decode_line(data)
    except UnicodeDecodeError:
        return undecodable_line(origin, data)
    record, problem = parse_json(line)
    if problem:
        return SourceRejection(origin, "malformed_line", problem, line)
    try:
        return _item(record, origin, base_dir)
    except _MissingTranscript as exc:
        return SourceRejection(origin, "missing_transcript", str(exc), line)
    except _MalformedLine as exc:
        return SourceRejection(origin, "malformed_line", str(exc), line)


def _item(record: Any, origin: Origin, base_dir: Path) -> SourceItem:
    """The SourceItem a parsed line describes; raises _MalformedLine if it describes none."""
    if not isinstance(record, dict):
        raise _MalformedLine("expected a JSON object")
    audio_key, audio = _first(record, AUDIO_KEYS)
    if isinstance(audio, dict):  # HF datasets style {"path": ...}
        audio = audio.get("path")
    if not isinstance(audio, str) or not audio.strip():
        raise _MalformedLine(f"no audio path (one of {', '.join(AUDIO_KEYS)})")
    text_key, text = _first(record, TEXT_KEYS)
    if text_key is None:
        raise _MissingTranscript(f"no transcript (one of {', '.join(TEXT_KEYS)})")
    if text is not None and not isinstance(text, str):
        # str() of a list or number would become training text.
        raise _MalformedLine(f"{text_key} is {json_kind(text)}, not a string")
    used = {audio_key, text_key, "offset"} | _ATTRIBUTE_KEYS | _RECOMPUTED
    offset, segment_duration = _segment(record)
    return SourceItem(
        origin=origin,
        audio=resolve_audio(audio, base_dir),
        raw_text=text or "",
        id=_label(record, ID_KEYS),
        speaker=_label(record, SPEAKER_KEYS),
        language=_label(record, LANGUAGE_KEYS),
        label_duration=None if offset is not None else _duration(record),
        metadata=_metadata(record, used),
        offset=offset,
        segment_duration=segment_duration,
    )


def _segment(record: dict) -> tuple[float | None, float | None]:
    """(offset, duration) of a NeMo/Lhotse-style segment (`offset` + `duration`, seconds)."""
    if record.get("offset") is None:
        return None, None
    offset, duration = record["offset"], _duration(record)
    if isinstance(offset, bool) or not isinstance(offset, int | float) or offset < 0:
        raise _MalformedLine(f"offset must be a number of seconds >= 0, not {offset!r}")
    if duration is None or duration <= 0:
        raise _MalformedLine("a segment (offset) needs its duration in seconds")
    return float(offset), duration


def _label(record: dict, keys: tuple[str, ...]) -> str | None:
    """An id, speaker or language field as text; numbers allowed (speaker_id: 7)."""
    key, value = _first(record, keys)
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # finite: parse_json rejected NaN and Infinity
    raise _MalformedLine(f"{key} is {json_kind(value)}, not a string or number")


def _duration(record: dict) -> float | None:
    """The duration the line claims, in seconds (None if absent); a value that is not a
    finite number makes the line malformed rather than being dropped silently."""
    key, value = _first(record, DURATION_KEYS)
    if value is None:
        return None
    if non_finite_number(value):
        raise _MalformedLine(f"{key} is not a finite number: {str(value)[:40]}")
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise _MalformedLine(f"{key} is {json_kind(value)}, not a number of seconds")
    try:
        return float(value)  # finite: parse_json rejected NaN and Infinity floats
    except ValueError:
        raise _MalformedLine(f"{key} is not a number of seconds: {str(value)[:40]}") from None


def _metadata(record: dict, used: set[str | None]) -> dict[str, Any]:
    """Fields not read as utterance attributes, with a nested metadata object merged in."""
    nested = record.get(METADATA_KEY)
    if nested is not None and not isinstance(nested, dict):
        raise _MalformedLine(f"{METADATA_KEY} is {json_kind(nested)}, not an object")
    metadata = {k: v for k, v in record.items() if k not in used}
    metadata.update({k: v for k, v in (nested or {}).items() if k not in _RECOMPUTED})
    for key, value in metadata.items():
        if non_finite_number(value):
            raise _MalformedLine(f"{key} reads as a non-finite number: {str(value)[:40]}")
    return metadata
