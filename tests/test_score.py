"""`voxadapt score` and multi-reference scoring: any system's hypotheses, no model."""

import itertools
import json
import unicodedata

import pytest
from rapidfuzz.distance import Levenshtein

from voxadapt.cli import main
from voxadapt.errors import ConfigError
from voxadapt.manifest import Utterance, read_manifest, write_jsonl
from voxadapt.scoring.rates import corpus_metrics, score_row
from voxadapt.scoring.references import closest_reference, rebuild
from voxadapt.stages.prepare import PrepareConfig, prepare
from voxadapt.stages.score import ScoreConfig, score
from voxadapt.text import normalize_for_scoring, transcript_variants

DUAL = "체온이 (38.5도)/(삼십팔 점 오 도)고 통증은 (70%)/(칠십 퍼센트) 줄었어요"


@pytest.mark.parametrize(
    ("hypothesis", "choices"),
    [
        ("체온이 38.5도고 통증은 70% 줄었어요", [0, 0]),
        ("체온이 삼십팔 점 오 도고 통증은 칠십 퍼센트 줄었어요", [1, 1]),
        ("체온이 38.5도고 통증은 칠십 퍼센트 줄었어요", [0, 1]),  # mixed, per span
        ("체온이 삼십팔 점 오 도고 통증은 70% 줄었어요", [1, 0]),
    ],
)
def test_a_per_span_mixed_hypothesis_scores_zero(hypothesis, choices):
    variants = transcript_variants(DUAL)
    row = score_row(normalize_transcript_spelling(DUAL), hypothesis, variants=variants)
    multi = row["multi_reference"]
    assert multi["choices"] == choices
    assert multi["scores"]["cer"]["substitutions"] == 0
    assert sum(multi["scores"]["cer"][k] for k in ("deletions", "insertions")) == 0
    assert sum(multi["scores"]["wer"][k] for k in ("substitutions", "deletions", "insertions")) == 0
    metrics = corpus_metrics([row])
    assert metrics["cer_multi_reference"] == 0.0
    assert metrics["cer"] > 0 or choices == [0, 0]  # single reference: the spelling only


def normalize_transcript_spelling(raw):
    from voxadapt.text import normalize_transcript

    return normalize_transcript(raw)


def test_lattice_search_equals_brute_force_enumeration():
    import random

    generator = random.Random(7)

    def text(length):
        return "".join(generator.choice("가나다 라") for _ in range(generator.randint(0, length)))

    for _ in range(300):
        variants = [text(4), [text(3), text(4)], text(3), [text(2), text(5)], text(2)]
        hypothesis = normalize_for_scoring(text(12))
        compact = "".join(hypothesis.split())
        best = min(
            Levenshtein.distance(
                "".join(normalize_for_scoring(rebuild(variants, c)).split()), compact
            )
            for c in itertools.product((0, 1), repeat=2)
        )
        found = closest_reference(variants, hypothesis)
        assert found.distance == best
        assert Levenshtein.distance("".join(found.text.split()), compact) == best


def test_prepare_keeps_the_dual_forms(assets, tmp_path):
    result = prepare(PrepareConfig(assets / "aihub", "aihub", tmp_path / "out"))
    by_id = {u.id: u for u in read_manifest(result.manifests["train"])}
    doctor = by_id["D0001_0001"]
    assert doctor.text == "통증이 70% 정도 줄었나요?"
    assert doctor.text_variants == ["통증이 ", ["70%", "칠십 퍼센트"], " 정도 줄었나요?"]
    assert all(u.text_variants is None for i, u in by_id.items() if "(" not in u.raw_text)


@pytest.fixture
def manifest(tmp_path):
    rows = [
        Utterance(
            "u1",
            "/a/1.wav",
            normalize_transcript_spelling(DUAL),
            DUAL,
            4.0,
            16000,
            1,
            speaker="s1",
            text_variants=transcript_variants(DUAL),
        ),
        Utterance(
            "u2", "/a/2.wav", "혈압을 재겠습니다", "혈압을 재겠습니다", 3.0, 16000, 1, speaker="s2"
        ),
        Utterance(
            "u3", "/a/3.wav", "숨을 크게 쉬세요", "숨을 크게 쉬세요", 3.0, 16000, 1, speaker="s3"
        ),
    ]
    path = tmp_path / "test.jsonl"
    write_jsonl(path, rows)
    return path


HYPOTHESES = {
    "u1": "체온이 삼십팔 점 오 도고 통증은 70% 줄었어요",
    "u2": "혈압을 재겠습니다",
    "x9": "모르는 발화",  # not in the manifest; u3 has no hypothesis
}


