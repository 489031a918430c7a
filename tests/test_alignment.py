"""Word timestamps from Qwen3's forced aligner: word splitting as transformers does it, times
clipped and monotonic whatever the model predicts, no word lost or invented, and the
`--aligner` option of transcribe and evaluate."""

from __future__ import annotations

import json
import sys
import types
from itertools import pairwise

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from voxadapt.alignment import (
    Aligner,
    AlignmentError,
    AlignmentRequest,
    Word,
    add_words,
    place_words,
    split_words,
)
from voxadapt.decoding import AudioItem, DecodeOptions
from voxadapt.errors import ConfigError

from conftest import CLIPS, run_cli

HOSTILE = [
    "환자분, 오늘 아침에 혈압약은 드셨어요?",
    "  고혈압으로   내원하신\t김철수 환자분\n메트포르민 500밀리그램  ",
    "... !!! ?",  # punctuation only
    "- 환자분",  # a unit-less token first
    "혈압 130/85 - 맥박 72회 …",
    "🩺 청진 😀 결과 👩‍⚕️",
    "CT 촬영 MRI-검사 x-ray it's 3.5mg",
    "漢字 한자 混用 text",
    "cafe\u0301 한국어",
    "",
    "   ",
]


def normalized(text: str) -> str:
    return " ".join(text.split())


# ------------------------------------------------------------------ words and units


@pytest.fixture
def no_score_soynlp(monkeypatch):
    """soynlp's LTokenizer as it behaves without trained scores (every eojeol whole), so
    transformers' Korean path runs without the package."""
    module = types.ModuleType("soynlp.tokenizer")
    module.LTokenizer = lambda: types.SimpleNamespace(tokenize=str.split)
    monkeypatch.setitem(sys.modules, "soynlp", types.ModuleType("soynlp"))
    monkeypatch.setitem(sys.modules, "soynlp.tokenizer", module)
    from transformers.models.qwen3_asr import processing_qwen3_asr

    monkeypatch.setattr(processing_qwen3_asr, "is_soynlp_available", lambda: True)


@pytest.mark.parametrize("text", HOSTILE)
@pytest.mark.parametrize("language", ["ko", "en", None])
def test_units_are_what_transformers_would_give_the_aligner(
    text, language, tiny_aligner, no_score_soynlp
):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_aligner)
    name = {"ko": "korean", "en": "english", None: None}[language]
    expected = processor.split_words_for_alignment(text, name)
    assert [u for _, units in split_words(text, language) for u in units] == expected


@pytest.mark.parametrize("text", HOSTILE)
@pytest.mark.parametrize("language", ["ko", None])
def test_words_join_to_the_transcript(text, language):
    words = split_words(text, language)
    assert " ".join(word for word, _ in words) == normalized(text)
    assert all(units for _, units in words) or len(words) <= 1


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "환자분, 오늘 - 아침에",
            [("환자분,", ["환자분"]), ("오늘 -", ["오늘"]), ("아침에", ["아침에"])],
        ),
        ("… 네 네", [("… 네", ["네"]), ("네", ["네"])]),
        ("?! …", [("?! …", [])]),
        ("", []),
        ("500mg/일 MRI-검사", [("500mg/일", ["500mg일"]), ("MRI-검사", ["MRI검사"])]),
    ],
)
def test_punctuation_joins_a_neighbour_word(text, words):
    assert split_words(text, "ko") == words


@given(
    text=st.text(alphabet=st.sampled_from(list("가나다 한자漢字ab1 -,.…😀\t\n'")), max_size=40),
    times=st.lists(st.floats(-50, 500, allow_nan=False), min_size=80, max_size=80),
    start=st.integers(0, 100_000).map(lambda ms: ms / 1000),  # segments are in whole ms
    length=st.integers(0, 30_000).map(lambda ms: ms / 1000),
)
@settings(max_examples=300, deadline=None)
def test_any_predicted_times_give_ordered_words_inside_the_segment(text, times, start, length):
    """Whatever times the model predicts (out of order, negative, past the segment), the
    words keep the transcript and are monotonic inside [start, end]."""
    end = round(start + length, 3)
    words = split_words(text, None)
    n_units = sum(len(units) for _, units in words)
    unit_times = list(zip(times[0::2], times[1::2], strict=True))[:n_units]
    placed = place_words(words, unit_times, start, end)
    assert " ".join(w.word for w in placed) == normalized(text)
    for word in placed:
        assert start <= word.start <= word.end <= end
    for a, b in pairwise(placed):
        assert a.end <= b.start


def test_times_are_shifted_clipped_and_rounded():
    words = [("가", ["가"]), ("나", ["나"]), ("다", ["다"])]
    placed = place_words(words, [(0.1234, 0.5), (0.3, 0.2), (9.0, 12.0)], 10.0, 15.0)
    assert placed == [Word("가", 10.123, 10.5), Word("나", 10.5, 10.5), Word("다", 15.0, 15.0)]


