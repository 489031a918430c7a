"""Confidence intervals: speaker-cluster bootstrap of a corpus error rate, and the paired bootstrap
of two systems on shared utterances."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from voxadapt.scoring.edits import EditCounts

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)


def speaker_group(row: dict[str, Any]) -> str:
    """The bootstrap's cluster of a row: its speaker; an utterance without one stands alone."""
    speaker = row.get("speaker")
    return f"spk:{speaker}" if speaker not in (None, "") else f"utt:{row['id']}"


def speaker_count(rows: Iterable[dict[str, Any]]) -> int:
    """The bootstrap's clusters among `rows`: speakers, an utterance without one its own."""
    return len({speaker_group(row) for row in rows})


def no_interval_reason(speakers: int) -> str | None:
    """Why `speakers` clusters get no interval ("fewer than 5 speakers"); None when they do."""
    if speakers >= MIN_INTERVAL_SPEAKERS:
        return None
    return f"fewer than {MIN_INTERVAL_SPEAKERS} speakers"


def edit_counts(row: dict[str, Any], key: str = "cer") -> tuple[int, int]:
    """(errors, reference length) of a scored row; `cer_multi_reference` and
    `wer_multi_reference` count against the row's closest reference."""
    base = key.removesuffix("_multi_reference")
    scores = row["scores"]
    if key != base:
        scores = (row.get("multi_reference") or {}).get("scores") or scores
    counts = EditCounts(**scores[base])
    return counts.errors, counts.reference_length


def _speaker_totals(rows: Sequence[dict[str, Any]], key: str = "cer") -> dict[str, np.ndarray]:
    """Per speaker [errors, reference length]; utterances without a speaker stand alone."""
    return _group_totals((speaker_group(row), *edit_counts(row, key)) for row in rows)


def _group_totals(items: Iterable[tuple[str, int, int]]) -> dict[str, np.ndarray]:
    import numpy as np

    totals: dict[str, np.ndarray] = {}
    for group, numerator, denominator in items:
        totals.setdefault(group, np.zeros(2, dtype=np.int64))
        totals[group] += (numerator, denominator)
    return totals


# BCa needs a jackknife over the clusters and a bootstrap distribution with more than a
# handful of distinct values; with fewer clusters than this its bias and acceleration
# estimates are noise, so the plain percentile interval is used instead.
BCA_MIN_CLUSTERS = 10
# The one rule for every interval (evaluate's and score's rates and term recall, compare's
# differences): fewer speakers than this get no interval or p-value, only "n/a". Resampling
# 2 speakers gives a degenerate interval (`40.00% [40.00%, 40.00%]`), and 2 speakers that
# both favour one system make every paired resample agree, so p would read 0. An utterance
# without a speaker counts as its own.
MIN_INTERVAL_SPEAKERS = 5
# Resampled clusters held in memory at once (scipy's `batch`): bounds memory for corpora
# without speaker labels, where every utterance is its own cluster.
_BOOTSTRAP_CELLS = 2_000_000


