"""The redact stage: transcripts in, the same transcripts with every identifier replaced by a
typed tag out, plus where each one was (never what it said), and optionally the recordings
with those stretches silenced.

Inputs: transcribe/evaluate JSONL (text, hypothesis, reference, segments, words),
`id<TAB>text` lines, SRT, WebVTT, plain text, or `-` (standard input). Each output has its
input's name and format under --out; times and structure are unchanged.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxadapt.config import Config, option, save_config
from voxadapt.errors import ConfigError
from voxadapt.manifest import atomic_write
from voxadapt.outputs import OutputClaim, claim_outputs
from voxadapt.redact import TAGS, Redactor, resolve_types
from voxadapt.redact.engine import check_tag
from voxadapt.redact.files import Document, read_document, redact_document
from voxadapt.staging import make_staging_dir

log = logging.getLogger(__name__)

RECORDS = "redactions.jsonl"
SUMMARY = "redact_summary.json"
CONFIG = "redact_config.yaml"
EVALUATION = "redact_eval.json"
AUDIO = "audio"


@dataclass
class RedactConfig(Config):
    """Options of `voxadapt redact`."""

    out_dir: Path = option(help="output folder", flag="--out", metavar="DIR")
    inputs: list[Path] = option(
        help="transcripts: JSONL (transcribe, evaluate), id<TAB>text .txt, .srt, .vtt, plain "
        "text, or - for standard input",
        default_factory=list,
        positional=True,
        metavar="INPUT",
    )
    types: list[str] | None = option(
        None,
        help="what to remove, separated by commas (keys or tags: phone, 전화번호); default: "
        f"all of {', '.join(TAGS)}",
        metavar="TYPES",
    )
    keep_types: list[str] | None = option(
        None, help="types to leave in the text (e.g. birth_date,address)", metavar="TYPES"
    )
    tag: str = option(
        "[{type}]",
        help="replacement: a format with {type} (the Korean tag, 전화번호) or {key} (phone), "
        "or a fixed mask such as ***",
        metavar="FORMAT",
    )
    patterns: Path | None = option(
        None,
        help="YAML with your hospital's patient-number cues and shapes (see "
        "configs/redact-patterns.yml)",
        metavar="FILE.yml",
    )
    gold: Path | None = option(
        None,
        help="labelled JSONL (text + spans): report character precision/recall per type",
        metavar="GOLD.jsonl",
    )
    audio: bool = option(
        False,
        help="write DIR/audio/<id>.wav: each JSONL row's recording (field audio) with its "
        "identifiers silenced, where the row has word times (transcribe --aligner); rows "
        "without them are listed",
    )
    audio_margin_s: float = option(0.1, help="seconds silenced before and after each span")

    def problems(self) -> list[str]:
        found = super().problems()
        if not self.inputs and self.gold is None:
            found.append("give at least one transcript (or - for standard input), or --gold")
        if sum(1 for path in self.inputs if str(path) == "-") > 1:
            found.append("- (standard input) can be given once")
        for path in self.inputs:
            if str(path) != "-" and not Path(path).is_file():
                what = "is a folder" if Path(path).is_dir() else "does not exist"
                found.append(f"input {path} {what}: give transcript files")
        for name in ("patterns", "gold"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                found.append(f"--{name} file {path} does not exist")
        for flag, names in (("--types", self.types), ("--keep-types", self.keep_types)):
            unknown = resolve_types(names or [])[1]
            if unknown:
                found.append(f"{flag}: unknown {', '.join(unknown)}; types: {', '.join(TAGS)}")
        problem = check_tag(self.tag)
        if problem:
            found.append(problem)
        if self.audio_margin_s < 0:
            found.append("--audio-margin-s must be >= 0")
        return found


@dataclass
class RedactResult:
    out_dir: Path
    outputs: list[Path]  # the redacted transcripts
    counts: dict[str, int]  # identifiers removed per type
    records: Path
    summary: Path
    evaluation: dict[str, Any] | None = None
    audio_written: list[Path] = field(default_factory=list)
    audio_untimed: list[str] = field(default_factory=list)  # row ids without word times


def _read_inputs(config: RedactConfig) -> list[Document]:
    documents = []
    for path in config.inputs:
        source = str(path)
        try:
            data = sys.stdin.buffer.read() if source == "-" else Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {source}: {exc.strerror or exc}") from None
        documents.append(read_document(source, data))
    names = Counter(document.name for document in documents)
    clashes = sorted(name for name, count in names.items() if count > 1)
    if clashes:
        raise ConfigError(
            f"several inputs are named {clashes[0]}; their outputs would share one name: "
            "redact them into separate --out folders"
        )
    reserved = {RECORDS, SUMMARY, CONFIG, EVALUATION, AUDIO} & set(names)
    if reserved:
        raise ConfigError(f"an input is named {reserved.pop()}, which redact writes itself")
    return documents


def redact(config: RedactConfig) -> RedactResult:
    """Redact every input into --out (see the module docstring)."""
    documents = _read_inputs(config)
    names = [document.name for document in documents] + [RECORDS, SUMMARY, CONFIG]
    names += [EVALUATION] if config.gold else []
    names += [AUDIO] if config.audio else []
    audio_inputs = _audio_inputs(documents) if config.audio else []
    claim = claim_outputs(
        "redact",
        config.out_dir,
        names=names,
        inputs=[
            *(p for p in config.inputs if str(p) != "-"),
            config.gold,
            config.patterns,
            *audio_inputs,
        ],
    )
    redactor = Redactor.load(config.types, config.keep_types, config.tag, config.patterns)
    with claim:
        return _redact(config, claim, documents, redactor)


def _audio_inputs(documents: list[Document]) -> list[str]:
    paths = []
    for document in documents:
        if document.fmt == "jsonl":
            for line in document.content.split("\n"):
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # redact_document names the bad line
                audio = row.get("audio") if isinstance(row, dict) else None
                paths += [audio] if isinstance(audio, str) else []
    return paths


def _redact(
    config: RedactConfig, claim: OutputClaim, documents: list[Document], redactor: Redactor
) -> RedactResult:
    staging = make_staging_dir(claim.folder, "redact")  # a dead run's is swept
    try:
        records: list[dict[str, Any]] = []
        timed_rows: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
        for document in documents:
            redacted = redact_document(document, redactor)
            _write_text(staging / document.name, redacted.content)
            records += redacted.records
            timed_rows += redacted.rows
        with atomic_write(staging / RECORDS) as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        counts = Counter(r["type"] for r in records if not r.get("continued"))
        counts = dict(sorted(counts.items()))
        evaluation = None
        if config.gold is not None:
            from voxadapt.redact.evaluation import evaluate_gold

            evaluation = evaluate_gold(redactor, config.gold)
            _write_text(staging / EVALUATION, json.dumps(evaluation, ensure_ascii=False, indent=2))
        written: list[str] = []
        untimed: list[str] = []
        if config.audio:
            from voxadapt.redact.audio import silence_recordings

            written, untimed = silence_recordings(
                timed_rows, staging / AUDIO, config.audio_margin_s
            )
        summary = {
            "inputs": [document.source for document in documents],
            "redactions": len(records),
            "by_type": counts,
            "types": redactor.types,
            "audio_written": len(written),
            "audio_without_word_times": untimed,
        }
        _write_text(staging / SUMMARY, json.dumps(summary, ensure_ascii=False, indent=2))
        save_config(config, staging / CONFIG)
        for name in claim.names:
            target = claim.path(name)
            if name == AUDIO and target.is_dir():
                shutil.rmtree(target)  # the previous run's copies (the ledger says ours)
            if (staging / name).exists():
                os.replace(staging / name, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return RedactResult(
        claim.folder,
        [claim.path(document.name) for document in documents],
        counts,
        claim.path(RECORDS),
        claim.path(SUMMARY),
        evaluation,
        [claim.folder / AUDIO / name for name in written],
        untimed,
    )


def _write_text(path: Path, text: str) -> None:
    with atomic_write(path) as handle:
        handle.write(text)
