"""Batched transcription against the stock processor + generate path, on the tiny model."""

import json
import warnings

import pytest
import torch

from voxadapt.cli import main
from voxadapt.decoding import (
    AudioItem,
    DecodeOptions,
    Transcriber,
    clean_transcript,
    repetition_loop,
)
from voxadapt.model import load_for_inference
from voxadapt.stages.transcribe import TranscribeConfig, collect_inputs, transcribe

from conftest import CLIPS, fit_duration, write_wav

FIXED = {"max_new_tokens": 8, "min_new_tokens": 8}  # same tokens per clip, no early EOS


@pytest.mark.parametrize(
    ("raw", "text", "language"),
    [
        ("lang:ko 혈압을 재겠습니다", "혈압을 재겠습니다", "ko"),
        ("  lang:en Hello", "Hello", "en"),
        ("혈압을 재겠습니다", "혈압을 재겠습니다", None),
        ("language models", "language models", None),  # not a tag
    ],
)
def test_leaked_language_prefix_is_stripped(raw, text, language):
    assert clean_transcript(raw) == (text, language)


@pytest.mark.parametrize(
    ("text", "unit"),
    [
        ("네 네 네 네 네 네 네 네 네 네", "네"),
        ("약을 드세요 약을 드세요 약을 드세요 약을 드세요", "약을드세요"),
        ("네 네 네 알겠습니다", None),  # three short answers are speech, not a loop
        ("진료비는 1000000원입니다", None),  # digit runs are numbers
        ("혈압이 조금 높습니다. 다음 주에 다시 오세요.", None),
    ],
)
def test_repetition_loops_are_flagged(text, unit):
    assert repetition_loop(text) == unit


def stock_transcript(model, processor, audio, n_tokens):
    """The seed's path: processor.apply_transcription_request + generate, one clip."""
    inputs = processor.apply_transcription_request(audio=str(audio), model_id="x", language="ko")
    with torch.no_grad():
        output = model.generate(
            **inputs, max_new_tokens=n_tokens, min_new_tokens=n_tokens, do_sample=False
        )
    ids = output[0, inputs["input_ids"].shape[1] :]
    return processor.tokenizer.decode(ids, skip_special_tokens=True).strip()


@pytest.fixture(scope="module")
def clips(tmp_path_factory, speech):
    """Sample clips, a 48 kHz stereo one, and a 40 s clip (two 30 s chunks)."""
    root = tmp_path_factory.mktemp("clips")
    samples, rate = speech
    long_clip = write_wav(root / "long40.wav", fit_duration(samples, rate, 40.0), rate)
    stereo = write_wav(root / "stereo48k.wav", samples, rate, target_rate=48000, channels=2)
    return [*CLIPS, stereo, long_clip]


def test_batched_transcripts_equal_the_stock_path(tiny_model, processor, clips):
    transcriber = Transcriber.load(tiny_model, quantization="none")
    items = [AudioItem(p.stem, str(p), 40.0 if "long" in p.stem else 5.0) for p in clips]
    results = {}
    for batch in transcriber.transcribe(items, DecodeOptions(batch_size=3, num_workers=0, **FIXED)):
        for item, transcript in batch:
            results[item.id] = transcript
    assert set(results) == {p.stem for p in clips}
    for path in clips:
        expected = stock_transcript(transcriber.model, processor, path, 8)
        assert results[path.stem].text == expected, path.name
        assert results[path.stem].n_tokens == 8


def test_batch_size_does_not_change_transcripts(tiny_model, clips):
    transcriber = Transcriber.load(tiny_model, quantization="none")
    items = [AudioItem(p.stem, str(p), 40.0 if "long" in p.stem else 5.0) for p in clips]

    def run(batch_size):
        options = DecodeOptions(batch_size=batch_size, num_workers=0, **FIXED)
        return {i.id: t.text for b in transcriber.transcribe(items, options) for i, t in b}

    assert run(1) == run(4)