# ------------------------------------------------------------------ the tiny aligner


@pytest.fixture(scope="module")
def aligner(tiny_aligner):
    return Aligner.load(tiny_aligner, device="cpu")


def random_logits(aligner, monkeypatch, seed=0):
    """The tiny model with random per-slot classes over the whole 400 s range (the random
    tiny head gives nearly one class everywhere): the processor's LIS repair and our
    clipping must still give ordered words inside each segment."""
    forward = aligner.model.forward
    generator = torch.Generator().manual_seed(seed)

    def noisy(*args, **kwargs):
        output = forward(*args, **kwargs)
        output.logits = torch.randn(output.logits.shape, generator=generator)
        return output

    monkeypatch.setattr(aligner.model, "forward", noisy)


@pytest.mark.parametrize("noisy", [False, True])
def test_segments_of_a_recording_are_timed_inside_their_bounds(aligner, monkeypatch, noisy):
    if noisy:
        random_logits(aligner, monkeypatch)
    duration = sf.info(CLIPS[0]).duration
    texts = [t for t in HOSTILE if t.strip()]
    requests = [
        AlignmentRequest(CLIPS[0], None, i * 0.3, min(duration, i * 0.3 + 1.5), text, "ko")
        for i, text in enumerate(texts)
    ]
    results = aligner.align(requests, batch_size=3)
    for request, words in zip(requests, results):
        assert " ".join(w.word for w in words) == normalized(request.text)
        assert all(request.start <= w.start <= w.end <= request.end for w in words)
        assert all(a.end <= b.start for a, b in pairwise(words))
    # batching does not change the result
    assert aligner.align(requests, batch_size=1) == results or noisy


def test_words_stay_inside_the_recording(aligner, monkeypatch, tmp_path):
    """A segment reaching past the end of the file is timed only up to the audio there is,
    and a recording inside a file (a manifest's offset) is cut at its offset."""
    random_logits(aligner, monkeypatch, seed=3)
    samples, rate = sf.read(CLIPS[0], dtype="float32")
    path = sf.write(tmp_path / "short.wav", samples[: rate * 2], rate) or tmp_path / "short.wav"
    [words] = aligner.align([AlignmentRequest(path, 0.5, 0.5, 9.0, "가 나 다 라 마 바", "ko")])
    assert words and all(0.5 <= w.start <= w.end <= 2.0 for w in words)


def test_empty_text_unreadable_audio_and_long_segments(aligner, tmp_path):
    ok = AlignmentRequest(CLIPS[0], None, 0.0, 1.0, "환자분", "ko")
    missing = AlignmentRequest(tmp_path / "gone.wav", None, 0.0, 1.0, "환자분", "ko")
    too_long = AlignmentRequest(CLIPS[0], None, 0.0, 301.0, "환자분", "ko")
    empty = AlignmentRequest(CLIPS[0], None, 0.0, 1.0, " ", "ko")
    results = aligner.align_each([ok, missing, too_long, empty])
    assert [type(r).__name__ for r in results] == ["list", "AudioError", "AlignmentError", "list"]
    assert results[3] == [] and "at most 300 s" in str(results[2])
    with pytest.raises(AlignmentError, match="at most 300 s"):
        aligner.align([ok, too_long])


def test_an_unsupported_language_is_refused_before_any_work(aligner, monkeypatch):
    monkeypatch.setattr(aligner, "_align_batch", lambda *a: pytest.fail("worked"))
    request = AlignmentRequest(CLIPS[0], None, 0.0, 1.0, "habari", "sw")
    with pytest.raises(AlignmentError, match="not 'sw'"):
        aligner.align([request])


def test_a_recording_that_fails_alignment_keeps_its_transcript(aligner, tmp_path):
    gone = tmp_path / "gone.wav"
    items = [AudioItem("a", str(CLIPS[0]), 2.0), AudioItem("b", str(gone), 2.0)]
    items.append(AudioItem("c", str(CLIPS[0]), 2.0, offset=0.5))
    rows = [
        {"id": "a", "text": "환자분 오늘"},
        {"id": "b", "text": "환자분"},
        {"id": "c", "text": "네", "segments": [{"start": 0.2, "end": 1.0, "text": "네"}]},
    ]
    failed = add_words(aligner, rows, items, ["ko", "ko", "sw"])
    assert failed == 2
    assert [w["word"] for w in rows[0]["words"]] == ["환자분", "오늘"]
    assert "words" not in rows[1] and "gone.wav" in rows[1]["words_error"]
    assert rows[1]["text"] == "환자분" and "not 'sw'" in rows[2]["words_error"]


# ------------------------------------------------------------------ refusals


