"""The evaluate stage: transcribe a manifest, score it, write predictions, metrics and a report.

predictions.jsonl grows one line per utterance as batches finish (flushed and fsynced), so a
crash or a kill loses at most the batch in flight; `--resume` decodes only what is missing.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxadapt.audio import AudioError
from voxadapt.config import save_config, to_jsonable
from voxadapt.errors import ConfigError, VoxadaptError
from voxadapt.infer import AudioItem, DecodeOptions, Transcriber, Transcript, transcript_row
from voxadapt.manifest import atomic_write, read_manifest
from voxadapt.metrics import (
    bootstrap_interval,
    breakdowns,
    corpus_metrics,
    load_terms,
    pair_scores,
    paired_bootstrap,
    term_recall,
)
from voxadapt.model import DTYPES
from voxadapt.text import SCORING_NORMALIZATION_VERSION, normalize_for_scoring

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.jsonl"
# Settings that must match for --resume to append to an existing predictions.jsonl.
_RUN_IDENTITY = ("manifest", "model", "adapter", "quantization", "language")


@dataclass
class EvaluateConfig:
    """Options of `voxadapt evaluate` (the YAML keys of `--config`)."""

    manifest: Path | None = None  # JSONL from `voxadapt prepare` (test.jsonl)
    model: str = "mistralai/Voxtral-Mini-3B-2507"
    adapter: Path | None = None  # None: the base model (zero-shot baseline)
    out_dir: Path = Path("runs/eval")
    quantization: str | None = None  # default: as the adapter trained (nf4 without one)
    dtype: str | None = None
    device: str | None = None
    language: str = "ko"  # prompt language; "auto" = model detects; "manifest" = per record
    batch_size: int = 16
    tokens_per_s: float = 15.0
    max_new_tokens: int | None = None
    min_new_tokens: int | None = None
    num_workers: int = 2
    limit: int | None = None  # evaluate only the first N utterances
    resume: bool = False  # continue an interrupted run in out_dir
    overwrite: bool = False  # start over even if out_dir has predictions
    terms: Path | None = None  # medical terms, one per line, for term recall
    compare: Path | None = None  # another predictions.jsonl for a paired bootstrap
    bootstrap: int = 1000  # resamples for confidence intervals (0 = none)
    seed: int = 0
    report: bool = True  # write report.html

    def problems(self) -> list[str]:
        found = []
        if self.manifest is None:
            found.append("a manifest is required")
        elif not Path(self.manifest).is_file():
            found.append(f"manifest {self.manifest} does not exist")
        if self.resume and self.overwrite:
            found.append("--resume and --overwrite exclude each other")
        if self.batch_size < 1:
            found.append("batch_size must be >= 1")
        if self.dtype is not None and self.dtype not in DTYPES:
            found.append(f"dtype must be one of {', '.join(DTYPES)}")
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


def score_row(reference: str, hypothesis: str) -> dict[str, Any]:
    """Normalized forms and per-utterance edit counts of one pair."""
    ref_norm, hyp_norm = normalize_for_scoring(reference), normalize_for_scoring(hypothesis)
    return {
        "reference_normalized": ref_norm,
        "hypothesis_normalized": hyp_norm,
        "scores": pair_scores(ref_norm, hyp_norm),
        "scoring": SCORING_NORMALIZATION_VERSION,
    }


def prediction_row(item: AudioItem, result: Transcript) -> dict[str, Any]:
    """One predictions.jsonl line: manifest fields, reference, hypothesis, scores, flags."""
    row = transcript_row(item, result)
    hypothesis = row.pop("text")
    reference = item.record.get("text", "")
    row.pop("raw_text", None)
    row.update(reference=reference, hypothesis=hypothesis, **score_row(reference, hypothesis))
    return row


def read_predictions(path: Path, *, repair: bool = False) -> list[dict[str, Any]]:
    """Rows of a predictions.jsonl, first occurrence of each id.

    With `repair`, a torn last line (the process was killed mid-write) is cut off the file
    so appending can continue cleanly.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if repair and end < len(data):
        log.warning("%s: dropping a torn last line from an interrupted run", path)
        with path.open("r+b") as handle:
            handle.truncate(end)
    rows, seen = [], set()
    for line in data[:end].decode("utf-8").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("id") in seen:
            continue
        seen.add(row.get("id"))
        rows.append(row)
    return rows


