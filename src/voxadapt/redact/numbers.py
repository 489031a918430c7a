"""Which identifier a spoken or written number is: by the cue before it ("주민번호는", "계좌
번호는") and by its shape (length, prefix, date inside, card checksum).

Every number of a transcript (see `spoken.number_runs`) is tried as whole groups, longest
first, in three passes: shapes and cue-typical lengths; then any length a cue allows; then a
long number (9+ digits) no rule names, as `other_id`. A number followed by a unit or
counter ("130에 85", "500 밀리그램") measures something and is never taken by the last pass.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from voxadapt.redact.patterns import PatientNumberPatterns
from voxadapt.redact.spoken import NumberRun, number_runs
from voxadapt.redact.types import NUMBER_CUES

_CUE_WINDOW = 32  # characters before a number searched for its cue
_PHONE_SHAPES = re.compile(
    r"01[016789]\d{7,8}"  # mobile
    r"|02\d{7,8}"  # Seoul
    r"|0[3-6][1-5]\d{7,8}"  # other area codes
    r"|070\d{8}|050\d{8,9}|080\d{7}"  # internet phone, personal numbers, toll-free
    r"|1[5-9]\d{6}"  # 1588-1234 style
)
# Units and counters: a number followed by one measures something (a dose, a reading).
_UNIT_AFTER = re.compile(
    r"\s*(?:mg|ml|kg|cc|mmHg|%|밀리|미리|그램|씨씨|시시|킬로|센티|퍼센트|프로|도(?![가-힣])"
    r"|번|회|개|알|정|포|분|초|시간|일|주|개월|달|년|세|살(?![아았고던면며])|층|원|명|점|유닛|단위"
    r"|배)",
    re.IGNORECASE,
)
# Letter names before a passport number read aloud ("엠 일이삼...").
_LETTER_NAMES = (
    "에이", "비", "씨", "디", "이", "에프", "지", "에이치", "아이", "제이", "케이", "엘", "엠",
    "엔", "오", "피", "큐", "알", "에스", "티", "유", "브이", "더블유", "엑스", "와이", "제트",
)  # fmt: skip
_LETTER_BEFORE = re.compile(
    r"(?:[A-Za-z]|" + "|".join(sorted(_LETTER_NAMES, key=len, reverse=True)) + r")\s*$"
)
# Lengths a cue makes typical (pass 1) and possible (pass 2), in digits.
_TYPICAL = {
    "resident_number": (13, 13),
    "foreigner_number": (13, 13),
    "phone": (9, 11),
    "insurance": (11, 11),
    "account": (10, 14),
    "card": (15, 16),
    "passport": (8, 9),
    "driver_licence": (12, 12),
    "birth_date": (6, 8),
}
_POSSIBLE = {
    "resident_number": (6, 13),
    "foreigner_number": (6, 13),
    "phone": (7, 12),
    "insurance": (8, 13),
    "account": (8, 16),
    "card": (14, 19),
    "passport": (7, 9),
    "driver_licence": (10, 12),
    "birth_date": (6, 8),
}
_OTHER_MIN_DIGITS = 9


def _valid_date(yymmdd: str) -> bool:
    month, day = int(yymmdd[2:4]), int(yymmdd[4:6])
    return 1 <= month <= 12 and 1 <= day <= 31


def luhn_valid(digits: str) -> bool:
    """The card-number checksum (ISO/IEC 7812)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def shape_type(digits: str, run: NumberRun) -> str | None:
    """The identifier a number is by its shape alone, without a cue."""
    n = len(digits)
    if n == 13 and _valid_date(digits[:6]):
        if digits[6] in "12349":
            return "resident_number"
        if digits[6] in "5678":
            return "foreigner_number"
    if _PHONE_SHAPES.fullmatch(digits):
        return "phone"
    if n == 16 and (luhn_valid(digits) or [len(g.digits) for g in run.groups] == [4, 4, 4, 4]):
        return "card"
    if n == 12 and [len(g.digits) for g in run.groups] == [2, 2, 6, 2]:
        return "driver_licence"
    return None


