"""The evaluate stage: transcribe a manifest, score it, write predictions, metrics and a report.

predictions.jsonl grows one line per utterance as batches finish (flushed and fsynced), so a
crash or a kill loses at most the batch in flight; `--resume` decodes only what is missing.
Scoring is `scoring.rates.score_row` + `scoring.metrics.compute_metrics`, the same path as
training's evaluation. The engine is `voxadapt.evaluation`, which `compare` runs per system;
this stage claims its output folder and runs it once.
"""

from __future__ import annotations

from dataclasses import replace

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
from voxadapt.model import base_model_of
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
    """Transcribe and score `config.manifest`; see EvaluateConfig."""
    config = replace(config, model=base_model_of(config.model, config.adapter))
    config.check_adapter_base()
    with _claim(config) as claim:
        return run_evaluation(config, claim.folder)
