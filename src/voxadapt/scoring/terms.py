"""Medical term recall: term variant sets from a terms file, occurrences in normalized text, and
the share the hypotheses reproduce."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from voxadapt.errors import ConfigError
from voxadapt.text import normalize_for_scoring, read_term_lines

log = logging.getLogger(__name__)


def load_terms(path: Path, policy: str = "default") -> list[tuple[str, ...]]:
    """Term variant sets, one per line, scoring-normalized and space-free.

    A line holds one term (`고혈압`) or the spellings of one spoken term separated by `|`
    (`CT|씨티|시티`); the first spelling names the set in reports. `#` starts a comment;
    blank lines are skipped. A spelling already in an earlier set is dropped from later
    ones (with a warning), so every spelling counts for exactly one set. Spellings are
    normalized under the scoring `policy` of the run (`20mg` reads as `이십밀리그램` under
    `numbers`), as the transcripts they are counted in are.
    """
    variant_sets: list[tuple[str, ...]] = []
    seen: set[str] = set()
    lines = read_term_lines(path)
    for number, line_spellings in lines:
        spellings = []
        for spelling in line_spellings:
            spelling = "".join(normalize_for_scoring(spelling, policy).split())
            if not spelling or spelling in spellings:
                continue
            if spelling in seen:
                log.warning("%s:%d: %r is already in an earlier term set", path, number, spelling)
                continue
            spellings.append(spelling)
        if spellings:
            seen.update(spellings)
            variant_sets.append(tuple(spellings))
    if not variant_sets:  # term recall would silently go missing from metrics.json
        what = f"none of its {len(lines)} terms keeps a letter or digit" if lines else "no terms"
        raise ConfigError(f"terms file {path} has {what} after scoring normalization")
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
    rows: Sequence[dict[str, Any]],
    terms: Sequence[str | Sequence[str]],
    top: int = 20,
    *,
    bootstrap: int = 0,
    seed: int = 0,
) -> dict:
    """Share of reference term occurrences that the hypothesis reproduces (per utterance,
    min(reference count, hypothesis count); any spelling of a variant set reproduces any
    other), and the most-missed terms by their first spelling; with `bootstrap` resamples,
    its 95% CI (`ci95`), resampling speakers as the error rates' intervals do.

    `terms`: plain strings or variant sets (tuples of spellings), as `load_terms` returns.
    """
    from voxadapt.scoring.intervals import no_interval_reason, ratio_interval, speaker_group

    occurrences: dict[str, int] = {}
    hits: dict[str, int] = {}
    per_row: list[tuple[str, int, int]] = []  # (speaker, hits, occurrences) for the CI
    for row in rows:
        in_reference = count_terms(row["reference_normalized"], terms)
        if not in_reference:
            continue
        in_hypothesis = count_terms(row["hypothesis_normalized"], terms)
        row_hits = 0
        for term, count in in_reference.items():
            occurrences[term] = occurrences.get(term, 0) + count
            hit = min(count, in_hypothesis.get(term, 0))
            hits[term] = hits.get(term, 0) + hit
            row_hits += hit
        per_row.append((speaker_group(row), row_hits, sum(in_reference.values())))
    total = sum(occurrences.values())
    missed = sorted(
        ((t, occurrences[t] - hits[t], occurrences[t]) for t in occurrences),
        key=lambda item: (-item[1], -item[2], item[0]),
    )
    interval = ratio_interval(per_row, resamples=bootstrap, seed=seed) if bootstrap else None
    # the speakers of the utterances that hold a term: the interval's own clusters
    speakers = len({group for group, _, _ in per_row})
    reason = no_interval_reason(speakers) if bootstrap else None
    return {
        "terms": len(terms),
        "occurrences": total,
        "hits": sum(hits.values()),
        "recall": sum(hits.values()) / total if total else None,
        **({"ci95": list(interval)} if interval else {}),
        "speakers": speakers,
        **({"no_interval": reason} if reason else {}),
        "most_missed": [
            {"term": t, "missed": m, "occurrences": o} for t, m, o in missed[:top] if m
        ],
    }
