"""Number-aware Korean scoring (`--normalize numbers`): digits read as Korean speech."""

import json

import jiwer
import pytest

from voxadapt.manifest import Utterance, write_jsonl
from voxadapt.numbers import digit_by_digit, native_korean, read_numbers, sino_korean
from voxadapt.scoring.rates import score_row
from voxadapt.stages.score import ScoreConfig, score
from voxadapt.text import SCORING_POLICIES, normalize_for_scoring, transcript_variants

# (written text, its Korean reading under the numbers policy)
READINGS = [
    # Sino-Korean numbers
    ("0", "영"),
    ("1", "일"),
    ("7", "칠"),
    ("10", "십"),
    ("11", "십일"),
    ("20", "이십"),
    ("99", "구십구"),
    ("100", "백"),
    ("101", "백일"),
    ("110", "백십"),
    ("115", "백십오"),
    ("130", "백삼십"),
    ("1000", "천"),
    ("1001", "천일"),
    ("2024", "이천이십사"),
    ("10000", "만"),
    ("10001", "만일"),
    ("12345", "만이천삼백사십오"),
    ("20000", "이만"),
    ("100000", "십만"),
    ("1000000", "백만"),
    ("200000000", "이억"),
    ("100000000", "일억"),
    ("1000000000000", "일조"),
    ("5,000", "오천"),
    ("1,234,567", "백이십삼만사천오백육십칠"),
    # decimals
    ("38.5", "삼십팔 점 오"),
    ("0.5", "영 점 오"),
    ("0.25", "영 점 이오"),
    ("36.0", "삼십육 점 영"),
    ("1.05", "일 점 영오"),
    # native numerals before native counters
    ("3개", "세 개"),
    ("1개", "한 개"),
    ("2개", "두 개"),
    ("4개", "네 개"),
    ("5개", "다섯 개"),
    ("10개", "열 개"),
    ("11개", "열한 개"),
    ("20개", "스무 개"),
    ("21개", "스물한 개"),
    ("99개", "아흔아홉 개"),
    ("3명", "세 명"),
    ("하루 3번", "하루 세 번"),
    ("하루 세 번", "하루 세 번"),
    ("45살", "마흔다섯 살"),
    ("30살", "서른 살"),
    ("3시", "세 시"),
    ("12시", "열두 시"),
    ("2시간", "두 시간"),
    ("1시간 30분", "한 시간 삼십 분"),
    ("1잔", "한 잔"),
    ("2알", "두 알"),
    ("3달", "세 달"),
    ("2가지", "두 가지"),
    ("1봉지", "한 봉지"),
    ("1포", "한 포"),
    ("5방울", "다섯 방울"),
    ("1번째", "첫 번째"),
    ("2번째", "두 번째"),
    ("1째", "첫째"),
    ("60마리", "예순 마리"),
    ("70명", "일흔 명"),
    ("80명", "여든 명"),
    ("90명", "아흔 명"),
    ("50명", "쉰 명"),
    ("40명", "마흔 명"),
    ("100개", "백 개"),  # 100+ before a native counter: Sino (a stated limit)
    # Sino-Korean counters and units
    ("3개월", "삼 개월"),
    ("3분", "삼 분"),
    ("30초", "삼십 초"),
    ("3일 전", "삼 일 전"),
    ("2주 뒤", "이 주 뒤"),
    ("1주일", "일 주일"),
    ("2년", "이 년"),
    ("45세", "사십오 세"),
    ("30대 남성", "삼십 대 남성"),
    ("5층", "오 층"),
    ("3회", "삼 회"),
    ("2차", "이 차"),
    ("1000원", "천 원"),
    ("5,000원", "오천 원"),
    ("10달러", "십 달러"),
    ("3번지", "삼 번지"),
    ("38.5도", "삼십팔 점 오 도"),
    ("3월", "삼 월"),
    ("6월", "유 월"),
    ("10월", "시 월"),
    ("6월 10일", "유 월 십 일"),
    ("85년 3월 2일생", "팔십오 년 삼 월 이 일생"),
    # unit symbols
    ("500mg", "오백 밀리그램"),
    ("0.5 mg", "영 점 오 밀리그램"),
    ("500MG", "오백 밀리그램"),
    ("10ml", "십 밀리리터"),
    ("5cc", "오 씨씨"),
    ("70kg", "칠십 킬로그램"),
    ("170cm", "백칠십 센티미터"),
    ("3mm", "삼 밀리미터"),
    ("2km", "이 킬로미터"),
    ("100m", "백 미터"),
    ("250mcg", "이백오십 마이크로그램"),
    ("1L", "일 리터"),
    ("5g", "오 그램"),
    ("70%", "칠십 퍼센트"),
    ("37.5℃", "삼십칠 점 오 도"),
    ("37.5°C", "삼십칠 점 오 도"),
    ("37.5 °C", "삼십칠 점 오 도"),
    # telephone-like numbers
    ("010-1234-5678", "공일공 일이삼사 오육칠팔"),
    ("02-123-4567", "공이 일이삼 사오육칠"),
    ("031-987-6543", "공삼일 구팔칠 육오사삼"),
    ("1588-1234", "일오팔팔 일이삼사"),
    ("010", "공일공"),
    ("01012345678", "공일공일이삼사오육칠팔"),
    # dates and clock times
    ("2024-03-02", "이천이십사 년 삼 월 이 일"),
    ("2023-06-10", "이천이십삼 년 유 월 십 일"),
    ("14:30", "열네 시 삼십 분"),
    ("9:05", "아홉 시 오 분"),
    ("14:00에", "열네 시에"),
    ("0:30", "영 시 삼십 분"),
    # particles stay attached; ranges keep both numbers
    ("130에 85", "백삼십에 팔십오"),
    ("혈압은 130에 85요", "혈압은 백삼십에 팔십오요"),
    ("10-20분", "십-이십 분"),
    ("3,4일", "삼,사 일"),
    ("3~4일", "삼~사 일"),
    ("130/85", "백삼십/팔십오"),
    # medical sentences
    ("타이레놀 500mg 하루 3번 드세요", "타이레놀 오백 밀리그램 하루 세 번 드세요"),
    ("체온이 38.5도고 맥박은 90회예요", "체온이 삼십팔 점 오 도고 맥박은 구십 회예요"),
    ("3일 전부터 열이 났어요", "삼 일 전부터 열이 났어요"),
    ("2주 뒤에 오세요", "이 주 뒤에 오세요"),
    ("45세 남자 환자", "사십오 세 남자 환자"),
    ("5살 아이", "다섯 살 아이"),
    ("아침 9시에 공복으로", "아침 아홉 시에 공복으로"),
    ("인슐린 10유닛", "인슐린 십 유닛"),
    ("알약 2개씩", "알약 두 개씩"),
    # zero-padded, dotted dates, ranges and words that only look like counters
    ("09시", "아홉 시"),
    ("05분", "오 분"),
    ("2024년 03월 02일", "이천이십사 년 삼 월 이 일"),
    ("2024.03.02", "이천이십사 년 삼 월 이 일"),
    ("2024/03/02", "이천이십사 년 삼 월 이 일"),
    ("10-100mg", "십-백 밀리그램"),
    ("2021-2022년", "이천이십일-이천이십이 년"),
    ("1000-2000원", "천-이천 원"),
    ("3-4개", "세-네 개"),
    ("2병동", "이 병동"),
    ("3병실", "삼 병실"),
    ("3포인트", "삼 포인트"),
    ("제2장", "제이 장"),
    ("010 1234 5678", "공일공 일이삼사 오육칠팔"),
    ("4G 네트워크", "4G 네트워크"),
    ("12345678901234567890123", "일이삼사오육칠팔구영일이삼사오육칠팔구영일이삼"),
    # left as written
    ("B12", "B12"),
    ("A1c", "A1c"),
    ("3D", "3D"),
    ("120mmHg", "120mmHg"),
    ("숫자 없음", "숫자 없음"),
    ("", ""),
]


