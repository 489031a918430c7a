"""The utterance record and streaming, atomic JSONL reading and writing."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Any

from voxadapt.errors import ConfigError, ManifestError
from voxadapt.staging import staging_path


@dataclass
class Utterance:
    """One utterance of a manifest: a line of `train.jsonl`.

    Source metadata (role, gender, age, region, ...) is written as top-level keys beside
    the fixed fields, so `jq .role` works; on reading, unknown keys land in `metadata`.
    """

    id: str
    audio: str  # absolute path to the audio file
    text: str  # normalized training transcript
    raw_text: str  # transcript exactly as the source gave it
    duration: float  # seconds, measured from the audio file
    sample_rate: int  # Hz, of the file on disk (features resample to 16 kHz)
    channels: int
    speaker: str | None = None
    language: str = "ko"
    label_duration: float | None = None  # seconds, as the source's label claimed
    # Dual transcriptions `(A)/(B)`: the text as pieces, fixed text or [spelling,
    # pronunciation] per span, so scoring can rebuild every reference (scoring/references.py).
    text_variants: list[Any] | None = None
    offset: float | None = None  # seconds into `audio` where a segment starts (None: whole file)
    # Everything else the source provided (role, gender, age, region...): the fields that
    # evaluation breaks results down by.
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def segment(self) -> tuple[float, float] | None:
        """(offset, duration) in seconds when the utterance is a segment of a longer file."""
        return None if self.offset is None else (self.offset, self.duration)

    def to_dict(self) -> dict[str, Any]:
        """Flat dict for JSONL: fixed fields first, then metadata keys that do not clash."""
        record = asdict(self)
        metadata = record.pop("metadata")
        for key, value in metadata.items():
            record.setdefault(key, value)
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Utterance:
        """Inverse of `to_dict`; raises KeyError/TypeError/ValueError on bad records."""
        names = {f.name for f in fields(cls)} - {"metadata"}
        required = [
            f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
        ]
        missing = [name for name in required if name not in record]
        if missing:
            raise KeyError(f"missing field{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
        known = {k: v for k, v in record.items() if k in names}
        metadata = {k: v for k, v in record.items() if k not in names and k != "metadata"}
        nested = record.get("metadata") or {}
        if not isinstance(nested, dict):
            raise TypeError("metadata must be an object")
        metadata.update(nested)
        utterance = cls(**known, metadata=metadata)
        for name in ("id", "audio", "text"):
            if not isinstance(getattr(utterance, name), str):
                raise TypeError(f"{name} must be a string")
        utterance.duration = float(utterance.duration)
        if not math.isfinite(utterance.duration) or utterance.duration < 0:
            raise ValueError(
                f"duration must be a finite number of seconds, not {utterance.duration}"
            )
        utterance.sample_rate = int(utterance.sample_rate)
        utterance.channels = int(utterance.channels)
        return utterance


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temp file beside `path` and rename it over `path` only if the block succeeds.

    A crash or kill never leaves a half-written file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a staging name (`voxadapt.staging`): what a killed run leaves is swept by the next
    # claim of the folder; its length fits however long `path.name` is. Created with the
    # mode any other tool's file would get (0o666 less the umask), never 0600 by accident.
    tmp_name = str(staging_path(path.parent, path.name, unique=True))
    fd = os.open(
        tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666
    )
    encoding = None if "b" in mode else "utf-8"
    try:
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def language_problem(code: str | None) -> str | None:
    """Why `code` is not a language Voxtral's transcription request accepts (mistral-common
    validates ISO 639-1 codes with pydantic-extra-types), or None if it is fine."""
    if code is None:
        return None
    from pydantic import TypeAdapter, ValidationError
    from pydantic_extra_types.language_code import LanguageAlpha2

    try:
        TypeAdapter(LanguageAlpha2).validate_python(code)
    except ValidationError:
        return f"language {code!r} is not an ISO 639-1 code (ko, en, ...)"
    return None


def current_umask() -> int:
    """The process umask, read from /proc (setting and restoring it, the only portable way,
    would race with threads creating files in between)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: Path) -> None:
    """Give a file (or every file under a folder) written by a library the mode any tool's
    output would have: safetensors, for one, creates 0600 files a serving account can't read."""
    mode = 0o666 & ~current_umask()
    path = Path(path)
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        if item.is_file() and not item.is_symlink():
            item.chmod(mode)


def _probe_writable(folder: Path, what: str) -> None:
    try:
        fd, probe = tempfile.mkstemp(prefix=".voxadapt-write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"{what}: cannot write to {folder} ({exc.strerror})") from None


def check_output_dir(path: Path, what: str = "--out") -> Path:
    """Create output folder `path` if needed and check it can be written, before any work.

    One-line ConfigError for a path that is a file, lies under a file, or is not writable.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"{what} {path}: a parent of it is a file, not a folder") from None
    except NotADirectoryError:
        raise ConfigError(f"{what} {path}: a parent of it is a file, not a folder") from None
    except OSError as exc:
        raise ConfigError(f"{what}: cannot create {path} ({exc.strerror})") from None
    _probe_writable(path, what)
    return path


def check_output_file(path: Path, what: str = "--out") -> Path:
    """Check that file `path` can be written (its folder is created), before any work."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder; give a file name")
    if path.name in ("", ".", ".."):
        raise ConfigError(f"{what} {path} is not a file name")
    check_output_dir(path.parent, what)
    return path


def write_jsonl(path: Path, records: Iterable[dict[str, Any] | Utterance]) -> int:
    """Atomically write records as UTF-8 JSON lines; returns the number written."""
    count = 0
    with atomic_write(path) as handle:
        for record in records:
            if isinstance(record, Utterance):
                record = record.to_dict()
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


BOM = b"\xef\xbb\xbf"


def iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, bytes) of every non-blank line of a text file: the one way this
    tool splits files into lines.

    Lines end at `\n` (a `\r` before it is dropped) and nowhere else: U+2028, U+0085 and
    the other separators `str.splitlines()` also splits on may occur raw inside JSON
    strings. A UTF-8 byte-order mark is removed wherever a line starts with one, so
    concatenated files read like one. OSError propagates to the caller.
    """
    with Path(path).open("rb") as handle:
        for line_number, data in enumerate(handle, start=1):
            data = data.rstrip(b"\n").removesuffix(b"\r").removeprefix(BOM)
            if data.strip():
                yield line_number, data


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line_number, record) from a JSONL file, skipping blank lines; any other line
    that is not a UTF-8 JSON object is a ManifestError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    try:
        for line_number, data in iter_lines(path):
            yield line_number, parse_json_object(data, f"{path}:{line_number}")
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror or exc}") from None


def parse_json_object(data: bytes, where: str) -> dict[str, Any]:
    """One JSONL line as a dict; ManifestError naming `where` otherwise."""
    try:
        line = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestError(f"{where}: not UTF-8 text") from None
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deep"
        raise ManifestError(f"{where}: not valid JSON ({reason})") from None
    if not isinstance(record, dict):
        raise ManifestError(f"{where}: expected a JSON object")
    return record


def read_manifest(path: Path) -> list[Utterance]:
    """Read a manifest written by `voxadapt prepare` (or compatible) into Utterance records."""
    utterances = []
    for line_number, record in iter_jsonl(path):
        try:
            utterances.append(Utterance.from_dict(record))
        except (KeyError, TypeError, ValueError) as exc:
            detail = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            raise ManifestError(
                f"{path}:{line_number}: not an utterance record ({detail}); a manifest "
                f"comes from `voxadapt prepare` (e.g. voxadapt prepare jsonl {path} --out DIR)"
            ) from None
    return utterances
