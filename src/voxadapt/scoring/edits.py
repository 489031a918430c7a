"""Edit distances of one reference/hypothesis pair: character and eojeol counts (RapidFuzz, the
engine under jiwer), ESPnet's space-normalized hypothesis for sWER, and the display alignment."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import jiwer


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