def test_the_table_has_at_least_a_hundred_cases():
    assert len(READINGS) >= 100
    assert len({written for written, _ in READINGS}) == len(READINGS)  # no duplicate rows


@pytest.mark.parametrize(("written", "spoken"), READINGS)
def test_reading(written, spoken):
    assert read_numbers(written) == spoken


@pytest.mark.parametrize(("written", "spoken"), READINGS)
def test_reading_is_idempotent_and_digit_free_where_read(written, spoken):
    assert read_numbers(spoken) == spoken
    if written[:1].isdigit() and not written.endswith(("mmHg", "D", "c", "네트워크")):
        assert not any(char.isdigit() for char in spoken)


@pytest.mark.parametrize(
    ("reference", "hypothesis", "errors"),
    [
        ("세 개", "3개", 0),
        ("네 개", "3개", 1),  # a wrong number is still an error
        ("삼십팔 점 오 도", "38.5도", 0),
        ("삼십팔 점 오 도", "38.6도", 1),
        ("공일공 일이삼사 오육칠팔", "010-1234-5678", 0),
        ("공일공 일이삼사 오육칠팔", "010-1234-5679", 1),
        ("하루 세 번 오백 밀리그램", "하루 3번 500mg", 0),
        ("혈압은 백삼십에 팔십오", "혈압은 130에 85", 0),
        ("칠십 퍼센트", "70%", 0),
        ("사십오 세", "45세", 0),
        ("마흔다섯 살", "45살", 0),
        ("열네 시 삼십 분", "14:30", 0),
        ("3개", "세 개", 0),  # both sides pass through the reader
        ("2주 뒤", "이 주 뒤", 0),
    ],
)
def test_reference_and_hypothesis_both_pass_through(reference, hypothesis, errors):
    row = score_row(reference, hypothesis, policy="numbers")
    counts = row["scores"]["cer"]
    assert counts["substitutions"] + counts["deletions"] + counts["insertions"] == errors
    assert row["scoring"] == SCORING_POLICIES["numbers"]
    # the counts are jiwer's on the same normalized strings (whitespace removed for CER)
    ref, hyp = row["reference_normalized"], row["hypothesis_normalized"]
    expected = jiwer.process_characters("".join(ref.split()), "".join(hyp.split()))
    assert counts["substitutions"] == expected.substitutions
    assert counts["deletions"] == expected.deletions
    assert counts["insertions"] == expected.insertions
    default = score_row(reference, hypothesis)["scores"]["cer"]
    if any(char.isdigit() for char in reference + hypothesis) and errors == 0:
        assert default["substitutions"] + default["deletions"] + default["insertions"] > 0


