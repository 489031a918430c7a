"""The transcribe stage: audio files, folders or manifests -> JSONL, `id<TAB>text`, plain
text, SRT or WebVTT (several of them from one decode)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from voxadapt.alignment import add_words
from voxadapt.audio import AUDIO_SUFFIXES, AudioError, probe_audio
from voxadapt.config import option
from voxadapt.decoding import (
    AudioItem,
    AudioProgress,
    DecodeOptions,
    ModelChoice,
    Transcript,
    split_long_form,
    stitch,
)
from voxadapt.errors import ConfigError, VoxadaptError
from voxadapt.manifest import (
    Utterance,
    atomic_write,
    iter_jsonl,
)
from voxadapt.model import base_model_of
from voxadapt.outputs import OutputClaim, claim_output_file, claim_outputs
from voxadapt.redact import Redactor
from voxadapt.scoring.rows import FAILED_MARK
from voxadapt.subtitles import clip_stems, cue_file, transcript_text

log = logging.getLogger(__name__)

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
# Without --format, --out's suffix names the format (any other suffix: jsonl).
SUFFIX_FORMATS = {".jsonl": "jsonl", ".txt": "txt", ".srt": "srt", ".vtt": "vtt"}


@dataclass
class TranscribeConfig(ModelChoice):
    """Options of `voxadapt transcribe`."""

    inputs: list[Path] = option(
        help="audio file, folder (searched recursively) or JSONL manifest",
        default_factory=list,
        positional=True,
        metavar="INPUT",
    )
    out: Path | None = option(
        None,
        help="one format: the output file (x.jsonl, x.txt; x.srt, x.vtt or, with --format "
        "text, x.txt for one input) or the folder of the per-input files; several formats: "
        "a folder holding transcripts.jsonl, transcripts.txt and <clip>.txt/.srt/.vtt; "
        "default: standard output",
        metavar="PATH",
    )
    format: str | None = option(
        None,
        help="jsonl (every field and flag), txt (id<TAB>text lines, read by score), text (the "
        "transcript only, one .txt per input), srt or vtt (subtitles, one file per input); "
        "several separated by commas (srt,vtt,jsonl), or all; default: from --out's suffix "
        "(.txt: txt, .srt, .vtt, else jsonl), txt on standard output",
        metavar="FORMATS",
    )
    max_line_width: int | None = option(
        None,
        help="srt/vtt: at most N characters a line, broken at spaces (a longer word is cut); "
        "default: no limit",
        metavar="N",
        group="subtitles",
    )
    max_line_count: int | None = option(
        None,
        help="srt/vtt: at most N lines a cue (with --max-line-width); a longer cue becomes "
        "consecutive cues sharing its time in proportion to their characters; default: no "
        "limit",
        metavar="N",
        group="subtitles",
    )
    redact: bool = option(
        False,
        help="replace identifiers (names, phone and resident numbers, addresses...) in every "
        "transcript, segment and word by typed tags before anything is written, as "
        "`voxadapt redact` does (needs the redact extra)",
    )
    decode: DecodeOptions = option(help="decoding options", default_factory=DecodeOptions)

    def problems(self) -> list[str]:
        found = super().problems()
        if not self.inputs:
            found.append("give at least one audio file, folder or manifest")
        unknown = parse_formats(self.format)[1]
        if unknown:
            found.append(
                f"--format: {', '.join(map(repr, unknown))} is not a format; give one or more "
                f"of {', '.join(OUTPUT_FORMATS)} separated by commas, or all"
            )
        formats = output_formats(self)
        found += _output_problems(self.out, formats)
        for flag, value in (
            ("--max-line-width", self.max_line_width),
            ("--max-line-count", self.max_line_count),
        ):
            if value is not None and value < 1:
                found.append(f"{flag} must be >= 1, not {value}")
        if self.max_line_count is not None and self.max_line_width is None:
            found.append("--max-line-count counts the lines --max-line-width makes: give both")
        if (self.max_line_width or self.max_line_count) and not set(CUE_FORMATS) & set(formats):
            flag = "--max-line-width" if self.max_line_width else "--max-line-count"
            found.append(f"{flag} shapes subtitle cues: add srt or vtt to --format")
        return found


def parse_formats(text: str | None) -> tuple[list[str], list[str]]:
    """The formats of a `--format` value (`srt,vtt,jsonl`, `all`) in the order given, without
    repeats, and the names that are not formats."""
    formats: list[str] = []
    unknown: list[str] = []
    if text is None:
        return formats, unknown
    for name in (part.strip().lower() for part in text.split(",")):
        expanded = OUTPUT_FORMATS if name == "all" else (name,) if name else ()
        for fmt in expanded:
            if fmt not in OUTPUT_FORMATS:
                unknown.append(fmt)
            elif fmt not in formats:
                formats.append(fmt)
    if not formats and not unknown:  # "" or ","
        unknown.append(text)
    return formats, unknown


def output_formats(config: TranscribeConfig) -> list[str]:
    """The formats asked for, else the one --out's suffix names, else txt on standard output."""
    formats, _ = parse_formats(config.format)
    if formats:
        return formats
    if config.out is None or str(config.out) == "-":
        return ["txt"]
    return [SUFFIX_FORMATS.get(config.out.suffix.lower(), "jsonl")]


