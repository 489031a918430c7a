import contextlib
import json
import os
import re
import subprocess
import sys

import pytest

from voxadapt.cli import build_parser, main
from voxadapt.cli_parser import COMMANDS, MAIN_EPILOG, cell_width, fill_epilog, wrap_cells

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
        [sys.executable, "-m", "voxadapt.cli", "demo", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "does not transcribe" in result.stdout
    # the default run learns: the CER on the clips it trained on falls (memorization)
    before, after = map(float, re.search(
        r"memorization check on the 4 training clips: CER ([\d.]+)% -> ([\d.]+)%", result.stdout
    ).groups())  # fmt: skip
    assert after < before
    assert (tmp_path / "eval-base" / "predictions.jsonl").is_file()
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
    # cwd: the default --output-dir (runs/voxadapt) is relative, so not in the checkout
    result = run_cli(
        "train", "--model", tmp_path / "nomodel", "--train", tmp_path / "t.jsonl", cwd=tmp_path
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()  # a run that failed before writing leaves nothing


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


def test_mistyped_option_is_two_lines_with_a_guess():
    result = run_cli("evaluate", "m.jsonl", "--ot", "x")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "voxadapt evaluate: error: unrecognized argument --ot (did you mean --out?)",
        "see: voxadapt evaluate --help",
    ]


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


# ------------------------------------------------------------------ argument errors: two lines


def argument_error(capsys, *argv: str) -> list[str]:
    """The stderr lines of a command line argparse refuses (exit status 2)."""
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    assert info.value.code == 2
    return capsys.readouterr().err.splitlines()


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (("train", "--lora-rr", "3"), "unrecognized argument --lora-rr (did you mean --lora-r?)"),
        (("train", "--lora-rr=3"), "unrecognized argument --lora-rr=3 (did you mean --lora-r?)"),
        (("train", "--lora-r"), "argument --lora-r: expected one argument"),  # missing value
        (("train", "--quantization", "nf5"), "invalid choice 'nf5' (did you mean nf4?)"),
        (("train", "--lora-r", "x"), "argument --lora-r: invalid int value: 'x'"),
        (("transcribe", "--max-line-widht", "9"), "(did you mean --max-line-width?)"),
        (("train", "-v"), "(-v goes before the command: voxadapt -v train ...)"),
        (("train", "--a1", "--b2"), "unrecognized argument --a1; also unrecognized: --b2"),
    ],
)
def test_argument_errors_are_one_line_and_where_the_help_is(capsys, argv, error):
    lines = argument_error(capsys, *argv)
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"voxadapt {argv[0]}: error: ") and error in lines[0], lines
    assert lines[1] == f"see: voxadapt {argv[0]} --help"


def test_a_mistyped_command_names_the_closest_or_lists_them(capsys):
    assert argument_error(capsys, "trian", "--out", "x") == [
        "voxadapt: error: unknown command 'trian' (did you mean train?)",
        "see: voxadapt --help",
    ]
    [line, _] = argument_error(capsys, "xyzzy")
    assert line.endswith("commands: demo, prepare, cache, train, transcribe, evaluate, compare, "
                         "score, export, doctor, redact, serve")  # fmt: skip


def test_a_guess_ignores_the_dashes_every_option_shares(capsys):
    [line, _] = argument_error(capsys, "redact", "-", "--bogus")
    assert line == "voxadapt redact: error: unrecognized argument --bogus"  # not "--out?"


@pytest.mark.parametrize("command", [command.name for command in COMMANDS])
def test_every_command_refuses_an_unknown_option_in_two_lines(capsys, command):
    lines = argument_error(capsys, command, "--xyzzy")
    assert lines == [
        f"voxadapt {command}: error: unrecognized argument --xyzzy",
        f"see: voxadapt {command} --help",
    ]


def test_a_missing_required_option_is_one_line_naming_the_flag(tmp_path):
    """Required options may come from --config, so build_config (not argparse) reports them,
    with every other problem at once: exit 1, one line, no usage."""
    result = run_cli("train", "--lora-r", "0", cwd=tmp_path)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("voxadapt: error: ") and "--train is required" in line
    assert "--lora-r must be >= 1" in line


# ------------------------------------------------------------------ help fits the terminal


def overlong(text: str, columns: int) -> list[str]:
    """Lines wider than `columns` terminal columns, but for what cannot be broken alone on its
    line: one word (a URL, a path) or one option of the usage (`[--lora-r LORA_R]`)."""

    def unbreakable(line: str) -> bool:
        words = line.strip()
        return len(words.split()) == 1 or re.fullmatch(r"\[[^\[\]]*(\[.*\])*[^\[\]]*\]", words)

    return [
        line for line in text.splitlines() if cell_width(line) > columns and not unbreakable(line)
    ]


