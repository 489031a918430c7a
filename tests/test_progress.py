"""Progress: bars on a terminal (never glued to log records), periodic log lines elsewhere."""

from __future__ import annotations

import fcntl
import logging
import os
import re
import select
import struct
import subprocess
import sys
import termios
import textwrap
import time

import pytest

from voxadapt.progress import (
    DEFAULT_INTERVAL_S,
    INTERVAL_ENV,
    format_duration,
    format_rate,
    interval_s,
    progress,
)

from conftest import fit_duration, write_wav

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # tqdm moves the cursor for nested bars
# `train: 3/4 step (75%), 0.52 step/s, ETA 00:02`: done/total, share, rate, ETA
PERIODIC = re.compile(r": [\d.]+/[\d.]+ .+ \(\d+%\), [\d.]+ .+/s, ETA \d\d:\d\d")


@pytest.mark.parametrize(
    ("rate", "unit", "text"),
    [
        (4.1, "utt", "4.10 utt/s"),
        (0.5, "step", "0.50 step/s"),
        (0.05, "step", "20.0 s/step"),  # slow steps read better inverted, as tqdm does
        (3.71, "s audio", "3.71 s audio/s"),
        (None, "utt", "? utt/s"),
        (0.0, "utt", "? utt/s"),
    ],
)
def test_format_rate(rate, unit, text):
    assert format_rate(rate, unit) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "00:00"), (59.6, "01:00"), (307, "05:07"), (3723, "1:02:03"), (None, "?")],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, DEFAULT_INTERVAL_S),
        ("", DEFAULT_INTERVAL_S),
        ("5", 5.0),
        ("0", 0.0),
        ("-3", DEFAULT_INTERVAL_S),  # each of these is warned about, not fatal
        ("nan", DEFAULT_INTERVAL_S),
        ("inf", DEFAULT_INTERVAL_S),
        ("1e400", DEFAULT_INTERVAL_S),
        ("soon", DEFAULT_INTERVAL_S),
    ],
)
def test_interval_from_the_environment(value, seconds, monkeypatch):
    if value is None:
        monkeypatch.delenv(INTERVAL_ENV, raising=False)
    else:
        monkeypatch.setenv(INTERVAL_ENV, value)
    assert interval_s() == seconds


def test_lines_give_done_total_rate_and_eta_then_the_time_taken(caplog):
    caplog.set_level(logging.INFO, logger="voxadapt.progress")
    # float seconds of audio add up to 3.3000000000000003: shown with the unit's decimals
    with progress(3.3, "transcribe", "s audio", decimals=1, terminal=False, interval=0) as bar:
        for _ in range(3):
            time.sleep(0.01)
            bar.note("7 tokens")
            bar.update(1.1)
    lines = [r.getMessage() for r in caplog.records if r.name == "voxadapt.progress"]
    assert len(lines) == 4
    assert lines[0].startswith("transcribe: 1.1/3.3 s audio (33%), ")
    assert all(PERIODIC.search(line) for line in lines[:3])
    assert lines[0].endswith(", 7 tokens")
    assert re.fullmatch(
        r"transcribe: 3\.3/3\.3 s audio \(100%\), [\d.]+ s audio/s, in 00:00, 7 tokens",
        lines[-1],
    )


def test_lines_come_at_most_every_interval(caplog):
    caplog.set_level(logging.INFO, logger="voxadapt.progress")
    with progress(1000, "cache features", "utt", terminal=False, interval=3600) as bar:
        for _ in range(1000):
            bar.update()
    [final] = [r.getMessage() for r in caplog.records]  # none periodic within the hour
    assert final.startswith("cache features: 1000/1000 utt (100%), ") and " in " in final


def test_resumed_work_counts_only_new_units_in_the_rate(caplog):
    caplog.set_level(logging.INFO, logger="voxadapt.progress")
    with progress(100, "train", "step", initial=60, terminal=False, interval=0) as bar:
        time.sleep(0.05)
        bar.update()
    first = caplog.records[0].getMessage()
    assert first.startswith("train: 61/100 step (61%), ")
    rate = float(re.search(r", ([\d.]+) step/s", first).group(1))
    assert rate < 40  # 1 step in >= 0.05 s, not 61


def test_a_loop_ended_by_an_exception_says_where_it_stopped(caplog):
    caplog.set_level(logging.INFO, logger="voxadapt.progress")
    with (
        pytest.raises(KeyboardInterrupt),
        progress(16, "cache features", "utt", terminal=False, interval=3600) as bar,
    ):
        bar.update(3)
        raise KeyboardInterrupt
    [final] = [r.getMessage() for r in caplog.records]
    assert re.fullmatch(r"cache features: 3/16 utt \(19%\), .+, stopped after 00:00", final)


