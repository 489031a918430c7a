from pathlib import Path

import jiwer
import numpy as np
import pytest

from voxadapt.scoring.breakdowns import breakdowns, top_errors
from voxadapt.scoring.edits import EditCounts, char_edits, space_normalized, word_edits
from voxadapt.scoring.intervals import (
    BCA_MIN_CLUSTERS,
    MIN_INTERVAL_SPEAKERS,
    bootstrap_interval,
    paired_bootstrap,
)
from voxadapt.scoring.metrics import compute_metrics
from voxadapt.scoring.rates import corpus_metrics, error_rates, score_row
from voxadapt.scoring.terms import count_terms, load_terms, term_recall
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


# Ties between equal-cost alignments, resolved as ESPnet's KsponSpeech recipe
# (egs2/ksponspeech/asr1/local/get_space_normalized_hyps.py) resolves them. Its rule, applied
# by hand below: fill the Levenshtein table D[h][r] (h hypothesis, r reference characters,
# spaces removed), trace back from the end, and at each cell take the diagonal (match or
# substitution) when it costs no more than both other moves, else "hypothesis character
# inserted" if strictly cheaper than "reference character deleted", else the deletion.
# Equal characters on the diagonal take the reference character's word-start flag.
@pytest.mark.parametrize(
    ("reference", "hypothesis", "expected", "swer_errors"),
    [
        # The case. From (3, 5) every cell is an equal pair whose diagonal ties with
        # the deletion (D[2][4] = 2 = D[3][4] + 1, ...), so the diagonal wins: 가나나 aligns
        # with the last three reference characters 가|나나 (word starts F, T, F) and the
        # first 가나 is deleted. Hypothesis words 가 / 나나: one substitution.
        ("가나가 나나", "가나나", "가 나나", 1),
        # D = [[0,1,2],[1,1,1],[2,1,2]]. At (2,2) 가/나: diagonal D[1][1]+1 = 2 ties with
        # insertion and deletion (2): substitute; at (1,1) 나/가: 1 < 2: substitute. No
        # equal pair, so the hypothesis keeps its spacing: 나가 for 가나, one error
        # (RapidFuzz's opcodes keep one equal pair and give 나 가, two errors).
        ("가나", "나가", "나가", 1),
        # The final 가s are equal, so the diagonal wins at (2,1): the hypothesis' second 가
        # takes the reference 가's word start and the first one is inserted: 가 가.
        ("가", "가가", "가 가", 1),
        # (2,1) 가/가: diagonal D[1][0] = 1 ties with the insertion D[1][1]+1 = 1: the
        # diagonal wins, so the hypothesis' second 가 is the reference 가 (a word start).
        ("가 나", "가가 나", "가 가 나", 1),
        # The shared suffix 나나 aligns with the reference's 나나 (word start on the first),
        # the reference's first 나 is deleted: 나나, one deletion.
        ("나 나나", "나나", "나나", 1),
        # (4,1) 나/가: diagonal 4, insertion D[3][1]+1 = 3 < deletion 5: insert. (3,1) 가/가:
        # diagonal D[2][0] = 2 ties with the insertion D[2][1]+1 = 2: the third hypothesis
        # character is the reference 가 and starts a word: 가나 가나, a substitution and an
        # insertion.
        ("가", "가나가나", "가나 가나", 2),
    ],
)
def test_space_normalization_breaks_ties_like_espnet(reference, hypothesis, expected, swer_errors):
    assert space_normalized(reference, hypothesis) == expected
    assert EditCounts(**score_row(reference, hypothesis)["scores"]["swer"]).errors == swer_errors


def test_space_normalization_of_empty_and_identical_text():
    assert space_normalized("", "가나") == "가나"
    assert space_normalized("가 나", "") == ""
    assert space_normalized("가 나 다", "가나다") == "가 나 다"


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
    pairs = [("가나다라마", "가나다라마"), ("가나다라마", "바사아자차")] * 5
    speakers = [name for name in "abcde" for _ in range(2)]
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
    assert terms == [("고혈압",), ("당뇨",), ("혈압",)]
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
    assert len(terms) > 100 and ("고혈압",) in terms
    assert ("ct", "씨티", "시티") in terms and ("엑스레이", "xray", "x레이") in terms
    spellings = [spelling for variants in terms for spelling in variants]
    assert all(" " not in s for s in spellings) and len(spellings) == len(set(spellings))


