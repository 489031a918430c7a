"""Multi-reference scoring: the closest reference a dual transcription allows.

AI-Hub/KsponSpeech labels write both forms of numbers, units and loanwords,
`(70%)/(칠십 퍼센트)`. `prepare` keeps them as `text_variants`: pieces of the training text,
each either fixed text or the [spelling, pronunciation] pair of one span. A hypothesis may
say the spelling of one span and the pronunciation of another, so the closest reference is
chosen **per span**: an exact Levenshtein search over the lattice of all combinations (one
DP row per reference character, vectorized over the hypothesis), not an enumeration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from voxadapt.text import normalize_for_scoring

Variants = Sequence[str | Sequence[str]]


@dataclass
class ClosestReference:
    """The reference (scoring-normalized) closest to a hypothesis, and how it was built."""

    text: str
    choices: list[int]  # per span: 0 = spelling, 1 = pronunciation
    distance: int  # character edits, whitespace removed


def _next_row(row: np.ndarray, char: str, hypothesis: np.ndarray) -> np.ndarray:
    """The Levenshtein DP row after one more reference character.

    new[j] = min(row[j] + 1, row[j-1] + (char != h[j-1]), new[j-1] + 1); the last term is a
    running minimum: new[j] = j + min_{k<=j}(candidate[k] - k).
    """
    candidate = row + 1
    candidate[1:] = np.minimum(candidate[1:], row[:-1] + (hypothesis != ord(char)))
    offsets = np.arange(len(row))
    return np.minimum.accumulate(candidate - offsets) + offsets


def _matrix(start: np.ndarray, piece: str, hypothesis: np.ndarray) -> np.ndarray:
    rows = [start]
    for char in piece:
        rows.append(_next_row(rows[-1], char, hypothesis))
    return np.stack(rows)


def _entry_column(matrix: np.ndarray, piece: str, hypothesis: str, column: int) -> int:
    """Walk an alternative's DP matrix back from (end, column) to its first row: the
    hypothesis position where the piece's alignment starts."""
    i, j = len(piece), column
    while i > 0:
        cost = matrix[i, j]
        if j > 0 and matrix[i - 1, j - 1] + (piece[i - 1] != hypothesis[j - 1]) == cost:
            i, j = i - 1, j - 1
        elif matrix[i - 1, j] + 1 == cost:
            i -= 1
        else:  # an insertion: move left within the row
            j -= 1
    return j


def closest_reference(
    variants: Variants, hypothesis: str, *, policy: str = "default"
) -> ClosestReference:
    """The combination of span forms whose reference has the fewest character edits to the
    (scoring-normalized) hypothesis, whitespace removed as in CER. `text` is the chosen
    transcript, scoring-normalized as a whole."""
    pieces = [
        [normalize_for_scoring(piece, policy)]
        if isinstance(piece, str)
        else [normalize_for_scoring(form, policy) for form in piece]
        for piece in variants
    ]
    compact_hypothesis = "".join(hypothesis.split())
    codes = np.frombuffer(compact_hypothesis.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    row = np.arange(len(codes) + 1)
    trail: list[list[tuple[str, np.ndarray]]] = []  # per piece: (compact form, DP matrix)
    for forms in pieces:
        matrices = [("".join(f.split()), None) for f in forms]
        matrices = [(c, _matrix(row, c, codes)) for c, _ in matrices]
        trail.append(matrices)
        row = np.min(np.stack([m[-1] for _, m in matrices]), axis=0)
    column, choices = len(codes), []
    for forms, matrices in zip(reversed(pieces), reversed(trail)):
        best = min(range(len(matrices)), key=lambda a: (matrices[a][1][-1, column], a))
        compact, matrix = matrices[best]
        column = _entry_column(matrix, compact, compact_hypothesis, column)
        if len(forms) > 1:
            choices.append(best)
    choices.reverse()
    return ClosestReference(
        normalize_for_scoring(rebuild(variants, choices), policy), choices, int(row[-1])
    )


def rebuild(variants: Variants, choices: Sequence[int]) -> str:
    """The transcript with the given form (0 spelling, 1 pronunciation) for each span."""
    spans = iter(choices)
    return "".join(piece if isinstance(piece, str) else piece[next(spans)] for piece in variants)