@pytest.mark.parametrize("text", ["3개", "38.5도", "010-1234-5678", "70%", "500mg 하루 3번"])
def test_the_default_policy_leaves_digits_as_written(text):
    assert normalize_for_scoring(text) == normalize_for_scoring(text, "default")
    assert any(char.isdigit() for char in normalize_for_scoring(text))
    assert not any(char.isdigit() for char in normalize_for_scoring(text, "numbers"))


def test_numbers_policy_reads_each_dual_form():
    raw = "체온이 (38.5도)/(삼십팔 점 오 도)고 통증은 (70%)/(칠십 퍼센트) 줄었어요"
    variants = transcript_variants(raw)
    row = score_row(
        "체온이 38.5도고 통증은 70% 줄었어요",
        "체온이 38.5도고 통증은 칠십 퍼센트 줄었어요",
        variants=variants,
        policy="numbers",
    )
    assert row["scores"]["cer"]["substitutions"] == 0
    assert row["multi_reference"]["scores"]["cer"]["substitutions"] == 0


def test_number_words():
    assert [native_korean(n) for n in (1, 2, 3, 4, 20, 21, 99)] == [
        "한",
        "두",
        "세",
        "네",
        "스무",
        "스물한",
        "아흔아홉",
    ]
    with pytest.raises(ValueError):
        native_korean(100)
    assert sino_korean(10**4) == "만" and sino_korean(10**8) == "일억"
    assert digit_by_digit("0101") == "공일공일"


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="default, numbers"):
        normalize_for_scoring("3개", "digits")


def test_score_with_numbers_policy_records_it_and_default_is_unchanged(tmp_path):
    utterances = [
        Utterance(
            id=f"u{i}",
            audio=f"/a/{i}.wav",
            text=text,
            raw_text=text,
            duration=1.0,
            sample_rate=16000,
            channels=1,
            speaker=f"s{i}",
        )
        for i, text in enumerate(["진통제 세 개 드릴게요", "체온이 삼십팔 점 오 도예요", "네 개요"])
    ]
    manifest = tmp_path / "test.jsonl"
    write_jsonl(manifest, [u.to_dict() for u in utterances])
    hypotheses = tmp_path / "hyp.txt"
    hypotheses.write_text("u0\t진통제 3개 드릴게요\nu1\t체온이 38.5도예요\nu2\t3개요\n", "utf-8")
    numbers = score(
        ScoreConfig(
            manifest=manifest,
            hypotheses=hypotheses,
            out_dir=tmp_path / "n",
            normalize="numbers",
            bootstrap=0,
            report=False,
        )
    ).metrics
    default = score(
        ScoreConfig(
            manifest=manifest,
            hypotheses=hypotheses,
            out_dir=tmp_path / "d",
            bootstrap=0,
            report=False,
        )
    ).metrics
    assert numbers["scoring_policy"] == "numbers"
    assert numbers["scoring_normalization"] == SCORING_POLICIES["numbers"]
    assert default["scoring_normalization"] == SCORING_POLICIES["default"] == "ko-score-2"
    assert numbers["substitutions"] == 1  # only 네 vs 세 in u2
    assert numbers["cer"] < default["cer"]
    rows = [json.loads(line) for line in (tmp_path / "n" / "predictions.jsonl").open()]
    assert rows[0]["hypothesis_normalized"] == "진통제 세 개 드릴게요"
    assert (tmp_path / "n" / "score_config.yaml").read_text().count("normalize: numbers") == 1


def test_score_refuses_an_unknown_policy(tmp_path):
    from voxadapt.errors import ConfigError

    manifest = tmp_path / "m.jsonl"
    manifest.write_text("")
    with pytest.raises(ConfigError, match="normalize must be one of default, numbers"):
        ScoreConfig(
            manifest=manifest, hypotheses=manifest, out_dir=tmp_path / "o", normalize="digits"
        )


def test_a_digit_run_of_any_length_is_read_in_linear_time():
    """A looping model writes thousands of digits: never an int() of them (Python refuses
    over 4300 digits), and still one reading per digit."""
    assert read_numbers("1" * 5000) == "일" * 5000
    assert read_numbers("3." + "5" * 5000 + "mg").endswith("오 밀리그램")