class NumberClassifier:
    """Finds identifiers among the numbers of a text (see the module docstring)."""

    def __init__(self, patient: PatientNumberPatterns) -> None:
        self.cues = {**NUMBER_CUES, "patient_number": patient.cues}
        self.typical = {**_TYPICAL, "patient_number": (patient.min_digits, patient.max_digits)}
        self.possible = {**_POSSIBLE, "patient_number": (patient.min_digits, patient.max_digits)}
        by_cue = [(cue, kind) for kind, cues in self.cues.items() for cue in cues]
        self._cue_pattern = re.compile(
            "|".join(re.escape(cue) for cue, _ in sorted(by_cue, key=lambda c: -len(c[0])))
        )
        self._cue_kind = dict(by_cue)
        self.min_digits = min(6, patient.min_digits)  # shorter numbers are never identifiers

    def cue_before(self, text: str, start: int, floor: int = 0) -> str | None:
        """The type named by the cue nearest before `start` (spaces ignored), if any; a cue
        before `floor` (the end of the previous number) named that number, not this one."""
        window = "".join(text[max(floor, start - _CUE_WINDOW) : start].split())
        best: tuple[int, int, str] | None = None
        for match in self._cue_pattern.finditer(window):
            key = (match.end(), len(match.group()), self._cue_kind[match.group()])
            best = key if best is None or key[:2] > best[:2] else best
        return best[2] if best else None

    def find(self, text: str) -> Iterator[tuple[str, int, int, str]]:
        """(type, start, end, detector) of every identifier number in `text`."""
        floor = 0
        for run in number_runs(text):
            if len(run.digits) < self.min_digits:
                continue  # no identifier is that short; most numbers are
            yield from self._classify_run(text, run, floor)
            floor = run.end

    def _classify_run(
        self, text: str, run: NumberRun, floor: int
    ) -> Iterator[tuple[str, int, int, str]]:
        covered: set[int] = set()
        candidates = [sub for sub in run.sub_runs() if len(sub.digits) >= self.min_digits]
        for rule in (self._typical, self._possible, self._other):
            for sub in candidates:
                if covered & {g.start for g in sub.groups}:
                    continue
                found = rule(text, sub, floor)
                if found is None:
                    continue
                kind, detector = found
                covered |= {g.start for g in sub.groups}
                yield kind, self._start(text, sub, kind), sub.end, detector

    def _typical(self, text: str, sub: NumberRun, floor: int) -> tuple[str, str] | None:
        digits, cue = sub.digits, self.cue_before(text, sub.start, floor)
        if cue is not None:
            low, high = self.typical[cue]
            if low <= len(digits) <= high and self._fits(cue, digits):
                return cue, "number:cue"
        kind = shape_type(digits, sub)
        if kind is not None and not (cue in ("foreigner_number",) and kind == "resident_number"):
            return kind, "number:shape"
        return None

    def _possible(self, text: str, sub: NumberRun, floor: int) -> tuple[str, str] | None:
        cue = self.cue_before(text, sub.start, floor)
        if cue is None or _measures(text, sub.end):
            return None
        low, high = self.possible[cue]
        if low <= len(sub.digits) <= high and self._fits(cue, sub.digits):
            return cue, "number:cue"
        return None

    def _other(self, text: str, sub: NumberRun, floor: int) -> tuple[str, str] | None:
        if len(sub.digits) >= _OTHER_MIN_DIGITS and not _measures(text, sub.end):
            return "other_id", "number:long"
        return None

    @staticmethod
    def _fits(kind: str, digits: str) -> bool:
        if kind == "birth_date":  # yymmdd or yyyymmdd
            return len(digits) in (6, 8) and _valid_date(digits[-6:])
        if kind in ("resident_number", "foreigner_number"):
            return _valid_date(digits[:6])
        if kind == "phone":
            return len(digits) <= 8 or bool(_PHONE_SHAPES.fullmatch(digits))
        return True

    @staticmethod
    def _start(text: str, sub: NumberRun, kind: str) -> int:
        if kind != "passport":
            return sub.start
        letter = _LETTER_BEFORE.search(text, 0, sub.start)
        return letter.start() if letter else sub.start


def _measures(text: str, end: int) -> bool:
    """Whether a unit or counter follows position `end` (the number measures something)."""
    return bool(_UNIT_AFTER.match(text, end))


__all__ = ["NumberClassifier", "luhn_valid", "number_runs", "shape_type"]
