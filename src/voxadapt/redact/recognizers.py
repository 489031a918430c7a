"""The Korean recognizers, in Presidio's analyzer framework: each one an `EntityRecognizer`
(or `PatternRecognizer`) with its own rules, all in one `RecognizerRegistry`; the engine
(`engine.Redactor`) only combines their results. No spaCy model is used or downloaded:
recognizers are called with `nlp_artifacts=None`, and the one morphological analyzer is
Kiwi, whose model ships inside the `kiwipiepy` package.

Importing this module imports presidio_analyzer and kiwipiepy (the `redact` extra).
"""

from __future__ import annotations

import re
import threading
from typing import Any

from kiwipiepy import Kiwi
from presidio_analyzer import (
    EntityRecognizer,
    Pattern,
    PatternRecognizer,
    RecognizerRegistry,
    RecognizerResult,
)

from voxadapt.redact import rules
from voxadapt.redact.numbers import NumberClassifier, _measures
from voxadapt.redact.patterns import DEFAULT_CUES, PatientNumberPatterns
from voxadapt.redact.types import NUMBER_CUES, TAGS

LANGUAGE = "ko"
NUMBER_TYPES = [
    "resident_number", "foreigner_number", "phone", "account", "card", "insurance",
    "patient_number", "birth_date", "passport", "driver_licence", "other_id",
]  # fmt: skip
# Medicines and other words Kiwi may call a proper noun that start like a surname.
_PROTECTED_WORDS = (
    "이가탄 박카스 우루사 정로환 지르텍 노바스크 도네페질 리피토 마그밀 게보린 판콜 판피린 "
    "베아제 훼스탈 활명수 부루펜 이지엔 탁센 애드빌 타이레놀 아스피린 인슐린 오메가 유산균 "
    "고혈압 고지혈증 심근경색 협심증 부정맥 심부전 당뇨 천식 폐렴 결핵 장염 위염 간염 신부전 "
    "한약 구충제 조영제 진통제 소화제 해열제 항생제 수면제 안정제 변비약 감기약 마이신 "
    "나프록센 세레콕시브 아토르바스타틴 로수바스타틴 메트포르민 아목시실린 오구멘틴 "
    "코로나 독감 노로 로타 엠알아이 씨티 엑스레이 초음파 내시경"
)
PROTECTED_TERMS = frozenset(_PROTECTED_WORDS.split())
_PLACE_ENDINGS = (
    "시", "구", "군", "동", "로", "길", "도", "읍", "면", "리", "역", "대", "병원", "의원", "약국",
    "은행", "학교", "센터", "산", "강", "교", "원", "점", "사",
)  # fmt: skip
_NOUN_TAGS = ("NN", "SL", "SH", "XR", "XPN", "XSN")
# Cue words are never names ("보호자 연락처": 연 is a surname).
_CUE_WORDS = tuple(
    {cue for cues in NUMBER_CUES.values() for cue in cues if len(cue) >= 2}
    | set(DEFAULT_CUES)
    | {"주소", "이메일", "메일", "연락처", "번호", "성함", "이름", "생년월일"}
)


def _result(kind: str, start: int, end: int, score: float, detector: str) -> Any:
    return RecognizerResult(kind, start, end, score, recognition_metadata={"detector": detector})


class KoreanNumberRecognizer(EntityRecognizer):
    """Identifier numbers in digits and Sino-Korean readings (see numbers.py)."""

    def __init__(self, patient: PatientNumberPatterns) -> None:
        self.classifier = NumberClassifier(patient)
        super().__init__(NUMBER_TYPES, name="KoreanNumberRecognizer", supported_language=LANGUAGE)

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
        return [
            _result(kind, start, end, 0.9 if detector != "number:long" else 0.5, detector)
            for kind, start, end, detector in self.classifier.find(text)
            if kind in entities
        ]


class KoreanBirthDateRecognizer(EntityRecognizer):
    """Dates of birth said with 년/월/일 ("85년 3월 2일생", "팔십오년생", "생일은 삼월 이일")."""

    def __init__(self) -> None:
        super().__init__(
            ["birth_date"], name="KoreanBirthDateRecognizer", supported_language=LANGUAGE
        )

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
        if "birth_date" not in entities:
            return []
        return [
            _result("birth_date", *match.span("date"), 0.85, detector)
            for detector, pattern in rules.BIRTH_DATES
            for match in pattern.finditer(text)
        ]


class KoreanAddressRecognizer(EntityRecognizer):
    """Road and lot addresses and apartment units (see rules.py)."""

    def __init__(self) -> None:
        super().__init__(["address"], name="KoreanAddressRecognizer", supported_language=LANGUAGE)

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
        if "address" not in entities:
            return []
        found = []
        for match in rules.ADDRESS.finditer(text):
            admin = match.group("admin").strip()
            start = match.start() if admin else match.start() + len(match.group("admin"))
            end = match.end()
            unit = match.group("unit1") or match.group("unit2")
            place = match.group("place")
            if place:
                word = re.match(r"[가-힣0-9]+", place)
                if word and rules.NOT_PLACES.fullmatch(word.group()):
                    continue
            cued = rules.ADDRESS_CUES.search(text, max(0, start - 30), start) is not None
            spoken = "번지" in match.group() or "번길" in match.group()
            if not (admin or unit or spoken or cued):
                continue
            if not unit and _measures(text, end):
                continue  # "병동 3층", "주사로 오백 밀리그램"
            if text[end - 1] == "이" and text[end : end + 2] in ("에요", "고요", "예요"):
                end -= 1  # the copula: 백이십삼이에요
            found.append(_result("address", start, end, 0.85 if admin or unit else 0.7, "address"))
        return found


