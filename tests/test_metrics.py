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


# ------------------------------------------------------------------- evaluation metrics

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from voxadapt.metrics import (  # noqa: E402
    EditCounts,
    bootstrap_interval,
    corpus_metrics,
    count_terms,
    load_terms,
    paired_bootstrap,
    score_row,
    space_normalized,
    term_recall,
)


@pytest.mark.parametrize(
    ("reference", "hypothesis", "wer_errors", "swer_errors"),
    [
        ("고혈압 약을 드세요", "고혈압약을 드세요", 2, 0),  # spacing only: no sWER error
        ("고혈압 약을 드세요", "고 혈압 약을 드세요", 2, 0),
        ("가슴 통증이 심해요", "가슴 통종이 심해요", 1, 1),  # a real error stays an error
        ("가슴 통증이 심해요", "가슴통종이 심해요", 2, 1),  # ... even with wrong spacing
        ("가슴 통증이 심해요", "", 3, 3),
        ("내일 오세요", "내일 오세요 네 네", 2, 2),  # insertions count
    ],
)
def test_space_normalized_wer(reference, hypothesis, wer_errors, swer_errors):
    scores = score_row(reference, hypothesis)["scores"]
    assert EditCounts(**scores["wer"]).errors == wer_errors
    assert EditCounts(**scores["swer"]).errors == swer_errors


def test_space_normalization_keeps_characters():
    assert space_normalized("고혈압 약을 드세요", "고혈압약을드세요") == "고혈압 약을 드세요"
    assert space_normalized("가슴 통증", "가슴통종") == "가슴 통종"


def rows_from(pairs, speakers=None):
    rows = []
    for index, (reference, hypothesis) in enumerate(pairs):
        row = {"id": f"u{index}", "duration": 3.0, **score_row(reference, hypothesis)}
        if speakers:
            row["speaker"] = speakers[index]
        rows.append(row)
    return rows


def test_corpus_metrics_equal_jiwer():
    pairs = [*PAIRS[:3], ("다음 주 월요일 오전 열 시", "다음주 월요일 오전 열시 네")]
    rows = rows_from(pairs)
    metrics = corpus_metrics(rows)
    refs = [normalize_for_scoring(r) for r, _ in pairs]
    hyps = [normalize_for_scoring(h) for _, h in pairs]
    nospace = lambda texts: ["".join(t.split()) for t in texts]  # noqa: E731
    assert metrics["cer"] == pytest.approx(jiwer.cer(nospace(refs), nospace(hyps)))
    assert metrics["cer_spaces"] == pytest.approx(jiwer.cer(refs, hyps))
    assert metrics["wer"] == pytest.approx(jiwer.wer(refs, hyps))
    per_utterance = [jiwer.cer(r, h) for r, h in zip(nospace(refs), nospace(hyps))]
    assert metrics["macro_cer"] == pytest.approx(np.mean(per_utterance))
    assert metrics["ser"] == pytest.approx(sum(c > 0 for c in per_utterance) / len(pairs))
    assert metrics["swer"] < metrics["wer"]


def test_bootstrap_is_seeded_and_resamples_speakers():
    pairs = [("가나다라마", "가나다라마"), ("가나다라마", "바사아자차")] * 3
    speakers = ["a", "a", "b", "b", "c", "c"]
    rows = rows_from(pairs, speakers)
    # every speaker has CER 0.5, so resampling whole speakers cannot move the rate
    assert bootstrap_interval(rows, seed=1) == pytest.approx((0.5, 0.5))
    # utterance-level resampling (no speakers) does move it
    loose = rows_from(pairs)
    low, high = bootstrap_interval(loose, seed=1)
    assert low < 0.5 < high
    assert bootstrap_interval(loose, seed=1) == (low, high)
    reference = "가나다라마바사아자차카타"
    varied = rows_from([(reference, "하" * k + reference[k:]) for k in range(12)])
    assert bootstrap_interval(varied, seed=1, resamples=200) == bootstrap_interval(
        varied, seed=1, resamples=200
    )
    assert bootstrap_interval(varied, seed=1, resamples=200) != bootstrap_interval(
        varied, seed=2, resamples=200
    )


def test_paired_bootstrap_prefers_the_better_system():
    references = ["혈압을 재겠습니다", "숨을 크게 쉬세요", "약은 식후에 드세요", "내일 다시 오세요"]
    good = rows_from([(r, r) for r in references] * 3)
    bad = rows_from([(r, r[:-2]) for r in references] * 3)
    result = paired_bootstrap(good, bad, seed=0)
    assert result["delta"] < 0 and result["ci"][1] < 0 and result["p_value"] < 0.05
    assert paired_bootstrap(good, bad, seed=0) == result


def test_term_recall_tolerates_particles_and_spacing(tmp_path):
    terms_file = tmp_path / "terms.txt"
    terms_file.write_text("# comment\n고혈압\n당뇨\n혈압\n\n당뇨\n", encoding="utf-8")
    terms = load_terms(terms_file)
    assert terms == ["고혈압", "당뇨", "혈압"]
    assert count_terms("고혈압이 있어서 혈압약을", terms) == {"고혈압": 1, "혈압": 1}
    rows = rows_from(
        [
            ("고혈압이 있으시고 당뇨는 없으세요", "고혈압은 있고 당뇨도 없어요"),
            ("고혈압이 있으시고 당뇨는 없으세요", "고 혈압이 있고 당료는 없어요"),
            ("혈압을 재겠습니다", "혈압을 제겠습니다"),
        ]
    )
    result = term_recall(rows, terms)
    assert (result["occurrences"], result["hits"]) == (5, 4)
    assert result["recall"] == pytest.approx(0.8)
    assert result["most_missed"] == [{"term": "당뇨", "missed": 1, "occurrences": 2}]


def test_shipped_terms_list_loads():
    terms = load_terms(Path(__file__).parents[1] / "configs" / "ko-medical-terms.txt")
    assert len(terms) > 50 and "고혈압" in terms and all(" " not in t for t in terms)