# ------------------------------------------------------------------------ breakdowns


def test_duration_buckets_are_ordered_by_their_lower_bound():
    rows = rows_from([("가나다", "가나다")] * 5)
    for row, seconds in zip(rows, (31.0, 12.0, 3.0, 7.5, 22.0), strict=True):
        row["duration"] = seconds
    by_duration = breakdowns(rows, [])["duration"]
    assert list(by_duration) == ["0-5 s", "5-10 s", "10-15 s", "20-25 s", "30+ s"]


def test_age_groups_are_ordered_numerically():
    rows = rows_from([("가나다", "가나다")] * 3)
    for row, age in zip(rows, (105, 25, 9), strict=True):
        row["age"] = age
    assert list(breakdowns(rows, ["age"])["age"]) == ["0대", "20대", "100대"]


def test_breakdowns_report_undefined_rates_as_none():
    rows = rows_from([("", "네"), ("가나다", "가나")], speakers=["a", "b"])
    rows[0]["duration"], rows[1]["duration"] = 2.0, 7.0
    rows[0]["role"], rows[1]["role"] = "환자", "의사"
    result = breakdowns(rows, ["role"])
    assert result["duration"]["0-5 s"]["cer"] is None
    assert result["duration"]["0-5 s"]["insertion_rate"] is None
    assert result["role"]["의사"]["cer"] == pytest.approx(1 / 3)
    del rows[0]["duration"]  # a row without a duration has no bucket
    assert list(breakdowns(rows, [])["duration"]) == ["5-10 s"]


# ------------------------------------------------------------------------- bootstrap


def speaker_rows(per_speaker, reference="가나다라마바사아자차"):
    """One utterance per speaker with the given number of substituted characters."""
    pairs = [(reference, "하" * k + reference[k:]) for k in per_speaker]
    return rows_from(pairs, [f"s{i}" for i in range(len(pairs))])


def test_bootstrap_contains_the_estimate_and_is_seeded():
    rows = speaker_rows([0, 1, 1, 2, 0, 3, 5, 1, 0, 2, 4, 1, 0, 6])
    assert len(rows) >= BCA_MIN_CLUSTERS  # the BCa interval
    estimate = corpus_metrics(rows)["cer"]
    low, high = bootstrap_interval(rows, seed=3, resamples=500)
    assert low < estimate < high
    assert bootstrap_interval(rows, seed=3, resamples=500) == (low, high)
    assert bootstrap_interval(rows, seed=4, resamples=500) != (low, high)


def test_bootstrap_with_few_speakers_is_the_percentile_interval():
    rows = speaker_rows([0, 2, 5, 1, 3, 0])
    assert MIN_INTERVAL_SPEAKERS <= len(rows) < BCA_MIN_CLUSTERS
    # by hand: resample the 6 speakers with the seed's generator, as scipy draws them
    totals = np.array([[k, 10] for k in (0, 2, 5, 1, 3, 0)])
    picks = np.random.default_rng(7).integers(0, 6, size=(300, 6))
    sums = totals[picks].sum(axis=1)
    expected = np.percentile(sums[:, 0] / sums[:, 1], [2.5, 97.5])
    assert bootstrap_interval(rows, seed=7, resamples=300) == pytest.approx(tuple(expected))


def test_bootstrap_falls_back_to_percentile_when_bca_is_degenerate():
    # every speaker has CER 0.2: every resample gives 0.2, BCa's bias correction is infinite
    rows = speaker_rows([2] * 12)
    assert bootstrap_interval(rows, seed=0, resamples=200) == pytest.approx((0.2, 0.2))


