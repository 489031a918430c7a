"""Types shared by the source parsers: what a parser yields for each input item."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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


def resolve_audio(path_text: str, base_dir: Path) -> Path:
    """Absolute path of an audio reference, relative ones taken from `base_dir`."""
    path = Path(path_text.strip()).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    return Path(path).absolute()
