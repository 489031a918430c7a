"""Batched transcription against the stock processor + generate path, on the tiny model."""

import json
import warnings

import pytest
import torch

from voxadapt.adapters import load_for_inference
from voxadapt.cli import main
from voxadapt.decoding import (
    AudioItem,
    DecodeOptions,
    Transcriber,
    repetition_loop,
)
from voxadapt.errors import ConfigError
from voxadapt.families.voxtral import clean_transcript
from voxadapt.outputs import OutputConflict, read_ledger, written_by
from voxadapt.scoring.rows import read_hypotheses
from voxadapt.stages.transcribe import (
    INPUTS_INDEX,
    OUTPUT_FORMATS,
    TranscribeConfig,
    collect_inputs,
    output_formats,
    plan_outputs,
    transcribe,
)
from voxadapt.subtitles import srt_time, text_width

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


# ------------------------------------------------------------------ transcribe's outputs


def transcribe_clips(tiny_model, inputs, **fields):
    options = DecodeOptions(num_workers=0, **FIXED)
    config = TranscribeConfig(
        inputs=list(inputs), model=str(tiny_model), quantization="none", decode=options, **fields
    )
    return transcribe(config)


def srt_cue_lines(path):
    """The text lines of each cue of an SRT file."""
    blocks = path.read_text("utf-8").rstrip("\n").split("\n\n")
    return [block.split("\n")[2:] for block in blocks]


def test_one_decode_writes_every_format_and_rewrites_its_own(tiny_model, tmp_path):
    out = tmp_path / "out"
    result = transcribe_clips(tiny_model, CLIPS[:2], out=out, format="all")
    stems = [path.stem for path in CLIPS[:2]]
    per_clip = {f"{stem}{suffix}" for stem in stems for suffix in (".txt", ".srt", ".vtt")}
    # the index records which input each per-input file was written for
    written = per_clip | {"transcripts.jsonl", "transcripts.txt", INPUTS_INDEX}
    assert {p.name for p in out.iterdir()} == written | {".voxadapt.json"}  # no staging left
    ledger = read_ledger(out)["files"]
    assert {name: record["stage"] for name, record in ledger.items()} == dict.fromkeys(
        written, "transcribe"
    )
    assert all(written_by(out, name, "transcribe") for name in written)  # sizes and hashes
    rows = [
        json.loads(line) for line in (out / "transcripts.jsonl").read_text("utf-8").split("\n")[:-1]
    ]
    assert rows == result.rows and len(rows) == 2
    texts = {row["id"]: " ".join(row["text"].split()) for row in rows}
    assert read_hypotheses(out / "transcripts.txt") == texts  # what `score` reads back
    for row, stem in zip(rows, stems):
        assert row["text"].strip()
        assert (row["text_file"], row["srt"], row["vtt"]) == (
            f"{stem}.txt",
            f"{stem}.srt",
            f"{stem}.vtt",
        )
        assert (out / row["text_file"]).read_text("utf-8") == texts[row["id"]] + "\n"
        # Without --max-line-width/--max-line-count: one cue on one line, as always.
        end = srt_time(row["duration"])
        assert (out / row["srt"]).read_text(
            "utf-8"
        ) == f"1\n00:00:00,000 --> {end}\n{row['text']}\n"
        vtt = f"WEBVTT\n\n00:00:00.000 --> {end.replace(',', '.')}\n{row['text']}\n\n"
        assert (out / row["vtt"]).read_text("utf-8") == vtt
    vtt_before = {stem: (out / f"{stem}.vtt").read_bytes() for stem in stems}

    again = transcribe_clips(
        tiny_model, CLIPS[:2], out=out, format="srt, JSONL", max_line_width=3, max_line_count=1
    )
    rows = [
        json.loads(line) for line in (out / "transcripts.jsonl").read_text("utf-8").split("\n")[:-1]
    ]
    assert rows == again.rows
    for row, stem in zip(rows, stems):
        assert row["srt"] == f"{stem}.srt" and "vtt" not in row and "text_file" not in row
        cues = srt_cue_lines(out / row["srt"])
        assert len(cues) > 1 and all(len(lines) == 1 for lines in cues)
        assert all(text_width(lines[0]) <= 3 for lines in cues)
        assert "".join(lines[0] for lines in cues).replace(" ", "") == "".join(row["text"].split())
        assert (out / f"{stem}.vtt").read_bytes() == vtt_before[stem]  # not asked for: kept