@pytest.mark.parametrize(
    "rows",
    [
        speaker_rows([1]),  # one speaker
        rows_from([("", "네"), ("", "")], ["a", "b"]),  # empty references: no rate
    ],
)
def test_bootstrap_is_undefined(rows):
    assert bootstrap_interval(rows) is None


def test_paired_bootstrap_keys_and_determinism():
    good = speaker_rows([0, 1, 0, 2, 0, 1, 0, 0, 1, 0, 2, 0])
    bad = speaker_rows([2, 3, 1, 2, 4, 3, 2, 1, 3, 2, 5, 2])
    result = paired_bootstrap(good, bad, seed=1, resamples=400)
    assert set(result) == {"utterances", "this", "other", "delta", "ci", "p_value"}
    assert result["ci"][0] <= result["delta"] <= result["ci"][1] < 0
    assert result["p_value"] < 0.05
    assert paired_bootstrap(good, bad, seed=1, resamples=400) == result
    same = paired_bootstrap(good, good, seed=1, resamples=400)
    assert same["delta"] == 0 and same["ci"] == [0.0, 0.0] and same["p_value"] == 1.0


# ---------------------------------------------------------------- most frequent errors


def test_top_errors_count_characters_and_eojeol():
    rows = rows_from(
        [
            ("가슴 통증이 심해요", "가슴 통종이 심해요"),  # 증 -> 종
            ("통증이 있어요", "통종이 있어요 네"),  # 증 -> 종, + 네
            ("혈압약 드세요", "혈압 드세요"),  # - 약
            ("내일 오세요", "내일 오세요"),
        ]
    )
    errors = top_errors(rows)
    characters, eojeol = errors["characters"], errors["eojeol"]
    assert characters["substitutions"] == [{"reference": "증", "hypothesis": "종", "count": 2}]
    assert characters["deletions"] == [{"reference": "약", "count": 1}]
    assert characters["insertions"] == [{"hypothesis": "네", "count": 1}]
    assert eojeol["substitutions"] == [
        {"reference": "통증이", "hypothesis": "통종이", "count": 2},
        {"reference": "혈압약", "hypothesis": "혈압", "count": 1},
    ]
    assert eojeol["deletions"] == []
    assert eojeol["insertions"] == [{"hypothesis": "네", "count": 1}]
    # the same alignment as the CER counts
    totals = corpus_metrics(rows)
    assert sum(e["count"] for e in characters["substitutions"]) == totals["substitutions"]
    assert compute_metrics(rows, bootstrap=0)["top_errors"] == errors


def test_top_errors_keep_the_most_frequent_with_stable_ties():
    rows = rows_from([("가나다", "하나다"), ("가나다", "가나라"), ("가나다", "하나다")])
    substitutions = top_errors(rows, top=1)["characters"]["substitutions"]
    assert substitutions == [{"reference": "가", "hypothesis": "하", "count": 2}]
    ties = top_errors(rows_from([("다가", "라하")]))["characters"]["substitutions"]
    assert [e["reference"] for e in ties] == ["가", "다"]


# --------------------------------------------------------------------- term variants


def test_load_terms_reads_variant_sets(tmp_path):
    terms_file = tmp_path / "terms.txt"
    terms_file.write_text(
        "CT|씨티|시티  # spoken forms\nMRI | 엠알아이\n고혈압\n\nX-ray|엑스레이|x ray\n씨티\n",
        encoding="utf-8",
    )
    assert load_terms(terms_file) == [
        ("ct", "씨티", "시티"),
        ("mri", "엠알아이"),
        ("고혈압",),
        ("xray", "엑스레이"),  # "x ray" normalizes to the same spelling as X-ray
    ]  # the last line's 씨티 is already in CT's set