@pytest.mark.parametrize("columns", [100, 60])
@pytest.mark.parametrize("command", ["", *(command.name for command in COMMANDS)])
def test_help_fits_the_terminal(capsys, monkeypatch, command, columns):
    monkeypatch.setenv("COLUMNS", str(columns))
    with pytest.raises(SystemExit):
        main([command, "--help"] if command else ["--help"])
    out = capsys.readouterr().out
    assert out.count("\n") > 10
    assert not overlong(out, columns), overlong(out, columns)


@pytest.mark.parametrize("command", COMMANDS, ids=[command.name for command in COMMANDS])
def test_epilogs_fit_100_columns_as_written(command):
    """At 100 columns the examples show as written (a `\\` the string ate would join two
    lines: `--out runs/which-base       --system ...`)."""
    for text in (command.epilog, MAIN_EPILOG):
        assert fill_epilog(text, 98) == text.splitlines()
        for line in text.splitlines():
            assert "     --" not in line.strip(), line  # a continuation joined into its line


def test_a_narrow_terminal_refills_prose_and_continues_commands():
    epilog = (
        "Each evaluation transcribes the valid set and keeps the adapter with the lowest CER.\n"
        "\n"
        "formats:\n"
        "  hf       every part the adapter trained merged in; a complete\n"
        "           transformers checkpoint\n"
        "\n"
        "examples:\n"
        "  voxadapt train --config configs/ko-medical-qlora.yaml --train data/train.jsonl \\\n"
        "      --valid data/valid.jsonl --output-dir runs/ko-med   # the tour's run\n"
    )
    lines = fill_epilog(epilog, 40)
    assert lines == [
        "Each evaluation transcribes the valid",
        "set and keeps the adapter with the",
        "lowest CER.",
        "",
        "formats:",
        "  hf       every part the adapter",
        "           trained merged in; a complete",
        "           transformers checkpoint",
        "",
        "examples:",
        "  # the tour's run",
        "  voxadapt train --config \\",
        "      configs/ko-medical-qlora.yaml \\",
        "      --train data/train.jsonl --valid \\",
        "      data/valid.jsonl --output-dir \\",
        "      runs/ko-med",
    ]
    # the shell reads the same command
    command = " ".join(line.strip().removesuffix("\\") for line in lines[11:]).split()
    assert command == epilog.split("examples:\n")[1].split("#")[0].replace("\\", "").split()


def test_hangul_takes_two_columns():
    assert cell_width("간호사 abc") == 10
    assert wrap_cells("간호사 의사 환자", 10) == ["간호사", "의사 환자"]
    assert wrap_cells("see https://example.com/a/very/long/path ok", 12) == [
        "see",
        "https://example.com/a/very/long/path",
        "ok",
    ]


# ------------------------------------------------------------------ fast: no torch to parse

IMPORTED = """
import sys
from voxadapt.cli_parser import build_parser
{code}
heavy = [name for name in ("torch", "transformers", "peft", "matplotlib") if name in sys.modules]
print("heavy:", ",".join(heavy))
"""


def heavy_imports(code: str) -> str:
    """The heavy libraries a fresh interpreter has imported after `code`."""
    script = IMPORTED.format(code=code)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.rsplit("heavy:", 1)[1].strip()


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["--version"], ["trian"], ["-v"], ["doctor", "--help"], ["score", "--bogus"]],
)
def test_help_version_and_argument_errors_import_no_torch(argv):
    code = f"""
import voxadapt.cli
try:
    voxadapt.cli.main({argv!r})
except SystemExit:
    pass
"""
    assert heavy_imports(code) == ""


def test_the_whole_parser_is_built_from_the_stage_modules():
    """The guard above must see an import: building train's options imports its stage and the
    library modules under it (model among them), whose functions import torch when called."""
    code = "build_parser(stages=['train'])\nsys.modules['voxadapt.model'].resolve_dtype('fp32')"
    assert heavy_imports(code) == "torch"


# The stages whose modules import torch at module level (directly or through decoding, model,
# data, features): their --help and argument errors wait for torch (~2 s). Drop one from
# here once its imports are lazy; strict, so that this list cannot go stale.
IMPORTS_TORCH = {"export"}


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(
            name,
            marks=pytest.mark.xfail(name in IMPORTS_TORCH, reason="imports torch", strict=True),
        )
        for name in (command.name for command in COMMANDS)
    ],
)
def test_a_command_s_options_import_no_torch(command):
    assert heavy_imports(f"build_parser(stages=[{command!r}])") == ""
