"""`path|transcript` lines, the seed's train.scp format."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from voxadapt.sources.base import Origin, SourceItem, SourceRecord, SourceRejection, resolve_audio
from voxadapt.text import decode_line


def read_scp(path: Path) -> Iterator[SourceRecord]:
    """Yield one record per non-blank line; paths are relative to the SCP file's folder."""
    base_dir = path.parent.absolute()
    with path.open("rb") as handle:
        for line_number, data in enumerate(handle, start=1):
            origin = Origin(str(path), line_number)
            data = data.rstrip(b"\r\n")
            if not data.strip():
                continue
            try:
                line, _ = decode_line(data)
            except UnicodeDecodeError:
                yield SourceRejection(
                    origin,
                    "undecodable_line",
                    "line is neither UTF-8 nor CP949",
                    raw_text=data.decode("utf-8", errors="replace"),
                )
                continue
            audio_text, sep, transcript = line.partition("|")
            if not sep or not audio_text.strip():
                yield SourceRejection(
                    origin, "malformed_line", "expected 'path|transcript'", raw_text=line
                )
                continue
            yield SourceItem(
                origin=origin, audio=resolve_audio(audio_text, base_dir), raw_text=transcript
            )
