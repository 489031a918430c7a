"""Transcript files in, the same files redacted out: JSONL rows (transcribe, evaluate,
predictions), `id<TAB>text` lines, SRT and WebVTT subtitles, plain text.

Structure is kept: the same rows, lines and cues in the same order, every time and field
unchanged but the transcript text (and timed words, see `Redactor.redact_row`). Subtitle
cues and plain-text lines are searched as one text, so an identifier a cue or line break
cuts in two is still found; its tag goes where it starts and the rest of it is removed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxadapt.errors import VoxadaptError
from voxadapt.redact.engine import Redactor, Span

FORMATS = ("jsonl", "tsv", "text", "srt", "vtt")
SUFFIXES = {"jsonl": ".jsonl", "tsv": ".txt", "text": ".txt", "srt": ".srt", "vtt": ".vtt"}
_TIMING = re.compile(r"\d[\d:.,]*\s*-->\s*\d")
_BLOCK_BREAK = re.compile(r"\n[ \t]*\n")
CONTINUED = "continued:"  # marks the part of a span in the cue or line after its start


class TranscriptFileError(VoxadaptError):
    """An input that cannot be read as a transcript."""


@dataclass
class Document:
    """One input: where it came from, its format and its text."""

    source: str  # the path as given, or "-" for standard input
    name: str  # the output file name
    fmt: str
    content: str


@dataclass
class RedactedDocument:
    content: str
    records: list[dict[str, Any]] = field(default_factory=list)
    # JSONL: each row as read, and the records of its identifiers (for --audio)
    rows: list[tuple[dict[str, Any], list[dict[str, Any]]]] = field(default_factory=list)


def read_document(source: str, data: bytes) -> Document:
    """`data` (the file's bytes) as a Document; TranscriptFileError if it is not UTF-8."""
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise TranscriptFileError(
            f"{source}: not UTF-8 text; cannot read it as a transcript"
        ) from None
    content = content.replace("\r\n", "\n").replace("\r", "\n")
    fmt = detect_format(source, content)
    name = f"stdin{SUFFIXES[fmt]}" if source == "-" else Path(source).name
    return Document(source, name, fmt, content)


def detect_format(source: str, content: str) -> str:
    """The format by suffix (.jsonl/.json, .srt, .vtt), else by content (WEBVTT header,
    cue timings, JSON objects, tab-separated ids), else plain text."""
    suffix = Path(source).suffix.lower() if source != "-" else ""
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    if suffix in (".srt", ".vtt"):
        return suffix[1:]
    lines = [line for line in content.split("\n") if line.strip()]
    if content.lstrip().startswith("WEBVTT"):
        return "vtt"
    if lines and _TIMING.match(lines[min(1, len(lines) - 1)]) and lines[0].strip().isdigit():
        return "srt"
    if lines and suffix != ".txt" and all(line.lstrip().startswith("{") for line in lines):
        return "jsonl"
    if lines and all("\t" in line for line in lines):
        return "tsv"
    return "text"


def redact_document(document: Document, redactor: Redactor) -> RedactedDocument:
    """The document redacted in its own format, with one record per identifier."""
    if document.fmt == "jsonl":
        return _redact_jsonl(document, redactor)
    if document.fmt == "tsv":
        return _redact_tsv(document, redactor)
    if document.fmt in ("srt", "vtt"):
        return _redact_cues(document, redactor)
    lines = document.content.split("\n")
    redacted = redact_parts(redactor, lines)
    records = [
        _record(f"{document.name}:{number}", "text", span)
        for number, (_, spans) in enumerate(redacted, start=1)
        for span in spans
    ]
    return RedactedDocument("\n".join(text for text, _ in redacted), records)


def redact_parts(redactor: Redactor, parts: list[str]) -> list[tuple[str, list[Span]]]:
    """Parts of one text (lines, cues) searched together, joined by line breaks, and
    redacted each on its own: (redacted part, its spans with offsets in the part)."""
    joined = "\n".join(parts)
    spans = redactor.find(joined)
    result, low = [], 0
    for part in parts:
        high = low + len(part)
        own = [
            Span(
                s.type,
                max(s.start, low) - low,
                min(s.end, high) - low,
                s.detector if s.start >= low else CONTINUED + s.detector,
            )
            for s in spans
            if s.start < high and s.end > low
        ]
        text = redactor.apply_spans(joined, low, high, spans)
        if own and part.strip() and not text.strip():  # the rest of an identifier: a cue
            text = redactor.tag_for(own[0].type)  # or line must not become empty
        result.append((text, own))
        low = high + 1
    return result


def _record(ident: Any, field_name: str, span: Span) -> dict[str, Any]:
    record = {
        "id": ident,
        "field": field_name,
        "type": span.type,
        "start": span.start,
        "end": span.end,
        "detector": span.detector,
    }
    if span.detector.startswith(CONTINUED):
        record["detector"] = span.detector.removeprefix(CONTINUED)
        record["continued"] = True  # the rest of the identifier the previous cue/line began
    return record


def _redact_jsonl(document: Document, redactor: Redactor) -> RedactedDocument:
    out = RedactedDocument("")
    lines = []
    for number, line in enumerate(document.content.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            raise TranscriptFileError(
                f"{document.source}:{number}: not valid JSON; a JSONL transcript has one "
                "JSON object a line"
            ) from None
        if not isinstance(row, dict):
            raise TranscriptFileError(f"{document.source}:{number}: expected a JSON object")
        redacted, records = redactor.redact_row(row)
        for record in records:  # a row without an id is named by its line
            if record["id"] is None:
                record["id"] = f"{document.name}:{number}"
        out.rows.append((row, records))
        out.records += records
        lines.append(json.dumps(redacted, ensure_ascii=False))
    out.content = "".join(line + "\n" for line in lines)
    return out


def _redact_tsv(document: Document, redactor: Redactor) -> RedactedDocument:
    out = RedactedDocument("")
    lines = []
    for number, line in enumerate(document.content.split("\n"), start=1):
        ident, tab, text = line.partition("\t")
        if not tab:  # no id: the whole line is text
            ident, text = f"{document.name}:{number}", line
        redacted, spans = redactor.redact_text(text)
        out.records += [_record(ident, "text", span) for span in spans]
        lines.append(f"{line.partition(chr(9))[0]}\t{redacted}" if tab else redacted)
    out.content = "\n".join(lines)
    return out


def _redact_cues(document: Document, redactor: Redactor) -> RedactedDocument:
    """SRT/WebVTT: only cue text changes; numbers, timings, settings and headers stay."""
    content = document.content
    blocks: list[tuple[int, int]] = []  # (start, end) of each cue's text in `content`
    position = 0
    for chunk in _BLOCK_BREAK.split(content):
        start = content.index(chunk, position) if chunk else position
        position = start + len(chunk)
        lines = chunk.split("\n")
        timing = next((i for i, line in enumerate(lines) if "-->" in line), None)
        if timing is None or timing == len(lines) - 1:
            continue  # a header, NOTE or STYLE block, or a cue without text
        text_start = start + sum(len(line) + 1 for line in lines[: timing + 1])
        blocks.append((text_start, start + len(chunk)))
    redacted = redact_parts(redactor, [content[a:b] for a, b in blocks])
    pieces, position, records = [], 0, []
    for number, ((a, b), (text, spans)) in enumerate(zip(blocks, redacted), start=1):
        pieces += [content[position:a], text]
        position = b
        records += [_record(f"{document.name}#{number}", "text", span) for span in spans]
    pieces.append(content[position:])
    return RedactedDocument("".join(pieces), records)
