"""The evaluate stage: transcribe a manifest, score it, write predictions, metrics and a report.

predictions.jsonl grows one line per utterance as batches finish (flushed and fsynced), so a
crash or a kill loses at most the batch in flight; `--resume` decodes only what is missing.
Scoring is `scoring.rates.score_row` + `scoring.metrics.compute_metrics`, the same path as
training's evaluation.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from voxadapt.audio import AudioError
from voxadapt.config import load_yaml, option, save_config, to_jsonable
from voxadapt.decoding import (
    MANIFEST_LANGUAGE,
    AudioItem,
    AudioProgress,
    DecodeOptions,
    FeatureSource,
    ModelChoice,
    Transcript,
    split_long_form,
    stitch,
)
from voxadapt.errors import ConfigError, VoxadaptError
from voxadapt.features import FeatureStore
from voxadapt.manifest import (
    Utterance,
    atomic_write,
    check_output_dir,
    language_problem,
)
from voxadapt.model import base_model_of
from voxadapt.scoring.rates import rescore
from voxadapt.scoring.rows import (
    read_compare,
    read_predictions,
    read_references,
    scored_row,
    write_scored,
)
from voxadapt.scoring.terms import load_terms

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.jsonl"
# Settings that must match for --resume to append to an existing predictions.jsonl.
_RUN_IDENTITY = ("manifest", "model", "adapter", "quantization", "cache")


@dataclass
class EvaluateConfig(ModelChoice):
    """Options of `voxadapt evaluate` (the YAML keys of `--config`)."""

    manifest: Path | None = option(
        None, help="JSONL with references (test.jsonl)", positional=True, metavar="MANIFEST"
    )
    out_dir: Path = option(Path("runs/eval"), help="output folder", flag="--out", metavar="DIR")
    cache: Path | None = option(
        None,
        help="feature cache from `voxadapt cache` (default: features from the audio)",
        metavar="DIR",
        group="model",
    )
    decode: DecodeOptions = option(help="decoding options", default_factory=DecodeOptions)
    limit: int | None = option(None, help="only the first N utterances", group="scoring")
    resume: bool = option(False, help="continue an interrupted run in --out")
    overwrite: bool = option(False, help="discard earlier predictions in --out")
    terms: Path | None = option(
        None,
        help="medical terms, one per line, for term recall",
        metavar="FILE",
        group="scoring",
    )
    compare: Path | None = option(
        None,
        help="another run's predictions.jsonl: paired bootstrap of the CER difference",
        metavar="PREDICTIONS",
        group="scoring",
    )
    bootstrap: int = option(1000, help="bootstrap resamples for 95% CIs (0 = off)", group="scoring")
    seed: int = option(0, help="bootstrap seed", group="scoring")
    report: bool = option(True, help="write report.html")

    def problems(self) -> list[str]:
        found = super().problems()
        if self.manifest is None:
            found.append("a manifest is required")
        elif not Path(self.manifest).is_file():
            found.append(f"manifest {self.manifest} does not exist")
        if self.resume and self.overwrite:
            found.append("--resume and --overwrite exclude each other")
        if self.limit is not None and self.limit < 1:
            found.append("limit must be >= 1")
        if self.bootstrap < 0:
            found.append("bootstrap must be >= 0")
        for name in ("terms", "compare"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                found.append(f"--{name} file {path} does not exist")
        return found


@dataclass
class EvaluateResult:
    metrics: dict[str, Any]
    predictions: Path
    metrics_path: Path
    report: Path | None
    decoded: int  # utterances decoded in this run (the rest came from a previous run)
    failed: list[dict[str, Any]] = field(default_factory=list)


def prediction_row(utterance: Utterance, result: Transcript | AudioError) -> dict[str, Any]:
    """One predictions.jsonl (or failed.jsonl) line: the scored row with decoding flags."""
    if isinstance(result, AudioError):
        row = scored_row(utterance, "")
        for key in ("hypothesis", "hypothesis_normalized", "scores", "multi_reference"):
            row.pop(key, None)
        return {**row, "audio": utterance.audio, "error": result.reason, "detail": result.detail}
    flags = {
        "n_tokens": result.n_tokens,
        "truncated": result.truncated,
        "repetition_loop": result.repetition_loop,
    }
    if result.language:
        flags["detected_language"] = result.language
    return scored_row(utterance, result.text, **flags)


def _check_resumable(config: EvaluateConfig, out_dir: Path) -> None:
    saved_path = out_dir / "evaluate_config.yaml"
    if not saved_path.is_file():
        return
    saved = load_yaml(saved_path)
    current = to_jsonable(config)
    changed = [k for k in _RUN_IDENTITY if str(saved.get(k)) != str(current.get(k))]
    # Worker count does not change a transcript; every other decoding option may.
    decode_saved, decode_now = dict(saved.get("decode") or {}), dict(current["decode"])
    for options in (decode_saved, decode_now):
        options.pop("num_workers", None)
    if str(decode_saved) != str(decode_now):
        changed.append("decode")
    if changed:
        raise ConfigError(
            f"--resume: {', '.join(changed)} differ from the run in {out_dir}; "
            "use another --out or --overwrite"
        )


def _read_utterances(config: EvaluateConfig) -> list[Utterance]:
    """The manifest's records (first --limit); their languages checked for --language
    manifest."""
    utterances = read_references(config.manifest, config.limit)
    if config.decode.language == MANIFEST_LANGUAGE:
        for utterance in utterances:
            problem = language_problem(utterance.language)
            if problem:
                raise VoxadaptError(f"{config.manifest}: utterance {utterance.id}: {problem}")
    return utterances


def _prepare_output(config: EvaluateConfig) -> tuple[Path, list[dict[str, Any]]]:
    """Check --out and --resume/--overwrite; return it and the rows of an earlier run."""
    out_dir = check_output_dir(config.out_dir)
    predictions = out_dir / PREDICTIONS
    if predictions.exists() and not (config.resume or config.overwrite):
        count = len(read_predictions(predictions))
        raise ConfigError(
            f"{predictions} exists ({count} rows): pass --resume to continue it "
            "or --overwrite to start over"
        )
    if config.resume:
        _check_resumable(config, out_dir)
    if config.overwrite and predictions.exists():
        predictions.unlink()
    return out_dir, read_predictions(predictions, repair=True) if config.resume else []


def _decode(config: EvaluateConfig, todo: list[Utterance], predictions: Path) -> list[dict]:
    """Decode `todo`, appending scored rows to `predictions`; returns the failed rows."""
    transcriber = config.load_transcriber()
    whole = [AudioItem.from_utterance(u) for u in todo]
    by_id = {u.id: u for u in todo}
    # long references are decoded as their speech segments and stitched (long-form mode)
    items, long_items = split_long_form(whole, config.decode)
    parent = {id(part): item for item in whole for part, _, _ in long_items.get(id(item), [])}
    store = FeatureStore(config.cache, transcriber.spec) if config.cache else None
    source = FeatureSource(items, transcriber.spec, store=store)
    failed: list[dict[str, Any]] = []
    results: dict[int, Transcript | AudioError] = {}
    with (
        predictions.open("a", encoding="utf-8") as handle,
        AudioProgress(items, "evaluate") as progress,
    ):
        for batch in transcriber.transcribe(items, config.decode, source, progress.token):
            finished = []
            for item, result in batch:
                results[id(item)] = result
                whole_item = parent.get(id(item))
                if whole_item is None:
                    finished.append((item, result, None))
                elif all(id(p) in results for p, _, _ in long_items[id(whole_item)]):
                    finished.append((whole_item, *stitch(long_items[id(whole_item)], results)))
            for item, result, segments in finished:
                row = prediction_row(by_id[item.id], result)
                if isinstance(result, AudioError):
                    failed.append(row)
                    continue
                if segments is not None:
                    row["segments"] = segments
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
            progress.done([item for item, _ in batch])
    silent = [item for item in whole if id(item) in long_items and not long_items[id(item)]]
    if silent:  # long references in which no speech was found: scored as empty output
        with predictions.open("a", encoding="utf-8") as handle:
            for item in silent:
                row = prediction_row(by_id[item.id], Transcript("", None, 0, False, None))
                handle.write(json.dumps({**row, "segments": []}, ensure_ascii=False) + "\n")
    return failed


def evaluate(config: EvaluateConfig) -> EvaluateResult:
    """Transcribe and score `config.manifest`; see EvaluateConfig."""
    config = replace(config, model=base_model_of(config.model, config.adapter))
    utterances = _read_utterances(config)
    wanted = {u.id for u in utterances}
    compare_rows = read_compare(config.compare, wanted, {u.id: u.text for u in utterances})
    terms = load_terms(config.terms) if config.terms else None
    out_dir, done_rows = _prepare_output(config)
    predictions = out_dir / PREDICTIONS
    done = {row["id"] for row in done_rows}
    todo = [u for u in utterances if u.id not in done]
    if config.resume:
        log.info("resuming: %d utterances done, %d to decode", len(done & wanted), len(todo))
    save_config(config, out_dir / "evaluate_config.yaml")
    failed = _decode(config, todo, predictions) if todo else []
    if failed:
        with atomic_write(out_dir / "failed.jsonl") as handle:
            for row in failed:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        log.warning("%d utterances could not be read; see %s", len(failed), "failed.jsonl")
    elif todo:
        (out_dir / "failed.jsonl").unlink(missing_ok=True)  # an earlier run's, now decoded

    rows = [row for row in rescore(read_predictions(predictions)) if row["id"] in wanted]
    extra = {
        "failed": len(failed),
        "model": str(config.model),
        "adapter": str(config.adapter) if config.adapter else None,
        "decode": to_jsonable(config.decode),
    }
    metrics, metrics_path, report_path = write_scored(
        out_dir,
        rows,
        utterances,
        terms=terms,
        compare_rows=compare_rows,
        bootstrap=config.bootstrap,
        seed=config.seed,
        report=config.report,
        extra=extra,
    )
    return EvaluateResult(metrics, predictions, metrics_path, report_path, len(todo), failed)
