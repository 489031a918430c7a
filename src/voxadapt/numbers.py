"""Read the digits of a transcript as Korean speech, for number-aware scoring.

Korean references are spelled out as spoken ("세 개", "삼십팔 점 오 도", "공일공 일이삼사")
while models often write digits ("3개", "38.5도", "010-1234"). The `numbers` scoring policy
passes reference and hypothesis through `read_numbers`, so the two spellings of one spoken
form score as equal and a wrong number still counts as an error.

Rules, in order:

1. ISO dates `2024-03-02` -> `이천이십사 년 삼 월 이 일`; clock times `14:30` ->
   `열네 시 삼십 분` (`14:00` -> `열네 시`).
2. Telephone-like digits are read digit by digit with 0 as 공: groups joined by hyphens
   where the first group starts with 0 or every later group has 3+ digits (`010-1234-5678`,
   `1588-1234`, `02-123-4567`), and digit runs that start with 0 (`010`). Other hyphens
   are ranges: `10-20분` -> `십 이십 분`.
3. Decimals: the integer part as a Sino-Korean number, `점`, then each decimal digit
   (0 as 영): `38.5` -> `삼십팔 점 오`, `0.25` -> `영 점 이오`. Thousands separators
   (`5,000`) are read as one number.
4. Unit symbols right after a number become their Korean names (mg 밀리그램, mcg/μg
   마이크로그램, ml 밀리리터, cc 씨씨, l 리터, kg 킬로그램, g 그램, km 킬로미터, cm 센티미터,
   mm 밀리미터, m 미터, % 퍼센트, ℃/°C/° 도); NFKC has already turned ㎎, ㎖, ㎏ into mg, ml, kg.
5. A whole number of 1-99 right before a native counter (개 명 번 살 시 시간 잔 알 마리 달
   가지 군데 봉지 포 방울 병 장 통 숟가락 스푼 알약 그릇 주먹) is read with native numerals in
   their counter form (한 두 세 네 ... 스무 ... 아흔아홉): `3개` -> `세 개`, `20살` -> `스무 살`.
   Words that start like a native counter but are Sino ones (개월, 번지, 번호, 달러, 시경)
   stay Sino. `6월` and `10월` are `유월` and `시월`.
6. Every other number is Sino-Korean (`130` -> `백삼십`, `10000` -> `만`, `2억` ->
   `이억`). `1번째` is `첫 번째`. A counter or unit is spaced from its number (`세 개`,
   `삼십 분`, as the spelling rules write it); a particle stays attached (`130에` -> `백삼십에`).

Limits (said, not hidden): numbers of 100 and more before a native counter are read all
Sino-Korean ("백이십오 개", not "백스물다섯 개"); `번` is always native ("1번 환자" reads
"한 번 환자"); ratios and ranges keep only their numbers (`130/85` -> `백삼십 팔십오`, so a
reference "백삼십에 팔십오" still differs by `에`); `mmHg`, `IU`, `bpm` and other unit
letters are left as written; digits glued to a Latin letter (`B12`, `A1c`, `3D`) are left
as written; ordinal native words without digits ("첫째", "하나") are never changed; a dual
transcription's spans are read one form at a time, so a number and its counter belong in
the same span.
"""

from __future__ import annotations

import re

_SINO_DIGITS = "영일이삼사오육칠팔구"
_PHONE_DIGITS = "공일이삼사오육칠팔구"
_NATIVE_UNITS = ("", "한", "두", "세", "네", "다섯", "여섯", "일곱", "여덟", "아홉")
_NATIVE_TENS = ("", "열", "스물", "서른", "마흔", "쉰", "예순", "일흔", "여든", "아흔")
_GROUP_UNITS = ("", "만", "억", "조", "경")

# Counters read with native numerals. Longest first, so that 시간 wins over 시.
NATIVE_COUNTERS = tuple(
    sorted(
        (
            "개", "명", "번", "살", "시", "시간", "잔", "알", "마리", "달", "가지", "군데",
            "봉지", "포", "방울", "병", "장", "통", "숟가락", "스푼", "알약", "그릇", "주먹",
        ),
        key=len,
        reverse=True,
    )
)  # fmt: skip
# Words that begin with a native counter but take Sino-Korean numbers.
_SINO_DESPITE_PREFIX = ("개월", "번지", "번호", "달러", "시경")
# Sino-Korean counters and units: a reading is spaced from them, as from native counters
# ("삼십 분"); any other word after a number is a particle and stays attached ("백삼십에").
SINO_COUNTERS = (
    "분", "초", "일", "주", "개월", "년", "월", "원", "도", "층", "퍼센트", "프로", "세", "회",
    "차", "호", "동", "번지", "번호", "달러", "배", "점", "등", "위", "기", "단계", "박", "킬로",
    "미터", "센티", "센티미터", "밀리", "밀리그램", "밀리리터", "리터", "그램", "마이크로그램",
    "씨씨", "시시", "유닛", "정", "캡슐", "대", "인분", "학년", "교시", "주기",
)  # fmt: skip

