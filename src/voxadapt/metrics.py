"""Korean CER/WER on jiwer (RapidFuzz underneath): corpus-level (micro) rates from edit counts."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jiwer
import numpy as np

from voxadapt.text import SCORING_NORMALIZATION_VERSION, normalize_for_scoring

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


def score_row(reference: str, hypothesis: str) -> dict[str, Any]:
    """Normalized forms and per-utterance edit counts of one reference/hypothesis pair."""
    ref_norm, hyp_norm = normalize_for_scoring(reference), normalize_for_scoring(hypothesis)
    return {
        "reference_normalized": ref_norm,
        "hypothesis_normalized": hyp_norm,
        "scores": pair_scores(ref_norm, hyp_norm),
        "scoring": SCORING_NORMALIZATION_VERSION,
    }


def rescore(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Recompute scores of rows scored under another normalization version."""
    for row in rows:
        if row.get("scoring") != SCORING_NORMALIZATION_VERSION:
            row.update(score_row(row.get("reference") or "", row.get("hypothesis") or ""))
    return rows


# --------------------------------------------------------------------- evaluation metrics


def space_normalized(reference: str, hypothesis: str) -> str:
    """The hypothesis re-spaced like the reference wherever their characters align.

    The ESPnet KsponSpeech recipe's sWER: characters are aligned ignoring spaces
    (Levenshtein), and aligned equal characters take the reference's word boundary, so
    spacing differences alone are no word errors; real character errors keep their own
    spacing and still count.
    """
    from rapidfuzz.distance import Levenshtein

    ref_chars, ref_starts = _chars_with_word_starts(reference)
    hyp_chars, hyp_starts = _chars_with_word_starts(hypothesis)
    for tag, ref_from, ref_to, hyp_from, _ in Levenshtein.opcodes(ref_chars, hyp_chars):
        if tag == "equal":
            for offset in range(ref_to - ref_from):
                hyp_starts[hyp_from + offset] = ref_starts[ref_from + offset]
    words: list[str] = []
    for char, starts in zip(hyp_chars, hyp_starts):
        if starts or not words:
            words.append(char)
        else:
            words[-1] += char
    return " ".join(words)


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