def rescore(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Recompute scores of rows scored under another normalization version."""
    for row in rows:
        if row.get("scoring") != SCORING_NORMALIZATION_VERSION:
            row.update(score_row(row.get("reference") or "", row.get("hypothesis") or ""))
    return rows


def compute_metrics(
    rows: list[dict[str, Any]],
    *,
    terms: list[str] | None = None,
    compare_rows: list[dict[str, Any]] | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """metrics.json content: headline numbers, CIs, breakdowns, term recall, comparison."""
    metrics: dict[str, Any] = {
        "scoring_normalization": SCORING_NORMALIZATION_VERSION,
        **corpus_metrics(rows),
    }
    if bootstrap:
        for key in ("cer", "wer"):
            interval = bootstrap_interval(rows, key=key, resamples=bootstrap, seed=seed)
            if interval:
                metrics[f"{key}_ci95"] = list(interval)
        metrics["bootstrap"] = {"resamples": bootstrap, "seed": seed, "unit": "speaker"}
    metrics["breakdowns"] = breakdowns(rows)
    if terms:
        metrics["term_recall"] = term_recall(rows, terms)
    if compare_rows is not None:
        metrics["compare"] = paired_bootstrap(
            rows, rescore(compare_rows), resamples=max(bootstrap, 1), seed=seed
        )
    return metrics


def _check_resumable(config: EvaluateConfig, out_dir: Path) -> None:
    saved_path = out_dir / "evaluate_config.yaml"
    if not saved_path.is_file():
        return
    from voxadapt.config import load_yaml

    saved = load_yaml(saved_path)
    current = to_jsonable(config)
    changed = [k for k in _RUN_IDENTITY if str(saved.get(k)) != str(current.get(k))]
    if changed:
        raise ConfigError(
            f"--resume: {', '.join(changed)} differ from the run in {out_dir}; "
            "use another --out or --overwrite"
        )


def evaluate(config: EvaluateConfig) -> EvaluateResult:
    """Transcribe and score `config.manifest`; see EvaluateConfig."""
    from tqdm import tqdm

    problems = config.problems()
    if problems:
        raise ConfigError("; ".join(problems))
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictions = out_dir / PREDICTIONS
    utterances = read_manifest(config.manifest)
    if not utterances:
        raise VoxadaptError(f"the manifest {config.manifest} is empty")
    if config.limit:
        utterances = utterances[: config.limit]
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
    done_rows = read_predictions(predictions, repair=True) if config.resume else []
    done = {row["id"] for row in done_rows}
    wanted = {u.id for u in utterances}
    todo = [u for u in utterances if u.id not in done]
    if config.resume:
        log.info("resuming: %d utterances done, %d to decode", len(done & wanted), len(todo))
    save_config(config, out_dir / "evaluate_config.yaml")

    failed: list[dict[str, Any]] = []
    if todo:
        transcriber = Transcriber.load(
            config.model,
            config.adapter,
            quantization=config.quantization,
            device=config.device,
            dtype=config.dtype,
        )
        language = None if config.language == "auto" else config.language
        items = [
            AudioItem(
                u.id,
                u.audio,
                u.duration,
                language=u.language if config.language == "manifest" else None,
                record=u.to_dict(),
            )
            for u in todo
        ]
        options = DecodeOptions(
            batch_size=config.batch_size,
            language=language,
            tokens_per_s=config.tokens_per_s,
            max_new_tokens=config.max_new_tokens,
            min_new_tokens=config.min_new_tokens,
            num_workers=config.num_workers,
        )
        with (
            predictions.open("a", encoding="utf-8") as handle,
            tqdm(total=len(items), desc="evaluate", unit="utt", disable=None) as progress,
        ):
            for batch in transcriber.transcribe(items, options):
                for item, result in batch:
                    if isinstance(result, AudioError):
                        failed.append(transcript_row(item, result))
                        continue
                    row = prediction_row(item, result)
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
                progress.update(len(batch))
    if failed:
        with atomic_write(out_dir / "failed.jsonl") as handle:
            for row in failed:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        log.warning("%d utterances could not be read; see %s", len(failed), "failed.jsonl")

    rows = [row for row in rescore(read_predictions(predictions)) if row["id"] in wanted]
    terms = load_terms(config.terms) if config.terms else None
    compare_rows = read_predictions(config.compare) if config.compare else None
    metrics = compute_metrics(
        rows, terms=terms, compare_rows=compare_rows, bootstrap=config.bootstrap, seed=config.seed
    )
    metrics["failed"] = len(failed)
    metrics["model"] = str(config.model)
    metrics["adapter"] = str(config.adapter) if config.adapter else None
    metrics_path = out_dir / "metrics.json"
    with atomic_write(metrics_path) as handle:
        json.dump(metrics, handle, indent=2, ensure_ascii=False)
    report_path = None
    if config.report:
        from voxadapt.report import write_report

        report_path = write_report(out_dir / "report.html", metrics, rows)
    return EvaluateResult(metrics, predictions, metrics_path, report_path, len(todo), failed)
