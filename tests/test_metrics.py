import jiwer
import pytest

from voxadapt.metrics import char_edits, error_rates, word_edits
from voxadapt.text import normalize_for_scoring


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("환자분, 혈압약은 드셨어요?", "환자분 혈압약은 드셨어요"),
        ("통증이 70% 정도!", "통증이 70% 정도"),
        ("체온 38.5도, 맥박 5,000", "체온 38.5도 맥박 5,000"),
        ("MRI  촬영", "mri 촬영"),
        ("ＣＴ １０분", "ct 10분"),  # NFKC folds full-width forms
        ("  ", ""),
    ],
)
def test_scoring_normalization(raw, expected):
    assert normalize_for_scoring(raw) == expected


PAIRS = [
    ("환자분 혈압약은 드셨어요", "환자분 혈압약 드셨어요"),
    ("가슴 통증이 언제부터 시작되었나요", "가슴통증이 언제 부터 시작 되었나요"),
    ("체온이 38도로 올라서", "체온이 삼십팔도로 올라서 네 네"),
    ("내일 오전 검사", ""),
]


def test_counts_equal_jiwer_on_the_same_strings():
    references = [normalize_for_scoring(r) for r, _ in PAIRS]
    hypotheses = [normalize_for_scoring(h) for _, h in PAIRS]
    rates = error_rates(references, hypotheses)
    nonempty = [(r, h) for r, h in zip(references, hypotheses) if h]
    words = jiwer.process_words([r for r, _ in nonempty], [h for _, h in nonempty])
    chars = jiwer.process_characters(
        ["".join(r.split()) for r, _ in nonempty], ["".join(h.split()) for _, h in nonempty]
    )
    empty_ref = references[-1]
    assert rates.wer_counts.substitutions == words.substitutions
    assert rates.wer_counts.insertions == words.insertions
    assert rates.wer_counts.deletions == words.deletions + len(empty_ref.split())
    assert rates.cer_counts.substitutions == chars.substitutions
    assert rates.cer_counts.insertions == chars.insertions
    assert rates.cer_counts.deletions == chars.deletions + len(empty_ref.replace(" ", ""))
    total_chars = sum(len(r.replace(" ", "")) for r in references)
    assert rates.cer == pytest.approx(rates.cer_counts.errors / total_chars)


def test_spacing_alone_is_not_a_character_error():
    assert char_edits("가슴 통증", "가슴통증").errors == 0
    assert char_edits("가슴 통증", "가슴통증", spaces=True).errors == 1
    assert word_edits("가슴 통증", "가슴통증").errors == 2


def test_empty_reference_and_hypothesis():
    assert char_edits("", "").errors == 0
    assert char_edits("", "네").insertions == 1
    assert error_rates(["가"], ["가"]).cer == 0.0