def test_out_names_the_one_file_for_one_input(tiny_model, tmp_path, capsys):
    options = ["--model", str(tiny_model), "--quantization", "none", "--workers", "0"]
    options += ["--max-new-tokens", "8", "--min-new-tokens", "8"]
    args = ["transcribe", str(CLIPS[0]), *options]
    # Several inputs and a file's name: one line, before any decoding, nothing written.
    two = ["transcribe", str(CLIPS[0]), str(CLIPS[1]), *options]
    assert main([*two, "--out", str(tmp_path / "visit.srt")]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and "2 inputs were given: give a folder" in errors[0]
    assert list(tmp_path.iterdir()) == []

    assert main([*args, "--out", str(tmp_path / "visit.srt")]) == 0  # srt from the suffix
    [cue] = srt_cue_lines(tmp_path / "visit.srt")
    assert main([*args, "--out", str(tmp_path / "visit.txt"), "--format", "text"]) == 0
    assert (tmp_path / "visit.txt").read_text("utf-8") == " ".join(cue) + "\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".voxadapt.json",
        "visit.srt",
        "visit.txt",
    ]
    capsys.readouterr()
    assert main([*args, "--format", "text"]) == 0  # standard output: the transcript alone
    assert capsys.readouterr().out == " ".join(cue) + "\n"


ITEMS = [AudioItem("a.wav", "/x/a.wav", 1.0), AudioItem("transcripts.wav", "/x/t.wav", 1.0)]


@pytest.mark.parametrize(
    ("out", "fmt", "n_inputs", "to", "names"),
    [
        (None, None, 2, "stdout", []),
        (None, "text", 2, "stdout", []),
        ("-", "jsonl", 2, "stdout", []),
        ("o.jsonl", None, 2, "file", ["o.jsonl"]),
        ("o.txt", None, 2, "file", ["o.txt"]),  # txt: id<TAB>text for every input
        ("o", "jsonl", 2, "file", ["o"]),
        ("x.srt", None, 1, "file", ["x.srt"]),
        ("x.vtt", "vtt", 1, "file", ["x.vtt"]),
        ("x.txt", "text", 1, "file", ["x.txt"]),
        ("subs", "srt", 2, "folder", ["a.srt", "transcripts.srt"]),
        ("subs", "text", 2, "folder", ["a.txt", "transcripts.txt"]),  # no transcripts.txt file
        ("subs", "vtt,jsonl,vtt", 2, "folder", ["a.vtt", "transcripts.vtt", "transcripts.jsonl"]),
        (
            "subs",
            "all",
            2,
            "folder",
            [
                *("a.txt", "transcripts~2.txt", "a.srt", "transcripts~2.srt"),
                *("a.vtt", "transcripts~2.vtt", "transcripts.jsonl", "transcripts.txt"),
            ],
        ),
    ],
)
def test_out_is_a_file_or_a_folder_as_documented(tmp_path, out, fmt, n_inputs, to, names):
    out = out if out in (None, "-") else tmp_path / out
    config = TranscribeConfig(inputs=[tmp_path / "a.wav"], out=out, format=fmt)
    plan = plan_outputs(config.out, output_formats(config), ITEMS[:n_inputs], n_inputs)
    assert (plan.to, plan.names) == (to, names)


def test_a_file_name_for_several_per_input_files_is_refused(tmp_path):
    config = TranscribeConfig(inputs=[tmp_path / "a.wav"], out=tmp_path / "x.vtt")
    with pytest.raises(ConfigError, match=r"x\.vtt names one file.*give a folder"):
        plan_outputs(config.out, ["vtt"], ITEMS, 2)
    (tmp_path / "x.vtt").mkdir()  # an existing folder of that name stays a folder
    assert plan_outputs(config.out, ["vtt"], ITEMS, 2).to == "folder"