def _output_problems(out: Path | None, formats: list[str]) -> list[str]:
    """What --out cannot hold of these formats (the input count is checked by `plan_outputs`)."""
    shown = ",".join(formats)
    if out is None or str(out) == "-":
        if len(formats) > 1:
            return [f"--format {shown} writes several files: give --out FOLDER"]
        if formats[0] in CUE_FORMATS:
            return [
                f"--format {shown} writes subtitle files: give --out FOLDER, or --out "
                f"FILE{CLIP_SUFFIXES[shown]} for one input"
            ]
        return []
    if out.suffix.lower() not in SUFFIX_FORMATS or out.is_dir():
        return []  # a folder name
    if len(formats) > 1:
        return [
            f"--out {out} is a file name, but --format {shown} writes several files: give a folder"
        ]
    if formats[0] in CLIP_SUFFIXES and out.suffix.lower() != CLIP_SUFFIXES[formats[0]]:
        return [
            f"--out {out} is a file name, but --format {shown} writes "
            f"{CLIP_SUFFIXES[shown]} files: give a folder, or a {CLIP_SUFFIXES[shown]} file "
            "for one input"
        ]
    return []


@dataclass
class TranscribeResult:
    rows: list[dict[str, Any]]  # one per input item, in input order
    n_errors: int
    output: Path | None


def collect_inputs(inputs: Sequence[Path]) -> tuple[list[AudioItem], list[dict[str, Any]]]:
    """Audio items from files, folders (recursively) and JSONL manifests, plus per-file errors.

    Errors (missing file, unreadable audio, bad manifest line) are returned as rows rather
    than raised, so one bad file never stops a batch job.
    """
    items: list[AudioItem] = []
    errors: list[dict[str, Any]] = []
    for path in map(Path, inputs):
        if path.is_dir():
            # hidden files and folders (.git, macOS ._x.wav resource forks) are not audio
            files = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            found = [p for p in files if p.suffix.lower() in AUDIO_SUFFIXES]
            if not found:
                errors.append(_error_row(str(path), str(path), "no_audio", "no audio files"))
            for audio in found:
                _add_audio_file(audio, items, errors, ident=str(audio.relative_to(path)))
        elif path.suffix.lower() in {".jsonl", ".json"} and path.is_file():
            _add_manifest(path, items, errors)
        else:
            _add_audio_file(path, items, errors, ident=str(path), named_file=True)
    return items, errors


def _add_manifest(path: Path, items: list[AudioItem], errors: list[dict[str, Any]]) -> None:
    for line_no, record in iter_jsonl(path):
        try:
            utterance = Utterance.from_dict(record)
        except (KeyError, TypeError, ValueError) as exc:
            where = f"{path}:{line_no}"
            errors.append(_error_row(where, where, "malformed_record", str(exc)))
            continue
        items.append(AudioItem.from_utterance(utterance))  # a segment keeps its offset


def _error_row(ident: str, audio: str, reason: str, detail: str) -> dict[str, Any]:
    return {"id": ident, "audio": audio, "text": None, "error": reason, "detail": detail}


def _add_audio_file(
    path: Path,
    items: list[AudioItem],
    errors: list[dict[str, Any]],
    *,
    ident: str,
    named_file: bool = False,
) -> None:
    if not path.exists():
        errors.append(_error_row(ident, str(path), "missing_audio", "no such file"))
        return
    try:
        info = probe_audio(path)
    except AudioError as exc:
        errors.append(_error_row(ident, str(path.resolve()), exc.reason, exc.detail))
        return
    items.append(AudioItem(ident, str(path.resolve()), info.duration, named_file=named_file))


