"""Names, addresses, dates of birth and e-mail addresses in Korean speech, as regular
expressions over the transcript (Kiwi's morphology checks the names: see recognizers.py).

- names: a surname from `SURNAMES` with a one- or two-syllable given name, next to a cue:
  after 성함/이름/보호자/환자분/담당 선생님..., or before 씨/님/환자분/선생님/보호자/간호사...;
  a space between surname and given name is allowed ("박 지영 씨", an ASR spacing error);
- addresses: a road (…로/…길 + building number, 번길), a lot (…동 + number, 번지) or an
  apartment unit (…동 …호), with the province/city/district before it; numbers in digits or
  Hangul; a road or lot needs a district before it, a unit, 번지/번길, or a cue (주소, 살아요);
- dates of birth: a date with 년/월/일 ending in 생 ("85년 3월 2일생", "팔십오년생"), after
  생년월일/생일, or before 태어났...;
- e-mail: written (a@b.com) or spoken (골뱅이/앳 for @, 점/닷 for the dot: "hong 골뱅이
  네이버 닷컴").
"""

from __future__ import annotations

import re

# The common Korean surnames (over 99% of people), compound ones first.
COMPOUND_SURNAMES = ("남궁", "황보", "제갈", "선우", "독고", "사공", "서문")
SURNAMES = (
    *COMPOUND_SURNAMES,
    *"김이박최정강조윤장임한오서신권황안송류유전홍고문양손배백허남심노하곽성차주우구민진나지"
    "엄채원천방공현함변염여추도소석선설마길연위표명기반라왕금옥육인맹제모탁국어은편용예경봉",
)
_SURNAME = "(?:" + "|".join(SURNAMES) + ")"
_GIVEN = "[가-힣]{1,2}"
# After a name: honorifics and roles ("김민수 씨", "박지영 환자분", "이정훈 보호자").
_AFTER_NAME = (
    "씨", "님", "환자분", "환자", "선생님", "보호자분", "보호자", "간호사님", "간호사", "교수님",
    "원장님", "과장님", "선생", "어머님", "아버님", "어머니", "아버지", "할머님", "할아버님",
    "할머니", "할아버지", "군", "양",
)  # fmt: skip
# Before a name: who is being named ("성함이 ...", "보호자는 ...").
_BEFORE_NAME = (
    "성함", "이름", "환자분", "환자", "보호자분", "보호자", "담당의", "주치의", "담당 선생님",
    "선생님", "간호사", "담당자", "남편", "아내", "부인", "따님", "아드님", "딸", "아들",
    "어머니", "아버지", "신청자", "예약자", "수신인",
)  # fmt: skip
# Words a cue may stand next to that are not names (the honorific pattern would take "우리
# 환자분", "오늘 환자분"); Kiwi rejects most of these by their part of speech as well.
_NOT_NAME_WORDS = (
    "오늘 이번 지금 어머 아버 할머 할아 선생 간호 환자 보호 교수 원장 과장 남편 아내 부인 "
    "가족 여기 거기 저기 다음 지난 오전 오후 내일 어제 모레 주치 담당 전공 인턴 약사 이분 저분 "
    "그분 모두 조금 정말 진짜 계속 주사 수술 검사 진료 치료 입원 퇴원 방금 우리 모든 여러 "
    "한번 한분 이제 아까 그냥 제가 저희 이거 그거 도대체 어떤 무슨 몇몇 아무 다른 같은 "
    "성함 이름 어머님 아버님 선생님 간호사 원장님 과장님 교수님 환자분 보호자 신장 간호사님 "
    "안녕 안녕하 고생 수고 감사 죄송 미안 부탁 연세 나이 여자 남자 아이 아기 학생 기사 사장 "
    "사모 손님 손자 손녀 남매 형제 자매 동생 언니 오빠 누나 형님 처음 나중 조금씩 정도 "
    "씨 님 군 양 씨씨 연락처"
)
NOT_NAMES = frozenset(_NOT_NAME_WORDS.split())
_NAME_END = r"(?=이에요|이고|입니다|이요|이|씨|님|요|예요|라고|이라고|가|는|은|를|을|랑|이랑|한테|에게|의|께서|\s|[^가-힣]|$)"  # noqa: E501
# The name is matched inside a lookahead: a cue word that looks like a name ("환자분
# 성함은 ...": 성함) does not hide the cue after it.
NAME_AFTER_CUE = re.compile(
    r"(?:" + "|".join(_BEFORE_NAME) + r")(?:은|는|이|가|께서|분은|분이|분)?\s*(?:이요|요)?\s*"
    rf"(?<![가-힣])(?=(?P<name>{_SURNAME}\s?{_GIVEN}){_NAME_END})"
)
NAME_BEFORE_HONORIFIC = re.compile(
    rf"(?<![가-힣])(?P<name>{_SURNAME}\s?{_GIVEN})\s?(?:"
    + "|".join(sorted(_AFTER_NAME, key=len, reverse=True))
    + r")"
)
STRONG_NAME_CUES = ("성함", "이름")  # after these a name is taken without Kiwi's check

