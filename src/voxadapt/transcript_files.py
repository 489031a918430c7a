"""Transcript files: how `transcribe` names, checks and writes its outputs: one file for
all inputs (JSONL rows, `id<TAB>text` lines) and per-input files (the transcript alone, SRT,
WebVTT) in a folder.

Names are decided and checked before any decoding (`plan_outputs`): two inputs never share
a name, and a name the folder cannot hold is refused. The folder's INPUTS_INDEX records
which input each per-input file was written for, so a later run refuses to replace it with
another input's transcript (`check_earlier_inputs`). Files are built in a staging folder and
moved into place together (`write_transcripts`); one that cannot be written is reported
without costing the others.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxadapt.decoding import AudioItem
from voxadapt.errors import ConfigError, VoxadaptError
from voxadapt.manifest import atomic_write
from voxadapt.outputs import LEDGER, LOCK, OutputClaim, OutputConflict
from voxadapt.scoring.rows import FAILED_MARK
from voxadapt.staging import make_staging_dir
from voxadapt.subtitles import clip_stem, cue_file, transcript_text, unique_stems

# One file for all inputs: every field and flag (jsonl), or `id<TAB>text` lines (txt), which
# `voxadapt score` reads back.
FILE_FORMATS = ("jsonl", "txt")
# One file per input: the transcript alone (text, whisper's txt) or subtitles (srt, vtt).
CLIP_SUFFIXES = {"text": ".txt", "srt": ".srt", "vtt": ".vtt"}
CUE_FORMATS = ("srt", "vtt")  # one cue per segment, wrapped by --max-line-width/-count
OUTPUT_FORMATS = (*FILE_FORMATS, *CLIP_SUFFIXES)
# With several formats --out is a folder; the one-file formats get these names in it.
FOLDER_FILES = {"jsonl": "transcripts.jsonl", "txt": "transcripts.txt"}
# The row field that names a clip's file of each per-input format (`text` is the transcript).
CLIP_FILE_FIELDS = {"text": "text_file", "srt": "srt", "vtt": "vtt"}
# In a --out folder: each per-input file (<clip>.srt ...) and the input it was written for,
# so that a later run never replaces day1/REC001.wav's REC001.srt with day2/REC001.wav's.
INPUTS_INDEX = ".inputs.transcribe.json"


@dataclass
class OutputPlan:
    """Where each format goes, decided before any decoding."""

    formats: list[str]
    to: str  # "stdout", "file" (--out is the one output file) or "folder"
    files: dict[str, str] = field(default_factory=dict)  # jsonl/txt -> its file name
    # text/srt/vtt -> one file name per audio item, in item order
    clip_files: dict[str, list[str]] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """Every file this run may write, in the order they are moved into place."""
        clip_names = [name for names in self.clip_files.values() for name in names]
        return [*clip_names, *self.files.values()]


def plan_outputs(
    out: Path | None, formats: list[str], items: Sequence[AudioItem], n_inputs: int
) -> OutputPlan:
    """How --out holds the formats, for `n_inputs` inputs (failed ones included):

    - no --out, or `-`: the one format on standard output;
    - jsonl or txt alone: --out is that file;
    - text, srt or vtt alone with --out named like its file (x.txt, x.srt, x.vtt): exactly
      that file, for one input (several: ConfigError, give a folder);
    - else --out is a folder: transcripts.jsonl, transcripts.txt and <clip>.txt|.srt|.vtt.

    Every name is checked here, before the model loads, and all problems are reported in one
    ConfigError: two inputs that would get one file name (refused rather than renamed, so a
    file's name always says which input it holds), a name longer than the folder allows or
    that the file system cannot encode.
    """
    if out is None or str(out) == "-":
        return OutputPlan(formats, "stdout")
    if len(formats) == 1 and formats[0] in FILE_FORMATS:
        _check_names(out.parent, [out.name] if out.name not in ("", ".", "..") else [])
        return OutputPlan(formats, "file", files={formats[0]: out.name})
    if len(formats) == 1 and out.suffix.lower() == CLIP_SUFFIXES[formats[0]] and not is_folder(out):
        if n_inputs > 1:
            raise ConfigError(
                f"--out {out} names one file, but --format {formats[0]} writes one file per "
                f"input and {n_inputs} inputs were given: give a folder, e.g. --out "
                f"{out.parent / out.stem}/"
            )
        _check_names(out.parent, [out.name] if out.name not in ("", ".", "..") else [])
        return OutputPlan(formats, "file", clip_files={formats[0]: [out.name]})
    files = {fmt: FOLDER_FILES[fmt] for fmt in formats if fmt in FILE_FORMATS}
    clip_formats = [fmt for fmt in formats if fmt in CLIP_SUFFIXES]
    # A clip called `transcripts` must not get the name of transcripts.txt (it gets ~2).
    reserved = [Path(FOLDER_FILES["txt"]).stem] if "txt" in files and "text" in clip_formats else []
    # a file named on the command line is named by its file name (`clips/ko_001.wav` ->
    # ko_001.srt); a folder's files by their path inside it; manifest rows by their id
    named = [str(Path(item.id).absolute()) if item.named_file else item.id for item in items]
    stems = [clip_stem(name) for name in named]
    problems = _clashes(items, stems, CLIP_SUFFIXES[clip_formats[0]]) if clip_formats else []
    if out.name not in ("", ".", ".."):  # the folder's own name, in its parent
        problems = [*_name_problems(out.parent, [out.name]), *problems]
    stems = unique_stems(stems, reserved)
    clip_files = {fmt: [stem + CLIP_SUFFIXES[fmt] for stem in stems] for fmt in clip_formats}
    plan = OutputPlan(formats, "folder", files, clip_files)
    _check_names(out, plan.names, problems)
    return plan


def is_folder(path: Path) -> bool:
    """`path.is_dir()`, False for a name the system refuses (too long: reported by
    `plan_outputs`, not as an OSError while options are validated)."""
    try:
        return path.is_dir()
    except OSError:
        return False


def _clashes(items: Sequence[AudioItem], stems: Sequence[str], suffix: str) -> list[str]:
    """One line for each file name that several inputs would get (stems compared without
    case, as case-insensitive file systems do)."""
    by_stem: dict[str, list[int]] = {}
    for index, stem in enumerate(stems):
        by_stem.setdefault(stem.casefold(), []).append(index)
    found = []
    for indices in (group for group in by_stem.values() if len(group) > 1):
        shown = " and ".join(items[i].id for i in indices[:2])
        more = f" (and {len(indices) - 2} more) would all" if len(indices) > 2 else " would both"
        found.append(
            f"{shown}{more} be written as {stems[indices[0]]}{suffix}: rename one, or "
            "transcribe them into different --out folders"
        )
    return found


def _name_max(folder: Path) -> int | None:
    """The longest file name, in bytes, that `folder` (or, not made yet, the nearest folder
    above it) allows; None: no limit known."""
    existing = Path(os.path.abspath(folder))
    while not _exists(existing) and existing != existing.parent:
        existing = existing.parent
    try:
        limit = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255  # what Linux and macOS file systems allow
    return limit if limit > 0 else None


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long to look up: it does not exist
        return False


def _check_names(folder: Path, names: Sequence[str], problems: Sequence[str] = ()) -> None:
    """ConfigError listing every name (and every problem given) that `folder` cannot hold."""
    found = [*problems, *_name_problems(folder, names)]
    if found:
        raise ConfigError(
            f"{len(found)} output name{'s' if len(found) > 1 else ''} cannot be written: "
            + "; ".join(found),
            found,
        )


def _name_problems(folder: Path, names: Sequence[str]) -> list[str]:
    """One line for each name `folder` cannot hold: reserved, not encodable in the file
    system's encoding, or longer in bytes than the folder allows."""
    found = []
    limit = _name_max(folder)
    for name in names:
        shown = name if len(name) <= 40 else f"{name[:30]}...{name[-8:]}"
        if not name or name in (".", "..", LEDGER, LOCK, INPUTS_INDEX) or "/" in name:
            found.append(f"{name!r} is not a name an output can have")
            continue
        try:
            size = len(os.fsencode(name))
        except UnicodeEncodeError:
            found.append(
                f"{shown}: the file system's encoding ({sys.getfilesystemencoding()}) cannot "
                "write this name; run with a UTF-8 locale (LANG=C.UTF-8) or rename the input"
            )
            continue
        if limit is not None and size > limit:
            found.append(
                f"{shown}: the name is {size} bytes, longer than the {limit} bytes "
                f"{folder} allows; rename the input, or transcribe a manifest with shorter ids"
            )
    return found


def _text_line(row: dict[str, Any]) -> str:
    """`id<TAB>text`, which `score` reads back exactly (the id may hold spaces); a failed
    input is `id<TAB>[error: reason]`. Line breaks inside a transcript become spaces."""
    ident = str(row["id"])
    check_txt_ids([ident])
    if row.get("text") is None:
        return f"{ident}\t{FAILED_MARK}{row['error']}]"
    return f"{ident}\t{' '.join(row['text'].split())}"


def _json_line(row: dict[str, Any]) -> str:
    """A row as one JSON line, Korean as itself; a row holding what UTF-8 cannot encode (a
    lone surrogate from a manifest's `\\ud800`, a file name's undecodable bytes) with
    `\\u` escapes instead, which read back to the same row."""
    line = json.dumps(row, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(row, ensure_ascii=True)
    return line


def check_txt_ids(ids: Sequence[str]) -> None:
    """VoxadaptError for an id the txt format cannot keep (a tab or line break in it)."""
    for ident in ids:
        if any(char in ident for char in "\t\n\r"):
            raise VoxadaptError(
                f"id {ident!r} holds a tab or line break, which the txt format cannot keep: "
                "use --format jsonl"
            )
        try:
            ident.encode("utf-8")
        except UnicodeEncodeError:
            raise VoxadaptError(
                f"id {ident!r} holds what UTF-8 cannot encode (a lone surrogate or a file "
                "name's undecodable bytes), which the txt format cannot keep: use --format jsonl"
            ) from None


def render_transcripts(rows: list[dict[str, Any]], fmt: str) -> str:
    """All rows as one file's text: JSONL (jsonl), `id<TAB>text` lines (txt), or the
    transcripts alone, failed inputs left out (text)."""
    if fmt == "jsonl":
        return "".join(_json_line(row) + "\n" for row in rows)
    if fmt == "txt":
        return "".join(_text_line(row) + "\n" for row in rows)
    return "".join(transcript_text(row) for row in rows if row.get("text") is not None)


def write_transcripts(
    rows: list[dict[str, Any]],
    item_rows: list[dict[str, Any]],
    plan: OutputPlan,
    claim: OutputClaim | None,
    items: Sequence[AudioItem] = (),
    *,
    max_line_width: int | None = None,
    max_line_count: int | None = None,
) -> dict[str, str]:
    """Write every format of `plan`: on standard output (no claim), or as files built in a
    staging folder beside the outputs and then moved into place together, so a run that
    stops replaces nothing and leaves no half set. A file that cannot be written (a full
    disk, a folder in its place) does not cost the others: it is left out (and its row no
    longer names it) and returned, name -> reason. item_rows: the rows of the audio items,
    `items`, in item order; each names its per-input files (`srt`, `vtt`, `text_file`),
    which the folder's INPUTS_INDEX then records as written for that item."""
    for fmt, names in plan.clip_files.items():
        for row, name in zip(item_rows, names, strict=True):
            if row.get("text") is not None:
                row[CLIP_FILE_FIELDS[fmt]] = name
    if claim is None:
        sys.stdout.write(render_transcripts(rows, plan.formats[0]))
        sys.stdout.flush()
        return {}
    layout = {"max_line_width": max_line_width, "max_line_count": max_line_count}
    failed: dict[str, str] = {}
    staged: dict[str, Path] = {}  # final name -> its file in the staging folder
    clip_rows: dict[str, tuple[dict[str, Any], str]] = {}  # per-input file -> row, field
    written_for: dict[str, str] = {}  # per-input file -> the input it holds
    staging = make_staging_dir(claim.folder, "transcribe")  # a dead run's is swept
    try:
        for fmt, names in plan.clip_files.items():
            for index, (row, name) in enumerate(zip(item_rows, names)):
                if row.get("text") is None:
                    continue  # a failed input has no file; its error is in the rows
                text = transcript_text(row) if fmt == "text" else cue_file(row, fmt, **layout)
                if _stage(staging, name, text, staged, failed):
                    clip_rows[name] = (row, CLIP_FILE_FIELDS[fmt])
                    written_for[name] = _source(items[index]) if items else str(row["audio"])
                else:
                    row.pop(CLIP_FILE_FIELDS[fmt], None)
        # staged after the clip files, whose rows now name only files that exist
        for fmt, name in plan.files.items():
            _stage(staging, name, render_transcripts(rows, fmt), staged, failed)
        for name in clip_rows:
            if not _move(staged.pop(name), claim.path(name), name, failed):
                row, key = clip_rows[name]
                row.pop(key, None)
                written_for.pop(name)
                for fmt, file_name in plan.files.items():  # rare: staged again without it
                    _stage(staging, file_name, render_transcripts(rows, fmt), staged, failed)
        for name, path in staged.items():
            _move(path, claim.path(name), name, failed)
        if written_for and plan.to == "folder":
            _write_index(claim, written_for, staging, failed)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return failed


def _move(staged: Path, target: Path, name: str, failed: dict[str, str]) -> bool:
    """Move a staged output into place; False, with the reason in `failed`, where it cannot
    be (a folder in its place)."""
    try:
        os.replace(staged, target)
    except OSError as exc:
        failed[name] = exc.strerror or str(exc)
        return False
    return True


def _stage(
    staging: Path, name: str, text: str, staged: dict[str, Path], failed: dict[str, str]
) -> bool:
    """Write `text` as output `name` in the staging folder (under a short name: a long
    output name plus a temporary suffix could pass the file system's limit); False, with
    the reason in `failed`, where it cannot be."""
    path = staging / f"{hashlib.sha256(os.fsencode(name)).hexdigest()[:24]}.part"
    try:
        _write_text(path, text)
    except (OSError, UnicodeEncodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "holds text UTF-8 cannot encode"
        failed[name] = reason or str(exc)
        return False
    staged[name] = path
    return True


def _write_text(path: Path, text: str) -> None:
    with atomic_write(path) as handle:  # synced, with the umask's mode
        handle.write(text)


def _source(item: AudioItem) -> str:
    """What an item transcribes: its audio file (the real path: a manifest's relative one
    names the same file from any folder), and the span of it for a segment."""
    audio = os.path.realpath(item.audio)
    if item.offset is None:
        return audio
    return f"{audio} [{item.offset:.3f} s + {item.duration:.3f} s]"


def _read_index(folder: Path) -> dict[str, str]:
    """INPUTS_INDEX of `folder`: per-input file name -> the input it was written for (empty
    when absent or damaged: then no earlier input is known)."""
    try:
        data = json.loads((folder / INPUTS_INDEX).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict):
        return {}
    return {name: source for name, source in files.items() if isinstance(source, str)}


def _write_index(
    claim: OutputClaim, written_for: dict[str, str], staging: Path, failed: dict[str, str]
) -> None:
    """Record which input each file now in the folder was written for (entries of files
    since removed are dropped)."""
    index = _read_index(claim.folder) | written_for
    index = {name: index[name] for name in sorted(index) if (claim.folder / name).exists()}
    path = staging / INPUTS_INDEX
    try:
        # ASCII: a path the file system gave undecodable (surrogate-escaped) stays writable
        _write_text(path, json.dumps({"files": index}, ensure_ascii=True, indent=1) + "\n")
        os.replace(path, claim.path(INPUTS_INDEX))
    except OSError as exc:
        failed[INPUTS_INDEX] = exc.strerror or str(exc)


def check_earlier_inputs(claim: OutputClaim, plan: OutputPlan, items: Sequence[AudioItem]) -> None:
    """OutputConflict naming every per-input file in the --out folder that an earlier run
    wrote for another input than the one it would now be written for (day1/REC001.wav's
    REC001.srt, now for day2/REC001.wav). Files written before the index existed, or
    removed since, are not known to hold another input."""
    index = _read_index(claim.folder)
    found = []
    for names in plan.clip_files.values():
        for item, name in zip(items, names):
            earlier = index.get(name)
            if earlier is not None and earlier != _source(item) and (claim.folder / name).exists():
                found.append(
                    f"{claim.folder / name} holds the transcript of {earlier}, not {_source(item)}"
                )
    if found:
        raise OutputConflict(
            "; ".join(found)
            + ": give --overwrite to replace "
            + ("it" if len(found) == 1 else f"these {len(found)} files")
            + ", or another --out"
        )