def transcript_row(
    item: AudioItem, result: Transcript | AudioError, segments: list[dict] | None = None
) -> dict[str, Any]:
    """The output record of one item: its manifest fields plus the transcript (`text`),
    flags and, for a long recording, its `segments` with times. A manifest's own transcript
    is kept as `reference` (and `reference_raw_text`), never mixed with the hypothesis."""
    record = dict(item.record)
    if "text" in record:
        record["reference"] = record.pop("text")
        record["reference_raw_text"] = record.pop("raw_text", None)
    row = {**record, "id": item.id, "audio": item.audio, "duration": item.duration}
    if isinstance(result, AudioError):
        row.update(text=None, error=result.reason, detail=result.detail)
        return row
    row.update(
        text=result.text,
        n_tokens=result.n_tokens,
        truncated=result.truncated,
        repetition_loop=result.repetition_loop,
    )
    if result.language:
        row["detected_language"] = result.language
    if segments is not None:
        row["segments"] = segments
    return row


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
    config: TranscribeConfig, formats: list[str], items: list[AudioItem], n_inputs: int
) -> OutputPlan:
    """How --out holds the formats, for `n_inputs` inputs (failed ones included):

    - no --out, or `-`: the one format on standard output;
    - jsonl or txt alone: --out is that file;
    - text, srt or vtt alone with --out named like its file (x.txt, x.srt, x.vtt): exactly
      that file, for one input (several: ConfigError, give a folder);
    - else --out is a folder: transcripts.jsonl, transcripts.txt and <clip>.txt|.srt|.vtt.
    """
    out = config.out
    if out is None or str(out) == "-":
        return OutputPlan(formats, "stdout")
    if len(formats) == 1 and formats[0] in FILE_FORMATS:
        return OutputPlan(formats, "file", files={formats[0]: out.name})
    if len(formats) == 1 and out.suffix.lower() == CLIP_SUFFIXES[formats[0]] and not out.is_dir():
        if n_inputs > 1:
            raise ConfigError(
                f"--out {out} names one file, but --format {formats[0]} writes one file per "
                f"input and {n_inputs} inputs were given: give a folder, e.g. --out "
                f"{out.parent / out.stem}/"
            )
        return OutputPlan(formats, "file", clip_files={formats[0]: [out.name]})
    files = {fmt: FOLDER_FILES[fmt] for fmt in formats if fmt in FILE_FORMATS}
    clip_formats = [fmt for fmt in formats if fmt in CLIP_SUFFIXES]
    # A clip called `transcripts` must not get the name of transcripts.txt (it gets ~2).
    reserved = [Path(FOLDER_FILES["txt"]).stem] if "txt" in files and "text" in clip_formats else []
    # a file named on the command line is named by its file name (`clips/ko_001.wav` ->
    # ko_001.srt); a folder's files by their path inside it; manifest rows by their id
    named = [str(Path(item.id).absolute()) if item.named_file else item.id for item in items]
    stems = clip_stems(named, reserved)
    clip_files = {fmt: [stem + CLIP_SUFFIXES[fmt] for stem in stems] for fmt in clip_formats}
    return OutputPlan(formats, "folder", files, clip_files)


def _text_line(row: dict[str, Any]) -> str:
    """`id<TAB>text`, which `score` reads back exactly (the id may hold spaces); a failed
    input is `id<TAB>[error: reason]`. Line breaks inside a transcript become spaces."""
    ident = str(row["id"])
    check_txt_ids([ident])
    if row.get("text") is None:
        return f"{ident}\t{FAILED_MARK}{row['error']}]"
    return f"{ident}\t{' '.join(row['text'].split())}"


def check_txt_ids(ids: Sequence[str]) -> None:
    """VoxadaptError for an id the txt format cannot keep (a tab or line break in it)."""
    for ident in ids:
        if any(char in ident for char in "\t\n\r"):
            raise VoxadaptError(
                f"id {ident!r} holds a tab or line break, which the txt format cannot keep: "
                "use --format jsonl"
            )


def render_transcripts(rows: list[dict[str, Any]], fmt: str) -> str:
    """All rows as one file's text: JSONL (jsonl), `id<TAB>text` lines (txt), or the
    transcripts alone, failed inputs left out (text)."""
    if fmt == "jsonl":
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    if fmt == "txt":
        return "".join(_text_line(row) + "\n" for row in rows)
    return "".join(transcript_text(row) for row in rows if row.get("text") is not None)


