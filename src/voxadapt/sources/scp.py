"""`path|transcript` lines, the seed's train.scp format."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from voxadapt.sources.base import (
    Origin,
    SourceItem,
    SourceRecord,
    SourceRejection,
    iter_source_lines,
    resolve_audio,
    undecodable_line,
)
from voxadapt.text import decode_line


def read_scp(path: Path) -> Iterator[SourceRecord]:
    """Yield one record per non-blank line; paths are relative to the SCP file's folder."""
    base_dir = path.parent.absolute()
    for line_number, data in iter_source_lines(path):
        yield _parse_line(data, Origin(str(path), line_number), base_dir)


def _parse_line(data: bytes, origin: Origin, base_dir: Path) -> SourceRecord:
    """One `path|transcript` line (without its line ending) as an item or a rejection."""
    try:
        line, _ = decode_line(data)
    except UnicodeDecodeError:
        return undecodable_line(origin, data)
    audio_text, sep, transcript = line.partition("|")
    if not sep or not audio_text.strip():
        return SourceRejection(
            origin, "malformed_line", "expected 'path|transcript'", raw_text=line
        )
    return SourceItem(origin=origin, audio=resolve_audio(audio_text, base_dir), raw_text=transcript)