def test_disabled_or_empty_progress_says_nothing(caplog):
    caplog.set_level(logging.INFO, logger="voxadapt.progress")
    with progress(10, "eval", "s audio", enabled=False, terminal=False, interval=0) as bar:
        bar.update(10)
    with progress(0, "cache features", "utt", terminal=False, interval=0):
        pass
    assert caplog.records == []


HELPER_SCRIPT = textwrap.dedent(
    """
    import logging, time
    from voxadapt.progress import progress
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with progress(4, "probe audio", "file") as bar:
        for _ in range(4):
            time.sleep(0.05)
            bar.update()
    """
)


def test_helper_without_a_terminal_logs_periodic_lines():
    result = subprocess.run(
        [sys.executable, "-c", HELPER_SCRIPT],
        capture_output=True,
        text=True,
        env={**ENV, INTERVAL_ENV: "0"},
        check=True,
    )
    lines = result.stderr.splitlines()
    assert "\r" not in result.stderr and "%|" not in result.stderr  # no bar in a log file
    assert len(lines) == 5 and all(line.startswith("INFO voxadapt.progress: ") for line in lines)
    assert all(PERIODIC.search(line) for line in lines[:4])
    assert lines[3].split(": ", 1)[1].startswith("probe audio: 4/4 file (100%), ")
    assert " in 00:00" in lines[4]


def test_cache_stage_without_a_terminal_logs_periodic_lines(tmp_path, tiny_model, sample_manifest):
    command = [sys.executable, "-m", "voxadapt.cli", "cache", str(sample_manifest)]
    command += ["--model", str(tiny_model), "--out", str(tmp_path / "c"), "--jobs", "1"]
    command += ["--shard-size", "1"]
    result = subprocess.run(
        command, capture_output=True, text=True, env={**ENV, INTERVAL_ENV: "0"}, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if "cache features: " in line]
    assert [line.split(": ")[2].split(" (")[0] for line in lines] == [
        "1/4 utt",
        "2/4 utt",
        "3/4 utt",
        "4/4 utt",
        "4/4 utt",
    ]
    assert all(line.startswith("INFO voxadapt.progress: ") for line in lines)
    assert all(PERIODIC.search(line) for line in lines[:-1])
    assert re.search(r"\(100%\), [\d.]+ utt/s, in \d\d:\d\d$", lines[-1])