def corpus_metrics(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Headline metrics of scored prediction rows (each has `scores` from `pair_scores`).

    cer: Σ(S+D+I)/ΣN over characters with whitespace removed (micro, the primary metric);
    cer_spaces: the same counting spaces; wer: over space-separated eojeol; swer: WER after
    the hypothesis takes the reference's spacing; ser: share of utterances with any
    character error; macro_cer: mean of per-utterance CER (references not empty), the seed's
    number; insertion_rate: inserted characters / reference characters.
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


def bootstrap_interval(
    rows: Sequence[dict[str, Any]],
    *,
    key: str = "cer",
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile CI of a corpus error rate, resampling speakers (all their utterances
    together), since utterances of one speaker are not independent."""
    totals = np.array(list(_speaker_totals(rows, key).values()))
    if len(totals) < 2 or resamples < 1 or totals[:, 1].sum() == 0:
        return None  # one group, or an undefined rate (empty references)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(totals), size=(resamples, len(totals)))
    sums = totals[picks].sum(axis=1)  # (resamples, 2)
    defined = sums[:, 1] > 0  # a resample of only empty references has no rate
    rates = sums[defined, 0] / sums[defined, 1]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(rates, [tail, 100 - tail])
    return float(low), float(high)


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
    bootstrap CI and the share of resamples where the difference changes sign (p-value)."""
    mine = {row["id"]: row for row in rows}
    theirs = {row["id"]: row for row in other}
    shared = [i for i in mine if i in theirs]
    if not shared:
        raise ValueError("the two prediction sets share no utterance ids")
    a = _speaker_totals([mine[i] for i in shared], key)
    b = _speaker_totals([theirs[i] for i in shared], key)
    groups = sorted(a)
    totals_a = np.array([a[g] for g in groups])
    totals_b = np.array([b[g] for g in groups])
    if totals_a.sum(0)[1] == 0:
        raise ValueError("the shared utterances have empty references: no CER to compare")
    delta = _rate(totals_a.sum(0)) - _rate(totals_b.sum(0))
    result: dict[str, Any] = {
        "utterances": len(shared),
        "this": _rate(totals_a.sum(0)),
        "other": _rate(totals_b.sum(0)),
        "delta": delta,
    }
    if len(groups) >= 2 and resamples >= 1:
        rng = np.random.default_rng(seed)
        picks = rng.integers(0, len(groups), size=(resamples, len(groups)))
        sums_a, sums_b = totals_a[picks].sum(1), totals_b[picks].sum(1)
        deltas = sums_a[:, 0] / np.maximum(sums_a[:, 1], 1) - sums_b[:, 0] / np.maximum(
            sums_b[:, 1], 1
        )
        tail = (1 - level) / 2 * 100
        low, high = np.percentile(deltas, [tail, 100 - tail])
        opposite = (deltas >= 0).mean() if delta < 0 else (deltas <= 0).mean()
        result.update(ci=[float(low), float(high)], p_value=float(min(1.0, 2 * opposite)))
    return result


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
    terms: list[str] | None = None,
    compare_rows: list[dict[str, Any]] | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """metrics.json content: headline numbers, CIs, breakdowns over `fields`, term recall,
    and the paired comparison with `compare_rows`."""
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
    metrics["breakdowns"] = breakdowns(rows, fields)
    if terms:
        metrics["term_recall"] = term_recall(rows, terms)
    if compare_rows is not None:
        metrics["compare"] = paired_bootstrap(
            rows, rescore(compare_rows), resamples=max(bootstrap, 1), seed=seed
        )
    return metrics


# ------------------------------------------------------------------ medical term recall


def load_terms(path: Path) -> list[str]:
    """Terms, one per line (`#` comments and blank lines skipped), scoring-normalized."""
    terms = []
    for line in Path(path).read_text(encoding="utf-8-sig").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            term = "".join(normalize_for_scoring(line).split())
            if term and term not in terms:
                terms.append(term)
    return terms


def count_terms(text: str, terms: Sequence[str]) -> dict[str, int]:
    """Occurrences of each term in space-free `text`, longest terms first, no overlaps.

    Matching on space-free text makes it tolerant of attached particles (josa) and of
    spacing: "고혈압이", "고혈압을" and "고 혈압" all contain 고혈압. A shorter term inside
    a longer one ("혈압" in "고혈압") is not counted twice.
    """
    compact = "".join(text.split())
    taken = [False] * len(compact)
    counts: dict[str, int] = {}
    for term in sorted(terms, key=len, reverse=True):
        start = compact.find(term)
        while start != -1:
            end = start + len(term)
            if not any(taken[start:end]):
                taken[start:end] = [True] * len(term)
                counts[term] = counts.get(term, 0) + 1
                start = compact.find(term, end)
            else:
                start = compact.find(term, start + 1)
    return counts


def term_recall(rows: Sequence[dict[str, Any]], terms: Sequence[str], top: int = 20) -> dict:
    """Share of reference term occurrences that the hypothesis reproduces (per utterance,
    min(reference count, hypothesis count)), and the most-missed terms."""
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
        key_of = (lambda row: _age_group(row.get("age"))) if key == "age" else (
            lambda row, key=key: row.get(key)
        )  # fmt: skip
        values = {str(key_of(row)) for row in rows if _groupable(key_of(row))}
        if 2 <= len(values) <= max_values:
            result[key] = _grouped(rows, key_of)
    result["duration"] = _grouped(rows, lambda row: duration_bucket(float(row["duration"])))
    return result


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
        for value, members in sorted(groups.items())
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
