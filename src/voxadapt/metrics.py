"""Korean CER/WER on jiwer (RapidFuzz underneath): corpus-level (micro) rates from edit counts."""

from __future__ import annotations

import itertools
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jiwer
import numpy as np

from voxadapt.text import SCORING_NORMALIZATION_VERSION, normalize_for_scoring, read_term_lines

log = logging.getLogger(__name__)


@dataclass
class EditCounts:
    """Levenshtein alignment counts of one or many reference/hypothesis pairs."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    reference_length: int = 0  # N: characters or words in the references

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float | None:
        """(S + D + I) / N; undefined (None) when the references are empty (N = 0)."""
        if self.reference_length == 0:
            return None
        return self.errors / self.reference_length

    def __add__(self, other: EditCounts) -> EditCounts:
        return EditCounts(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values())))


def _edits(reference: Sequence, hypothesis: Sequence) -> EditCounts:
    """S/D/I of a minimal Levenshtein alignment (RapidFuzz, the engine under jiwer)."""
    from rapidfuzz.distance import Levenshtein

    counts = {"replace": 0, "delete": 0, "insert": 0}
    for tag, _, _ in Levenshtein.editops(reference, hypothesis):
        counts[tag] += 1
    return EditCounts(counts["replace"], counts["delete"], counts["insert"], len(reference))


def char_edits(reference: str, hypothesis: str, *, spaces: bool = False) -> EditCounts:
    """Character edit counts of one pair; by default whitespace is removed first (Korean CER)."""
    if not spaces:
        reference, hypothesis = "".join(reference.split()), "".join(hypothesis.split())
    return _edits(reference, hypothesis)


def word_edits(reference: str, hypothesis: str) -> EditCounts:
    """Word (eojeol: space-separated) edit counts of one pair."""
    return _edits(reference.split(), hypothesis.split())


@dataclass
class ErrorRates:
    """Corpus-level rates over normalized text (None when the references are empty)."""

    cer: float | None  # characters, whitespace removed
    wer: float | None  # eojeol
    cer_counts: EditCounts
    wer_counts: EditCounts


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> ErrorRates:
    """Micro (corpus-level) CER without spaces and WER: `score_row` + `corpus_metrics`, the
    one scoring path of evaluate and training."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    rows = [score_row(r, h) for r, h in zip(references, hypotheses)]
    cer, wer = _total(rows, "cer"), _total(rows, "wer")
    return ErrorRates(cer.rate, wer.rate, cer, wer)


def score_row(
    reference: str, hypothesis: str, *, variants: Sequence[Any] | None = None
) -> dict[str, Any]:
    """Normalized forms and per-utterance edit counts of one reference/hypothesis pair.

    With `variants` (a dual transcription's pieces, see `references`), also the counts
    against the closest reference the label allows (`multi_reference`: which form each span
    took, and that reference's cer/wer counts).
    """
    ref_norm, hyp_norm = normalize_for_scoring(reference), normalize_for_scoring(hypothesis)
    row = {
        "reference_normalized": ref_norm,
        "hypothesis_normalized": hyp_norm,
        "scores": pair_scores(ref_norm, hyp_norm),
        "scoring": SCORING_NORMALIZATION_VERSION,
    }
    if variants:
        from voxadapt.references import closest_reference

        closest = closest_reference(variants, hyp_norm)
        counts = {
            "cer": asdict(char_edits(closest.text, hyp_norm)),
            "wer": asdict(word_edits(closest.text, hyp_norm)),
        }
        if EditCounts(**counts["cer"]).errors > EditCounts(**row["scores"]["cer"]).errors:
            # the training text itself is one of the references (its own spelling choices)
            closest_text, choices = ref_norm, None
            counts = {"cer": row["scores"]["cer"], "wer": row["scores"]["wer"]}
        else:
            closest_text, choices = closest.text, closest.choices
        row["multi_reference"] = {
            "reference_normalized": closest_text,
            "choices": choices,  # per span: 0 spelling, 1 pronunciation; None = training text
            "scores": counts,
        }
    return row