def run_in_terminal(command: list[str], timeout_s: float = 600) -> list[str]:
    """Run `command` with stdin/stdout/stderr on a pseudo-terminal 160 columns wide; the
    text segments it drew, line by line (split at carriage returns, cursor moves removed)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    process = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, env=ENV)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 1)[0]:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
    assert process.wait(timeout=60) == 0, b"".join(chunks).decode(errors="replace")[-3000:]
    text = ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))
    return [[s for s in line.split("\r") if s.strip()] for line in text.split("\n")]


def assert_records_not_glued_to_bars(lines: list[list[str]]) -> None:
    for segments in lines:
        for segment in segments:
            if "INFO" in segment or "WARNING" in segment:
                assert segment.startswith(("INFO", "WARNING")), segment


@pytest.mark.slow
def test_terminal_transcribe_bar_ends_on_a_clean_total(tiny_model, speech, tmp_path):
    samples, rate = speech
    # 1.1 + 1.1 + 1.1 == 3.3000000000000003: the bar must still end on 3.3/3.3
    clips = [
        write_wav(tmp_path / f"c{i}.wav", fit_duration(samples, rate, 1.1), rate) for i in "abc"
    ]
    command = [sys.executable, "-m", "voxadapt.cli", "transcribe", *map(str, clips)]
    command += ["--model", str(tiny_model), "--quantization", "none", "--workers", "0"]
    command += ["--batch-size", "1", "--max-new-tokens", "4", "--out", str(tmp_path / "t.jsonl")]
    lines = run_in_terminal(command)
    bars = [s for segments in lines for s in segments if s.startswith("transcribe:")]
    assert bars and "%|" in bars[-1]  # a terminal gets a bar
    assert "3.3/3.3 s audio" in bars[-1] and "9999" not in bars[-1], bars[-1]
    assert_records_not_glued_to_bars(lines)


@pytest.mark.slow
def test_terminal_training_logs_above_its_bars(tiny_model, sample_manifest, tmp_path):
    command = [sys.executable, "-m", "voxadapt.cli", "train", "--model", str(tiny_model)]
    command += ["--train", str(sample_manifest), "--valid", str(sample_manifest)]
    command += ["--output-dir", str(tmp_path / "run"), "--max-steps", "4", "--batch-size", "2"]
    command += ["--logging-steps", "1", "--eval-steps", "2", "--eval-tokens-per-second", "1"]
    command += ["--num-workers", "0", "--eval-workers", "0", "--report-to", "none"]
    lines = run_in_terminal(command)
    segments = [s for line in lines for s in line]
    # the evaluation at step 2 logs while the training bar is open
    eval_lines = [s for s in segments if "eval CER" in s and "INFO" in s]
    assert len(eval_lines) == 2 and all(re.search(r"eval CER \d+\.\d\d%", s) for s in eval_lines)
    assert any(s.startswith("train:") and "loss " in s and "grad_norm " in s for s in segments)
    assert any(s.startswith("eval at step 2:") and "%|" in s for s in segments)  # its own bar
    assert_records_not_glued_to_bars(lines)


@pytest.mark.parametrize(
    ("columns", "env", "bars"),
    [
        (0, {}, False),  # a pty reporting 0 columns (`script`, some CI runners)
        (100, {}, True),
        (100, {"TERM": "xterm-256color"}, True),
        (100, {"TERM": "dumb"}, False),  # Emacs shell, some CI consoles: no escapes
        (100, {"NO_COLOR": "1"}, False),
        (100, {"NO_COLOR": ""}, True),  # no-color.org: set to a non-empty string
    ],
)
def test_a_terminal_without_width_or_asking_for_plain_text_gets_lines(columns, env, bars):
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    code = "from voxadapt.progress import on_terminal; print(on_terminal())"
    environment = {k: v for k, v in ENV.items() if k not in ("TERM", "NO_COLOR")} | env
    result = subprocess.run(
        [sys.executable, "-c", code],
        stderr=slave,
        stdout=subprocess.PIPE,
        text=True,
        check=True,
        env=environment,
    )
    os.close(slave)
    os.close(master)
    assert result.stdout.strip() == str(bars)


NESTED_SCRIPT = textwrap.dedent(
    """
    import logging, time
    from voxadapt.progress import progress
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with progress(2, "train", "step") as outer:
        for _ in range(2):
            with progress(3, "eval", "utt", leave=False) as inner:
                for _ in range(3):
                    time.sleep(0.02)
                    inner.update()
            outer.update()
    """
)


def terminal_output(command: list[str], env: dict[str, str]) -> str:
    """All that `command` wrote to a pseudo-terminal (80 columns) as its stdout and stderr,
    escape sequences included."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    environment = {k: v for k, v in ENV.items() if k not in ("TERM", "NO_COLOR")} | env
    process = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, env=environment)
    os.close(slave)
    chunks = []
    try:
        while select.select([master], [], [], 60)[0]:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
    output = b"".join(chunks).decode("utf-8", "replace")
    assert process.wait(timeout=60) == 0, output[-3000:]
    return output


@pytest.mark.parametrize(
    "env", [{"TERM": "dumb"}, {"NO_COLOR": "1"}, {"TERM": "dumb", "NO_COLOR": "1"}]
)
def test_nested_bars_on_a_plain_terminal_are_lines_without_escapes(env):
    output = terminal_output([sys.executable, "-c", NESTED_SCRIPT], {**env, INTERVAL_ENV: "0"})
    assert "\x1b" not in output and "%|" not in output and "\r\r" not in output
    lines = output.replace("\r\n", "\n").splitlines()
    assert lines and all(line.startswith("INFO voxadapt.progress: ") for line in lines), lines
    assert sum(1 for line in lines if ": eval: 3/3 utt (100%)" in line) >= 2
    assert re.search(r": train: 2/2 step \(100%\), .+, in \d\d:\d\d$", lines[-1])


def test_nested_bars_on_a_normal_terminal_draw_bars():
    """The check above can see escapes: tqdm moves the cursor for the nested bar."""
    output = terminal_output([sys.executable, "-c", NESTED_SCRIPT], {"TERM": "xterm-256color"})
    assert "%|" in output and "\x1b[" in output
    assert "INFO voxadapt.progress" not in output


def test_a_stage_on_a_dumb_terminal_writes_no_escapes(samples, tmp_path):
    command = [sys.executable, "-m", "voxadapt.cli", "prepare", "scp", str(samples / "train.scp")]
    command += ["--out", str(tmp_path / "scp"), "--jobs", "1"]
    output = terminal_output(command, {"TERM": "dumb", INTERVAL_ENV: "0"})
    assert "\x1b" not in output
    assert "INFO voxadapt.progress: probe audio: " in output  # lines instead of the bar
    assert "total kept" in output