def write_formats(tmp_path):
    """HYPOTHESES as a predictions.jsonl (carrying the manifest's own references, as
    `evaluate` writes them), a JSONL with id + text, and a Kaldi text file."""
    references = {u.id: u.text for u in read_manifest(tmp_path / "test.jsonl")}
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text(
        "".join(
            json.dumps(
                {"id": k, "hypothesis": v, "reference": references.get(k, "?")},
                ensure_ascii=False,
            )
            + "\n"
            for k, v in HYPOTHESES.items()
        ),
        encoding="utf-8",
    )
    transcribed = tmp_path / "transcribed.jsonl"
    transcribed.write_text(
        "".join(
            json.dumps({"id": k, "text": v}, ensure_ascii=False) + "\n"
            for k, v in HYPOTHESES.items()
        ),
        encoding="utf-8",
    )
    kaldi = tmp_path / "text"
    kaldi.write_text("".join(f"{k} {v}\n" for k, v in HYPOTHESES.items()), encoding="utf-8")
    return {"predictions": predictions, "jsonl": transcribed, "kaldi": kaldi}


def test_score_reads_three_formats_alike(manifest, tmp_path):
    results = {
        name: score(ScoreConfig(manifest, path, tmp_path / name, bootstrap=50))
        for name, path in write_formats(tmp_path).items()
    }
    metrics = [r.metrics for r in results.values()]
    assert all(m["cer"] == metrics[0]["cer"] for m in metrics)
    first = results["kaldi"]
    assert first.missing == ["u3"] and first.unknown == ["x9"]
    assert first.metrics["missing_hypotheses"] == 1 and first.metrics["unknown_hypotheses"] == 1
    rows = [json.loads(x) for x in first.predictions.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["u1", "u2", "u3"]
    u3 = rows[2]
    assert u3["hypothesis"] == "" and u3["missing_hypothesis"] is True
    assert u3["scores"]["cer"]["deletions"] == len("숨을크게쉬세요")  # empty output, counted
    assert first.metrics["cer_multi_reference"] < first.metrics["cer"]
    assert rows[0]["multi_reference"]["choices"] == [1, 0]
    assert first.report is not None and "multi" in first.report.read_text().lower()


def test_score_compare_and_bad_hypotheses(manifest, tmp_path):
    files = write_formats(tmp_path)
    result = score(
        ScoreConfig(manifest, files["kaldi"], tmp_path / "o", compare=files["jsonl"], bootstrap=50)
    )
    assert result.metrics["compare"]["delta"] == 0.0
    twice = tmp_path / "twice"
    twice.write_text("u1 하나\nu1 둘\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="occurs twice"):
        score(ScoreConfig(manifest, twice, tmp_path / "t"))
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        score(ScoreConfig(manifest, binary, tmp_path / "b"))


def test_score_cli(manifest, tmp_path, capsys):
    files = write_formats(tmp_path)
    assert main(["score", str(manifest), str(files["kaldi"]), "--out", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert "1 utterances had no hypothesis" in out and "metrics:" in out


def test_score_refuses_unmatched_or_mixed_files_and_reads_tabs(manifest, tmp_path):
    tabbed = tmp_path / "tabbed"
    tabbed.write_text("u2\t혈압을 재겠습니다\nu3\t숨을 크게 쉬세요\n", encoding="utf-8")
    result = score(ScoreConfig(manifest, tabbed, tmp_path / "t", bootstrap=0))
    assert result.missing == ["u1"] and result.unknown == []
    unmatched = tmp_path / "unmatched"
    unmatched.write_text("x1 하나\nx2 둘\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="wrong file or manifest"):
        score(ScoreConfig(manifest, unmatched, tmp_path / "u"))
    assert not (tmp_path / "u").exists()  # nothing created for a refused run
    array = tmp_path / "array"
    array.write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="one format per file"):
        score(ScoreConfig(manifest, array, tmp_path / "a"))
    mixed = tmp_path / "mixed"
    mixed.write_text('u2 혈압을 재겠습니다\n{"id": "u3", "text": "숨"}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="one format per file"):
        score(ScoreConfig(manifest, mixed, tmp_path / "m"))
    again = score(ScoreConfig(manifest, result.predictions, tmp_path / "again", bootstrap=0))
    assert again.missing == ["u1"]  # a score run's own output keeps its missing count


def test_score_flags_loops_and_truncation_as_evaluate_does(manifest, tmp_path):
    looped = "혈압을 재겠습니다 " + "네네" * 10
    predictions = tmp_path / "p.jsonl"
    predictions.write_text(
        json.dumps({"id": "u1", "text": "체온", "truncated": True}, ensure_ascii=False)
        + "\n"
        + json.dumps({"id": "u2", "text": looped}, ensure_ascii=False)
        + "\n"
        + json.dumps({"id": "u3", "text": "숨을 크게 쉬세요"}, ensure_ascii=False)
        + "\n",
        encoding="utf-8",
    )
    result = score(ScoreConfig(manifest, predictions, tmp_path / "o", bootstrap=0))
    rows = {r["id"]: r for r in map(json.loads, result.predictions.read_text().splitlines())}
    assert rows["u2"]["repetition_loop"] == "네" and rows["u1"]["repetition_loop"] is None
    assert [rows[i]["truncated"] for i in ("u1", "u2", "u3")] == [True, False, False]
    assert result.metrics["repetition_loop_rate"] == pytest.approx(1 / 3)
    assert result.metrics["truncated_rate"] == pytest.approx(1 / 3)
    # a Kaldi text file carries no flags: loops are still found in the text
    kaldi = tmp_path / "text"
    kaldi.write_text(f"u1 체온\nu2 {looped}\nu3 숨을\n", encoding="utf-8")
    again = score(ScoreConfig(manifest, kaldi, tmp_path / "k", bootstrap=0))
    assert again.metrics["repetition_loop_rate"] == pytest.approx(1 / 3)
    assert again.metrics["truncated_rate"] == 0


def _predictions_of(path, references):
    """A predictions.jsonl whose rows carry `references` (id -> stored reference text)."""
    path.write_text(
        "".join(
            json.dumps(
                {"id": i, "hypothesis": "혈압을 재겠습니다", "reference": text}, ensure_ascii=False
            )
            + "\n"
            for i, text in references.items()
        ),
        encoding="utf-8",
    )
    return path


def test_score_refuses_predictions_of_another_test_set(manifest, tmp_path, capsys):
    other_set = _predictions_of(
        tmp_path / "other.jsonl",
        {"u1": "다른 문장입니다", "u2": "혈압을 재겠습니다", "u3": "숨을 크게 쉬세요!"},
    )
    with pytest.raises(ConfigError, match=r"2 of 3 ids .* another reference .*'u1'") as caught:
        score(ScoreConfig(manifest, other_set, tmp_path / "refused"))
    assert "--use-manifest-references" in str(caught.value)
    assert not (tmp_path / "refused").exists()  # refused before --out is created
    # the same from the CLI: one line, exit 1
    out = tmp_path / "cli"
    assert main(["score", str(manifest), str(other_set), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("voxadapt: error: 2 of 3 ids")
    flag = ["--use-manifest-references", "--bootstrap", "0"]
    assert main(["score", str(manifest), str(other_set), "--out", str(out), *flag]) == 0
    assert json.loads((out / "metrics.json").read_text())["use_manifest_references"] is True
    # --compare is held to the same rule
    kaldi = write_formats(tmp_path)["kaldi"]
    with pytest.raises(ConfigError, match="another reference"):
        score(ScoreConfig(manifest, kaldi, tmp_path / "c", compare=other_set))


def test_reference_check_ignores_only_surrounding_whitespace(manifest, tmp_path):
    texts = {u.id: u.text for u in read_manifest(manifest)}
    padded = _predictions_of(tmp_path / "padded.jsonl", {i: f"  {t}\n" for i, t in texts.items()})
    assert score(ScoreConfig(manifest, padded, tmp_path / "ok", bootstrap=0)).missing == []
    # the same Hangul decomposed (NFD, as files saved on a Mac hold it) is the same text
    nfd = {i: unicodedata.normalize("NFD", t) for i, t in texts.items()}
    assert nfd != texts
    decomposed = _predictions_of(tmp_path / "nfd.jsonl", nfd)
    assert score(ScoreConfig(manifest, decomposed, tmp_path / "nfd", bootstrap=0)).missing == []
    # the scoring normalization would call these equal; the stored texts are not
    inner = {**texts, "u2": texts["u2"].replace(" ", "  ")}
    spaced = _predictions_of(tmp_path / "spaced.jsonl", inner)
    with pytest.raises(ConfigError, match=r"1 of 3 ids .*'u2'"):
        score(ScoreConfig(manifest, spaced, tmp_path / "no", bootstrap=0))


def test_use_manifest_references_rescores_with_a_warning(manifest, tmp_path, caplog):
    other_set = _predictions_of(
        tmp_path / "other.jsonl", {"u2": "다른 문장입니다", "u3": "숨을 크게 쉬세요"}
    )
    with caplog.at_level("WARNING"):
        result = score(
            ScoreConfig(
                manifest, other_set, tmp_path / "o", bootstrap=0, use_manifest_references=True
            )
        )
    warned = [r.getMessage() for r in caplog.records if "another reference" in r.getMessage()]
    assert len(warned) == 1 and "1 of 2 ids" in warned[0] and "'u2'" in warned[0]
    rows = {r["id"]: r for r in map(json.loads, result.predictions.read_text().splitlines())}
    assert rows["u2"]["reference"] == "혈압을 재겠습니다"  # the manifest's, not the file's
    assert rows["u2"]["scores"]["cer"]["substitutions"] == 0
    assert result.metrics["use_manifest_references"] is True
