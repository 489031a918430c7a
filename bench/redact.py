"""Redaction: recall and precision per identifier type (character level), the share of
protected medical numbers kept, and throughput, on a synthetic set of spoken-form Korean
consultation utterances with gold spans (our own templates, seeded).

Identifiers are generated in the forms ASR produces: digits with hyphens or spaces, Hangul
digit readings (0 as 공 or 영), Sino-Korean group readings (천이백삼십사), mixed forms,
"다시"/"에"/"의" between groups, and spacing errors (groups glued or cut anywhere).

python -m bench.redact --utterances 5000
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

from bench.common import write_result
from voxadapt.numbers import sino_korean

DIGIT_READING = "공일이삼사오육칠팔구"
SURNAMES = "김이박최정강조윤장임한오서신권황안송류전홍고문양손배백허남심노하곽성차주우구민진나지"
GIVEN = "민서준지하윤도현우예은수아연진영호성재원유나혜경태희동석상철정훈소율채린다온시"
PROVINCES = ["서울시", "서울특별시", "부산", "경기도", "인천광역시", "대구", "충남", "전북"]
DISTRICTS = ["강남구", "마포구", "수원시 팔달구", "성남시 분당구", "해운대구", "청주시", "전주시"]
ROADS = ["테헤란로", "월드컵로", "중앙대로", "정자일로", "해운대로", "봉은사로", "동문길", "새말로"]
DONGS = ["역삼동", "상도동", "정자동", "연희동", "신림동", "만덕동", "송정동"]
BUILDINGS = ["햇살 아파트", "푸른마을 아파트", "한빛빌라", "새솔 오피스텔"]
DOMAINS = [("naver", "네이버"), ("gmail", "지메일"), ("daum", "다음"), ("hanmail", "한메일")]
BANKS = ["국민은행", "신한은행", "농협", "우리은행", "카카오뱅크"]

# Medical sentences whose numbers must survive; {} marks each protected number.
MEDICAL = [
    "타이레놀 {오백} 밀리그램을 하루 {세} 번 드세요",
    "혈압이 {백삼십}에 {팔십오}로 조금 높으세요",
    "혈압 {130}에 {85}, 맥박 {72}회예요",
    "체온이 {38.5}도까지 올랐어요",
    "체온은 {삼십팔} 점 {오} 도예요",
    "{삼}일 전부터 기침이 났어요",
    "{2}주 뒤에 다시 오세요",
    "{3}개월 뒤에 검사 결과 보실게요",
    "올해 {일흔두} 살이세요",
    "{72}세 남자 환자분이세요",
    "혈당은 {백이십}이고 당화혈색소는 {육} 점 {오}예요",
    "인슐린 {십} 단위씩 하루 {두} 번 맞으세요",
    "아목시실린 {500}mg을 하루 {3}번 드세요",
    "몸무게는 {68.5}킬로예요",
    "산소포화도가 {구십오} 퍼센트예요",
    "소변은 하루에 {여덟} 번 정도 보세요",
    "{일주일} 치 약을 드릴게요",
    "{2024}년 {3}월에 수술하셨죠",
    "수액 {천} 씨씨 들어갑니다",
    "{7}층 {702}호 병실로 가세요",
]
FILLERS = ["네", "아 네", "그러면", "잠시만요", "확인할게요", "감사합니다"]


class Builder:
    """An utterance assembled piece by piece, with gold spans (type, start, end)."""

    def __init__(self) -> None:
        self.text = ""
        self.spans: list[tuple[str, int, int]] = []
        self.protected: list[tuple[int, int]] = []

    def add(self, piece: str, kind: str | None = None) -> Builder:
        if kind is not None:
            self.spans.append((kind, len(self.text), len(self.text) + len(piece)))
        self.text += piece
        return self

    def add_medical(self, template: str) -> Builder:
        for index, part in enumerate(template.replace("}", "{").split("{")):
            if index % 2:
                self.protected.append((len(self.text), len(self.text) + len(part)))
            self.text += part
        return self


def read_group(rng: random.Random, digits: str, *, sino: bool = True) -> str:
    """One group as spoken: digits, digit by digit in Hangul (0 as 공 or 영), or for a group
    of 3-4 digits without a leading 0 sometimes as a Sino-Korean number."""
    choice = rng.random()
    if choice < 0.25:
        return digits
    if sino and choice < 0.4 and digits[0] != "0" and len(digits) in (3, 4):
        return sino_korean(int(digits))
    zero = "영" if rng.random() < 0.2 else "공"
    return "".join(zero if d == "0" else DIGIT_READING[int(d)] for d in digits)


def speak_number(rng: random.Random, groups: list[str], *, sino: bool = True) -> str:
    joiners = [" ", " ", "-", "에 ", "의 ", " 다시 ", ""]
    joiner = rng.choice(joiners)
    parts = [read_group(rng, group, sino=sino) for group in groups]
    if any(p.isdigit() for p in parts) and joiner in ("", "에 ", "의 "):
        joiner = rng.choice(["-", " "])  # 1234에5678 is not how anyone writes it
    # A group read as a Sino-Korean number (천이백삼십사) is never glued to the next:
    # 공일공천이백... has no one reading, for a listener as for us.
    sino_read = any(
        p != g and not set(p) <= set(DIGIT_READING + "영") for p, g in zip(parts, groups)
    )
    if sino_read and joiner == "":
        joiner = " "
    text = joiner.join(parts)
    if rng.random() < 0.2 and not sino_read:  # ASR spacing: glue the groups, or cut one
        # in two (not with a Sino-Korean group: 공일공팔천육백... has no one reading)
        text = text.replace(" ", "") if rng.random() < 0.5 else _cut(rng, text)
    return text


def _cut(rng: random.Random, text: str) -> str:
    positions = [i for i in range(1, len(text)) if text[i - 1] != " " and text[i] != " "]
    if not positions:
        return text
    at = rng.choice(positions)
    return text[:at] + " " + text[at:]


def digits(rng: random.Random, n: int) -> str:
    return "".join(str(rng.randint(0, 9)) for _ in range(n))


def birth(rng: random.Random) -> tuple[str, str]:
    """yymmdd of a birth date and the 7th digit of a registration number."""
    year, month, day = rng.randint(1930, 2015), rng.randint(1, 12), rng.randint(1, 28)
    return f"{year % 100:02d}{month:02d}{day:02d}", rng.choice("12" if year < 2000 else "34")


def name(rng: random.Random) -> str:
    given = "".join(rng.choice(GIVEN) for _ in range(2 if rng.random() < 0.95 else 1))
    full = rng.choice(SURNAMES) + given
    return full[0] + " " + full[1:] if rng.random() < 0.05 else full  # an ASR space


def luhn_digit(partial: str) -> str:
    total = 0
    for position, char in enumerate(reversed(partial)):
        value = int(char) * (1 if position % 2 else 2)
        total += value - 9 if value > 9 else value
    return str((10 - total % 10) % 10)


def ending(rng: random.Random, value: str) -> str:
    """What follows a number, as Korean grammar has it: the copula is 이에요/이고요 after a
    final consonant or a written digit, 예요/고요 after a vowel."""
    last = value[-1]
    closed = last.isdigit() or last.isascii() or (ord(last) - 0xAC00) % 28 != 0
    if closed:
        return rng.choice(["이에요", "입니다", "이요", " 맞으세요", "이고요", ""])
    return rng.choice(["예요", "입니다", "요", " 맞으세요", "고요", ""])


def identifier(rng: random.Random, kind: str) -> tuple[str, str, str]:
    """(cue before, the identifier as spoken, what follows) of one identifier of `kind`."""
    value, cue, after = _identifier(rng, kind)
    return cue, value, ending(rng, value) if after is None else after


def _identifier(rng: random.Random, kind: str) -> tuple[str, str, str | None]:
    end = None  # the grammatical ending for the value
    if kind == "phone":
        groups = rng.choice(
            [["010", digits(rng, 4), digits(rng, 4)], ["02", digits(rng, 3), digits(rng, 4)],
             ["031", digits(rng, 3), digits(rng, 4)], ["1588", digits(rng, 4)]]
        )  # fmt: skip
        cue = rng.choice(["전화번호는 ", "연락처는 ", "핸드폰 번호가 ", "보호자 연락처 ", ""])
        return speak_number(rng, groups), cue, end
    if kind in ("resident_number", "foreigner_number"):
        front, seventh = birth(rng)
        if kind == "foreigner_number":
            seventh = rng.choice("5678")
            cue = rng.choice(["외국인등록번호는 ", "외국인 등록 번호가 "])
        else:
            cue = rng.choice(["주민번호는 ", "주민등록번호 ", "주민 번호가 ", ""])
        back = seventh + digits(rng, 6)
        return speak_number(rng, [front, back], sino=False), cue, end
    if kind == "insurance":
        cue = rng.choice(["건강보험증 번호는 ", "보험증 번호 ", "의료보험 번호가 "])
        return speak_number(rng, [digits(rng, 1), digits(rng, 10)], sino=False), cue, end
    if kind == "account":
        cue = rng.choice(BANKS) + rng.choice([" 계좌번호 ", " 계좌로 ", " 통장 번호는 "])
        groups = rng.choice([[3, 2, 6], [4, 4, 4], [3, 6, 5], [6, 2, 6]])
        return speak_number(rng, [digits(rng, n) for n in groups], sino=False), cue, end
    if kind == "card":
        partial = rng.choice("459") + digits(rng, 14)
        number = partial + luhn_digit(partial)
        groups = [number[i : i + 4] for i in range(0, 16, 4)]
        cue = rng.choice(["카드번호는 ", "카드 번호 ", "신용카드 "])
        return speak_number(rng, groups, sino=False), cue, end
    if kind == "patient_number":
        cue = rng.choice(["등록번호 ", "차트 번호는 ", "환자 번호가 ", "병록번호 "])
        return speak_number(rng, [digits(rng, rng.randint(6, 9))], sino=False), cue, end
    if kind == "passport":
        letter = rng.choice(["M", "엠", "S", "에스"])
        return f"{letter} " + read_group(rng, digits(rng, 8), sino=False), "여권번호는 ", end
    if kind == "driver_licence":
        groups = [f"{rng.randint(11, 28)}", digits(rng, 2), digits(rng, 6), digits(rng, 2)]
        return speak_number(rng, groups, sino=False), "운전면허 번호는 ", end
    if kind == "email":
        local = rng.choice(["suji", "minho", "hana", "jw.park", "kim"]) + digits(rng, 2)
        written, spoken = rng.choice(DOMAINS)
        form = rng.random()
        if form < 0.4:
            value = f"{local}@{written}.com"
        elif form < 0.7:
            value = f"{local} 골뱅이 {spoken} 닷컴"
        else:
            value = f"{local} 앳 {spoken} 점 컴"
        return value, rng.choice(["이메일은 ", "메일 주소는 "]), rng.choice(["이에요", " 입니다"])
    if kind == "birth_date":
        year, month, day = rng.randint(1935, 2010), rng.randint(1, 12), rng.randint(1, 28)
        form = rng.random()
        if form < 0.3:
            said = f"{year % 100}" if year < 2000 else f"{year}"  # 85년, 2004년
            return f"{said}년 {month}월 {day}일생", "", rng.choice(["이세요", "입니다"])
        if form < 0.6:
            return f"{sino_korean(year % 100)}년생", "", rng.choice(["이세요", "이시죠"])
        if form < 0.8:
            spoken = f"{sino_korean(year)}년 {sino_korean(month)}월 {sino_korean(day)}일"
            return spoken.replace("육월", "유월").replace("십월", "시월"), "생년월일은 ", "이요"
        return read_group(rng, f"{year % 100:02d}{month:02d}{day:02d}"), "생년월일 ", end
    raise ValueError(kind)


def address(rng: random.Random) -> str:
    number = str(rng.randint(1, 400))
    spoken = number if rng.random() < 0.5 else sino_korean(int(number))
    if rng.random() < 0.6:
        place = f"{rng.choice(ROADS)} {spoken}"
        if rng.random() < 0.3:
            place = f"{rng.choice(ROADS)} {rng.randint(1, 60)}번길 {spoken}"
    else:
        place = f"{rng.choice(DONGS)} {spoken}-{rng.randint(1, 30)}번지"
    text = f"{rng.choice(PROVINCES)} {rng.choice(DISTRICTS)} {place}"
    if rng.random() < 0.4:
        unit = f"{rng.randint(101, 120)}동 {rng.randint(1, 25)}0{rng.randint(1, 4)}호"
        text += f" {rng.choice(BUILDINGS)} {unit}"
    return text


NAME_TEMPLATES = [
    ("성함이 ", " 씨 맞으시죠"), ("", " 환자분 들어오세요"), ("보호자 ", " 님 오셨어요"),
    ("이름은 ", "이에요"), ("담당 간호사는 ", " 간호사예요"), ("", " 님 진료실로 오세요"),
    ("환자분 성함은 ", "입니다"), ("", " 선생님이 보실 거예요"),
]  # fmt: skip
KINDS = [
    "phone", "resident_number", "foreigner_number", "insurance", "account", "card",
    "patient_number", "passport", "driver_licence", "email", "birth_date", "name", "address",
]  # fmt: skip


def utterance(rng: random.Random) -> Builder:
    """One utterance: a filler, one or two identifiers or a medical sentence, in any mix."""
    built = Builder()
    if rng.random() < 0.3:
        built.add(rng.choice(FILLERS) + " ")
    shape = rng.random()
    if shape < 0.3:
        return built.add_medical(rng.choice(MEDICAL))
    for number in range(1 if shape < 0.8 else 2):
        if number:
            built.add(" " + rng.choice(["그리고", "또", "네"]) + " ")
        kind = rng.choice(KINDS)
        if kind == "name":
            before, after = rng.choice(NAME_TEMPLATES)
            built.add(before).add(name(rng), "name").add(after)
        elif kind == "address":
            before = rng.choice(["주소는 ", "", "집이 "])
            built.add(before).add(address(rng), "address")
            built.add(rng.choice(["이에요", "에 살아요", " 입니다", "에 사세요"]))
        else:
            cue, value, after = identifier(rng, kind)
            built.add(cue).add(value, kind).add(after)
    if rng.random() < 0.4:
        built.add(" ").add_medical(rng.choice(MEDICAL))
    return built


def make_set(n: int, seed: int = 0) -> list[Builder]:
    rng = random.Random(seed)
    return [utterance(rng) for _ in range(n)]


def run(utterances: int = 5000, repeats: int = 3) -> dict[str, Any]:
    from voxadapt.redact import STRUCTURED, Redactor
    from voxadapt.redact.evaluation import score_spans

    started = time.perf_counter()
    redactor = Redactor.load()
    load_s = time.perf_counter() - started
    data = make_set(utterances)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        predicted = [redactor.find(item.text) for item in data]
        seconds.append(time.perf_counter() - started)
    report = score_spans((item.text, item.spans, spans) for item, spans in zip(data, predicted))
    protected = [(p, spans) for item, spans in zip(data, predicted) for p in item.protected]
    kept = sum(
        1
        for (low, high), spans in protected
        if not any(s.start < high and s.end > low for s in spans)
    )
    structured = [report[k]["recall"] for k in STRUCTURED if k in report]
    return {
        "inputs": f"{utterances} synthetic spoken-form utterances (seed 0), "
        f"{sum(len(item.spans) for item in data)} identifiers, {len(protected)} protected "
        "medical numbers",
        "repeats": repeats,
        "load_s": load_s,
        "by_type": report,
        "structured_min_recall": min(structured),
        "names_recall": report["name"]["recall"],
        "addresses_recall": report["address"]["recall"],
        "protected_numbers": len(protected),
        "medical_numbers_kept": kept / len(protected),
        "utterances_per_s": utterances / sorted(seconds)[len(seconds) // 2],
        "examples": [item.text for item in data[:5]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--utterances", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    result = run(args.utterances, args.repeats)
    print(write_result("redact", result))
    for kind, scores in result["by_type"].items():
        print(
            f"{kind:18} recall {scores['recall'] or 0:.4f} precision {scores['precision'] or 0:.4f}"
        )
    print(f"medical numbers kept {result['medical_numbers_kept']:.4f}")
    print(f"utterances/s {result['utterances_per_s']:.0f}")


if __name__ == "__main__":
    main()