_NUM = r"(?:\d+|[공영일이삼사오육칠팔구십백천]+)"
_SUB = rf"(?:\s?(?:-|다시|의)\s?{_NUM})"
_PROVINCES = (
    "서울", "부산", "대구", "인천", "광주", "대전", "울산", "세종", "경기", "강원", "충북", "충남",
    "전북", "전남", "경북", "경남", "제주", "충청북", "충청남", "전라북", "전라남", "경상북",
    "경상남", "강원특별자치",
)  # fmt: skip
_ADMIN = (
    r"(?:(?:" + "|".join(_PROVINCES) + r")(?:특별시|광역시|특별자치시|특별자치도|시|도)?"
    r"|[가-힣]{1,4}(?:시|군|구))"
)
_ROAD = rf"[가-힣0-9]{{1,8}}(?:대로|로|길)(?:\s?{_NUM}\s?번?길)?\s?{_NUM}{_SUB}?(?:\s?번지)?"
_LOT = rf"[가-힣]{{1,5}}동\s?{_NUM}{_SUB}?(?:\s?번지)?"
_UNIT = rf"{_NUM}\s?동\s?{_NUM}\s?호"
_BUILDING = r"[가-힣A-Za-z0-9]{1,10}\s?(?:아파트|빌라|오피스텔|맨션|하이츠|타운|빌딩)"
ADDRESS = re.compile(
    rf"(?<![가-힣])(?P<admin>(?:{_ADMIN}\s?)*)"
    rf"(?:(?P<place>{_ROAD}|{_LOT})(?:\s?,?\s?(?:{_BUILDING}\s?)?(?P<unit1>{_UNIT}))?"
    rf"|(?:{_BUILDING}\s?)?(?P<unit2>{_UNIT}))"
)
ADDRESS_CUES = re.compile(r"주소|살아|사세요|사시|사는|거주|댁|집은|집이|이사|배송")
# Words ending like a lot (…동) or a road (…로) that are no place.
NOT_PLACES = re.compile(
    r"(?:병동|운동|활동|행동|이동|자동|진동|충동|변동|외래동|본관동|신관동|별관동|연동|파동|"
    r"경로|진로|통로|경과로|결과로|이유로|정도로|주사로|걸로|그대로|마음대로|말대로|시간대로|"
    r"[가-힣]*으로)"
)  # matched against the whole place word

_YEAR = r"(?:\d{2,4}|[일이삼사오육칠팔구십백천]{1,6})"
_DAY = r"(?:\d{1,2}|[일이삼사오육칠팔구]?십[일이삼사오육칠팔구]?|[일이삼사오육칠팔구])"
_MONTH = rf"(?:{_DAY}|유|시)"
_DATE = rf"{_YEAR}\s?년(?:\s?{_MONTH}\s?월(?:\s?{_DAY}\s?일)?)?"
_FULL_DATE = rf"(?:{_YEAR}\s?년\s?)?{_MONTH}\s?월\s?{_DAY}\s?일"
BIRTH_DATES = (
    ("birth:생", re.compile(rf"(?<![가-힣0-9])(?P<date>{_DATE}\s?생)(?=[이은으인입]|[^가-힣]|$)")),
    (
        "birth:cue",
        re.compile(
            rf"(?:생년월일|생일|출생일?)(?:은|이|는|이요)?\s*(?:이요)?\s*(?P<date>{_FULL_DATE})"
        ),
    ),
    ("birth:태어", re.compile(rf"(?<![가-힣0-9])(?P<date>{_FULL_DATE}|{_DATE})\s?(?:에\s?)?태어")),
)

_LOCAL = r"(?:[A-Za-z0-9][A-Za-z0-9._%+-]*|[가-힣]{1,10})"
_AT = r"\s?(?:@|골뱅이|앳)\s?"
_DOMAIN = r"(?:[A-Za-z0-9-]+|네이버|다음|한메일|지메일|구글|카카오|네이트|야후|핫메일|아웃룩)"
_DOT = r"\s?(?:\.|점|닷|쩜)\s?"
_TLD = r"(?:com|net|org|co|kr|ac|go|or|re|io|컴|넷|오알지|씨오|케이알|에이씨)"
EMAIL = re.compile(
    rf"(?<![A-Za-z0-9._%+-])(?:[A-Za-z0-9]+\s)?{_LOCAL}{_AT}{_DOMAIN}(?:{_DOT}{_TLD}(?![A-Za-z]))*",
    re.IGNORECASE,
)
