"""The kinds of identifier `voxadapt redact` removes, their tags, and the spoken cues that
name them ("전화번호는 ...", "성함이 ..."). No Presidio or Kiwi here: the CLI validates
`--types` without importing them."""

from __future__ import annotations

# type key -> the Korean tag it is replaced by ("[{type}]" -> "[전화번호]")
TAGS = {
    "resident_number": "주민등록번호",
    "foreigner_number": "외국인등록번호",
    "phone": "전화번호",
    "name": "이름",
    "address": "주소",
    "email": "이메일",
    "account": "계좌번호",
    "card": "카드번호",
    "insurance": "건강보험번호",
    "patient_number": "환자번호",
    "birth_date": "생년월일",
    "passport": "여권번호",
    "driver_licence": "운전면허번호",
    "other_id": "식별번호",  # a long number no other rule names (9+ digits, no unit after it)
}
# What the issue calls structured identifiers (recall target 99% in bench/redact.py).
STRUCTURED = ("resident_number", "phone", "insurance", "account", "card", "email")

# Words that say which identifier follows, matched on space-free text (ASR may space
# "주민 등록 번호"); where two end at the same place the longer one wins (주민등록번호 over
# 등록번호). Hospital patient-number cues come from the patterns file (see patterns.py).
NUMBER_CUES = {
    "resident_number": ("주민등록번호", "주민번호", "주민등록", "주민", "뒷자리", "앞자리"),
    "foreigner_number": ("외국인등록번호", "외국인번호", "외국인등록", "등록증번호"),
    "phone": (
        "전화번호", "전화", "연락처", "핸드폰", "휴대폰", "휴대전화", "폰번호", "집번호",
        "연락번호", "번호로연락", "비상연락",
    ),
    "insurance": ("건강보험증번호", "건강보험증", "건강보험", "보험증번호", "보험증", "보험번호",
                  "의료보험", "증번호", "보험카드"),
    "account": (
        "계좌번호", "계좌", "통장", "입금", "송금", "은행", "농협", "신한", "국민", "우리은행",
        "하나은행", "기업은행", "카카오뱅크", "토스", "새마을금고", "우체국",
    ),
    "card": ("카드번호", "신용카드", "체크카드", "카드"),
    "passport": ("여권번호", "여권"),
    "driver_licence": ("운전면허번호", "운전면허", "면허번호", "면허증"),
    "birth_date": ("생년월일", "생일", "출생일", "출생"),
}  # fmt: skip


def resolve_types(names: list[str] | tuple[str, ...] | None) -> tuple[list[str], list[str]]:
    """The type keys of `names` (keys or Korean tags: phone, 전화번호), and the unknown names."""
    if names is None:
        return list(TAGS), []
    by_tag = {tag: key for key, tag in TAGS.items()}
    keys, unknown = [], []
    for name in names:
        name = name.strip().strip("[]")
        key = name if name in TAGS else by_tag.get(name)
        if key is None:
            unknown.append(name)
        elif key not in keys:
            keys.append(key)
    return keys, unknown