def rescore(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Recompute scores of rows scored under another normalization version."""
    for row in rows:
        if row.get("scoring") != SCORING_NORMALIZATION_VERSION:
            row.update(
                score_row(
                    row.get("reference") or "",
                    row.get("hypothesis") or "",
                    variants=row.get("text_variants"),
                )
            )
    return rows


# --------------------------------------------------------------------- evaluation metrics


def space_normalized(reference: str, hypothesis: str) -> str:
    """The hypothesis re-spaced like the reference wherever their characters align.

    The ESPnet KsponSpeech recipe's sWER (egs2/ksponspeech/asr1/local/
    get_space_normalized_hyps.py): characters are aligned ignoring spaces (Levenshtein),
    and aligned equal characters take the reference's word boundary, so spacing
    differences alone are no word errors; real character errors keep their own spacing and
    still count. Among equal-cost alignments it picks the one ESPnet picks (see
    `_matched_characters`), so sWER reproduces the recipe's numbers on repetitive text too.
    """
    ref_chars, ref_starts = _chars_with_word_starts(reference)
    hyp_chars, hyp_starts = _chars_with_word_starts(hypothesis)
    for hyp_index, ref_index in _matched_characters(ref_chars, hyp_chars):
        hyp_starts[hyp_index] = ref_starts[ref_index]
    words: list[str] = []
    for char, starts in zip(hyp_chars, hyp_starts):
        if starts or not words:
            words.append(char)
        else:
            words[-1] += char
    return " ".join(words)


def _matched_characters(reference: str, hypothesis: str) -> list[tuple[int, int]]:
    """(hypothesis index, reference index) of the equal characters of ESPnet's alignment.

    ESPnet (after Kaldi's align-text) fills the unit-cost Levenshtein table and traces it
    back from the end; at each cell it takes the diagonal (match or substitution) whenever
    that is among the cheapest moves, otherwise the cheaper of "hypothesis character
    inserted" and "reference character deleted", deletion on a tie. The order matters: on
    repetitive text several minimal alignments exist and they space the hypothesis
    differently (RapidFuzz's opcodes choose another one).
    """
    # A shared suffix is always matched diagonally by that traceback (the diagonal of an
    # equal pair is never worse than its neighbours), so only the rest needs the table.
    # A shared prefix cannot be cut the same way: the traceback may leave it early.
    shared = 0
    limit = min(len(reference), len(hypothesis))
    while shared < limit and reference[-1 - shared] == hypothesis[-1 - shared]:
        shared += 1
    ref_len, hyp_len = len(reference) - shared, len(hypothesis) - shared
    reference, hypothesis = reference[:ref_len], hypothesis[:hyp_len]
    matched = [(hyp_len + k, ref_len + k) for k in range(shared)]

    # table[h][r]: edit distance of hypothesis[:h] and reference[:r]
    row = list(range(ref_len + 1))
    table = [row]
    for h, hyp_char in enumerate(hypothesis, 1):
        previous, row, left = row, [h], h
        append = row.append
        for ref_char, diagonal, above in zip(reference, previous, previous[1:]):
            cost = diagonal if ref_char == hyp_char else diagonal + 1
            if above < cost:
                cost = above + 1
            if left < cost:
                cost = left + 1
            append(cost)
            left = cost
        table.append(row)

    h, r = hyp_len, ref_len
    while h and r:
        equal = hypothesis[h - 1] == reference[r - 1]
        diagonal = table[h - 1][r - 1] + (not equal)
        inserted, deleted = table[h - 1][r] + 1, table[h][r - 1] + 1
        if diagonal <= inserted and diagonal <= deleted:
            h, r = h - 1, r - 1
            if equal:
                matched.append((h, r))
        elif inserted < deleted:
            h -= 1
        else:
            r -= 1
    return matched  # the rest of a row or column are insertions or deletions


def _chars_with_word_starts(text: str) -> tuple[str, list[bool]]:
    chars, starts = [], []
    for word in text.split():
        for position, char in enumerate(word):
            chars.append(char)
            starts.append(position == 0)
    return "".join(chars), starts


def pair_scores(reference: str, hypothesis: str) -> dict[str, dict[str, int]]:
    """Edit counts of one normalized pair: cer (no spaces), cer_spaces, wer, swer."""
    return {
        "cer": asdict(char_edits(reference, hypothesis)),
        "cer_spaces": asdict(char_edits(reference, hypothesis, spaces=True)),
        "wer": asdict(word_edits(reference, hypothesis)),
        "swer": asdict(word_edits(reference, space_normalized(reference, hypothesis))),
    }


def _total(rows: Sequence[dict[str, Any]], key: str) -> EditCounts:
    total = EditCounts()
    for row in rows:
        total = total + EditCounts(**row["scores"][key])
    return total


def _multi_reference_total(rows: Sequence[dict[str, Any]], key: str) -> EditCounts:
    """Counts against each utterance's closest reference (its training text when the label
    has no dual transcription)."""
    total = EditCounts()
    for row in rows:
        scores = (row.get("multi_reference") or {}).get("scores") or row["scores"]
        total = total + EditCounts(**scores[key])
    return total


def corpus_metrics(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Headline metrics of scored prediction rows (each has `scores` from `pair_scores`).

    cer: Σ(S+D+I)/ΣN over characters with whitespace removed (micro, the primary metric);
    cer_spaces: the same counting spaces; wer: over space-separated eojeol; swer: WER after
    the hypothesis takes the reference's spacing; ser: share of utterances with any
    character error; macro_cer: mean of per-utterance CER (references not empty), the seed's
    number; insertion_rate: inserted characters / reference characters;
    cer_multi_reference / wer_multi_reference: against each utterance's closest reference
    among the forms its dual transcription allows (`score_row`), divided by the length of
    those references.
    """
    if not rows:
        return {"utterances": 0}
    cer, cer_spaces = _total(rows, "cer"), _total(rows, "cer_spaces")
    wer, swer = _total(rows, "wer"), _total(rows, "swer")
    per_utterance = [
        EditCounts(**row["scores"]["cer"])
        for row in rows
        if row["scores"]["cer"]["reference_length"]
    ]
    return {
        "utterances": len(rows),
        "cer": cer.rate,
        "cer_spaces": cer_spaces.rate,
        "cer_multi_reference": _multi_reference_total(rows, "cer").rate,
        "wer_multi_reference": _multi_reference_total(rows, "wer").rate,
        "multi_reference_utterances": sum(1 for r in rows if r.get("multi_reference")),
        "wer": wer.rate,
        "swer": swer.rate,
        "ser": sum(EditCounts(**r["scores"]["cer"]).errors > 0 for r in rows) / len(rows),
        "macro_cer": (
            sum(c.errors / c.reference_length for c in per_utterance) / len(per_utterance)
            if per_utterance
            else None
        ),
        "substitutions": cer.substitutions,
        "deletions": cer.deletions,
        "insertions": cer.insertions,
        "reference_characters": cer.reference_length,
        "reference_words": wer.reference_length,
        "insertion_rate": cer.insertions / cer.reference_length if cer.reference_length else None,
        "repetition_loop_rate": sum(bool(r.get("repetition_loop")) for r in rows) / len(rows),
        "empty_output_rate": sum(not r["hypothesis_normalized"] for r in rows) / len(rows),
        "truncated_rate": sum(bool(r.get("truncated")) for r in rows) / len(rows),
    }


def _speaker_totals(rows: Sequence[dict[str, Any]], key: str = "cer") -> dict[str, np.ndarray]:
    """Per speaker [errors, reference length]; utterances without a speaker stand alone."""
    totals: dict[str, np.ndarray] = {}
    for row in rows:
        speaker = row.get("speaker")
        group = f"spk:{speaker}" if speaker not in (None, "") else f"utt:{row['id']}"
        counts = EditCounts(**row["scores"][key])
        totals.setdefault(group, np.zeros(2, dtype=np.int64))
        totals[group] += (counts.errors, counts.reference_length)
    return totals


# BCa needs a jackknife over the clusters and a bootstrap distribution with more than a
# handful of distinct values; with fewer clusters than this its bias and acceleration
# estimates are noise, so the plain percentile interval is used instead.
BCA_MIN_CLUSTERS = 10
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
    """CI of a corpus error rate, resampling speakers (all their utterances together),
    since utterances of one speaker are not independent.

    `scipy.stats.bootstrap` over the speakers' [errors, reference length] totals, the
    statistic being the ratio of the sums: BCa, or the percentile interval with fewer than
    `BCA_MIN_CLUSTERS` speakers or where BCa is degenerate (e.g. every resample gives the
    same rate). None for fewer than 2 speakers or empty references.
    """
    totals = np.array(list(_speaker_totals(rows, key).values()))
    if len(totals) < 2 or resamples < 1 or totals[:, 1].sum() == 0:
        return None  # one group, or an undefined rate (empty references)
    result = _cluster_bootstrap(
        (totals[:, 0], totals[:, 1]), _ratio_of_sums, resamples=resamples, seed=seed, level=level
    )
    return result[0], result[1]


def _ratio_of_sums(errors: np.ndarray, lengths: np.ndarray, axis: int = -1) -> np.ndarray:
    """Σ errors / Σ reference length along `axis`; NaN where a resample has no reference
    characters (its rate is undefined)."""
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
    if len(groups) >= 2 and resamples >= 1:
        low, high, deltas = _cluster_bootstrap(
            (totals_a[:, 0], totals_a[:, 1], totals_b[:, 0], totals_b[:, 1]),
            _difference_of_ratios,
            resamples=resamples,
            seed=seed,
            level=level,
        )
        deltas = deltas[np.isfinite(deltas)]
        opposite = (deltas >= 0).mean() if delta < 0 else (deltas <= 0).mean()
        result.update(ci=[low, high], p_value=float(min(1.0, 2 * opposite)))
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


# ------------------------------------------------------------------ prediction files


def read_predictions(path: Path, *, repair: bool = False) -> list[dict[str, Any]]:
    """Rows of a predictions.jsonl, first occurrence of each id.

    With `repair`, a torn last line (the process was killed mid-write) is cut off the file
    so appending can continue cleanly. Raises ValueError for a file that is not UTF-8 JSONL.
    """
    import json

    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if repair and end < len(data):
        log.warning("%s: dropping a torn last line from an interrupted run", path)
        with path.open("r+b") as handle:
            handle.truncate(end)
    try:
        lines = data[:end].decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a UTF-8 JSONL file") from None
    rows, seen = [], set()
    for line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(row, dict) or row.get("id") in seen:
            continue
        seen.add(row.get("id"))
        rows.append(row)
    return rows


def compute_metrics(
    rows: list[dict[str, Any]],
    *,
    fields: Sequence[str] = (),
    terms: Sequence[str | Sequence[str]] | None = None,
    compare_rows: list[dict[str, Any]] | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """metrics.json content: headline numbers, CIs, breakdowns over `fields`, the most
    frequent errors, term recall (`terms` as `load_terms` returns them) and the paired
    comparison with `compare_rows`."""
    metrics: dict[str, Any] = {
        "scoring_normalization": SCORING_NORMALIZATION_VERSION,
        **corpus_metrics(rows),
    }
    if bootstrap:
        for key in ("cer", "wer"):
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
        }
    metrics["breakdowns"] = breakdowns(rows, fields)
    metrics["top_errors"] = top_errors(rows)
    if terms:
        metrics["term_recall"] = term_recall(rows, terms)
    if compare_rows is not None:
        metrics["compare"] = paired_bootstrap(
            rows, rescore(compare_rows), resamples=max(bootstrap, 1), seed=seed
        )
    return metrics


# ----------------------------------------------------------------- most frequent errors

# How each level splits normalized text into units: characters as CER counts them
# (whitespace removed), eojeol as WER does.
_ERROR_UNITS = {"characters": lambda text: "".join(text.split()), "eojeol": str.split}


def top_errors(rows: Sequence[dict[str, Any]], top: int = 20) -> dict[str, dict[str, list]]:
    """The most frequent substitutions (reference -> hypothesis), deletions and insertions
    of characters and of eojeol, from the rows' normalized text.

    The alignment is the one the CER/WER counts come from, so over all (not only the `top`)
    entries the character counts add up to the corpus S, D and I.
    """
    from rapidfuzz.distance import Levenshtein

    result: dict[str, dict[str, list]] = {}
    for level, units_of in _ERROR_UNITS.items():
        substituted: Counter[tuple[str, str]] = Counter()
        deleted: Counter[str] = Counter()
        inserted: Counter[str] = Counter()
        for row in rows:
            reference = units_of(row.get("reference_normalized") or "")
            hypothesis = units_of(row.get("hypothesis_normalized") or "")
            for tag, ref_index, hyp_index in Levenshtein.editops(reference, hypothesis):
                if tag == "replace":
                    substituted[reference[ref_index], hypothesis[hyp_index]] += 1
                elif tag == "delete":
                    deleted[reference[ref_index]] += 1
                else:
                    inserted[hypothesis[hyp_index]] += 1
        result[level] = {
            "substitutions": [
                {"reference": ref, "hypothesis": hyp, "count": count}
                for (ref, hyp), count in _most_common(substituted, top)
            ],
            "deletions": [
                {"reference": ref, "count": count} for ref, count in _most_common(deleted, top)
            ],
            "insertions": [
                {"hypothesis": hyp, "count": count} for hyp, count in _most_common(inserted, top)
            ],
        }
    return result


def _most_common(counter: Counter, top: int) -> list[tuple[Any, int]]:
    """Counter.most_common with ties broken by the item, so metrics.json is reproducible."""
    return sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:top]


