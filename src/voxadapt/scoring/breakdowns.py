"""Where the errors are: metrics per metadata value and duration bucket, and the most frequent
substitutions, deletions and insertions."""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from voxadapt.scoring.rates import corpus_metrics

DURATION_BUCKETS = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0)


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