UNIT_NAMES = {
    "mg": "밀리그램",
    "mcg": "마이크로그램",
    "μg": "마이크로그램",
    "ml": "밀리리터",
    "cc": "씨씨",
    "l": "리터",
    "kg": "킬로그램",
    "g": "그램",
    "km": "킬로미터",
    "cm": "센티미터",
    "mm": "밀리미터",
    "m": "미터",
    "%": "퍼센트",
    "℃": "도",
    "°c": "도",
    "°": "도",
}
_UNIT_PATTERN = "|".join(re.escape(unit) for unit in sorted(UNIT_NAMES, key=len, reverse=True))

_NUMBER = re.compile(
    r"(?<![A-Za-z\d.])"
    r"(?:(?P<date>(?P<year>\d{4})-(?P<month>\d{1,2})-(?P<day>\d{1,2}))(?![\d-])"
    r"|(?P<time>(?P<hour>\d{1,2}):(?P<minute>\d{2}))(?![\d:])"
    r"|(?P<phone>0\d*(?:-\d+)+|\d+(?:-\d{3,})+|0\d+)(?![\d.,])"
    r"|(?P<number>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?))"
    r"(?!\d)"  # never a number cut short by backtracking ("120mmHg" is not "12" + "0mmHg")
    rf"(?:\s*(?P<unit>{_UNIT_PATTERN})(?![A-Za-z]))?"
    r"(?![A-Za-z])",
    flags=re.IGNORECASE,
)
_FOLLOWING_WORD = re.compile(r"\s*([\uac00-\ud7a3]+)")


def sino_korean(number: int) -> str:
    """A whole number in Sino-Korean words, written without spaces: 10 -> 십, 115 -> 백십오,
    10000 -> 만, 200000000 -> 이억; 0 -> 영."""
    if number == 0:
        return "영"
    if number >= 10**20:
        return "".join(_SINO_DIGITS[int(d)] for d in str(number))
    words = []
    group_index = 0
    while number:
        number, group = divmod(number, 10000)
        if group:
            words.append(_four_digits(group, group_index) + _GROUP_UNITS[group_index])
        group_index += 1
    return "".join(reversed(words))


def _four_digits(group: int, group_index: int) -> str:
    if group == 1 and group_index == 1:
        return ""  # 10000 is 만, not 일만
    text = ""
    for power, name in ((1000, "천"), (100, "백"), (10, "십"), (1, "")):
        digit = group // power % 10
        if digit:
            text += ("" if digit == 1 and name else _SINO_DIGITS[digit]) + name
    return text


def native_korean(number: int) -> str:
    """1-99 in native Korean numerals, in the form used before a counter: 1 -> 한, 20 -> 스무,
    21 -> 스물한, 99 -> 아흔아홉."""
    if not 1 <= number <= 99:
        raise ValueError(f"native numerals cover 1-99, not {number}")
    if number == 20:
        return "스무"
    return _NATIVE_TENS[number // 10] + _NATIVE_UNITS[number % 10]


def digit_by_digit(digits: str) -> str:
    """Digits read one at a time, 0 as 공 (telephone numbers)."""
    return "".join(_PHONE_DIGITS[int(d)] for d in digits if d.isdigit())


def _decimal(text: str) -> str:
    whole, _, fraction = text.replace(",", "").partition(".")
    reading = sino_korean(int(whole))
    if fraction:
        reading += " 점 " + "".join(_SINO_DIGITS[int(d)] for d in fraction)
    return reading


def _counter_reading(number: int, following: str) -> str:
    """The reading of `number` before the Hangul word `following`."""
    if following.startswith("월") and number in (6, 10):
        return "유" if number == 6 else "시"
    if number == 1 and following.startswith(("번째", "째")):
        return "첫"
    native = not following.startswith(_SINO_DESPITE_PREFIX) and following.startswith(
        NATIVE_COUNTERS
    )
    return native_korean(number) if native and 1 <= number <= 99 else sino_korean(number)


def _read(match: re.Match[str]) -> str:
    text = match.string
    following_match = _FOLLOWING_WORD.match(text, match.end())
    following = following_match.group(1) if following_match else ""
    unit = match.group("unit")
    if match.group("date"):
        reading = (
            f"{sino_korean(int(match.group('year')))} 년 "
            f"{_counter_reading(int(match.group('month')), '월')} 월 "
            f"{sino_korean(int(match.group('day')))} 일"
        )
    elif match.group("time"):
        hour, minute = int(match.group("hour")), int(match.group("minute"))
        reading = f"{native_korean(hour) if 1 <= hour <= 99 else sino_korean(hour)} 시"
        if minute:
            reading += f" {sino_korean(minute)} 분"
    elif match.group("phone"):
        reading = " ".join(digit_by_digit(group) for group in match.group("phone").split("-"))
    else:
        number_text = match.group("number")
        if "." in number_text or unit:
            reading = _decimal(number_text)
        else:
            reading = _counter_reading(int(number_text.replace(",", "")), following)
    if unit:
        reading += " " + UNIT_NAMES[unit.lower()]
    spaced = following_match is not None and (
        following_match.group(0) != following  # the text had a space there
        or following.startswith(NATIVE_COUNTERS + SINO_COUNTERS)
    )
    return reading + (" " if spaced else "")


def read_numbers(text: str) -> str:
    """`text` with every number read out in Korean (see the module docstring for the rules);
    text without digits is returned unchanged."""
    if not any(char.isdigit() for char in text):
        return text
    return re.sub(r"\s+", " ", _NUMBER.sub(_read, text)).strip()
