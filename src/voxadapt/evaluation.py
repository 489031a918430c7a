"""The evaluation engine of `evaluate` and `compare`: transcribe a manifest, score it, write
predictions, metrics and a report into a folder the stage has claimed.

predictions.jsonl grows one line per utterance as batches finish (flushed and fsynced), so a
crash or a kill loses at most the batch in flight; `--resume` decodes only what is missing.
Scoring is `scoring.rates.score_row` + `scoring.metrics.compute_metrics`, the same path as
training's evaluation.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxadapt.alignment import add_words
from voxadapt.audio import AudioError
from voxadapt.config import option, save_config, to_jsonable
from voxadapt.decoding import (
    MANIFEST_LANGUAGE,
    AudioItem,
    DecodeOptions,
    FeatureSource,
    ModelChoice,
    Transcript,
)
from voxadapt.errors import ConfigError, VoxadaptError
from voxadapt.families import family_of
from voxadapt.features import FeatureStore
from voxadapt.identity import (
    IDENTITY_FILE,
    adapter_identity,
    audio_identity,
    changes,
    decode_identity,
    model_identity,
    read_identity,
    reference_identity,
    write_identity,
)
from voxadapt.longform import AudioProgress, split_long_form, stitch
from voxadapt.manifest import Utterance, atomic_write
from voxadapt.scoring.rows import (
    read_compare,
    read_predictions,
    read_references,
    rescore_against,
    scored_row,
    write_scored,
)
from voxadapt.scoring.terms import load_terms
from voxadapt.text import SCORING_POLICIES

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.jsonl"
OUTPUTS = (
    PREDICTIONS,
    "metrics.json",
    "report.html",
    "evaluate_config.yaml",
    "failed.jsonl",
    IDENTITY_FILE,
)
REPLACED = "replaced"  # --overwrite moves the earlier outputs here once the model has loaded


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
    resume: bool = option(False, help="continue an interrupted run in --out", invocation=True)
    overwrite: bool = option(False, help="discard earlier predictions in --out", invocation=True)
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
    normalize: str = option(
        "default",
        help="scoring normalization: default, or numbers (digits read as Korean, so 3개 = "
        "세 개 and 38.5도 = 삼십팔 점 오 도; recorded in metrics.json)",
        choices=tuple(SCORING_POLICIES),
        metavar="POLICY",
        group="scoring",
    )
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
    usage: DecodeUsage | None = None  # time and memory of this run's decoding (None: none)
    # the scored rows the metrics were computed from, in manifest order
    rows: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class DecodeUsage:
    """What decoding cost: wall time against the audio it covered, and memory."""

    decode_s: float  # wall time of decoding, model loading excluded
    audio_s: float  # seconds of audio decoded
    weights_gib: float  # the loaded model's parameters and buffers
    peak_gib: float | None  # peak CUDA memory allocated while decoding (None on CPU)
    device: str

    @property
    def rtf(self) -> float | None:
        """Real-time factor: decoding seconds per second of audio (< 1 is faster than real
        time)."""
        return self.decode_s / self.audio_s if self.audio_s else None


def _weights_gib(model: Any) -> float:
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors) / 2**30


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


def _read_utterances(config: EvaluateConfig) -> list[Utterance]:
    """The manifest's records (first --limit); their languages checked for --language
    manifest (against what the model's family can be told, before the model loads)."""
    utterances = read_references(config.manifest, config.limit)
    if config.decode.language == MANIFEST_LANGUAGE:
        family = family_of(config.model)
        for utterance in utterances:
            problem = utterance.language and family.language_problem(utterance.language)
            if problem:
                raise VoxadaptError(f"{config.manifest}: utterance {utterance.id}: {problem}")
    return utterances


def run_identity(config: EvaluateConfig, utterances: list[Utterance]) -> dict[str, Any]:
    """What the predictions of this run are made of (see `voxadapt.identity`)."""
    return {
        "manifest_audio": audio_identity(utterances),
        "references": reference_identity(utterances),
        "model": model_identity(config.model),
        "adapter": adapter_identity(config.adapter),
        "quantization": config.quantization,
        **decode_identity(to_jsonable(config.decode)),
        # only when set: the identities of runs without word timestamps stay as they were
        **({"aligner": model_identity(config.aligner)} if config.aligner else {}),
    }


def _earlier_rows(
    config: EvaluateConfig, out_dir: Path, identity: dict[str, Any]
) -> list[dict[str, Any]]:
    """The rows of an earlier run to keep (--resume), after checking it is the same run;
    refuses to touch an earlier run without --resume or --overwrite."""
    predictions = out_dir / PREDICTIONS
    if not predictions.exists() or config.overwrite:
        return []
    if not config.resume:
        count = len(read_predictions(predictions))
        raise ConfigError(
            f"{predictions} exists ({count} rows): pass --resume to continue it "
            "or --overwrite to start over"
        )
    saved = read_identity(out_dir)
    if saved is None:
        raise ConfigError(
            f"--resume: {out_dir} records no run identity (an older voxadapt, or not an "
            "evaluate folder); use --overwrite or another --out"
        )
    changed = [c for c in changes(saved, identity) if not c.startswith("references:")]
    if changed:
        raise ConfigError(
            f"--resume: this run differs from the one in {out_dir} ({'; '.join(changed)}); "
            "resume with the same values, or use --overwrite or another --out"
        )
    if saved.get("references") != identity["references"]:
        log.info("--resume: the references changed; decoded rows are re-scored against them")
    return read_predictions(predictions, repair=True)


def _move_aside(out_dir: Path) -> None:
    """--overwrite, once the model has loaded: the earlier outputs go to OUT/replaced/."""
    earlier = [name for name in OUTPUTS if (out_dir / name).exists()]
    if not earlier:
        return
    replaced = out_dir / REPLACED
    shutil.rmtree(replaced, ignore_errors=True)
    replaced.mkdir()
    for name in earlier:
        os.replace(out_dir / name, replaced / name)
    log.info("--overwrite: the earlier outputs were moved to %s", replaced)


def _decode(
    config: EvaluateConfig, todo: list[Utterance], predictions: Path, identity: dict[str, Any]
) -> tuple[list[dict], DecodeUsage]:
    """Decode `todo`, appending scored rows to `predictions`; returns the failed rows and
    what decoding cost."""
    import torch

    transcriber = config.load_transcriber()
    aligner = config.load_aligner()
    device = transcriber.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    if config.overwrite:
        _move_aside(predictions.parent)
    write_identity(predictions.parent, identity)
    save_config(config, predictions.parent / "evaluate_config.yaml")
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
        AudioProgress(whole, "evaluate", segments=long_items) as progress,  # file seconds
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
            scored = []
            for item, result, segments in finished:
                row = prediction_row(by_id[item.id], result)
                if isinstance(result, AudioError):
                    failed.append(row)
                    continue
                if segments is not None:
                    row["segments"] = segments
                scored.append((item, row))
            if aligner is not None:  # word timestamps of the batch's finished recordings
                add_words(
                    aligner,
                    [row for _, row in scored],
                    [item for item, _ in scored],
                    [config.decode.prompt_language(item.language) for item, _ in scored],
                    config.decode.batch_size,
                    text_field="hypothesis",
                )
            for _, row in scored:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
            progress.done([item for item, _ in batch])
    silent = [item for item in whole if id(item) in long_items and not long_items[id(item)]]
    if silent:  # long references in which no speech was found: scored as empty output
        with predictions.open("a", encoding="utf-8") as handle:
            for item in silent:
                row = prediction_row(by_id[item.id], Transcript("", None, 0, False, None))
                words = {"words": []} if aligner is not None else {}
                row = {**row, "segments": [], **words}
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    usage = DecodeUsage(
        decode_s=time.perf_counter() - started,
        audio_s=sum(u.duration for u in todo),
        weights_gib=_weights_gib(transcriber.model),
        peak_gib=torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        device=str(device),
    )
    return failed, usage


def run_evaluation(config: EvaluateConfig, out_dir: Path) -> EvaluateResult:
    """Evaluate `config` into `out_dir`, which the calling stage has claimed; the model is
    loaded only if something is left to decode, and released when this returns."""
    utterances = _read_utterances(config)
    wanted = {u.id for u in utterances}
    compare_rows = read_compare(config.compare, utterances)
    terms = load_terms(config.terms, config.normalize) if config.terms else None
    identity = run_identity(config, utterances)
    done_rows = _earlier_rows(config, out_dir, identity)
    predictions = out_dir / PREDICTIONS
    done = {row["id"] for row in done_rows}
    todo = [u for u in utterances if u.id not in done]
    if config.resume:
        log.info("resuming: %d utterances done, %d to decode", len(done & wanted), len(todo))
    failed, usage = _decode(config, todo, predictions, identity) if todo else ([], None)
    if failed:
        with atomic_write(out_dir / "failed.jsonl") as handle:
            for row in failed:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        log.warning("%d utterances could not be read; see %s", len(failed), "failed.jsonl")
    elif todo:
        (out_dir / "failed.jsonl").unlink(missing_ok=True)  # an earlier run's, now decoded
    if not todo:
        write_identity(out_dir, identity)  # only the references changed, if anything

    rows = rescore_against(read_predictions(predictions), utterances, config.normalize)
    extra = {
        "manifest": str(config.manifest),
        "compare_hypotheses": str(config.compare) if config.compare else None,
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
        policy=config.normalize,
    )
    return EvaluateResult(
        metrics, predictions, metrics_path, report_path, len(todo), failed, usage, rows
    )