VARIANT_TERMS = [("ct", "씨티", "시티"), ("mri", "엠알아이"), ("고혈압",), ("혈압",)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ct 찍어 볼게요", {"ct": 1}),
        ("씨티를 찍고 시티도 다시", {"ct": 2}),  # two spellings, one set
        ("ct를 찍고 mri도", {"ct": 1, "mri": 1}),  # Hangul particle right after Latin
        ("picture를 보세요", {}),  # not inside a Latin word
        ("ct scan 결과", {"ct": 1}),  # spacing still separates Latin words
        ("고혈압이 있어서 혈압이 높아요", {"고혈압": 1, "혈압": 1}),
        ("엠알아이상 고 혈압", {"mri": 1, "고혈압": 1}),
    ],
)
def test_count_terms_with_variants(text, expected):
    assert count_terms(normalize_for_scoring(text), VARIANT_TERMS) == expected


@pytest.mark.parametrize(
    ("terms", "pairs", "occurrences", "hits", "most_missed"),
    [
        # any spelling recalls any other spelling of its set
        (VARIANT_TERMS, [("CT 찍으세요", "씨티 찍으세요"), ("시티 결과", "CT 결과")], 2, 2, []),
        # Latin is compared after scoring normalization: CT = ct = ＣＴ
        (VARIANT_TERMS, [("CT 찍으세요", "ct 찍으세요"), ("MRI", "ＭＲＩ")], 2, 2, []),
        # a miss is reported by the set's first spelling
        (
            VARIANT_TERMS,
            [("씨티 찍으세요", "시 찍으세요"), ("MRI 보고", "엠알아이 보고")],
            2,
            1,
            [{"term": "ct", "missed": 1, "occurrences": 1}],
        ),
        # overlapping variants: the longest spelling wins, so 컴퓨터단층촬영 counts once
        (
            [("컴퓨터단층촬영", "단층촬영"), ("촬영",)],
            [("컴퓨터단층촬영 할게요", "단층 촬영 할게요"), ("촬영", "촬영")],
            2,
            2,
            [],
        ),
        # a shorter term of another set inside a hypothesis spelling does not count for it
        (
            [("고혈압",), ("혈압", "블러드프레셔")],
            [("혈압 재요", "고혈압 재요"), ("고혈압", "혈압")],
            2,
            0,
            [
                {"term": "고혈압", "missed": 1, "occurrences": 1},
                {"term": "혈압", "missed": 1, "occurrences": 1},
            ],
        ),
        # plain strings still work
        (["고혈압", "당뇨"], [("고혈압 당뇨", "고혈압 당료")], 2, 1, None),
    ],
)
def test_term_recall_with_variants(terms, pairs, occurrences, hits, most_missed):
    result = term_recall(rows_from(pairs), terms)
    assert (result["occurrences"], result["hits"]) == (occurrences, hits)
    assert result["terms"] == len(terms)
    assert result["recall"] == pytest.approx(hits / occurrences)
    if most_missed is not None:
        assert result["most_missed"] == most_missed


def test_term_recall_without_occurrences_is_undefined():
    result = term_recall(rows_from([("네 알겠습니다", "네")]), VARIANT_TERMS)
    assert result["recall"] is None and result["occurrences"] == 0


def test_term_recall_and_multi_reference_rates_have_speaker_intervals():
    from voxadapt.scoring.intervals import ratio_interval
    from voxadapt.scoring.metrics import compute_metrics

    pairs = [("고혈압이 있으시고 당뇨는 없으세요", "고혈압은 있고 당료는 없어요")] * 6
    pairs += [("혈압을 재겠습니다", "혈압을 재겠습니다")] * 6
    rows = rows_from(pairs, speakers=[f"s{i % 6}" for i in range(12)])
    terms = [("고혈압",), ("당뇨",), ("혈압",)]
    metrics = compute_metrics(rows, terms=terms, bootstrap=300, seed=2)
    recall = metrics["term_recall"]
    low, high = recall["ci95"]
    assert 0 <= low <= recall["recall"] <= high <= 1
    # the same numbers as the generic ratio bootstrap over (speaker, hits, occurrences)
    items = []
    for row in rows:
        found = count_terms(row["reference_normalized"], terms)
        got = count_terms(row["hypothesis_normalized"], terms)
        hits = sum(min(n, got.get(t, 0)) for t, n in found.items())
        items.append((f"spk:{row['speaker']}", hits, sum(found.values())))
    assert ratio_interval(items, resamples=300, seed=2) == pytest.approx((low, high))
    # no dual transcriptions: the multi-reference interval is the single-reference one
    assert metrics["cer_multi_reference_ci95"] == metrics["cer_ci95"]
    assert metrics["wer_multi_reference_ci95"] == metrics["wer_ci95"]
    # perfect recall everywhere: a zero-width interval at 1
    perfect = rows_from([(ref, ref) for ref, _ in pairs], speakers=[f"s{i % 6}" for i in range(12)])
    assert term_recall(perfect, terms, bootstrap=100)["ci95"] == pytest.approx([1.0, 1.0])