# ------------------------------------------------------------------ medical term recall


def load_terms(path: Path) -> list[tuple[str, ...]]:
    """Term variant sets, one per line, scoring-normalized and space-free.

    A line holds one term (`고혈압`) or the spellings of one spoken term separated by `|`
    (`CT|씨티|시티`); the first spelling names the set in reports. `#` starts a comment;
    blank lines are skipped. A spelling already in an earlier set is dropped from later
    ones (with a warning), so every spelling counts for exactly one set.
    """
    variant_sets: list[tuple[str, ...]] = []
    seen: set[str] = set()
    for number, line_spellings in read_term_lines(path):
        spellings = []
        for spelling in line_spellings:
            spelling = "".join(normalize_for_scoring(spelling).split())
            if not spelling or spelling in spellings:
                continue
            if spelling in seen:
                log.warning("%s:%d: %r is already in an earlier term set", path, number, spelling)
                continue
            spellings.append(spelling)
        if spellings:
            seen.update(spellings)
            variant_sets.append(tuple(spellings))
    return variant_sets


def _variant_sets(terms: Sequence[str | Sequence[str]]) -> list[tuple[str, ...]]:
    """`terms` as variant sets: a plain string is a set of one spelling."""
    return [(term,) if isinstance(term, str) else tuple(term) for term in terms]


