"""The transcribe stage: audio files, folders or manifests -> JSONL, `id<TAB>text`, plain
text, SRT or WebVTT (several of them from one decode)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from voxadapt.adapters import base_model_of
from voxadapt.alignment import add_words
from voxadapt.audio import AUDIO_SUFFIXES, AudioError, probe_audio
from voxadapt.config import option
from voxadapt.decoding import AudioItem, DecodeOptions, ModelChoice, Transcript
from voxadapt.errors import VoxadaptError
from voxadapt.longform import AudioProgress, split_long_form, stitch
from voxadapt.manifest import Utterance, iter_jsonl
from voxadapt.outputs import OutputClaim, claim_output_file, claim_outputs
from voxadapt.redact import Redactor
from voxadapt.transcript_files import (
    CLIP_SUFFIXES,
    CUE_FORMATS,
    INPUTS_INDEX,
    OUTPUT_FORMATS,
    OutputPlan,
    check_earlier_inputs,
    check_txt_ids,
    is_folder,
    plan_outputs,
    write_transcripts,
)

log = logging.getLogger(__name__)

# Without --format, --out's suffix names the format (any other suffix: jsonl).
SUFFIX_FORMATS = {".jsonl": "jsonl", ".txt": "txt", ".srt": "srt", ".vtt": "vtt"}
# Exit status of a run in which some inputs failed (all failing: 1, an error).
SOME_FAILED = 3


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
        "a folder holding transcripts.jsonl, transcripts.txt and <clip>.txt/.srt/.vtt, named "
        "by the input's file name (a folder's files: by their path in it; a manifest's rows: "
        "by id); two inputs that would get one name (day1/REC001.wav, day2/REC001.wav) are "
        "refused before decoding; default: standard output",
        metavar="PATH",
    )
    format: str | None = option(
        None,
        help="jsonl (every field and flag; a failed input: a row with `error` and `detail`), "
        "txt (id<TAB>text lines, read by score; a failed input: id<TAB>[error: reason]), "
        "text (the transcript only, one .txt per input), srt or vtt (subtitles, one file per "
        "input; silence gives a file without cues; a failed input has no file); "
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
    overwrite: bool = option(
        False,
        help="replace per-input files in --out that an earlier run wrote for another input "
        "of the same name (day1/REC001.wav's REC001.srt, now for day2/REC001.wav); without "
        "it such a run is refused before decoding",
        invocation=True,
    )
    allow_failures: bool = option(
        False,
        help="exit 0 when some inputs failed (missing or unreadable audio, a bad manifest "
        "line); without it such a run exits 3 (all failing: 1). Failed inputs are "
        "id<TAB>[error: reason] lines in txt, rows with `error` and `detail` in jsonl, and "
        "get no text/srt/vtt file",
        invocation=True,
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
    if out.suffix.lower() not in SUFFIX_FORMATS or is_folder(out):
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
    rows_file: Path | None = None  # the jsonl/txt file holding the failed inputs' rows
    allow_failures: bool = False  # --allow-failures: failed inputs do not change the exit

    @property
    def exit_status(self) -> int:
        """0: all transcribed (or --allow-failures); 3: some inputs failed; 1: all did."""
        if self.n_errors >= len(self.rows):
            return 1
        return SOME_FAILED if self.n_errors and not self.allow_failures else 0


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
    # the index of which input each per-input file holds is claimed (and locked) with them
    names = [*plan.names, INPUTS_INDEX] if plan.clip_files else plan.names
    return claim_outputs("transcribe", config.out, names=names, inputs=inputs, shared_folder=True)


def transcribe(config: TranscribeConfig) -> TranscribeResult:
    """Transcribe every input; bad files are reported in their rows, the rest transcribed.
    Everything about the outputs is checked before the model loads; a file that cannot be
    written is reported (VoxadaptError) after the others are."""
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
    plan = plan_outputs(config.out, formats, items, n_inputs=len(items) + len(errors))
    claim = _claim(config, plan, items)
    if claim is not None and plan.to == "folder" and not config.overwrite:
        check_earlier_inputs(claim, plan, items)
    # loaded before decoding: a missing extra must not cost it
    redactor = Redactor.load() if config.redact else None
    with claim or contextlib.nullcontext():
        rows = _transcribe(config, items, errors)
        if redactor is not None:
            rows = [redactor.redact_row(row)[0] for row in rows]
        failed = write_transcripts(
            rows,
            rows[len(errors) :],
            plan,
            claim,
            items,
            max_line_width=config.max_line_width,
            max_line_count=config.max_line_count,
        )
    if failed:
        shown = "; ".join(f"{name} ({reason})" for name, reason in failed.items())
        raise VoxadaptError(
            f"{len(failed)} output file{'s' if len(failed) > 1 else ''} could not be written "
            f"to {claim.folder if claim else config.out}: {shown}; the others were written"
        )
    n_errors = sum(1 for row in rows if row.get("text") is None)
    rows_file = None  # where the failed inputs' rows are, for the summary
    if claim is not None and plan.files:
        file_name = next(iter(plan.files.values()))
        rows_file = Path(config.out) if plan.to == "file" else Path(config.out) / file_name
    return TranscribeResult(
        rows,
        n_errors,
        None if claim is None else config.out,
        rows_file=rows_file,
        allow_failures=config.allow_failures,
    )


def _transcribe(
    config: TranscribeConfig, items: list[AudioItem], errors: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    transcriber = config.load_transcriber()
    aligner = config.load_aligner()  # before decoding: a bad --aligner must not cost it
    decoded, segments = split_long_form(items, config.decode)
    results: dict[int, Transcript | AudioError] = {}
    # counted in seconds of the recordings (their silence included), not of speech decoded
    with AudioProgress(items, "transcribe", segments=segments) as progress:
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