def test_several_formats_never_replace_a_file_voxadapt_did_not_write(tiny_model, tmp_path):
    visit = tmp_path / "visit.wav"
    visit.write_bytes(CLIPS[0].read_bytes())
    notes = tmp_path / "visit.txt"
    notes.write_text("손으로 쓴 메모", "utf-8")
    with pytest.raises(OutputConflict, match=r"visit\.txt exists and was not written"):
        transcribe_clips(tiny_model, [visit], out=tmp_path, format="all")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["visit.txt", "visit.wav"]
    assert notes.read_text("utf-8") == "손으로 쓴 메모"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--out", "s", "--format", "srt", "--max-line-width", "0"],
            "--max-line-width must be >= 1",
        ),
        (
            ["--out", "s", "--format", "srt", "--max-line-width", "9", "--max-line-count", "-1"],
            "--max-line-count must be >= 1",
        ),
        (
            ["--out", "s", "--format", "vtt", "--max-line-count", "2"],
            "--max-line-count counts the lines --max-line-width makes",
        ),
        (["--max-line-width", "20"], "--max-line-width shapes subtitle cues: add srt or vtt"),
        (
            ["--out", "o.jsonl", "--max-line-count", "2", "--max-line-width", "4"],
            "--max-line-width shapes subtitle cues",
        ),
        (["--out", "s", "--format", "srt,docx"], "--format: 'docx' is not a format"),
        (["--out", "s", "--format", " , "], "--format: ' , ' is not a format"),
        (["--format", "srt,vtt"], "--format srt,vtt writes several files: give --out FOLDER"),
        (["--format", "vtt"], "give --out FOLDER, or --out FILE.vtt for one input"),
        (["--out", "x.jsonl", "--format", "all"], "x.jsonl is a file name, but --format"),
        (["--out", "x.vtt", "--format", "srt"], "give a folder, or a .srt file for one input"),
    ],
)
def test_transcribe_output_options_are_checked_by_their_flags(flags, message, tmp_path, capsys):
    flags = [str(tmp_path / f) if f in ("s", "o.jsonl", "x.jsonl", "x.vtt") else f for f in flags]
    assert main(["transcribe", str(CLIPS[0]), *flags]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("voxadapt: error:") and message in line
    assert "max_line" not in line  # the flag, not the field


def test_transcribe_help_lists_every_format(capsys):
    from voxadapt.cli import build_parser

    parser = build_parser()._subparsers._group_actions[0].choices["transcribe"]
    [action] = [a for a in parser._actions if "--format" in a.option_strings]
    for fmt in (*OUTPUT_FORMATS, "all"):
        assert f"{fmt} (" in action.help or f"{fmt}," in action.help or f"or {fmt}" in action.help
    assert set(OUTPUT_FORMATS) == {"jsonl", "txt", "text", "srt", "vtt"}
    with pytest.raises(SystemExit):
        main(["transcribe", str(CLIPS[0]), "--max-line-width", "wide"])
    assert "argument --max-line-width: invalid int value" in capsys.readouterr().err


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


def test_named_files_keep_their_names_and_hidden_files_are_skipped(
    tiny_model, tmp_path, monkeypatch
):
    import shutil

    monkeypatch.chdir(CLIPS[0].parents[2])  # a relative path, as a user types it
    relative = CLIPS[0].relative_to(CLIPS[0].parents[2])
    transcribe_clips(tiny_model, [relative], out=tmp_path / "subs", format="srt")
    assert [p.name for p in (tmp_path / "subs").glob("*.srt")] == [f"{CLIPS[0].stem}.srt"]
    folder = tmp_path / "rec"
    (folder / ".cache").mkdir(parents=True)
    shutil.copy(CLIPS[1], folder / "a.wav")
    shutil.copy(CLIPS[1], folder / "._a.wav")  # a macOS resource fork beside it
    shutil.copy(CLIPS[1], folder / ".cache" / "b.wav")
    result = transcribe_clips(tiny_model, [folder], out=tmp_path / "f.jsonl")
    assert [row["id"] for row in result.rows] == ["a.wav"]