def _latin_letter(char: str) -> bool:
    return "a" <= char <= "z"  # scoring normalization lowercases Latin


def count_terms(text: str, terms: Sequence[str | Sequence[str]]) -> dict[str, int]:
    """Occurrences of each term in `text`, keyed by its first spelling: any spelling of a
    variant set counts for the set; longest spellings first, no overlaps.

    Matching on space-free text makes it tolerant of attached particles (josa) and of
    spacing: "고혈압이", "고혈압을" and "고 혈압" all contain 고혈압. A shorter term inside
    a longer one ("혈압" in "고혈압") is not counted twice. A Latin spelling must not run on
    into Latin letters of the same word ("ct" is not found in "picture"), though Hangul may
    follow it ("ct를").
    """
    words = text.split()
    compact = "".join(words)
    word_starts = set(itertools.accumulate((len(word) for word in words), initial=0))
    taken = [False] * len(compact)
    counts: dict[str, int] = {}

    def bounded(start: int, end: int) -> bool:
        first, last = compact[start], compact[end - 1]
        if _latin_letter(first) and start not in word_starts and _latin_letter(compact[start - 1]):
            return False
        return not (
            _latin_letter(last)
            and end < len(compact)
            and end not in word_starts
            and _latin_letter(compact[end])
        )

    spellings = [(spelling, names[0]) for names in _variant_sets(terms) for spelling in names]
    for spelling, name in sorted(spellings, key=lambda item: len(item[0]), reverse=True):
        start = compact.find(spelling)
        while start != -1:
            end = start + len(spelling)
            if not any(taken[start:end]) and bounded(start, end):
                taken[start:end] = [True] * len(spelling)
                counts[name] = counts.get(name, 0) + 1
                start = compact.find(spelling, end)
            else:
                start = compact.find(spelling, start + 1)
    return counts