def test_paired_comparison_over_too_few_speakers_claims_nothing():
    references = ["혈압을 재겠습니다", "숨을 크게 쉬세요"] * 3
    speakers = ["a", "b"] * 3
    good = rows_from([(r, r) for r in references], speakers)
    bad = rows_from([(r, r[:-2]) for r in references], speakers)
    result = paired_bootstrap(good, bad, seed=0)
    assert result["delta"] < 0  # the difference itself is reported
    assert result["too_few_speakers"] == 2 < MIN_INTERVAL_SPEAKERS
    assert "ci" not in result and "p_value" not in result  # no p = 0 from 2 speakers
    from voxadapt.report import format_metrics_summary

    text = format_metrics_summary({"compare": result})
    assert "95% CI n/a (fewer than 5 speakers: 2; no p-value)" in text and "p<" not in text


@pytest.mark.parametrize("speakers", [1, 2, MIN_INTERVAL_SPEAKERS - 1])
def test_no_interval_from_fewer_than_the_minimum_speakers(speakers):
    """One rule for every interval: below MIN_INTERVAL_SPEAKERS no rate, term recall or
    paired interval, however many utterances; metrics.json says why."""
    rows = speaker_rows([k % 4 for k in range(12)])
    for i, row in enumerate(rows):
        row["speaker"] = f"s{i % speakers}"
    assert bootstrap_interval(rows, resamples=100) is None
    metrics = compute_metrics(rows, terms=["가나"], bootstrap=100)
    assert not [key for key in metrics if key.endswith("_ci95")]
    assert metrics["bootstrap"]["speakers"] == speakers
    assert metrics["bootstrap"]["no_intervals"] == f"fewer than {MIN_INTERVAL_SPEAKERS} speakers"
    assert "ci95" not in metrics["term_recall"]
    assert metrics["term_recall"]["no_interval"] == metrics["bootstrap"]["no_intervals"]
    assert metrics["term_recall"]["speakers"] == speakers
    assert "ci" not in paired_bootstrap(rows, rows[::-1], resamples=100)


def test_intervals_from_the_minimum_speakers_on():
    rows = speaker_rows([k % 4 for k in range(12)])
    for i, row in enumerate(rows):
        row["speaker"] = f"s{i % MIN_INTERVAL_SPEAKERS}"
    metrics = compute_metrics(rows, terms=["가나"], bootstrap=100)
    assert metrics["cer_ci95"][0] <= metrics["cer"] <= metrics["cer_ci95"][1]
    assert metrics["bootstrap"]["no_intervals"] is None
    assert "ci95" in metrics["term_recall"] and "no_interval" not in metrics["term_recall"]
    # utterances without a speaker each count as their own: 12 of them give an interval
    for row in rows:
        row["speaker"] = None
    assert bootstrap_interval(rows, resamples=100) is not None


def test_a_bootstrap_p_value_is_never_below_one_over_the_resamples():
    from voxadapt.scoring.intervals import paired_bootstrap

    def row(index, errors):
        counts = {"substitutions": errors, "deletions": 0, "insertions": 0, "reference_length": 10}
        return {"id": f"u{index}", "speaker": f"s{index}", "scores": {"cer": counts}}

    better = [row(i, 0) for i in range(8)]
    worse = [row(i, 5) for i in range(8)]
    result = paired_bootstrap(better, worse, resamples=10, seed=0)
    assert result["delta"] < 0 and result["p_value"] >= 1 / 11