def write_transcripts(
    rows: list[dict[str, Any]],
    item_rows: list[dict[str, Any]],
    plan: OutputPlan,
    claim: OutputClaim | None,
    config: TranscribeConfig,
) -> None:
    """Write every format of `plan`: on standard output (no claim), or as files built in a
    staging folder beside the outputs and then moved into place together, so a failed run
    replaces nothing and leaves no half set. item_rows: the rows of the audio items, in
    item order; each names its per-input files (`srt`, `vtt`, `text_file`)."""
    for fmt, names in plan.clip_files.items():
        for row, name in zip(item_rows, names, strict=True):
            if row.get("text") is not None:
                row[CLIP_FILE_FIELDS[fmt]] = name
    if claim is None:
        sys.stdout.write(render_transcripts(rows, plan.formats[0]))
        sys.stdout.flush()
        return
    layout = {"max_line_width": config.max_line_width, "max_line_count": config.max_line_count}
    staging = Path(tempfile.mkdtemp(prefix=".transcribe-", dir=claim.folder))
    try:
        written = []
        for fmt, names in plan.clip_files.items():
            for row, name in zip(item_rows, names):
                if row.get("text") is None:
                    continue  # a failed input has no file; its error is in the rows
                text = transcript_text(row) if fmt == "text" else cue_file(row, fmt, **layout)
                _write_text(staging / name, text)
                written.append(name)
        for fmt, name in plan.files.items():
            _write_text(staging / name, render_transcripts(rows, fmt))
            written.append(name)
        for name in written:
            os.replace(staging / name, claim.path(name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_text(path: Path, text: str) -> None:
    with atomic_write(path) as handle:  # synced, with the umask's mode
        handle.write(text)


def _claim(
    config: TranscribeConfig, plan: OutputPlan, items: list[AudioItem]
) -> OutputClaim | None:
    """The output file, or the files in the --out folder, checked against every input (None:
    standard output)."""
    if plan.to == "stdout" or config.out is None:
        return None
    inputs = [*config.inputs, *(item.audio for item in items)]
    if plan.to == "file":
        return claim_output_file("transcribe", config.out, inputs=inputs)
    return claim_outputs(
        "transcribe", config.out, names=plan.names, inputs=inputs, shared_folder=True
    )


def transcribe(config: TranscribeConfig) -> TranscribeResult:
    """Transcribe every input; bad files are reported in their rows, the rest transcribed."""
    formats = output_formats(config)
    config = replace(config, model=base_model_of(config.model, config.adapter))
    config.check_adapter_base()
    items, errors = collect_inputs(config.inputs)
    for row in errors:
        log.warning("%s: %s (%s)", row["id"], row["error"], row["detail"])
    if not items:
        raise VoxadaptError(f"nothing to transcribe: {len(errors)} inputs failed")
    if "txt" in formats:  # before any decoding: a format that cannot hold the ids is refused
        check_txt_ids([str(row["id"]) for row in errors] + [item.id for item in items])
    # Before any decoding: a bad --out must not cost it.
    plan = plan_outputs(config, formats, items, n_inputs=len(items) + len(errors))
    claim = _claim(config, plan, items)
    # loaded before decoding: a missing extra must not cost it
    redactor = Redactor.load() if config.redact else None
    with claim or contextlib.nullcontext():
        rows = _transcribe(config, items, errors)
        if redactor is not None:
            rows = [redactor.redact_row(row)[0] for row in rows]
        write_transcripts(rows, rows[len(errors) :], plan, claim, config)
    n_errors = sum(1 for row in rows if row.get("text") is None)
    return TranscribeResult(rows, n_errors, None if claim is None else config.out)


def _transcribe(
    config: TranscribeConfig, items: list[AudioItem], errors: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    transcriber = config.load_transcriber()
    aligner = config.load_aligner()  # before decoding: a bad --aligner must not cost it
    decoded, segments = split_long_form(items, config.decode)
    results: dict[int, Transcript | AudioError] = {}
    with AudioProgress(decoded, "transcribe") as progress:
        for batch in transcriber.transcribe(decoded, config.decode, on_token=progress.token):
            for item, result in batch:
                results[id(item)] = result
                if isinstance(result, AudioError):
                    log.warning("%s: %s (%s)", item.id, result.reason, result.detail)
            progress.done([item for item, _ in batch])
    rows = [
        transcript_row(item, *stitch(segments[id(item)], results))
        if id(item) in segments
        else transcript_row(item, results[id(item)])
        for item in items
    ]
    if aligner is not None:  # word timestamps, batched over every recording's segments
        languages = [config.decode.prompt_language(item.language) for item in items]
        add_words(aligner, rows, items, languages, config.decode.batch_size)
    return errors + rows