def test_runaway_decoding_is_capped_and_flagged(tiny_model, clips):
    transcriber = Transcriber.load(tiny_model, quantization="none")
    item = AudioItem("a", str(clips[0]), 5.0)
    options = DecodeOptions(num_workers=0, tokens_per_s=1.0)  # cap = 20 + 5 tokens
    [[(_, transcript)]] = list(transcriber.transcribe([item], options))
    assert transcript.n_tokens <= 25
    assert transcript.truncated  # a random model never says EOS in time


def test_bad_files_are_reported_and_the_rest_transcribed(tiny_model, tmp_path, clips):
    folder = tmp_path / "calls"
    (folder / "sub").mkdir(parents=True)
    good = folder / "sub" / "good.wav"
    good.write_bytes(clips[0].read_bytes())
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00not a wav at all")
    (folder / "notes.txt").write_text("ignored")
    out = tmp_path / "out.jsonl"
    result = transcribe(
        TranscribeConfig(
            inputs=[folder, tmp_path / "missing.wav"],
            model=str(tiny_model),
            out=out,
            quantization="none",
            decode=DecodeOptions(num_workers=0, **FIXED),
        )
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and result.n_errors == 2
    by_id = {row["id"]: row for row in rows}
    assert by_id["sub/good.wav"]["text"]
    assert by_id["broken.wav"]["error"] == "unreadable_audio"
    assert by_id[str(tmp_path / "missing.wav")]["error"] == "missing_audio"


def test_manifest_input_keeps_its_fields(sample_manifest):
    items, errors = collect_inputs([sample_manifest])
    assert not errors and len(items) == 4
    assert items[0].record["text"] and items[0].duration > 0


def test_adapter_sets_quantization_and_changes_output(tiny_model, adapters, clips):
    base, _ = load_for_inference(tiny_model, quantization="none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adapted, quantization = load_for_inference(tiny_model, adapters["lora"])
    assert quantization == "nf4"  # read from the adapter's voxadapt_adapter.json
    import bitsandbytes as bnb

    assert any(isinstance(m, bnb.nn.Linear4bit) for m in adapted.modules())
    full, _ = load_for_inference(tiny_model, adapters["full"], quantization="none")
    name = next(n for n, _ in base.named_parameters() if "linear_1" in n)
    assert not torch.equal(dict(full.named_parameters())[name], dict(base.named_parameters())[name])


def test_transcribe_cli_txt_and_srt(tiny_model, adapters, tmp_path, capsys, clips):
    code = main(
        [
            "transcribe",
            str(clips[0]),
            "--adapter",
            str(adapters["full"]),
            "--quantization",
            "none",
            "--max-new-tokens",
            "4",
            "--workers",
            "0",
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{clips[0]}\t")  # --model defaults to the adapter's base
    assert "transcribed 1 of 1" in captured.err
    code = main(
        [
            "transcribe",
            str(clips[0]),
            "--model",
            str(tiny_model),
            "--quantization",
            "none",
            "--max-new-tokens",
            "4",
            "--workers",
            "0",
            "--out",
            str(tmp_path / "subs"),
            "--format",
            "srt",
        ]
    )
    assert code == 0
    srt = (tmp_path / "subs" / f"{clips[0].stem}.srt").read_text()
    assert srt.startswith("1\n00:00:00,000 --> 00:00:0")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"max_new_tokens": 0}, "max_new_tokens must be >= 1"),
        ({"max_new_tokens": -5}, "max_new_tokens must be >= 1"),
        ({"min_new_tokens": 9, "max_new_tokens": 4}, "min_new_tokens must be <="),
        ({"tokens_per_s": 0.0}, "tokens_per_s must be > 0"),
        ({"num_workers": -1}, "num_workers must be >= 0"),
        ({"language": "xx-nonsense"}, "not an ISO 639-1"),
        ({"language": "xx"}, "not an ISO 639-1"),
    ],
)
def test_decode_options_are_validated_on_construction(changes, message):
    from voxadapt.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        DecodeOptions(**changes)