def term_recall(
    rows: Sequence[dict[str, Any]], terms: Sequence[str | Sequence[str]], top: int = 20
) -> dict:
    """Share of reference term occurrences that the hypothesis reproduces (per utterance,
    min(reference count, hypothesis count); any spelling of a variant set reproduces any
    other), and the most-missed terms by their first spelling.

    `terms`: plain strings or variant sets (tuples of spellings), as `load_terms` returns.
    """
    occurrences: dict[str, int] = {}
    hits: dict[str, int] = {}
    for row in rows:
        in_reference = count_terms(row["reference_normalized"], terms)
        if not in_reference:
            continue
        in_hypothesis = count_terms(row["hypothesis_normalized"], terms)
        for term, count in in_reference.items():
            occurrences[term] = occurrences.get(term, 0) + count
            hits[term] = hits.get(term, 0) + min(count, in_hypothesis.get(term, 0))
    total = sum(occurrences.values())
    missed = sorted(
        ((t, occurrences[t] - hits[t], occurrences[t]) for t in occurrences),
        key=lambda item: (-item[1], -item[2], item[0]),
    )
    return {
        "terms": len(terms),
        "occurrences": total,
        "hits": sum(hits.values()),
        "recall": sum(hits.values()) / total if total else None,
        "most_missed": [
            {"term": t, "missed": m, "occurrences": o} for t, m, o in missed[:top] if m
        ],
    }


