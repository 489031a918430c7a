"""The evaluate stage: transcribe a manifest, score it, write predictions, metrics and a report.

predictions.jsonl grows one line per utterance as batches finish (flushed and fsynced), so a
crash or a kill loses at most the batch in flight; `--resume` decodes only what is missing.
Scoring is `scoring.rates.score_row` + `scoring.metrics.compute_metrics`, the same path as
training's evaluation. The engine is `voxadapt.evaluation`, which `compare` runs per system;
this stage claims its output folder and runs it once.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from voxadapt.adapters import base_model_of
from voxadapt.errors import StageInterrupted
from voxadapt.evaluation import (
    OUTPUTS,
    PREDICTIONS,
    REPLACED,
    EvaluateConfig,
    EvaluateResult,
    prediction_row,
    run_evaluation,
    run_identity,
)
from voxadapt.outputs import OutputClaim, claim_outputs

__all__ = [
    "OUTPUTS",
    "PREDICTIONS",
    "EvaluateConfig",
    "EvaluateResult",
    "evaluate",
    "prediction_row",
    "run_identity",
]


def _claim(config: EvaluateConfig) -> OutputClaim:
    """--out checked against every input before any work."""
    return claim_outputs(
        "evaluate",
        config.out_dir,
        names=[*OUTPUTS, REPLACED],
        inputs=[config.manifest, config.compare, config.terms],
        trees=[config.adapter, config.cache],
    )


def evaluate(config: EvaluateConfig) -> EvaluateResult:
    """Transcribe and score `config.manifest`; see EvaluateConfig. Ctrl-C or SIGTERM raise
    StageInterrupted saying how to resume (the rows decoded so far are kept)."""
    config = replace(config, model=base_model_of(config.model, config.adapter))
    config.check_adapter_base()
    with _claim(config) as claim:
        predictions = claim.folder / PREDICTIONS
        before = _file_state(predictions)
        try:
            return run_evaluation(config, claim.folder)
        except KeyboardInterrupt:
            raise _interrupted(config, predictions, before) from None


def _file_state(path: Path) -> tuple[int, int] | None:
    """(inode, size) of a file, None if there is none: tells whether a run appended to it."""
    try:
        state = os.stat(path)
    except OSError:
        return None
    return state.st_ino, state.st_size


def _interrupted(
    config: EvaluateConfig, predictions: Path, before: tuple[int, int] | None
) -> StageInterrupted:
    """What an interrupted evaluation kept, and the command that continues it: decoded rows
    are on disk line by line, so `--resume` decodes only the rest."""
    if config.overwrite and _file_state(predictions) == before:
        # stopped before --overwrite moved the earlier run aside: nothing of this one exists
        return StageInterrupted(
            f"interrupted before decoding; {predictions.parent} is as it was: run the same "
            "command again (with --overwrite) to start over"
        )
    try:
        with predictions.open("rb") as handle:
            rows = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    except OSError:
        rows = 0
    if not rows:
        return StageInterrupted(
            "interrupted before any utterance was decoded: run the same command again"
        )
    how = (
        "run the same command again (it has --resume)"
        if config.resume
        else "run the same command with --resume"
        + (" instead of --overwrite" if config.overwrite else "")
    )
    return StageInterrupted(
        f"interrupted: {rows} decoded utterances are kept in {predictions}; to decode only "
        f"the rest, {how}"
    )