@pytest.mark.parametrize("which", ["tiny_qwen", "tiny_model"])
def test_a_speech_recognizer_is_refused_as_the_aligner(which, request, tmp_path):
    from voxadapt.stages.transcribe import TranscribeConfig

    model = request.getfixturevalue(which)
    with pytest.raises(AlignmentError, match="is not a Qwen3 forced aligner"):
        Aligner.load(model, device="cpu")
    with pytest.raises(ConfigError, match="not a Qwen3 forced aligner"):
        TranscribeConfig(inputs=[CLIPS[0]], model=str(model), aligner=str(model))
    with pytest.raises(ConfigError, match="model folder not found"):
        TranscribeConfig(inputs=[CLIPS[0]], aligner=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="is the original release"):
        TranscribeConfig(inputs=[CLIPS[0]], aligner="Qwen/Qwen3-ForcedAligner-0.6B")


def test_a_language_the_aligner_cannot_time_is_refused_with_the_options(tiny_aligner):
    from voxadapt.stages.transcribe import TranscribeConfig

    with pytest.raises(ConfigError, match="--aligner: the Qwen3 forced aligner times"):
        TranscribeConfig(
            inputs=[CLIPS[0]], aligner=str(tiny_aligner), decode=DecodeOptions(language="ar")
        )


def test_transcribe_help_lists_the_aligner(capsys):
    from voxadapt.cli import main

    with pytest.raises(SystemExit):
        main(["transcribe", "--help"])
    assert "--aligner MODEL" in capsys.readouterr().out


# ------------------------------------------------------------------ the stages


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny_model", "tiny_qwen"])
def test_transcribe_cli_writes_words_and_word_timed_cues(model, request, tiny_aligner, tmp_path):
    base = request.getfixturevalue(model)
    out = tmp_path / "out"
    result = run_cli(
        "transcribe", CLIPS[0], CLIPS[1], "--model", base, "--aligner", tiny_aligner,
        "--quantization", "none", "--max-new-tokens", "6", "--workers", "0", "--device", "cpu",
        "--out", out, "--format", "jsonl,srt,vtt", "--max-line-width", "4",
        "--max-line-count", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "transcripts.jsonl").read_text().splitlines()]
    for row in rows:
        words = row["words"]
        assert " ".join(w["word"] for w in words) == normalized(row["text"])
        assert all(0 <= w["start"] <= w["end"] <= row["duration"] for w in words)
        assert all(a["end"] <= b["start"] for a, b in pairwise(words))
        srt = (out / row["srt"]).read_text()
        # nothing said (the tiny Qwen may say nothing): no cue, an empty SRT
        assert srt.startswith("1\n00:00:00,000 --> ") if row["text"].strip() else srt == ""


@pytest.mark.slow
def test_long_form_recordings_are_timed_per_segment(tiny_model, tiny_aligner, tmp_path):
    from voxadapt.stages.transcribe import TranscribeConfig, transcribe

    parts = []
    for clip in CLIPS * 3:
        samples, rate = sf.read(clip, dtype="float32")
        parts += [np.zeros(int(1.5 * rate), dtype=np.float32), samples]
    long = tmp_path / "consult.wav"
    sf.write(long, np.concatenate([*parts, np.zeros(16000, dtype=np.float32)]), 16000)
    options = DecodeOptions(max_new_tokens=5, num_workers=0, long_form_threshold_s=10.0)
    config = TranscribeConfig(
        inputs=[long], model=str(tiny_model), quantization="none", device="cpu",
        aligner=str(tiny_aligner), decode=options,
    )  # fmt: skip
    [row] = transcribe(config).rows
    assert len(row["segments"]) >= 6
    for segment in row["segments"]:
        words = segment["words"]
        assert " ".join(w["word"] for w in words) == normalized(segment["text"])
        assert all(segment["start"] <= w["start"] <= w["end"] <= segment["end"] for w in words)
    flat = [w for s in row["segments"] for w in s["words"]]
    assert row["words"] == flat
    assert " ".join(w["word"] for w in flat) == normalized(row["text"])
    assert all(a["end"] <= b["start"] for a, b in pairwise(flat))


@pytest.mark.slow
def test_evaluate_predictions_have_words(tiny_model, tiny_aligner, sample_manifest, tmp_path):
    from voxadapt.stages.evaluate import EvaluateConfig, evaluate

    config = EvaluateConfig(
        manifest=sample_manifest, out_dir=tmp_path / "eval", model=str(tiny_model),
        quantization="none", device="cpu", aligner=str(tiny_aligner), bootstrap=0,
        report=False, decode=DecodeOptions(max_new_tokens=5, num_workers=0),
    )  # fmt: skip
    result = evaluate(config)
    rows = [json.loads(line) for line in result.predictions.read_text().splitlines()]
    assert rows and all("words" in row for row in rows)
    for row in rows:
        assert " ".join(w["word"] for w in row["words"]) == normalized(row["hypothesis"])
    identity = json.loads((tmp_path / "eval" / "identity.json").read_text())
    assert str(tiny_aligner.resolve()) in identity["aligner"]
