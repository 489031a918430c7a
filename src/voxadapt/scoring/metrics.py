"""metrics.json: headline rates, confidence intervals, breakdowns, top errors, term recall and the
paired comparison, in one call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from voxadapt.scoring.breakdowns import breakdowns, top_errors
from voxadapt.scoring.intervals import (
    BCA_MIN_CLUSTERS,
    MIN_INTERVAL_SPEAKERS,
    bootstrap_interval,
    no_interval_reason,
    paired_bootstrap,
    speaker_count,
)
from voxadapt.scoring.rates import corpus_metrics, rescore
from voxadapt.scoring.terms import term_recall
from voxadapt.text import scoring_version


def compute_metrics(
    rows: list[dict[str, Any]],
    *,
    fields: Sequence[str] = (),
    terms: Sequence[str | Sequence[str]] | None = None,
    compare_rows: list[dict[str, Any]] | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    policy: str = "default",
) -> dict[str, Any]:
    """metrics.json content: headline numbers, CIs, breakdowns over `fields`, the most
    frequent errors, term recall (`terms` as `load_terms` returns them) and the paired
    comparison with `compare_rows` (rescored under `policy` where it differs)."""
    metrics: dict[str, Any] = {
        "scoring_normalization": scoring_version(policy),
        "scoring_policy": policy,
        **corpus_metrics(rows),
    }
    if bootstrap:
        speakers = speaker_count(rows)
        for key in ("cer", "wer", "cer_multi_reference", "wer_multi_reference"):
            interval = bootstrap_interval(rows, key=key, resamples=bootstrap, seed=seed)
            if interval:
                metrics[f"{key}_ci95"] = list(interval)
        metrics["bootstrap"] = {
            "resamples": bootstrap,
            "seed": seed,
            "unit": "speaker",
            # scipy.stats.bootstrap; see bootstrap_interval for when percentile is used
            "method": "BCa",
            "fallback": "percentile",
            "bca_min_speakers": BCA_MIN_CLUSTERS,
            # intervals need this many speakers (an utterance without one its own): with
            # fewer, every *_ci95 is left out and `no_intervals` says why
            "speakers": speakers,
            "min_speakers": MIN_INTERVAL_SPEAKERS,
            "no_intervals": no_interval_reason(speakers),
        }
    metrics["breakdowns"] = breakdowns(rows, fields)
    metrics["top_errors"] = top_errors(rows)
    if terms:
        metrics["term_recall"] = term_recall(rows, terms, bootstrap=bootstrap, seed=seed)
    if compare_rows is not None:
        metrics["compare"] = paired_bootstrap(
            rows, rescore(compare_rows, policy), resamples=max(bootstrap, 1), seed=seed
        )
    return metrics
