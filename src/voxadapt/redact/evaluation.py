"""How well redaction finds identifiers on labelled text: character-level precision and
recall per type (`voxadapt redact --gold`, bench/redact.py).

Gold file: JSON lines, one text each, with its identifier spans (character offsets into
`text`, end exclusive; `type` a type key or its Korean tag):

    {"id": "u1", "text": "전화번호는 공일공 일이삼사 오육칠팔이에요",
     "spans": [{"start": 6, "end": 19, "type": "phone"}]}

Characters are counted without whitespace, so "공일공 일이삼사" and "공일공일이삼사" weigh the
same. Per type: recall = gold characters of the type found as that type / gold characters
of the type; precision = predicted characters of the type that are gold of the type /
predicted characters of the type. `hidden_recall` counts a gold character found under any
type (it is removed either way); `all` pools the types.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from voxadapt.errors import ConfigError
from voxadapt.manifest import iter_jsonl
from voxadapt.redact.engine import Redactor, Span
from voxadapt.redact.types import resolve_types

GoldSpan = tuple[str, int, int]  # type key, start, end


def read_gold(path: Path) -> list[tuple[str, str, list[GoldSpan]]]:
    """(id, text, spans) of every line of a gold file; ConfigError naming a bad line."""
    items = []
    for number, record in iter_jsonl(Path(path)):
        where = f"{path}:{number}"
        text = record.get("text")
        if not isinstance(text, str):
            raise ConfigError(f"{where}: a gold line needs a `text` string")
        spans: list[GoldSpan] = []
        for span in record.get("spans") or []:
            keys, unknown = resolve_types([str(span.get("type", ""))])
            start, end = span.get("start"), span.get("end")
            if unknown or not isinstance(start, int) or not isinstance(end, int):
                raise ConfigError(
                    f"{where}: each span needs integer start, end and a known type, not {span}"
                )
            if not 0 <= start < end <= len(text):
                raise ConfigError(f"{where}: span {start}-{end} lies outside the text")
            spans.append((keys[0], start, end))
        items.append((str(record.get("id", number)), text, spans))
    return items


def _chars(text: str, spans: Iterable[tuple[str, int, int]]) -> dict[int, str]:
    """Non-space character positions -> the type of the span covering them."""
    covered = {}
    for kind, start, end in spans:
        for position in range(start, end):
            if not text[position].isspace():
                covered[position] = kind
    return covered


def score_spans(items: Iterable[tuple[str, list[GoldSpan], list[Span]]]) -> dict[str, Any]:
    """Character-level precision and recall per type (see the module docstring) over
    (text, gold spans, predicted spans) triples."""
    gold_n, pred_n, both, hidden = Counter(), Counter(), Counter(), Counter()
    for text, gold, predicted in items:
        gold_chars = _chars(text, gold)
        pred_chars = _chars(text, [(s.type, s.start, s.end) for s in predicted])
        for position, kind in gold_chars.items():
            gold_n[kind] += 1
            hidden[kind] += position in pred_chars
            both[kind] += pred_chars.get(position) == kind
        for kind in pred_chars.values():
            pred_n[kind] += 1
    report: dict[str, Any] = {}
    for kind in sorted(set(gold_n) | set(pred_n)):
        report[kind] = _rates(gold_n[kind], pred_n[kind], both[kind], hidden[kind])
    report["all"] = _rates(
        sum(gold_n.values()), sum(pred_n.values()), sum(both.values()), sum(hidden.values())
    )
    return report


def _rates(gold: int, predicted: int, correct: int, hidden: int) -> dict[str, Any]:
    return {
        "gold_chars": gold,
        "predicted_chars": predicted,
        "recall": correct / gold if gold else None,
        "precision": correct / predicted if predicted else None,
        "hidden_recall": hidden / gold if gold else None,
    }


def evaluate_gold(redactor: Redactor, path: Path) -> dict[str, Any]:
    """`score_spans` of `redactor` on the gold file `path`."""
    items = read_gold(path)
    report = score_spans((text, gold, redactor.find(text)) for _, text, gold in items)
    return {"gold": str(path), "texts": len(items), "by_type": report}
