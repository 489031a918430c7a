"""Korean CER/WER on jiwer (RapidFuzz underneath): corpus-level (micro) rates from edit counts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import jiwer

from voxadapt.text import normalize_for_scoring


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
    def rate(self) -> float:
        """(S + D + I) / N; an empty reference with insertions counts as rate 1 per error."""
        if self.reference_length == 0:
            return float(self.errors > 0)
        return self.errors / self.reference_length

    def __add__(self, other: EditCounts) -> EditCounts:
        return EditCounts(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values())))


def _counts(output: jiwer.CharacterOutput | jiwer.WordOutput) -> EditCounts:
    return EditCounts(
        substitutions=output.substitutions,
        deletions=output.deletions,
        insertions=output.insertions,
        reference_length=output.hits + output.substitutions + output.deletions,
    )


def char_edits(reference: str, hypothesis: str, *, spaces: bool = False) -> EditCounts:
    """Character edit counts of one pair; by default whitespace is removed first (Korean CER)."""
    if not spaces:
        reference, hypothesis = "".join(reference.split()), "".join(hypothesis.split())
    if not reference and not hypothesis:
        return EditCounts()
    if not reference:
        return EditCounts(insertions=len(hypothesis))
    if not hypothesis:
        return EditCounts(deletions=len(reference), reference_length=len(reference))
    return _counts(jiwer.process_characters(reference, hypothesis))


def word_edits(reference: str, hypothesis: str) -> EditCounts:
    """Word (eojeol: space-separated) edit counts of one pair."""
    ref_words, hyp_words = reference.split(), hypothesis.split()
    if not ref_words and not hyp_words:
        return EditCounts()
    if not ref_words:
        return EditCounts(insertions=len(hyp_words))
    if not hyp_words:
        return EditCounts(deletions=len(ref_words), reference_length=len(ref_words))
    return _counts(jiwer.process_words(reference, hypothesis))


@dataclass
class ErrorRates:
    """Corpus-level rates over normalized text."""

    cer: float  # characters, whitespace removed
    wer: float  # eojeol
    cer_counts: EditCounts
    wer_counts: EditCounts


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> ErrorRates:
    """Micro (corpus-level) CER without spaces and WER, after scoring normalization."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    cer_total, wer_total = EditCounts(), EditCounts()
    for reference, hypothesis in zip(references, hypotheses):
        reference, hypothesis = normalize_for_scoring(reference), normalize_for_scoring(hypothesis)
        cer_total = cer_total + char_edits(reference, hypothesis)
        wer_total = wer_total + word_edits(reference, hypothesis)
    return ErrorRates(cer_total.rate, wer_total.rate, cer_total, wer_total)
