"""The transcribe stage: audio files, folders or manifests -> JSONL, `id<TAB>text` or SRT."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from voxadapt.audio import (
    UNSUPPORTED_AUDIO_SUFFIXES,
    AudioError,
    probe_audio,
    unsupported_audio_detail,
)
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
from voxadapt.errors import VoxadaptError
from voxadapt.manifest import (
    Utterance,
    atomic_write,
    iter_jsonl,
)
from voxadapt.model import base_model_of
from voxadapt.outputs import OutputClaim, claim_output_file, claim_outputs
from voxadapt.scoring.rows import FAILED_MARK
from voxadapt.subtitles import cue_file, cue_name, srt_names

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".oga", ".aiff", ".aif", ".w64"}
OUTPUT_FORMATS = ("jsonl", "txt", "srt", "vtt")
CUE_FORMATS = ("srt", "vtt")  # one cue file per input, one cue per segment


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
        help="output file (.jsonl / .txt) or folder (srt); default: text on stdout",
        metavar="PATH",
    )
    format: str | None = option(
        None,
        help="jsonl (all fields and flags), txt (id<TAB>text) or srt (one file per clip); "
        "default from --out's suffix, txt on stdout",
        choices=OUTPUT_FORMATS,
    )
    decode: DecodeOptions = option(help="decoding options", default_factory=DecodeOptions)

    def problems(self) -> list[str]:
        found = super().problems()
        if not self.inputs:
            found.append("give at least one audio file, folder or manifest")
        if self.format in CUE_FORMATS and self.out is None:
            found.append(f"--format {self.format} writes one file per input: give --out FOLDER")
        return found


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
            files = sorted(p for p in path.rglob("*") if p.is_file())
            found = [p for p in files if p.suffix.lower() in AUDIO_SUFFIXES]
            unsupported = [p for p in files if p.suffix.lower() in UNSUPPORTED_AUDIO_SUFFIXES]
            for other in unsupported:
                ident, detail = str(other.relative_to(path)), unsupported_audio_detail(other)
                errors.append(_error_row(ident, str(other), "unsupported_audio_format", detail))
            if not found and not unsupported:
                errors.append(_error_row(str(path), str(path), "no_audio", "no audio files"))
            for audio in found:
                _add_audio_file(audio, items, errors, ident=str(audio.relative_to(path)))
        elif path.suffix.lower() in {".jsonl", ".json"} and path.is_file():
            _add_manifest(path, items, errors)
        else:
            _add_audio_file(path, items, errors, ident=str(path))
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
    path: Path, items: list[AudioItem], errors: list[dict[str, Any]], *, ident: str
) -> None:
    if not path.exists():
        errors.append(_error_row(ident, str(path), "missing_audio", "no such file"))
        return
    try:
        info = probe_audio(path)
    except AudioError as exc:
        errors.append(_error_row(ident, str(path.resolve()), exc.reason, exc.detail))
        return
    items.append(AudioItem(ident, str(path.resolve()), info.duration))


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


def output_format(config: TranscribeConfig) -> str:
    """The format asked for, else guessed from --out (folder -> srt), else txt on stdout."""
    if config.format:
        return config.format
    if config.out is None:
        return "txt"
    suffix = config.out.suffix.lower().lstrip(".")
    return suffix if suffix in OUTPUT_FORMATS else "jsonl"


def _write_cue_folder(rows: list[dict[str, Any]], out: Path, fmt: str) -> None:
    """Write the cue files into a temporary folder, then move them into `out` together."""
    done = [row for row in rows if row.get("text") is not None]
    staging = Path(tempfile.mkdtemp(prefix=f".{fmt}-", dir=out))
    try:
        names = srt_names([str(r["id"]) for r in done])
        for row, name in zip(done, (cue_name(n, fmt) for n in names)):
            row[fmt] = name
            (staging / name).write_text(cue_file(row, fmt), "utf-8")
        for name in (row[fmt] for row in done):
            (staging / name).replace(out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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


def write_transcripts(rows: list[dict[str, Any]], fmt: str, out: Path | None) -> None:
    """Write rows as JSONL, `id<TAB>text` lines, or one SRT cue file per clip."""
    if fmt in CUE_FORMATS:
        assert out is not None
        _write_cue_folder(rows, out, fmt)
        return
    if fmt == "jsonl":
        lines = [json.dumps(row, ensure_ascii=False) for row in rows]
    else:
        lines = [_text_line(row) for row in rows]
    text = "".join(line + "\n" for line in lines)
    if out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    with atomic_write(out) as handle:
        handle.write(text)


def _claim(config: TranscribeConfig, fmt: str, items: list[AudioItem]) -> OutputClaim | None:
    """The output file, or the cue files in the --out folder, checked against every input
    (None: standard output)."""
    if config.out is None or str(config.out) == "-":
        return None
    inputs = [*config.inputs, *(item.audio for item in items)]
    if fmt in CUE_FORMATS:
        names = [cue_name(name, fmt) for name in srt_names([item.id for item in items])]
        return claim_outputs(
            "transcribe", config.out, names=names, inputs=inputs, shared_folder=True
        )
    return claim_output_file("transcribe", config.out, inputs=inputs)


def transcribe(config: TranscribeConfig) -> TranscribeResult:
    """Transcribe every input; bad files are reported in their rows, the rest transcribed."""
    fmt = output_format(config)
    config = replace(config, model=base_model_of(config.model, config.adapter))
    config.check_adapter_base()
    items, errors = collect_inputs(config.inputs)
    for row in errors:
        log.warning("%s: %s (%s)", row["id"], row["error"], row["detail"])
    if not items:
        raise VoxadaptError(f"nothing to transcribe: {len(errors)} inputs failed")
    if fmt == "txt":  # before any decoding: a format that cannot hold the ids is refused
        check_txt_ids([str(row["id"]) for row in errors] + [item.id for item in items])
    claim = _claim(config, fmt, items)  # before any decoding: a bad --out must not cost it
    with claim or contextlib.nullcontext():
        rows = _transcribe(config, items, errors)
        if claim is None:
            write_transcripts(rows, fmt, None)
        else:
            cue_folder = fmt in CUE_FORMATS
            write_transcripts(rows, fmt, claim.folder if cue_folder else claim.path(claim.names[0]))
    n_errors = sum(1 for row in rows if row.get("text") is None)
    return TranscribeResult(rows, n_errors, None if claim is None else config.out)


def _transcribe(
    config: TranscribeConfig, items: list[AudioItem], errors: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    transcriber = config.load_transcriber()
    decoded, segments = split_long_form(items, config.decode)
    results: dict[int, Transcript | AudioError] = {}
    with AudioProgress(decoded, "transcribe") as progress:
        for batch in transcriber.transcribe(decoded, config.decode, on_token=progress.token):
            for item, result in batch:
                results[id(item)] = result
                if isinstance(result, AudioError):
                    log.warning("%s: %s (%s)", item.id, result.reason, result.detail)
            progress.done([item for item, _ in batch])
    return errors + [
        transcript_row(item, *stitch(segments[id(item)], results))
        if id(item) in segments
        else transcript_row(item, results[id(item)])
        for item in items
    ]
