"""Types and helpers shared by the source parsers: what a parser yields for each input item.

Every parser follows one contract: each input item (a line, a label file, an utterance id)
yields exactly one record, a SourceItem or a SourceRejection with a machine-readable reason.
A bad item never raises; only a SOURCE that cannot be read at all raises SourceError.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxadapt.errors import SourceError
from voxadapt.manifest import iter_lines

# Deeper JSON is not a transcript record; the cap keeps every later walk or json.dumps of
# the value far below Python's recursion limit (1000).
MAX_JSON_DEPTH = 32


@dataclass
class Origin:
    """Where an input item came from, for rejected.jsonl and error messages."""

    file: str
    line: int | None = None  # 1-based line number for line-oriented sources

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else self.file


@dataclass
class SourceItem:
    """One input utterance as the source describes it, before any check."""

    origin: Origin
    audio: Path  # absolute path (may not exist: checked later)
    raw_text: str
    id: str | None = None  # None: derived from the audio file name
    speaker: str | None = None
    language: str | None = None
    label_duration: float | None = None  # seconds, as the label claims (verified later)
    metadata: dict[str, Any] = field(default_factory=dict)
    # A segment of a longer recording (Kaldi segments, NeMo/JSONL offset): where it starts in
    # `audio` and how long it is, in seconds. None: the utterance is the whole file.
    offset: float | None = None
    segment_duration: float | None = None


@dataclass
class SourceRejection:
    """An input item the parser could not turn into a SourceItem."""

    origin: Origin
    reason: str
    detail: str
    raw_text: str | None = None
    audio: Path | None = None
    id: str | None = None


SourceRecord = SourceItem | SourceRejection


def undecodable_line(origin: Origin, data: bytes, id: str | None = None) -> SourceRejection:
    """The rejection of a line that is neither UTF-8 nor CP949 (its bytes shown replaced)."""
    return SourceRejection(
        origin,
        "undecodable_line",
        "line is neither UTF-8 nor CP949",
        raw_text=data.decode("utf-8", errors="replace"),
        id=id,
    )


def resolve_audio(path_text: str, base_dir: Path) -> Path:
    """Absolute path of an audio reference, relative ones taken from `base_dir`."""
    path = Path(path_text.strip())
    # "~nosuchuser/a.wav" raises RuntimeError: keep it literal, the audio check reports it.
    with contextlib.suppress(RuntimeError):
        path = path.expanduser()
    if not path.is_absolute():
        path = base_dir / path
    return Path(path).absolute()


def not_a_regular_file(path: Path) -> str | None:
    """Why `path` cannot be read as a file (FIFO, device, folder, broken link), or None.

    Checked with stat before opening: opening a FIFO blocks until a writer appears.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "broken symbolic link" if os.path.islink(path) else "file not found"
    except OSError as exc:
        return f"cannot stat: {exc.strerror}"
    if not stat.S_ISREG(mode):
        return "not a regular file (folder, FIFO, socket or device)"
    return None


def iter_source_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Yield (1-based line number, bytes without the line ending) for each non-blank line
    (`manifest.iter_lines`: split at `\n` only, a BOM removed at any line start).

    Raises SourceError if `path` is not a regular file or cannot be read.
    """
    problem = not_a_regular_file(path)
    if problem:
        raise SourceError(f"cannot read SOURCE {path}: {problem}")
    try:
        yield from iter_lines(path)
    except OSError as exc:
        raise SourceError(f"cannot read SOURCE {path}: {exc.strerror or exc}") from None


def parse_json(text: str) -> tuple[Any, str | None]:
    """Parse one JSON document; returns (value, None) or (None, why it is malformed).

    Besides syntax errors this catches what json.loads raises on hostile input: integers
    over 4300 digits (ValueError) and deep nesting (RecursionError).
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc.msg}"
    except ValueError as exc:
        return None, f"invalid JSON: {exc}"
    except RecursionError:
        return None, f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
    problem = json_value_problem(value)
    return (None, problem) if problem else (value, None)


def json_value_problem(value: Any) -> str | None:
    """Why a parsed JSON value cannot be copied into a manifest, or None if it can.

    - nesting deeper than MAX_JSON_DEPTH;
    - a non-finite number: json.loads turns NaN, Infinity and 1e999 into floats that
      json.dumps would write back as invalid JSON;
    - a lone surrogate ("\\ud800" escapes): it cannot be written as UTF-8.

    Walks the value iteratively, so no input can hit the recursion limit.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
        if isinstance(node, dict):
            for key, child in node.items():
                if has_lone_surrogate(key):
                    return "JSON key holds a lone surrogate (invalid Unicode)"
                stack.append((child, depth + 1))
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)
        elif isinstance(node, float) and not math.isfinite(node):
            return f"non-finite number {node} in JSON"
        elif isinstance(node, str) and has_lone_surrogate(node):
            return "JSON string holds a lone surrogate (invalid Unicode)"
    return None


def json_kind(value: Any) -> str:
    """A parsed JSON value's type in JSON's words, with its article, for messages."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    names = {dict: "an object", list: "a list", str: "a string", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def has_lone_surrogate(text: str) -> bool:
    """True if `text` cannot be encoded as UTF-8 (a lone surrogate code point)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def non_finite_number(value: Any) -> bool:
    """True for a value that reads as a number but not as a finite float.

    That is a string such as "1e999", "NaN" or "inf", or an integer too large for a float
    (10**400). Downstream breakdowns read numeric metadata such as ``age`` with float() and
    int(): such a value would raise there or sort as NaN.
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        return False
    try:
        return not math.isfinite(float(value))
    except OverflowError:  # float(10**400)
        return True
    except ValueError:  # not a number at all: ordinary text
        return False


def display_path(path: Path | str) -> str:
    """`path` as text that can be written as UTF-8 (undecodable name bytes shown as U+FFFD)."""
    return os.fsencode(path).decode("utf-8", errors="replace")