class KoreanNameRecognizer(EntityRecognizer):
    """Person names: surname + given name next to a cue (성함, 씨, 님, 환자분, 보호자...), and
    proper nouns (Kiwi's NNP) that look like a full name."""

    def __init__(self, kiwi: Kiwi, lock: threading.Lock) -> None:
        self.kiwi, self.lock = kiwi, lock
        super().__init__(["name"], name="KoreanNameRecognizer", supported_language=LANGUAGE)

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
        if "name" not in entities:
            return []
        with self.lock:
            tokens = [(t.form, t.tag, t.start, t.start + t.len) for t in self.kiwi.tokenize(text)]
        after_cue = {m.span("name"): m for m in rules.NAME_AFTER_CUE.finditer(text)}
        before_title = {m.span("name") for m in rules.NAME_BEFORE_HONORIFIC.finditer(text)}
        found = []
        for (start, end), match in after_cue.items():
            # a strong cue (성함, 이름), or a cue on both sides ("간호사는 나채우 간호사예요")
            strong = (
                match.group().startswith(rules.STRONG_NAME_CUES) or (start, end) in before_title
            )
            if self._plausible(text, start, end, tokens, strong):
                found.append(_result("name", start, end, 0.85, "name:cue"))
        for start, end in before_title - set(after_cue):
            if self._plausible(text, start, end, tokens, False):
                found.append(_result("name", start, end, 0.8, "name:honorific"))
        found += [_result("name", s, e, 0.6, "name:kiwi") for s, e in self._proper_nouns(tokens)]
        return found

    @staticmethod
    def _plausible(text: str, start: int, end: int, tokens: list, strong: bool) -> bool:
        compact = "".join(text[start:end].split())
        surname = next((s for s in rules.COMPOUND_SURNAMES if compact.startswith(s)), compact[:1])
        given = compact[len(surname) :]
        if {compact, compact[:2], given} & rules.NOT_NAMES:
            return False
        if any(compact.startswith(cue) or cue.startswith(compact) for cue in _CUE_WORDS):
            return False  # 연락처, 전화번호: the cue, not a name
        if compact in PROTECTED_TERMS:
            return False
        if strong:
            return True
        first = next((t for t in tokens if t[2] <= start < t[3]), None)
        # Kiwi read a word across surname and given name that is no noun: 이제 (MAG), 우리
        # (NP), 모든 (MM); a lone surname it may read as anything (이: NP, 백: a number)
        across = first is not None and first[3] > start + len(surname)
        if across and not first[1].startswith(_NOUN_TAGS):
            return False
        whole = [t for t in tokens if t[2] == start and t[3] == end]
        return not (whole and whole[0][1] == "NNG" and len(compact) == 2)

    @staticmethod
    def _proper_nouns(tokens: list) -> list[tuple[int, int]]:
        """Runs of adjacent NNP tokens shaped like a full name (surname + 2 syllables)."""
        spans, index = [], 0
        while index < len(tokens):
            _, tag, start, end = tokens[index]
            if tag != "NNP":
                index += 1
                continue
            last = index
            while (
                last + 1 < len(tokens)
                and tokens[last + 1][1] == "NNP"
                and (tokens[last + 1][2] - tokens[last][3] <= 1 and len(tokens[last][0]) <= 2)
            ):
                last += 1
            end = tokens[last][3]
            name = "".join(t[0] for t in tokens[index : last + 1])
            surname = next((s for s in rules.COMPOUND_SURNAMES if name.startswith(s)), name[:1])
            if (
                len(name) - len(surname) == 2
                and surname in rules.SURNAMES
                and name not in PROTECTED_TERMS
                and name[:2] not in rules.NOT_NAMES
                and not name.endswith(_PLACE_ENDINGS)
                and all("\uac00" <= char <= "\ud7a3" for char in name)
            ):
                spans.append((start, end))
            index = last + 1
        return spans


def build_registry(patient: PatientNumberPatterns) -> tuple[Any, Kiwi, threading.Lock]:
    """The registry of every Korean recognizer (Kiwi built once, used under a lock)."""
    kiwi, lock = Kiwi(), threading.Lock()
    recognizers = [
        KoreanNumberRecognizer(patient),
        KoreanBirthDateRecognizer(),
        KoreanAddressRecognizer(),
        KoreanNameRecognizer(kiwi, lock),
        PatternRecognizer(
            "email",
            name="KoreanEmailRecognizer",
            supported_language=LANGUAGE,
            patterns=[Pattern("email", rules.EMAIL.pattern, 0.95)],
        ),
    ]
    if patient.patterns:
        recognizers.append(
            PatternRecognizer(
                "patient_number",
                name="PatientNumberPatterns",
                supported_language=LANGUAGE,
                patterns=[Pattern(name, regex, 0.9) for name, regex in patient.patterns],
            )
        )
    registry = RecognizerRegistry(recognizers=recognizers, supported_languages=[LANGUAGE])
    return registry, kiwi, lock


__all__ = ["TAGS", "build_registry"]
