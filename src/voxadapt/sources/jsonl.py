"""JSON-lines manifests with the field names NeMo, lhotse exports, HF datasets and others use."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from voxadapt.sources.base import Origin, SourceItem, SourceRecord, SourceRejection, resolve_audio
from voxadapt.text import decode_line

AUDIO_KEYS = ("audio", "audio_path", "audio_filepath", "path", "wav")
TEXT_KEYS = ("text", "transcript", "transcription", "sentence")
DURATION_KEYS = ("duration", "duration_s")
SPEAKER_KEYS = ("speaker", "speaker_id", "spk")
LANGUAGE_KEYS = ("language", "lang")
ID_KEYS = ("id", "utt_id", "utterance_id", "key")
# Fields recomputed by prepare; the source's values are not copied as metadata.
_RECOMPUTED = {"sample_rate", "channels", "raw_text"}


def _first(record: dict, keys: tuple[str, ...]) -> tuple[str | None, object]:
    for key in keys:
        if key in record and record[key] is not None:
            return key, record[key]
    return None, None


def read_jsonl(path: Path) -> Iterator[SourceRecord]:
    """Yield one record per non-blank line; relative audio paths start at the file's folder."""
    base_dir = path.parent.absolute()
    with path.open("rb") as handle:
        for line_number, data in enumerate(handle, start=1):
            origin = Origin(str(path), line_number)
            if not data.strip():
                continue
            try:
                line, _ = decode_line(data.rstrip(b"\r\n"))
                record = json.loads(line)
            except UnicodeDecodeError:
                yield SourceRejection(
                    origin,
                    "undecodable_line",
                    "line is neither UTF-8 nor CP949",
                    raw_text=data.decode("utf-8", errors="replace"),
                )
                continue
            except json.JSONDecodeError as exc:
                yield SourceRejection(origin, "malformed_line", f"invalid JSON: {exc.msg}", line)
                continue
            if not isinstance(record, dict):
                yield SourceRejection(origin, "malformed_line", "expected a JSON object", line)
                continue
            audio_key, audio = _first(record, AUDIO_KEYS)
            if isinstance(audio, dict):  # HF datasets style {"path": ...}
                audio = audio.get("path")
            if not isinstance(audio, str) or not audio.strip():
                yield SourceRejection(
                    origin,
                    "malformed_line",
                    f"no audio path (one of {', '.join(AUDIO_KEYS)})",
                    line,
                )
                continue
            text_key, text = _first(record, TEXT_KEYS)
            _, utt_id = _first(record, ID_KEYS)
            _, speaker = _first(record, SPEAKER_KEYS)
            _, language = _first(record, LANGUAGE_KEYS)
            _, duration = _first(record, DURATION_KEYS)
            used = {audio_key, text_key, *ID_KEYS, *SPEAKER_KEYS, *LANGUAGE_KEYS, *DURATION_KEYS}
            metadata = {k: v for k, v in record.items() if k not in used | _RECOMPUTED}
            try:
                label_duration = float(duration) if duration is not None else None
            except (TypeError, ValueError):
                label_duration = None
            yield SourceItem(
                origin=origin,
                audio=resolve_audio(audio, base_dir),
                raw_text="" if text is None else str(text),
                id=None if utt_id is None else str(utt_id),
                speaker=None if speaker is None else str(speaker),
                language=None if language is None else str(language),
                label_duration=label_duration,
                metadata=metadata,
            )