def bootstrap_interval(
    rows: Sequence[dict[str, Any]],
    *,
    key: str = "cer",
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """CI of a corpus error rate (`cer`, `wer`, `cer_multi_reference`, ...), resampling
    speakers (all their utterances together), since utterances of one speaker are not
    independent. See `ratio_interval`."""
    items = [(speaker_group(row), *edit_counts(row, key)) for row in rows]
    return ratio_interval(items, resamples=resamples, seed=seed, level=level)


def ratio_interval(
    items: Iterable[tuple[str, int, int]],
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """CI of Σ numerator / Σ denominator over (cluster, numerator, denominator) items
    (errors / reference length; term hits / term occurrences), resampling clusters.

    `scipy.stats.bootstrap` over the clusters' totals, the statistic being the ratio of the
    sums: BCa, or the percentile interval with fewer than `BCA_MIN_CLUSTERS` clusters or
    where BCa is degenerate (e.g. every resample gives the same rate). None for fewer than
    `MIN_INTERVAL_SPEAKERS` clusters or a zero denominator.
    """
    import numpy as np

    totals = np.array(list(_group_totals(items).values()))
    if len(totals) < MIN_INTERVAL_SPEAKERS or resamples < 1 or totals[:, 1].sum() == 0:
        return None  # too few speakers, or an undefined rate (empty references)
    result = _cluster_bootstrap(
        (totals[:, 0], totals[:, 1]), _ratio_of_sums, resamples=resamples, seed=seed, level=level
    )
    return result[0], result[1]


def _ratio_of_sums(errors: np.ndarray, lengths: np.ndarray, axis: int = -1) -> np.ndarray:
    """Σ errors / Σ reference length along `axis`; NaN where a resample has no reference
    characters (its rate is undefined)."""
    import numpy as np

    numerator = np.sum(errors, axis=axis, dtype=np.float64)
    denominator = np.sum(lengths, axis=axis, dtype=np.float64)
    undefined = np.full_like(numerator, np.nan)
    return np.divide(numerator, denominator, out=undefined, where=denominator > 0)


def _cluster_bootstrap(
    data: tuple[np.ndarray, ...], statistic, *, resamples: int, seed: int, level: float
) -> tuple[float, float, np.ndarray]:
    """(low, high, bootstrap distribution) of `statistic` over clusters (paired arrays,
    one entry per cluster), resampled together with `scipy.stats.bootstrap`."""
    import warnings

    import numpy as np
    from scipy.stats import DegenerateDataWarning, bootstrap

    clusters = len(data[0])
    method = "BCa" if clusters >= BCA_MIN_CLUSTERS else "percentile"
    with warnings.catch_warnings():
        # a degenerate BCa interval comes back as NaN and is replaced below
        warnings.simplefilter("ignore", DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        result = bootstrap(
            data,
            statistic,
            n_resamples=resamples,
            batch=max(1, _BOOTSTRAP_CELLS // clusters),
            vectorized=True,
            paired=True,
            confidence_level=level,
            method=method,
            rng=np.random.default_rng(seed),
        )
    distribution = result.bootstrap_distribution
    low, high = result.confidence_interval
    if not (np.isfinite(low) and np.isfinite(high)):
        # percentile fallback over the defined resamples: BCa's bias correction is
        # infinite when the observed rate lies outside the resampled ones (all equal,
        # say), and resamples of only empty references have no rate
        tail = (1 - level) / 2 * 100
        defined = distribution[np.isfinite(distribution)]
        low, high = np.percentile(defined, [tail, 100 - tail])
        log.debug("bootstrap: %s interval degenerate, percentile interval used", method)
    return float(low), float(high), distribution


def paired_bootstrap(
    rows: Sequence[dict[str, Any]],
    other: Sequence[dict[str, Any]],
    *,
    key: str = "cer",
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """CER(rows) - CER(other) on their shared utterances, with a speaker-level paired
    bootstrap CI (`scipy.stats.bootstrap`, as `bootstrap_interval`) and the share of
    resamples where the difference changes sign (p-value)."""
    import numpy as np

    mine = {row["id"]: row for row in rows}
    theirs = {row["id"]: row for row in other}
    shared = [i for i in mine if i in theirs]
    if not shared:
        raise ValueError("the two prediction sets share no utterance ids")
    a = _speaker_totals([mine[i] for i in shared], key)
    # both sides clustered by this run's speakers: the other run may label them differently
    speaker_of = {i: mine[i].get("speaker") for i in shared}
    b = _speaker_totals([{**theirs[i], "speaker": speaker_of[i]} for i in shared], key)
    groups = sorted(a)
    totals_a = np.array([a[g] for g in groups])
    totals_b = np.array([b[g] for g in groups])
    if totals_a.sum(0)[1] == 0 or totals_b.sum(0)[1] == 0:
        raise ValueError("the shared utterances have empty references: no CER to compare")
    delta = _rate(totals_a.sum(0)) - _rate(totals_b.sum(0))
    result: dict[str, Any] = {
        "utterances": len(shared),
        "this": _rate(totals_a.sum(0)),
        "other": _rate(totals_b.sum(0)),
        "delta": delta,
    }
    if len(groups) < MIN_INTERVAL_SPEAKERS:
        result["too_few_speakers"] = len(groups)
    elif resamples >= 1:
        low, high, deltas = _cluster_bootstrap(
            (totals_a[:, 0], totals_a[:, 1], totals_b[:, 0], totals_b[:, 1]),
            _difference_of_ratios,
            resamples=resamples,
            seed=seed,
            level=level,
        )
        deltas = deltas[np.isfinite(deltas)]
        opposite = (deltas >= 0).mean() if delta < 0 else (deltas <= 0).mean()
        # a bootstrap p-value is never below 1 / (resamples + 1): with 10 resamples and
        # no sign change it is 0.09, not "p<0.001"
        p = max(2 * opposite, 1 / (len(deltas) + 1))
        result.update(ci=[low, high], p_value=float(min(1.0, p)))
    return result


def _difference_of_ratios(
    errors_a: np.ndarray,
    lengths_a: np.ndarray,
    errors_b: np.ndarray,
    lengths_b: np.ndarray,
    axis: int = -1,
) -> np.ndarray:
    return _ratio_of_sums(errors_a, lengths_a, axis) - _ratio_of_sums(errors_b, lengths_b, axis)


def _rate(counts: np.ndarray) -> float | None:
    return float(counts[0] / counts[1]) if counts[1] else None
