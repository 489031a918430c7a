"""The redaction engine: the registry's recognizers on a text, overlaps resolved, each
identifier replaced by its tag; and the same on a transcript row, its segments and its timed
words kept consistent with its text."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxadapt.errors import ConfigError
from voxadapt.redact.patterns import load_patterns
from voxadapt.redact.types import TAGS, resolve_types

INSTALL_HINT = 'voxadapt redact needs Presidio and Kiwi: pip install "voxadapt[redact]"'
# Row fields that hold a transcript (a manifest row's raw text leaks as much as its text).
TEXT_FIELDS = ("text", "hypothesis", "reference", "raw_text", "reference_raw_text")


@dataclass(frozen=True)
class Span:
    """One identifier found in a text: its type key, its character offsets in the original
    text, and the rule that found it."""

    type: str
    start: int
    end: int
    detector: str


def check_tag(tag: str) -> str | None:
    """What is wrong with a --tag format (None: nothing); `{type}` is the Korean tag name,
    `{key}` the type key; without either the tag is a fixed mask."""
    try:
        tag.format(type="전화번호", key="phone")
    except (KeyError, IndexError, ValueError) as exc:
        return f"--tag {tag!r} is not a format: use {{type}} or {{key}} ({exc})"
    return None


def _resolve(spans: Iterable[tuple[Span, float]]) -> list[Span]:
    """Non-overlapping spans: a higher score wins an overlap, then the longer span."""
    chosen: list[Span] = []
    ordered = sorted(spans, key=lambda item: (-item[1], -(item[0].end - item[0].start)))
    for span, _ in ordered:
        if span.end > span.start and all(
            span.end <= other.start or span.start >= other.end for other in chosen
        ):
            chosen.append(span)
    return sorted(chosen, key=lambda span: span.start)


class Redactor:
    """Korean de-identification (see the package docstring). Build it once with `load`;
    `redact_text` and `redact_row` may be called from several threads."""

    def __init__(self, registry: Any, types: list[str], tag: str, lock: threading.Lock) -> None:
        self._registry = registry
        self.types = types
        self.tag = tag
        self._recognizers = sorted(
            registry.get_recognizers(language="ko", entities=types), key=lambda r: r.name
        )
        self._lock = lock

    @classmethod
    def load(
        cls,
        types: Sequence[str] | None = None,
        keep_types: Sequence[str] | None = None,
        tag: str = "[{type}]",
        patterns: Path | None = None,
    ) -> Redactor:
        """A redactor for `types` (keys or Korean tags; None: all) minus `keep_types`,
        replacing each identifier by `tag` ("[{type}]" -> "[전화번호]"; a text without
        {type} is a fixed mask), with hospital patient-number patterns from `patterns`."""
        chosen, unknown = resolve_types(list(types) if types is not None else None)
        kept, unknown_kept = resolve_types(list(keep_types or []))
        problems = [
            f"unknown type {name!r} (types: {', '.join(TAGS)})" for name in unknown + unknown_kept
        ]
        if check_tag(tag):
            problems.append(check_tag(tag) or "")
        selected = [key for key in chosen if key not in kept]
        if not selected and not problems:
            problems.append("no type left to redact: --keep-types removed them all")
        if problems:
            raise ConfigError("; ".join(problems), problems)
        patient = load_patterns(patterns)
        try:
            from voxadapt.redact.recognizers import build_registry
        except ImportError as exc:
            raise ConfigError(f"{INSTALL_HINT} ({exc.name} is missing)") from None
        registry, _, lock = build_registry(patient)
        return cls(registry, selected, tag, lock)

    def tag_for(self, key: str) -> str:
        """The replacement text of an identifier of type `key`."""
        return self.tag.format(type=TAGS[key], key=key)

    def find(self, text: str) -> list[Span]:
        """Every identifier of the chosen types in `text`, without overlaps, in order."""
        if not text or not text.strip():
            return []
        found = []
        for recognizer in self._recognizers:
            for result in recognizer.analyze(text, self.types, None):
                if result.entity_type not in self.types:
                    continue
                detector = (result.recognition_metadata or {}).get("detector")
                if detector is None:  # a PatternRecognizer: its pattern's name
                    pattern = getattr(result.analysis_explanation, "pattern_name", None)
                    detector = f"pattern:{pattern}" if pattern else recognizer.name
                span = Span(result.entity_type, result.start, result.end, detector)
                found.append((span, float(result.score)))
        return _resolve(found)

    def redact_text(self, text: str) -> tuple[str, list[Span]]:
        """`text` with every identifier replaced by its tag, and the spans (offsets in the
        original `text`)."""
        spans = self.find(text)
        return self.apply_spans(text, 0, len(text), spans), spans

    def apply_spans(self, text: str, low: int, high: int, spans: Sequence[Span]) -> str:
        """text[low:high] redacted: a span starting inside it becomes its tag, the part of a
        span that started before `low` is dropped."""
        pieces, position = [], low
        for span in spans:
            if span.end <= low or span.start >= high:
                continue
            if span.start >= position:
                pieces.append(text[position : span.start])
                pieces.append(self.tag_for(span.type))
            position = max(position, min(span.end, high))
        pieces.append(text[position:high])
        return "".join(pieces)

    def redact_row(self, row: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """A transcript row with its text fields (text, hypothesis, reference and their raw
        forms), segments and words redacted, and one record per identifier: id, field,
        type, start, end (characters of the original field), detector, and start_s/end_s
        (seconds) where words are timed. Records never hold the original text."""
        redacted = copy.deepcopy(row)
        records: list[dict[str, Any]] = []
        spans_of: dict[str, list[Span]] = {}
        for field in TEXT_FIELDS:
            if isinstance(row.get(field), str):
                redacted[field], spans_of[field] = self.redact_text(row[field])
        main = "text" if isinstance(row.get("text"), str) else "hypothesis"
        text, spans = row.get(main), spans_of.get(main, [])
        times: dict[Span, tuple[float, float]] = {}
        if isinstance(row.get("words"), list) and isinstance(text, str):
            redacted["words"] = self._redact_words(text, spans, row["words"], times)
        segments = row.get("segments")
        if isinstance(segments, list) and isinstance(text, str):
            redacted["segments"] = self._redact_segments(text, spans, segments)
        for field, field_spans in spans_of.items():
            for span in field_spans:
                record = {
                    "id": row.get("id"),
                    "field": field,
                    "type": span.type,
                    "start": span.start,
                    "end": span.end,
                    "detector": span.detector,
                }
                if field == main and span in times:
                    record["start_s"], record["end_s"] = times[span]
                records.append(record)
        return redacted, records

    def _redact_segments(
        self, text: str, spans: list[Span], segments: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Each segment's text (and words) redacted as its part of the row's text: a span
        across two segments is tagged in the first; times are kept."""
        located = _locate(text, [str(s.get("text") or "") for s in segments])
        result = []
        for number, segment in enumerate(segments):
            segment = copy.deepcopy(segment)
            if isinstance(segment.get("text"), str):
                if located is None:  # segments that are not the text's parts: on their own
                    segment["text"], own = self.redact_text(segment["text"])
                else:
                    low, high = located[number]
                    own = [
                        Span(s.type, max(s.start, low) - low, min(s.end, high) - low, s.detector)
                        for s in spans
                        if s.start < high and s.end > low
                    ]
                    segment["text"] = self.apply_spans(text, low, high, spans)
                if isinstance(segment.get("words"), list):
                    original = segments[number]["text"]
                    segment["words"] = self._redact_words(original, own, segment["words"], {})
            result.append(segment)
        return result

    def _redact_words(
        self,
        text: str,
        spans: list[Span],
        words: list[dict[str, Any]],
        times: dict[Span, tuple[float, float]],
    ) -> list[dict[str, Any]]:
        """Timed words redacted like `text`: the words an identifier covers become one word
        (its tag, with what the first and last word hold outside the identifier) from the
        first word's start to the last word's end. `times` receives each span's seconds."""
        located = _locate(text, [str(w.get("word") or "") for w in words])
        if located is None:  # words that are not the text's: redacted as their own text
            joined = " ".join(str(w.get("word") or "") for w in words)
            located = _locate(joined, [str(w.get("word") or "") for w in words])
            text, spans = joined, self.find(joined)
            if located is None:
                return [dict(w) for w in words]
        result: list[dict[str, Any]] = []
        index = 0
        while index < len(words):
            low, high = located[index]
            last = index
            touching = [s for s in spans if s.start < high and s.end > low]
            while touching and last + 1 < len(words):
                reach = max(s.end for s in touching)
                if located[last + 1][0] >= reach:
                    break
                last += 1
                high = located[last][1]
                touching = [s for s in spans if s.start < high and s.end > low]
            word = dict(words[index])
            if touching:
                word["word"] = self.apply_spans(text, low, high, spans)
                word["end"] = words[last].get("end", word.get("end"))
                for span in touching:
                    begin = times.get(span, (word.get("start"), word.get("end")))[0]
                    times[span] = (begin, word.get("end"))
            result.append(word)
            index = last + 1
        return result


def _locate(text: str, pieces: list[str]) -> list[tuple[int, int]] | None:
    """Where each piece lies in `text`, in order (None when one is not found)."""
    found, cursor = [], 0
    for piece in pieces:
        stripped = piece.strip()
        if not stripped:
            found.append((cursor, cursor))
            continue
        at = text.find(stripped, cursor)
        if at < 0:
            return None
        found.append((at, at + len(stripped)))
        cursor = at + len(stripped)
    return found
