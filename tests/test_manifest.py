"""One way to read lines: split at \\n only, a BOM removed at any line start, nothing skipped."""

import json

import pytest

from voxadapt.errors import ConfigError, ManifestError
from voxadapt.manifest import BOM, iter_jsonl, iter_lines, read_manifest, write_jsonl
from voxadapt.scoring.rows import read_hypotheses, read_predictions
from voxadapt.text import normalize_for_scoring, read_term_lines
from voxadapt.transcript_files import _text_line

# Separators str.splitlines() splits on and JSON writes raw inside strings.
SEPARATORS = ["\u2028", "\u2029", "\u0085", "\x1c", "\x1d", "\x1e", "\x0b", "\x0c"]


@pytest.mark.parametrize("separator", SEPARATORS)
def test_a_separator_inside_a_json_string_does_not_split_the_line(tmp_path, separator):
    path = tmp_path / "m.jsonl"
    rows = [{"id": f"u{i}", "note": f"a{separator}b"} for i in range(4)]
    write_jsonl(path, rows)
    assert [record for _, record in iter_jsonl(path)] == rows
    assert len(list(iter_lines(path))) == 4


def test_a_bom_is_removed_wherever_a_line_starts_with_one(tmp_path):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for path, ident in ((first, "a"), (second, "b")):
        path.write_bytes(BOM + json.dumps({"id": ident}).encode() + b"\r\n")
    both = tmp_path / "both.jsonl"
    both.write_bytes(first.read_bytes() + second.read_bytes())  # `cat a b > both`
    assert [r["id"] for _, r in iter_jsonl(both)] == ["a", "b"]


def test_a_line_that_does_not_parse_is_an_error_naming_it(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"id": "a", "hypothesis": "x"}\nnot json\n{"id": "b"}\n', "utf-8")
    with pytest.raises(ManifestError, match=r"predictions\.jsonl:2: not valid JSON"):
        read_predictions(path)
    path.write_text('{"id": true, "hypothesis": "x"}\n', "utf-8")
    with pytest.raises(ManifestError, match="id must be a string"):
        read_predictions(path)


def test_manifest_metadata_with_a_line_separator_keeps_every_utterance(sample_manifest, tmp_path):
    records = [json.loads(line) for line in sample_manifest.read_text("utf-8").split("\n") if line]
    records[1]["note"] = "처방\u2028변경"
    path = tmp_path / "m.jsonl"
    write_jsonl(path, records)
    assert len(read_manifest(path)) == len(records) == 4


@pytest.mark.parametrize(
    ("ident", "text"),
    [("clip 1.wav", "네 알겠습니다"), ("s1/u0", "혈압\u2028약"), ("a  b", "")],
)
def test_transcribe_txt_round_trips_through_score(tmp_path, ident, text):
    path = tmp_path / "hyp.txt"
    path.write_text(_text_line({"id": ident, "text": text}) + "\n", "utf-8")
    assert read_hypotheses(path) == {ident: " ".join(text.split())}


def test_txt_refuses_ids_it_cannot_keep_and_marks_failures():
    from voxadapt.errors import VoxadaptError

    with pytest.raises(VoxadaptError, match="use --format jsonl"):
        _text_line({"id": "a\tb", "text": "x"})
    assert _text_line({"id": "a", "text": None, "error": "missing_audio"}).startswith("a\t[error")


def test_failed_inputs_in_a_txt_file_are_missing_not_hypotheses(tmp_path):
    path = tmp_path / "hyp.txt"
    lines = [_text_line({"id": "a", "text": None, "error": "x"}), "b\t안녕"]
    path.write_text("\n".join(lines) + "\n", "utf-8")
    assert read_hypotheses(path) == {"a": None, "b": "안녕"}


def test_json_true_is_not_the_id_true(tmp_path):
    path = tmp_path / "hyp.jsonl"
    path.write_text('{"id": true, "text": "네"}\n', "utf-8")
    with pytest.raises(ConfigError, match="id must be a string, not true"):
        read_hypotheses(path)


def test_terms_files_split_on_newlines_only(tmp_path):
    path = tmp_path / "terms.txt"
    path.write_bytes(BOM + "고혈압\u2028당뇨\n".encode() + BOM + "CT|씨티\n".encode())
    assert read_term_lines(path) == [(1, ["고혈압\u2028당뇨"]), (2, ["CT", "씨티"])]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("혈\u200b압", "혈압"),  # zero-width space
        ("혈\u00ad압", "혈압"),  # soft hyphen
        ("혈\u200d압", "혈압"),  # zero-width joiner
        ("\ufeff혈압 약", "혈압 약"),  # BOM
        ("혈압\u2060약", "혈압약"),  # word joiner
    ],
)
def test_invisible_characters_are_removed_before_scoring_not_word_breaks(raw, expected):
    assert normalize_for_scoring(raw) == expected


def test_a_raw_jsonl_is_refused_with_the_command_that_prepares_it(tmp_path):
    from voxadapt.errors import ManifestError
    from voxadapt.manifest import read_manifest

    raw = tmp_path / "clips.jsonl"
    raw.write_text('{"audio": "a.wav", "text": "네"}\n', encoding="utf-8")
    with pytest.raises(ManifestError, match=r"clips.jsonl:1: not an utterance record .*"
                       r"voxadapt prepare jsonl .*clips.jsonl --out DIR"):  # fmt: skip
        read_manifest(raw)
