"""Read the digits of a transcript as Korean speech, for number-aware scoring.

Korean references are spelled out as spoken ("세 개", "삼십팔 점 오 도", "공일공 일이삼사")
while models often write digits ("3개", "38.5도", "010-1234"). The `numbers` scoring policy
passes reference and hypothesis through `read_numbers`, so the two spellings of one spoken
form score as equal and a wrong number still counts as an error.

Rules, in order:

1. ISO dates `2024-03-02` -> `이천이십사 년 삼 월 이 일`; clock times `14:30` ->
   `열네 시 삼십 분` (`14:00` -> `열네 시`).
2. Telephone-like digits are read digit by digit with 0 as 공: groups joined by hyphens (or
   spaces after a 0 area code) where the first group starts with 0 or the last has 4 digits
   and all have 7+ (`010-1234-5678`, `010 1234 5678`, `1588-1234`, `02-123-4567`), and digit
   runs of 3+ that start with 0 (`010`). Followed by a unit or counter, groups measure
   something and are read as numbers: ranges `10-20분` -> `십-이십 분`, `2021-2022년`, and
   zero-padded `09시` -> `아홉 시`. Dates may use `-`, `.` or `/` (`2024.03.02`).
3. Decimals: the integer part as a Sino-Korean number, `점`, then each decimal digit
   (0 as 영): `38.5` -> `삼십팔 점 오`, `0.25` -> `영 점 이오`. Thousands separators
   (`5,000`) are read as one number.
4. Unit symbols right after a number become their Korean names (mg 밀리그램, mcg/μg
   마이크로그램, ml/mL 밀리리터, cc 씨씨, l/L 리터, kg 킬로그램, g 그램, km 킬로미터, cm 센티미터,
   mm 밀리미터, m 미터, % 퍼센트, ℃/°C/° 도), case-sensitively (`4G` is not four grams); NFKC
   has already turned ㎎, ㎖, ㎏ into mg, ml, kg. A digit run longer than 20 digits is no
   quantity: it is read digit by digit.
5. A whole number of 1-99 right before a native counter (개 명 번 살 시 시간 잔 알 마리 달
   가지 군데 봉지 포 방울 병 장 통 숟가락 스푼 알약 그릇 주먹) is read with native numerals in
   their counter form (한 두 세 네 ... 스무 ... 아흔아홉): `3개` -> `세 개`, `20살` -> `스무 살`.
   Words that start like a native counter but are not (개월, 번지, 번호, 달러, 병동, 병실,
   병원, 포인트, 장기, …) take Sino numbers, and so does an ordinal `제` (`제2장` -> `제이
   장`). `6월` and `10월` are `유월` and `시월`.
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
_SINO_DESPITE_PREFIX = (
    "개월", "번지", "번호", "달러", "시경", "병동", "병실", "병원", "병기", "포인트", "장기",
    "장애", "통증", "마리아",
)  # fmt: skip
# Sino-Korean counters and units: a reading is spaced from them, as from native counters
# ("삼십 분"); any other word after a number is a particle and stays attached ("백삼십에").
SINO_COUNTERS = (
    "분", "초", "일", "주", "개월", "년", "월", "원", "도", "층", "퍼센트", "프로", "세", "회",
    "차", "호", "동", "번지", "번호", "달러", "배", "점", "등", "위", "기", "단계", "박", "킬로",
    "미터", "센티", "센티미터", "밀리", "밀리그램", "밀리리터", "리터", "그램", "마이크로그램",
    "씨씨", "시시", "유닛", "정", "캡슐", "대", "인분", "학년", "교시", "주기",
)  # fmt: skip

# Matched case-sensitively, in the spellings clinical text uses: "4G" is not four grams.
UNIT_NAMES = {
    **dict.fromkeys(("mg", "MG"), "밀리그램"),
    **dict.fromkeys(("mcg", "μg"), "마이크로그램"),
    **dict.fromkeys(("ml", "mL", "ML"), "밀리리터"),
    **dict.fromkeys(("cc", "CC"), "씨씨"),
    **dict.fromkeys(("l", "L"), "리터"),
    **dict.fromkeys(("kg", "KG", "Kg"), "킬로그램"),
    "g": "그램",
    **dict.fromkeys(("km", "KM"), "킬로미터"),
    **dict.fromkeys(("cm", "CM"), "센티미터"),
    **dict.fromkeys(("mm", "MM"), "밀리미터"),
    "m": "미터",
    "%": "퍼센트",
    **dict.fromkeys(("℃", "°C", "°c", "°"), "도"),
}
# Longer than this, a digit run is not a quantity anyone says: read digit by digit.
_MAX_NUMBER_DIGITS = 20
_UNIT_PATTERN = "|".join(re.escape(unit) for unit in sorted(UNIT_NAMES, key=len, reverse=True))

_NUMBER = re.compile(
    r"(?<![A-Za-z\d.])"
    r"(?:(?P<date>(?P<year>\d{4})(?P<sep>[-./])(?P<month>\d{1,2})(?P=sep)(?P<day>\d{1,2}))"
    r"(?![\d./-])"
    r"|(?P<time>(?P<hour>\d{1,2}):(?P<minute>\d{2}))(?![\d:])"
    # digit groups: telephone numbers, ranges, zero-padded numbers (which one: `_groups`)
    r"|(?P<groups>0\d{1,2}(?:[ -]\d{3,4}){1,2}|\d+(?:-\d+)+|0\d+)(?![\d.,])"
    r"|(?P<number>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?))"
    r"(?!\d)"  # never a number cut short by backtracking ("120mmHg" is not "12" + "0mmHg")
    rf"(?:\s*(?P<unit>{_UNIT_PATTERN})(?![A-Za-z]))?"
    r"(?![A-Za-z])",
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


def _whole(digits: str, following: str, *, ordinal: bool = False) -> str:
    """A whole number before `following`; a digit run too long to be a quantity is read
    digit by digit (and never parsed: Python refuses ints of over 4300 digits)."""
    if len(digits) > _MAX_NUMBER_DIGITS:
        return "".join(_SINO_DIGITS[int(d)] for d in digits)
    return sino_korean(int(digits)) if ordinal else _counter_reading(int(digits), following)


def _groups(text: str, following: str, quantity: bool) -> str:
    """Digit groups: a telephone number digit by digit (0 as 공), unless they measure
    something (a unit or counter follows: a range `10-20분`, a zero-padded `09시`)."""
    groups = re.split(r"[ -]", text)
    telephone = not quantity and (
        (text[0] == "0" and (len(groups) > 1 or len(text) >= 3))
        or (len(groups) > 1 and len(groups[-1]) == 4 and sum(map(len, groups)) >= 7)
    )
    if telephone:
        return " ".join(digit_by_digit(group) for group in groups)
    return "-".join(_whole(group, following) for group in groups)


def _read(match: re.Match[str]) -> str:
    text = match.string
    following_match = _FOLLOWING_WORD.match(text, match.end())
    following = following_match.group(1) if following_match else ""
    unit = match.group("unit")
    counted = bool(unit) or following.startswith(NATIVE_COUNTERS + SINO_COUNTERS)
    ordinal = text[max(0, match.start() - 1) : match.start()] == "제"  # 제2장: Sino
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
    elif match.group("groups"):
        reading = _groups(match.group("groups"), following, counted)
    else:
        number_text = match.group("number")
        whole = number_text.split(".")[0].replace(",", "")
        if len(whole) > _MAX_NUMBER_DIGITS:
            reading = "".join(_SINO_DIGITS[int(d)] for d in number_text if d.isdigit())
        elif "." in number_text or unit:
            reading = _decimal(number_text)
        else:
            reading = _whole(whole, following, ordinal=ordinal)
    if unit:
        reading += " " + UNIT_NAMES[unit]
    spaced = following_match is not None and (
        following_match.group(0) != following or counted  # the text had a space there
    )
    return reading + (" " if spaced else "")


def read_numbers(text: str) -> str:
    """`text` with every number read out in Korean (see the module docstring for the rules);
    text without digits is returned unchanged."""
    if not any(char.isdigit() for char in text):
        return text
    return re.sub(r"\s+", " ", _NUMBER.sub(_read, text)).strip()
