"""Find numbers in a transcript however they were spoken or written, with their offsets.

An ASR transcript says "공일공 일이삼사 오육칠팔" or "팔오공삼일이 다시 일이삼사오육칠", not
"010-1234-5678": identifiers are read digit by digit (0 as 공 or 영), a group may be read as a
Sino-Korean number ("천이백삼십사" = 1234, "팔십오" = 85), groups are joined by spaces,
hyphens, "다시", "에" or "의", and the model's spacing may cut or glue them anywhere.
`number_runs` turns such a stretch into one `NumberRun`: its digits, and each group's digits
and character span in the original text, so that a recognizer can test the digits (length,
shape, checksum) and report offsets in what the user sees.

A Hangul group counts only as a whole word or followed by a particle, copula or counter
(`공일공에`, `오육칠팔이에요`, `삼십 분`): "사람", "오늘", "이상" or "구토" start with digit
syllables but are words, and are never read as numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DIGIT_SYLLABLES = {
    "공": "0", "영": "0", "일": "1", "이": "2", "삼": "3", "사": "4", "오": "5", "육": "6",
    "륙": "6", "칠": "7", "팔": "8", "구": "9",
}  # fmt: skip
_UNITS = {"십": 10, "백": 100, "천": 1000}
_HANGUL_NUMBER = "[" + "".join(DIGIT_SYLLABLES) + "".join(_UNITS) + "]+"
# A group: ASCII digits, or Hangul digit syllables (with 십/백/천 for a Sino-Korean reading).
_GROUP = re.compile(rf"[0-9]+|{_HANGUL_NUMBER}")
# What may stand between two groups of one number: spacing, hyphens and dots, and the
# words speakers put there ("다시" for the hyphen, "에"/"의" between groups, "하이픈").
_JOINER = re.compile(r"(?:[\s\-–—.,/·]|다시|에|의|하이픈|대시)*")
_MAX_JOINER_CHARS = 8
# What may follow a Hangul number inside its word: particles, the copula, counters and units,
# the words that follow a number in an address or a date. Anything else makes it a word.
NUMBER_SUFFIXES = tuple(
    sorted(
        (
            "에", "의", "요", "이요", "이에요", "예요", "에요", "입니다", "이고", "고", "이구요",
            "구요", "이죠", "죠", "이며", "며", "인데", "이랑", "랑", "하고", "으로", "로", "이야",
            "야", "이거든요", "거든요", "이었", "였", "은", "는", "이", "가", "을", "를", "다시",
            "번", "호", "동", "년", "월", "일", "생", "이니까", "니까", "까지", "부터", "이나",
            "나", "도", "만", "쯤", "정도", "라고", "이라고", "이라", "라", "와", "과", "하",
            "점", "분", "초", "시", "세", "살", "개", "주", "층", "킬로", "밀리", "미리", "센티",
            "그램", "씨씨", "시시", "퍼센트", "프로", "회", "차", "배", "원", "명", "알", "정",
            "대", "길", "번지", "번길", "리", "가지", "단위", "유닛", "포", "병", "장", "통",
            "에서", "이라는", "라는", "이란", "란", "인", "이지", "지", "이네", "네", "맞",
        ),
        key=len,
        reverse=True,
    )
)  # fmt: skip
# A 이 before 에요/었 is the copula ("오육칠팔이에요"; the digit 2 would take 예요: "일이예요").
_COPULA_ALWAYS = ("에요", "었")
# Before these a 이 may be either ("일이요", "팔이고요"): both readings are tried.
_COPULA_MAYBE = ("요", "고", "구요", "죠", "며", "라", "랑", "니까", "야")
# A Hangul number may follow these syllables glued (ASR spacing: "번호는공일공", "다시공").
_GLUED_AFTER = set("는은가을를요로호서고에의시")


def _is_hangul(char: str) -> bool:
    return "\uac00" <= char <= "\ud7a3"


def has_final_consonant(syllable: str) -> bool:
    """Whether a Hangul syllable ends in a consonant (받침): 팔 yes, 사 no."""
    return _is_hangul(syllable) and (ord(syllable) - 0xAC00) % 28 != 0


def sino_value(word: str) -> int | None:
    """The value of a Sino-Korean number word without 만 (천이백삼십사 -> 1234, 팔십오 -> 85,
    백 -> 100); None when the word is not one (two digits in a row, a unit twice)."""
    total, digit, last_unit = 0, None, 10_000
    for char in word:
        if char in _UNITS:
            unit = _UNITS[char]
            if unit >= last_unit:
                return None
            total += (1 if digit is None else digit) * unit
            digit, last_unit = None, unit
        else:
            if digit is not None:
                return None
            digit = int(DIGIT_SYLLABLES[char])
    return total + (digit or 0)


def group_digits(word: str) -> str | None:
    """The digits a group stands for: ASCII digits as written, a Hangul group digit by digit
    ("공일공" -> "010"), or, with 십/백/천, as a Sino-Korean number ("천이백삼십사" ->
    "1234"); None when it is no number."""
    if word.isascii():
        return word
    if any(char in _UNITS for char in word):
        value = sino_value(word)
        return None if value is None else str(value)
    return "".join(DIGIT_SYLLABLES[char] for char in word)


@dataclass(frozen=True)
class Group:
    """One group of a number: its digits and its character span in the text."""

    start: int
    end: int
    digits: str
    spoken: bool  # read in Hangul
    # the same group without a final 이 that may be the copula ("일이요": 12, or 1 + 이요)
    alternative: Group | None = None


@dataclass(frozen=True)
class NumberRun:
    """Groups of digits said or written as one stretch (see the module docstring)."""

    groups: tuple[Group, ...]

    @property
    def start(self) -> int:
        return self.groups[0].start

    @property
    def end(self) -> int:
        return self.groups[-1].end

    @property
    def digits(self) -> str:
        return "".join(group.digits for group in self.groups)

    def sub_runs(self) -> list[NumberRun]:
        """Every stretch of whole consecutive groups, longest first: a recognizer can find an
        identifier inside a run that spoken words glued to it ("... 오육칠팔 이 번호로").
        A stretch whose last group may end in the copula comes first without it."""
        n = len(self.groups)
        runs = []
        for i in range(n):
            for j in range(i + 1, n + 1):
                last = self.groups[j - 1].alternative
                if last is not None:
                    runs.append(NumberRun((*self.groups[i : j - 1], last)))
                runs.append(NumberRun(self.groups[i:j]))
        return sorted(runs, key=lambda run: (-len(run.groups), run.start))


def _word_end(text: str, position: int) -> int:
    while position < len(text) and _is_hangul(text[position]):
        position += 1
    return position


def _hangul_group(text: str, start: int, end: int) -> tuple[int, int] | None:
    """The span of the Hangul number at text[start:end], shortened until the rest of its word
    is a particle, copula or counter; None when nothing of it is a number."""
    if start > 0 and _is_hangul(text[start - 1]) and text[start - 1] not in _GLUED_AFTER:
        return None  # inside a word: 성공, 가사
    word_end = _word_end(text, end)
    while end > start:
        rest = text[end:word_end]
        if text[end - 1] == "이" and rest.startswith(_COPULA_ALWAYS) and end - 2 >= 0:
            end -= 1  # 오육칠팔이에요, 1234이에요: the copula, not a 2
            continue
        if (not rest or rest.startswith(NUMBER_SUFFIXES)) and group_digits(text[start:end]):
            return start, end
        end -= 1
    return None


def _groups(text: str) -> list[Group]:
    groups = []
    for match in _GROUP.finditer(text):
        start, end = match.span()
        if text[start].isdigit():
            if start > 0 and text[start - 1].isascii() and text[start - 1].isalpha():
                continue  # B12, A1c: part of a name
            groups.append(Group(start, end, match.group(), False))
            continue
        span = _hangul_group(text, start, end)
        if span is None:
            continue
        start, end = span
        digits = group_digits(text[start:end])
        if not digits:
            continue
        alternative = None
        before = text[end - 2] if end - 2 >= 0 else ""
        if (
            text[end - 1] == "이"
            and text[end:].startswith(_COPULA_MAYBE)
            and (has_final_consonant(before) or before.isdigit())
        ):
            shorter = group_digits(text[start : end - 1]) if end - 1 > start else None
            if shorter:
                alternative = Group(start, end - 1, shorter, True)
            elif before.isdigit():  # 1234이요: the copula alone
                continue
        groups.append(Group(start, end, digits, True, alternative))
    return groups


def number_runs(text: str) -> list[NumberRun]:
    """The numbers of `text`, each as groups joined by what speakers put between groups."""
    runs: list[list[Group]] = []
    for group in _groups(text):
        if runs:
            gap = text[runs[-1][-1].end : group.start]
            if len(gap) <= _MAX_JOINER_CHARS and _JOINER.fullmatch(gap):
                runs[-1].append(group)
                continue
        runs.append([group])
    return [NumberRun(tuple(groups)) for groups in runs]
