"""Kaldi data directory: wav.scp + text (+ optional utt2spk)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from voxadapt.errors import SourceError
from voxadapt.sources.base import Origin, SourceItem, SourceRecord, SourceRejection, resolve_audio
from voxadapt.text import decode_line


def _read_table(path: Path) -> Iterator[tuple[int, str | None, str, bytes]]:
    """Yield (line_number, key, value, raw) for `key value...` lines; key None if undecodable."""
    with path.open("rb") as handle:
        for line_number, data in enumerate(handle, start=1):
            data = data.rstrip(b"\r\n")
            if not data.strip():
                continue
            try:
                line, _ = decode_line(data)
            except UnicodeDecodeError:
                yield line_number, None, "", data
                continue
            key, _, value = line.strip().partition(" ")
            yield line_number, key, value.strip(), data


def read_kaldi(data_dir: Path) -> Iterator[SourceRecord]:
    """Yield one record per utterance id found in wav.scp or text."""
    wav_scp, text_file = data_dir / "wav.scp", data_dir / "text"
    missing = [p.name for p in (wav_scp, text_file) if not p.is_file()]
    if missing:
        raise SourceError(f"{data_dir} is not a Kaldi data dir: missing {', '.join(missing)}")
    if (data_dir / "segments").exists():
        raise SourceError(
            f"{data_dir}/segments found: segmented Kaldi dirs are not supported; "
            "cut the segments into files first (e.g. with lhotse or sox)"
        )
    base_dir = data_dir.absolute()
    speakers: dict[str, str] = {}
    if (data_dir / "utt2spk").is_file():
        for _, key, value, _ in _read_table(data_dir / "utt2spk"):
            if key:
                speakers[key] = value
    transcripts: dict[str, tuple[str, Origin]] = {}
    for line_number, key, value, raw in _read_table(text_file):
        origin = Origin(str(text_file), line_number)
        if key is None:
            yield SourceRejection(
                origin,
                "undecodable_line",
                "line is neither UTF-8 nor CP949",
                raw_text=raw.decode("utf-8", errors="replace"),
            )
        elif key in transcripts:
            yield SourceRejection(
                origin, "duplicate", f"utterance id {key} repeated", value, id=key
            )
        else:
            transcripts[key] = (value, origin)
    seen: set[str] = set()
    for line_number, key, value, raw in _read_table(wav_scp):
        origin = Origin(str(wav_scp), line_number)
        if key is None:
            yield SourceRejection(
                origin,
                "undecodable_line",
                "line is neither UTF-8 nor CP949",
                raw_text=raw.decode("utf-8", errors="replace"),
            )
            continue
        if not value:
            yield SourceRejection(origin, "malformed_line", "expected 'utt-id path'", id=key)
            continue
        if value.endswith("|"):
            yield SourceRejection(
                origin,
                "unsupported_audio_command",
                "piped wav.scp commands are not supported; write the audio to files first",
                id=key,
            )
            continue
        if key in seen:
            yield SourceRejection(origin, "duplicate", f"utterance id {key} repeated", id=key)
            continue
        seen.add(key)
        if key not in transcripts:
            yield SourceRejection(
                origin,
                "missing_transcript",
                f"no line for {key} in {text_file}",
                audio=resolve_audio(value, base_dir),
                id=key,
            )
            continue
        transcript, text_origin = transcripts[key]
        yield SourceItem(
            origin=text_origin,
            audio=resolve_audio(value, base_dir),
            raw_text=transcript,
            id=key,
            speaker=speakers.get(key),
        )
    for key, (transcript, text_origin) in transcripts.items():
        if key not in seen:
            yield SourceRejection(
                text_origin, "missing_audio", f"no wav.scp entry for {key}", transcript, id=key
            )