# ------------------------------------------------------------------------- breakdowns

DURATION_BUCKETS = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0)
# Fields of every utterance that are always grouped on when they vary.
BREAKDOWN_FIXED_FIELDS = ("language",)


def duration_bucket(seconds: float) -> str:
    """'0-5 s', '5-10 s', ..., '30+ s'."""
    edges = DURATION_BUCKETS
    for low, high in itertools.pairwise(edges):
        if seconds < high:
            return f"{low:g}-{high:g} s"
    return f"{edges[-1]:g}+ s"


def breakdowns(
    rows: Sequence[dict[str, Any]], fields: Sequence[str], max_values: int = 30
) -> dict[str, Any]:
    """Metrics per value of each of `fields` (the metadata fields the source provided: role,
    gender, age group...) and per duration bucket. A field with fewer than 2 or more than
    `max_values` values (ids, free text) is skipped; ages are grouped by decade."""
    result: dict[str, Any] = {}
    for key in sorted(set(fields)):
        key_of = (
            (lambda row: _age_group(row.get("age")))
            if key == "age"
            else (lambda row, key=key: row.get(key))
        )
        values = {str(key_of(row)) for row in rows if _groupable(key_of(row))}
        if 2 <= len(values) <= max_values:
            result[key] = _grouped(rows, key_of)
    result["duration"] = _grouped(rows, _duration_bucket_of)
    return result


def group_order(value: str) -> tuple[int, float, str]:
    """Sort key of breakdown group labels: numeric ones ('5-10 s', '30+ s', '20대') by their
    leading number, then the others alphabetically; so '10-15 s' comes after '5-10 s'."""
    number = re.match(r"\d+(?:\.\d+)?", value)
    return (0, float(number.group()), value) if number else (1, 0.0, value)


def _duration_bucket_of(row: dict[str, Any]) -> str | None:
    try:
        return duration_bucket(float(row["duration"]))
    except (KeyError, TypeError, ValueError):  # no duration recorded: no bucket
        return None


def _groupable(value: Any) -> bool:
    return value not in (None, "") and not isinstance(value, (dict, list))


def _age_group(age: Any) -> str | None:
    """AI-Hub ages come as '20대' or numbers; numbers are bucketed by decade."""
    if age in (None, ""):
        return None
    try:
        return f"{int(float(age)) // 10 * 10}대"
    except (TypeError, ValueError, OverflowError):  # "20대", or not a number at all
        return str(age)


def _grouped(rows: Sequence[dict[str, Any]], key_of) -> dict[str, Any]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        value = key_of(row)
        if _groupable(value):
            groups.setdefault(str(value), []).append(row)
    return {
        value: {
            k: v
            for k, v in corpus_metrics(members).items()
            if k in ("utterances", "cer", "wer", "swer", "ser", "insertion_rate")
        }
        for value, members in sorted(groups.items(), key=lambda item: group_order(item[0]))
    }


# -------------------------------------------------------------------------- alignment


def alignment(reference: str, hypothesis: str) -> list[tuple[str, str, str]]:
    """Character alignment for display: (op, reference part, hypothesis part) with op in
    equal/substitute/delete/insert, spaces included."""
    if not reference or not hypothesis:
        if reference:
            return [("delete", reference, "")]
        return [("insert", "", hypothesis)] if hypothesis else []
    output = jiwer.process_characters(reference, hypothesis)
    ref_chars, hyp_chars = output.references[0], output.hypotheses[0]
    pieces = []
    for chunk in output.alignments[0]:
        ref_part = "".join(ref_chars[chunk.ref_start_idx : chunk.ref_end_idx])
        hyp_part = "".join(hyp_chars[chunk.hyp_start_idx : chunk.hyp_end_idx])
        pieces.append((chunk.type, ref_part, hyp_part))
    return pieces
