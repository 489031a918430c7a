"""Korean CER/WER from edit counts: one scored row per utterance, corpus-level (micro) rates over
rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from voxadapt.scoring.edits import EditCounts, char_edits, pair_scores, word_edits
from voxadapt.text import normalize_for_scoring, scoring_version


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
    reference: str,
    hypothesis: str,
    *,
    variants: Sequence[Any] | None = None,
    policy: str = "default",
) -> dict[str, Any]:
    """Normalized forms and per-utterance edit counts of one reference/hypothesis pair.

    With `variants` (a dual transcription's pieces, see `references`), also the counts
    against the closest reference the label allows (`multi_reference`: which form each span
    took, and that reference's cer/wer counts). `policy` names the scoring normalization
    (`text.SCORING_POLICIES`).
    """
    ref_norm = normalize_for_scoring(reference, policy)
    hyp_norm = normalize_for_scoring(hypothesis, policy)
    row = {
        "reference_normalized": ref_norm,
        "hypothesis_normalized": hyp_norm,
        "scores": pair_scores(ref_norm, hyp_norm),
        "scoring": scoring_version(policy),
    }
    if variants:
        from voxadapt.scoring.references import closest_reference

        closest = closest_reference(variants, hyp_norm, policy=policy)
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


def rescore(rows: list[dict[str, Any]], policy: str = "default") -> list[dict[str, Any]]:
    """Recompute scores of rows scored under another normalization version than `policy`'s."""
    for row in rows:
        if row.get("scoring") != scoring_version(policy):
            row.update(
                score_row(
                    row.get("reference") or "",
                    row.get("hypothesis") or "",
                    variants=row.get("text_variants"),
                    policy=policy,
                )
            )
    return rows


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
