"""Hugging Face datasets on disk: parquet files, `save_to_disk` folders and `audiofolder` layouts.

Audio is read as stored, never decoded through datasets' Audio feature (that needs torchcodec):
a row holds either a path, which is referenced where it lies, or the file's bytes, which are
written once to `audio_dir` as FLAC named by their content hash. Parquet and `save_to_disk`
folders are read batch by batch, so a dataset larger than memory streams through.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxadapt.errors import SourceError
from voxadapt.sources.audio_store import AudioStore, UnstorableAudio
from voxadapt.sources.base import (
    Origin,
    SourceItem,
    SourceRecord,
    SourceRejection,
    display_path,
    iter_source_lines,
    non_finite_number,
    parse_json,
    resolve_audio,
)
from voxadapt.text import decode_line

log = logging.getLogger(__name__)

# Column names tried in order when the caller names none (HF hub conventions: Common Voice,
# FLEURS, LibriSpeech, KsponSpeech conversions, NeMo-style exports).
AUDIO_COLUMNS = ("audio", "speech", "file", "path", "audio_filepath")
TEXT_COLUMNS = ("text", "sentence", "transcript", "transcription", "normalized_text", "label_text")
SPEAKER_COLUMNS = ("speaker_id", "speaker", "client_id", "spk_id")
ID_COLUMNS = ("id", "utt_id", "audio_id", "key")
LANGUAGE_COLUMNS = ("language", "lang", "locale")
DURATION_COLUMNS = ("duration", "duration_s")
# audiofolder's metadata files name the audio file, relative to the metadata file, here.
AUDIOFOLDER_AUDIO_COLUMN = "file_name"
AUDIOFOLDER_METADATA = ("metadata.csv", "metadata.jsonl")
# Recomputed by prepare from the audio itself; the dataset's values are not metadata.
RECOMPUTED_COLUMNS = {"sample_rate", "sampling_rate", "channels", "raw_text"}
INSTALL_HINT = 'pip install "voxadapt[hf]"'
# Rows per Arrow batch: HF writes audio parquet in row groups of ~100 clips, so 64 clips of
# up to 30 s (~1 MB each as 16 kHz WAV) keep memory bounded.
BATCH_ROWS = 64
# "train-00000-of-00002.parquet", as the hub and `push_to_hub` name shards.
SHARD_NAME = re.compile(r"^(?P<split>[A-Za-z0-9_.]+?)-\d{5}-of-\d{5}\.parquet$")


def read_hf(
    source: Path,
    *,
    audio_dir: Path,
    audio_column: str | None = None,
    text_column: str | None = None,
    speaker_column: str | None = None,
) -> Iterator[SourceRecord]:
    """Yield one record per row of a Hugging Face dataset on disk.

    source: a parquet file, a folder of parquet files (searched recursively), a
        `Dataset.save_to_disk` or `DatasetDict.save_to_disk` folder (every split), or an
        `audiofolder` layout (audio files beside `metadata.csv` / `metadata.jsonl`).
    audio_dir: where audio stored as bytes is written, as `<sha256[:2]>/<sha256>.flac`
        (the hash of the stored bytes: a re-run, or a clip repeated in the dataset, writes
        nothing new).
    audio_column, text_column, speaker_column: column names; None picks the first present
        of AUDIO_COLUMNS, TEXT_COLUMNS, SPEAKER_COLUMNS.

    Raises SourceError if `datasets`/`pyarrow` are missing, SOURCE is not one of the layouts
    above or cannot be read, or a named column is absent.
    """
    _require_libraries()
    source = Path(source)
    if not source.exists():
        raise SourceError(f"cannot read SOURCE {display_path(source)}: no such file or folder")
    requested = _Requested(audio_column, text_column, speaker_column)
    store = AudioStore(Path(audio_dir))
    for table in _tables(source):
        columns = _resolve_columns(table, requested)
        base_dir = table.base_dir.absolute()
        for line, row in table.rows:
            origin = Origin(table.origin, line)
            if isinstance(row, SourceRejection):
                yield row
            else:
                yield _record(row, columns, origin, base_dir, store, table.split)
    if store.written or store.reused:
        log.info(
            "audio from the dataset: wrote %d files under %s, %d already there",
            store.written,
            store.audio_dir,
            store.reused,
        )


def _require_libraries() -> None:
    try:
        import datasets  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError as exc:
        raise SourceError(
            f"reading Hugging Face datasets needs the hf extra ({exc.name} is missing): "
            f"{INSTALL_HINT}"
        ) from None


# ---------------------------------------------------------------------------- tables


@dataclass
class _Requested:
    audio: str | None
    text: str | None
    speaker: str | None


@dataclass
class _Table:
    """One readable unit of SOURCE (a parquet file, a split, a metadata file) and its rows."""

    origin: str  # Origin.file of its rows
    base_dir: Path  # relative audio paths start here
    column_names: list[str]
    # (Origin.line, the row as a dict, or a rejection for a row that could not be parsed)
    rows: Iterable[tuple[int, dict[str, Any] | SourceRejection]]
    split: str | None = None
    # ClassLabel columns: the label names their integers stand for.
    class_names: dict[str, list[str]] = field(default_factory=dict)
    audio_defaults: tuple[str, ...] = AUDIO_COLUMNS


def _tables(source: Path) -> Iterator[_Table]:
    """The tables SOURCE holds, after deciding which layout it is."""
    if source.is_file():
        if source.suffix != ".parquet":
            raise SourceError(
                f"cannot read SOURCE {display_path(source)}: expected a .parquet file or a "
                "dataset folder (parquet files, save_to_disk, or audiofolder)"
            )
        yield _parquet_table(source, split=None)
        return
    if (source / "dataset_dict.json").is_file() or (source / "state.json").is_file():
        yield from _saved_tables(source)
        return
    parquet_files = _find(source, lambda p: p.suffix == ".parquet")
    if parquet_files:
        for path in parquet_files:
            shard = SHARD_NAME.match(path.name)
            yield _parquet_table(path, split=shard["split"] if shard else None)
        return
    metadata_files = _find(source, lambda p: p.name in AUDIOFOLDER_METADATA)
    if metadata_files:
        for path in metadata_files:
            yield _csv_table(path) if path.suffix == ".csv" else _jsonl_table(path)
        return
    raise SourceError(
        f"cannot read SOURCE {display_path(source)}: no parquet files, no save_to_disk "
        f"folder (state.json or dataset_dict.json) and no audiofolder metadata "
        f"({' or '.join(AUDIOFOLDER_METADATA)}) found"
    )


def _find(folder: Path, wanted: Any) -> list[Path]:
    """Files below `folder` that `wanted` accepts, sorted, skipping hidden folders (.git,
    the hub's .cache)."""
    found = []
    for path in folder.rglob("*"):
        hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
        if not hidden and wanted(path) and path.is_file():
            found.append(path)
    return sorted(found)


def _parquet_table(path: Path, split: str | None) -> _Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise SourceError(f"cannot read parquet file {display_path(path)}: {exc}") from None

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        line = 0
        try:
            for batch in parquet.iter_batches(batch_size=BATCH_ROWS):
                for row in batch.to_pylist():
                    line += 1
                    yield line, row
        except (OSError, pa.ArrowException) as exc:
            raise SourceError(
                f"cannot read parquet file {display_path(path)} after row {line}: {exc}"
            ) from None

    schema = parquet.schema_arrow
    return _Table(
        origin=str(path),
        base_dir=path.parent,
        column_names=list(schema.names),
        rows=rows(),
        split=split,
        class_names=_parquet_class_names(schema.metadata or {}),
    )


def _parquet_class_names(schema_metadata: dict[bytes, bytes]) -> dict[str, list[str]]:
    """ClassLabel names from the features datasets writes into a parquet schema."""
    try:
        features = json.loads(schema_metadata[b"huggingface"])["info"]["features"]
    except (KeyError, TypeError, ValueError):
        return {}
    if not isinstance(features, dict):
        return {}
    return {
        name: feature["names"]
        for name, feature in features.items()
        if isinstance(feature, dict) and feature.get("_type") == "ClassLabel"
    }


def _saved_tables(source: Path) -> Iterator[_Table]:
    """Every split of a `save_to_disk` folder, read as Arrow (no audio decoding)."""
    import datasets

    try:
        saved = datasets.load_from_disk(str(source))
    except Exception as exc:  # datasets raises FileNotFoundError, ValueError, ArrowInvalid...
        raise SourceError(
            f"cannot read save_to_disk folder {display_path(source)}: {exc}"
        ) from None
    if isinstance(saved, datasets.DatasetDict):
        splits = [(name, saved[name], source / name) for name in saved]
    else:
        splits = [(None, saved, source)]
    for split, dataset, folder in splits:
        class_names = {
            name: list(feature.names)
            for name, feature in dataset.features.items()
            if isinstance(feature, datasets.ClassLabel)
        }
        yield _Table(
            origin=str(folder),
            base_dir=folder,
            column_names=list(dataset.column_names),
            rows=_arrow_rows(dataset),
            split=split,
            class_names=class_names,
        )


def _arrow_rows(dataset: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    # The "arrow" format hands out the stored values: Audio columns stay {"bytes", "path"}.
    batches = dataset.with_format("arrow").iter(batch_size=BATCH_ROWS)
    line = 0
    for batch in batches:
        for row in batch.to_pylist():
            line += 1
            yield line, row


def _csv_table(path: Path) -> _Table:
    """An audiofolder `metadata.csv`; every value stays text, as written."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"cannot read {display_path(path)}: {exc}") from None

    def rows() -> Iterator[tuple[int, dict[str, Any] | SourceRejection]]:
        try:
            with path.open(encoding="utf-8-sig", newline="") as handle:
                reader = csv.reader(handle)
                next(reader, None)
                for values in reader:
                    if not any(value.strip() for value in values):
                        continue
                    if len(values) != len(header):
                        origin = Origin(str(path), reader.line_num)
                        detail = f"{len(values)} fields, the header has {len(header)}"
                        yield (
                            reader.line_num,
                            SourceRejection(origin, "malformed_line", detail, ",".join(values)),
                        )
                    else:
                        yield reader.line_num, dict(zip(header, values, strict=True))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise SourceError(f"cannot read {display_path(path)}: {exc}") from None

    return _Table(
        origin=str(path),
        base_dir=path.parent,
        column_names=header,
        rows=rows(),
        audio_defaults=(AUDIOFOLDER_AUDIO_COLUMN, *AUDIO_COLUMNS),
    )


def _jsonl_table(path: Path) -> _Table:
    """An audiofolder `metadata.jsonl`; lines that are not JSON objects become rejections."""
    # A first pass collects the column names, so a missing column is reported up front.
    names: dict[str, None] = {}
    for _, data in iter_source_lines(path):
        row = _json_object(data)
        if isinstance(row, dict):
            names.update(dict.fromkeys(row))

    def rows() -> Iterator[tuple[int, dict[str, Any] | SourceRejection]]:
        for line, data in iter_source_lines(path):
            row = _json_object(data)
            if isinstance(row, dict):
                yield line, row
            else:
                reason, detail, text = row
                yield line, SourceRejection(Origin(str(path), line), reason, detail, text)

    return _Table(
        origin=str(path),
        base_dir=path.parent,
        column_names=list(names),
        rows=rows(),
        audio_defaults=(AUDIOFOLDER_AUDIO_COLUMN, *AUDIO_COLUMNS),
    )


def _json_object(data: bytes) -> dict[str, Any] | tuple[str, str, str]:
    """One JSON line as a dict, or (reason, detail, text) of why it is none."""
    try:
        text, _ = decode_line(data)
    except UnicodeDecodeError:
        return "undecodable_line", "line is neither UTF-8 nor CP949", data.decode(errors="replace")
    value, problem = parse_json(text)
    if problem:
        return "malformed_line", problem, text
    if not isinstance(value, dict):
        return "malformed_line", "expected a JSON object", text
    return value


# ---------------------------------------------------------------------------- columns


@dataclass
class _Columns:
    audio: str
    text: str
    speaker: str | None
    id: str | None
    language: str | None
    duration: str | None
    class_names: dict[str, list[str]]

    def used(self) -> set[str | None]:
        return {self.audio, self.text, self.speaker, self.id, self.language, self.duration}


def _resolve_columns(table: _Table, requested: _Requested) -> _Columns:
    """The columns a table's rows are read from; SourceError if one cannot be found."""
    names = table.column_names
    available = ", ".join(names) or "none"
    for role, name in (
        ("audio", requested.audio),
        ("text", requested.text),
        ("speaker", requested.speaker),
    ):
        if name is not None and name not in names:
            raise SourceError(
                f"{display_path(table.origin)}: no {role} column {name!r}; "
                f"available columns: {available}"
            )

    def first(candidates: tuple[str, ...]) -> str | None:
        return next((name for name in candidates if name in names), None)

    audio = requested.audio or first(table.audio_defaults)
    text = requested.text or first(TEXT_COLUMNS)
    for role, found, candidates in (
        ("audio", audio, table.audio_defaults),
        ("transcript", text, TEXT_COLUMNS),
    ):
        if found is None:
            raise SourceError(
                f"{display_path(table.origin)}: no {role} column (one of "
                f"{', '.join(candidates)}); available columns: {available}; name the "
                f"{role} column explicitly"
            )
    return _Columns(
        audio=audio,  # type: ignore[arg-type]  # checked above
        text=text,  # type: ignore[arg-type]
        speaker=requested.speaker or first(SPEAKER_COLUMNS),
        id=first(ID_COLUMNS),
        language=first(LANGUAGE_COLUMNS),
        duration=first(DURATION_COLUMNS),
        class_names=table.class_names,
    )


# ---------------------------------------------------------------------------- rows


class _Rejected(Exception):
    """A row that describes no usable utterance."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _record(
    row: dict[str, Any],
    columns: _Columns,
    origin: Origin,
    base_dir: Path,
    store: AudioStore,
    split: str | None,
) -> SourceRecord:
    """One row as an item or a rejection."""
    text = row.get(columns.text)
    raw_text = text if isinstance(text, str) else None
    audio_path: Path | None = None
    row_id: str | None = None
    try:
        row_id = _label(row, columns.id, columns)
        audio_bytes, audio_path, original_name = _audio_value(row.get(columns.audio), base_dir)
        if text is None:
            raise _Rejected("missing_transcript", f"{columns.text} is empty (null)")
        if raw_text is None:
            kind = type(text).__name__
            raise _Rejected("malformed_line", f"{columns.text} is {kind}, not a string")
        # Every check before the audio is written: a rejected row leaves no file behind.
        item = SourceItem(
            origin=origin,
            audio=audio_path or Path(),  # bytes: the stored FLAC, set below
            raw_text=raw_text,
            id=row_id,
            speaker=_label(row, columns.speaker, columns),
            language=_label(row, columns.language, columns),
            label_duration=_duration(row, columns.duration),
            metadata=_metadata(row, columns),
        )
        if split is not None:
            item.metadata.setdefault("split", split)
        if audio_bytes is not None:
            item.audio = store.path_for(audio_bytes)
            # The hash names the file; the original file name makes the more readable id.
            if item.id is None and original_name:
                item.id = Path(original_name).stem or None
        return item
    except (_Rejected, UnstorableAudio) as exc:
        return SourceRejection(origin, exc.reason, exc.detail, raw_text, audio_path, row_id)


def _audio_value(value: Any, base_dir: Path) -> tuple[bytes | None, Path | None, str | None]:
    """(bytes, None, original file name) or (None, resolved path, None) from an audio cell."""
    if isinstance(value, dict):
        if value.get("array") is not None:
            raise _Rejected("malformed_line", "audio is a decoded array; store bytes or a path")
        data, path = value.get("bytes"), value.get("path")
    elif isinstance(value, bytes | str):
        data, path = (value, None) if isinstance(value, bytes) else (None, value)
    elif value is None:
        data, path = None, None
    else:
        raise _Rejected("malformed_line", f"audio is {type(value).__name__}, not bytes or a path")
    if data:
        if not isinstance(data, bytes):
            raise _Rejected("malformed_line", "audio bytes are not binary")
        return data, None, path if isinstance(path, str) else None
    if isinstance(path, str) and path.strip():
        return None, resolve_audio(path, base_dir), None
    raise _Rejected("missing_audio", "row has neither audio bytes nor an audio path")


def _label(row: dict[str, Any], column: str | None, columns: _Columns) -> str | None:
    """An id, speaker or language cell as text (ClassLabel integers as their names)."""
    if column is None:
        return None
    value = row.get(column)
    names = columns.class_names.get(column)
    if names is not None and isinstance(value, int) and not isinstance(value, bool):
        return names[value] if 0 <= value < len(names) else None  # -1: no label
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int):  # bool included: str(True)
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None  # pandas writes a missing value as NaN
        return str(int(value)) if value.is_integer() else str(value)
    raise _Rejected("malformed_line", f"{column} is {type(value).__name__}, not text or a number")


def _duration(row: dict[str, Any], column: str | None) -> float | None:
    """The duration a row claims, in seconds; prepare verifies it against the audio."""
    value = row.get(column) if column else None
    if value is None or isinstance(value, bool):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise _Rejected("malformed_line", f"{column} is not a number of seconds") from None
    if not math.isfinite(seconds):
        raise _Rejected("malformed_line", f"{column} is not a finite number: {value}")
    return seconds


def _metadata(row: dict[str, Any], columns: _Columns) -> dict[str, Any]:
    """Scalar columns not read as attributes; lists, dicts, bytes and NaN are left out."""
    used = columns.used() | RECOMPUTED_COLUMNS
    metadata: dict[str, Any] = {}
    for name, value in row.items():
        if name in used or value is None:
            continue
        if isinstance(value, int) and name in columns.class_names:
            names = columns.class_names[name]
            value = names[value] if 0 <= value < len(names) else None
        if _is_scalar(value):
            metadata[name] = value
    return metadata


def _is_scalar(value: Any) -> bool:
    """A value metadata can hold: text, a finite number or a boolean (not "NaN" or "1e999")."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, bool | int | str) and not non_finite_number(value)