@pytest.mark.parametrize(
    ("setting", "item", "expected"),
    [("ko", "en", "ko"), ("auto", "en", None), ("manifest", "en", "en"), ("manifest", None, None)],
)
def test_language_is_resolved_in_one_place(setting, item, expected):
    assert DecodeOptions(language=setting).prompt_language(item) == expected


def test_progress_is_reported_per_generated_token(tiny_model, clips):
    transcriber = Transcriber.load(tiny_model, quantization="none")
    items = [AudioItem("long", str(clips[-1]), 40.0)]  # one long clip: no batch finishes early
    steps = []
    options = DecodeOptions(num_workers=0, **FIXED)
    [[(_, transcript)]] = list(
        transcriber.transcribe(items, options, on_token=lambda: steps.append(1))
    )
    assert len(steps) == transcript.n_tokens == 8


def test_transcribing_a_manifest_keeps_the_reference_apart(tiny_model, sample_manifest, tmp_path):
    out = tmp_path / "out.jsonl"
    transcribe(
        TranscribeConfig(
            inputs=[sample_manifest],
            model=str(tiny_model),
            out=out,
            quantization="none",
            decode=DecodeOptions(num_workers=0, **FIXED),
        )
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    manifest = {json.loads(line)["id"]: json.loads(line) for line in sample_manifest.open()}
    for row in rows:
        assert row["reference"] == manifest[row["id"]]["text"]
        assert row["reference_raw_text"] == manifest[row["id"]]["raw_text"]
        assert "raw_text" not in row and row["text"] != row["reference"]


def test_term_bias_trie_shares_prefixes_and_takes_back_abandoned_bonus():
    from voxadapt.decoding import TermBias

    bias = TermBias([[1, 2, 3], [1, 2, 4], [5]], weight=2.0)
    nodes, depth = bias._partial([9, 1, 2])
    assert depth == 2 and set().union(*(set(n) for n in nodes)) == {3, 4}
    scores = torch.zeros(1, 10)
    out = bias.processor(prompt_width=1)(torch.tensor([[0, 9, 1, 2]]), scores)
    assert out[0, [3, 4]].tolist() == [2.0] * 2  # continue either term sharing the prefix
    assert out[0, [0, 1, 2, 5, 6, 9]].tolist() == [-4.0] * 6  # leaving the 2-token prefix
    assert bias._partial([1, 2, 3]) == ([], 0)  # a finished term leaves nothing pending
    empty = TermBias([], weight=2.0).processor(prompt_width=1)(
        torch.tensor([[0, 7]]), torch.zeros(1, 10)
    )
    assert torch.equal(empty, torch.zeros(1, 10))
    fresh = bias.processor(prompt_width=1)(torch.tensor([[0, 7]]), torch.zeros(1, 10))
    assert fresh[0, [1, 5]].tolist() == [2.0, 2.0] and fresh[0, 7].item() == 0.0


def test_bias_weight_zero_is_exactly_unbiased_and_a_large_one_writes_the_term(
    tiny_model, clips, tmp_path
):
    terms = tmp_path / "terms.txt"
    terms.write_text("# clinic\n혈압|블러드프레셔\n", encoding="utf-8")
    transcriber = Transcriber.load(tiny_model, quantization="none")
    items = [AudioItem(p.stem, str(p), 5.0) for p in clips[:3]]

    def run(**bias):
        options = DecodeOptions(batch_size=3, num_workers=0, max_new_tokens=8, **bias)
        return {
            i.id: (t.text, t.n_tokens) for b in transcriber.transcribe(items, options) for i, t in b
        }

    plain = run()
    assert run(bias_terms=terms, bias_weight=0.0) == plain
    biased = run(bias_terms=terms, bias_weight=100.0)
    assert all("혈압" in text for text, _ in biased.values())
    assert not any("혈압" in text for text, _ in plain.values())
