import contextlib
import json
import os
import re
import subprocess
import sys

import pytest

from voxadapt.cli import build_parser, main

from conftest import run_cli


def test_help_lists_stages_with_examples(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "prepare" in out and "examples:" in out


def test_prepare_help_has_examples():
    help_text = build_parser()._subparsers._group_actions[0].choices["prepare"].format_help()
    for needle in (
        "FORMAT",
        "SOURCE",
        "--valid-size",
        "--text-mode",
        "examples:",
        "rejected.jsonl",
    ):
        assert needle in help_text


def test_prepare_end_to_end_on_committed_assets(assets, samples, tmp_path, capsys):
    assert (
        main(
            [
                "prepare",
                "scp",
                str(samples / "train.scp"),
                "--out",
                str(tmp_path / "scp"),
                "--jobs",
                "2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "total kept" in out and "missing_audio" in out and "duplicate" in out
    records = [json.loads(x) for x in (tmp_path / "scp" / "train.jsonl").read_text().splitlines()]
    texts = {r["id"]: r["text"] for r in records}
    assert texts == {
        "ko_001": "환자분, 오늘 아침에 혈압약은 드셨어요?",
        "ko_002": "가슴 통증이 언제부터 시작되었나요?",
        "ko_003": "체온이 38도로 올라서 해열제를 투여했습니다.",
        "ko_004": "내일 오전에 복부 초음파 검사가 예정되어 있습니다.",
    }

    assert (
        main(
            [
                "prepare",
                "aihub",
                str(assets / "aihub"),
                "--out",
                str(tmp_path / "aihub"),
                "--text-mode",
                "phonetic",
                "--drop-fillers",
                "--strip-punctuation",
            ]
        )
        == 0
    )
    records = [json.loads(x) for x in (tmp_path / "aihub" / "train.jsonl").read_text().splitlines()]
    by_id = {r["id"]: r for r in records}
    assert by_id["D0001_0001"]["text"] == "통증이 칠십 퍼센트 정도 줄었나요"
    assert by_id["P0007_0003"]["text"] == "숨이 차고 기침이 계속 나와요"
    assert by_id["D0001_0001"]["role"] == "의사" and by_id["D0001_0001"]["sample_rate"] == 48000
    reasons = sorted(
        json.loads(x)["reason"]
        for x in (tmp_path / "aihub" / "rejected.jsonl").read_text().splitlines()
    )
    assert reasons == ["missing_audio", "too_short"]
    assert (tmp_path / "aihub" / "durations.png").stat().st_size > 10_000


def test_missing_source_is_one_line_error(tmp_path):
    result = run_cli("prepare", "scp", tmp_path / "nope.scp", "--out", tmp_path / "o")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"voxadapt: error: SOURCE not found: {tmp_path / 'nope.scp'}"
    ]
    assert "Traceback" not in result.stderr


def test_all_rejected_exits_nonzero_with_reasons(tmp_path):
    scp = tmp_path / "bad.scp"
    scp.write_text("gone.wav|없어요\nno separator\n", encoding="utf-8")
    result = run_cli("prepare", "scp", scp, "--out", tmp_path / "o")
    assert result.returncode == 1
    assert "missing_audio: 1" in result.stderr and "malformed_line: 1" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_option_values_are_reported(tmp_path, samples):
    result = run_cli(
        "prepare",
        "scp",
        samples / "train.scp",
        "--out",
        tmp_path / "o",
        "--min-duration",
        "30",
        "--max-duration",
        "5",
    )
    assert result.returncode == 1
    assert "need 0 <= --min-duration < --max-duration" in result.stderr  # flags, not fields
    result = run_cli(
        "prepare", "scp", samples / "train.scp", "--out", tmp_path / "o", "--valid-size", "2.5"
    )
    assert result.returncode == 1 and "whole count" in result.stderr


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "voxadapt.cli", "demo", "--out", str(tmp_path), "--steps", "4"],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "does not transcribe" in result.stdout
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    assert list((tmp_path / "cache").glob("shard-*.safetensors"))
    assert (tmp_path / "data" / "train.jsonl").is_file()
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["utterances"] == 4
    assert (tmp_path / "eval" / "report.html").is_file()


@pytest.mark.slow
def test_demo_of_qwen3_asr_after_a_voxtral_demo_in_the_same_folder(tmp_path):
    def demo(*extra):
        return subprocess.run(
            [sys.executable, "-m", "voxadapt.cli", "demo", "--out", str(tmp_path),
             "--steps", "2", *extra],
            capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
            timeout=600,
        )  # fmt: skip

    assert demo().returncode == 0
    result = demo("--family", "qwen3_asr")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tiny random Qwen3-ASR" in result.stdout and "Qwen/Qwen3-ASR-1.7B-hf" in result.stdout
    info = json.loads((tmp_path / "run" / "adapter" / "voxadapt_adapter.json").read_text())
    assert info["family"] == "qwen3_asr"
    spec = json.loads((tmp_path / "cache" / "feature_spec.json").read_text())
    assert spec["layout"] == "masked"  # the Voxtral demo's cache was replaced, not misread
    assert (tmp_path / "tiny-voxtral").is_dir() and (tmp_path / "tiny-qwen3-asr").is_dir()


def test_cache_cli_smoke(tmp_path, tiny_model, sample_manifest, capsys):
    assert (
        main(
            [
                "cache",
                str(sample_manifest),
                "--model",
                str(tiny_model),
                "--out",
                str(tmp_path / "c"),
                "--jobs",
                "1",
            ]
        )
        == 0
    )
    assert "computed 4" in capsys.readouterr().out
    assert (
        main(
            [
                "cache",
                str(sample_manifest),
                "--model",
                str(tiny_model),
                "--out",
                str(tmp_path / "c"),
            ]
        )
        == 0
    )
    assert "already cached 4" in capsys.readouterr().out


def test_train_cli_reports_bad_options_in_one_line(tmp_path):
    result = run_cli(
        "train",
        "--train",
        tmp_path / "t.jsonl",
        "--lora-r",
        "0",
        "--projector",
        "full",
        "--batch-size",
        "0",
    )
    assert result.returncode == 1
    assert "--lora-r must be >= 1" in result.stderr and "--batch-size must be >= 1" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_cli("train", "--model", tmp_path / "nomodel", "--train", tmp_path / "t.jsonl")
    assert result.returncode == 1 and "Traceback" not in result.stderr


# ------------------------------------------------------------------ help text says what is true


def help_text(*command):
    with pytest.raises(SystemExit):
        main([*command, "--help"])


def test_main_help_lists_each_command_once(capsys):
    help_text()
    out = capsys.readouterr().out
    for name in ("demo", "prepare", "cache", "train", "transcribe", "evaluate", "score",
                 "export", "serve", "doctor"):  # fmt: skip
        listed = [line for line in out.splitlines() if line.split()[:1] == [name]]
        assert len(listed) == 1, (name, listed)


def test_train_help_names_train_flags(capsys):
    help_text("train")
    out = capsys.readouterr().out
    # the decode section's flags are --eval-*: its help must not name the plain ones
    for plain in ("--bias-weight", "--no-vad", "--long-form-threshold", "--batch-size-"):
        assert not re.search(rf"(?<![\w-]){plain}(?![\w-])", out), plain
    assert "--eval-bias-weight" in out and "--no-eval-vad" in out
    assert out.count("\naugmentation:") == 1


def test_demo_help_and_prepare_groups(capsys):
    help_text("demo")
    assert "--model" not in capsys.readouterr().out  # demo has no --model
    help_text("prepare")
    out = capsys.readouterr().out
    outputs = out[out.index("\noutputs:") :]
    assert "--emit" in outputs and "--max-rejected" in outputs
    assert "--emit" not in out[out.index("\nsplits:") : out.index("\noutputs:")]


def test_mistyped_option_shows_the_subcommand_usage_and_a_guess():
    result = run_cli("evaluate", "m.jsonl", "--ot", "x")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: voxadapt evaluate")
    assert "unrecognized arguments: --ot x (did you mean --out?)" in result.stderr


def test_a_stop_swallowed_by_a_c_callback_is_still_an_interrupt(capfd):
    """soundfile's I/O callbacks swallow a KeyboardInterrupt and raise AssertionError: after
    SIGTERM that is the stop (exit 130, one line), not a bug with a traceback."""
    import io
    import signal

    import numpy as np
    import soundfile as sf

    from voxadapt import cli

    class Sink(io.BytesIO):
        def write(self, data):
            os.kill(os.getpid(), signal.SIGTERM)  # docker stop while a WAV is written
            return super().write(data)

    with cli.stop_signals(), pytest.raises(AssertionError) as info:
        sf.write(Sink(), np.zeros(1600, dtype=np.float32), 16000, format="WAV")
    assert "Exception ignored" not in capfd.readouterr().err  # no cffi traceback either
    assert cli._exit_code(info.value) == 130
    assert capfd.readouterr().err == "voxadapt: interrupted\n"
    with cli.stop_signals():  # a new run: the same error without a stop is a bug
        assert cli._exit_code(AssertionError()) is None
    assert signal.getsignal(signal.SIGTERM) is not cli._stop_signal  # handlers restored


def test_mistyped_command_and_abbreviated_options_are_refused():
    result = run_cli("transcibe", "x.wav")
    assert result.returncode == 2
    assert "unknown command 'transcibe' (did you mean transcribe?)" in result.stderr
    # argparse would take --min-dur for --min-duration: a typo must not pass silently
    result = run_cli("prepare", "scp", "x.scp", "--out", "o", "--min-dur", "1")
    assert result.returncode == 2 and "(did you mean --min-duration?)" in result.stderr


def test_a_stop_swallowed_whole_still_ends_the_run_as_interrupted(monkeypatch, capfd):
    """A library that catches the KeyboardInterrupt and carries on (a C callback that ignores
    it) must not turn SIGTERM into a normal exit 0."""
    import signal

    from voxadapt import cli

    def work(argv):
        # swallowed where we cannot see it; the work goes on to the end
        with contextlib.suppress(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
        return 0

    monkeypatch.setattr(cli, "_main", work)
    assert cli.main([]) == 130
    assert capfd.readouterr().err == "voxadapt: interrupted\n"
