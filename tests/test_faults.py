"""Fault-injection matrix: SIGTERM and SIGKILL at a (seeded) random point of cache, evaluate
and train, each followed by a re-run that must end with nothing lost and nothing repeated."""

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from voxadapt.features import FeatureSpec, FeatureStore, utterance_key
from voxadapt.manifest import Utterance, read_manifest, write_jsonl
from voxadapt.scoring.rows import read_predictions

from conftest import fit_duration, write_wav

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL}


def cli(*args: object) -> list[str]:
    return [sys.executable, "-m", "voxadapt.cli", *map(str, args)]


def interrupt(command: list[str], progress, at: int, signum: int) -> subprocess.CompletedProcess:
    """Start `command`, send `signum` once `progress()` reaches `at`, return how it ended."""
    # Files, not pipes: after SIGKILL, orphaned worker processes may hold a pipe open.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, env=ENV, stdout=out, stderr=err, text=True)
        deadline = time.time() + 300
        while time.time() < deadline and process.poll() is None and progress() < at:
            time.sleep(0.005)
        assert process.poll() is None, "the run finished before it could be interrupted"
        process.send_signal(signum)
        process.wait(timeout=300)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(command, process.returncode, out.read(), err.read())


def check_ending(result: subprocess.CompletedProcess, signum: int, code: int) -> None:
    if signum == signal.SIGKILL:
        assert result.returncode == -signal.SIGKILL
        return
    assert result.returncode == code, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "interrupted" in result.stderr


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains `text` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                found.append(int(entry.name))
    return found


def lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.fixture(scope="module")
def clip_manifest(tmp_path_factory, speech) -> Path:
    samples, rate = speech
    root = tmp_path_factory.mktemp("fault-clips")
    rows = []
    for i in range(16):
        path = write_wav(
            root / f"{i}.wav", fit_duration(samples, rate, 3 + i % 5), rate, target_rate=44100
        )
        rows.append(
            Utterance(
                f"u{i:02d}",
                str(path),
                "환자분 혈압을 재겠습니다",
                "환자분 혈압을 재겠습니다",
                3 + i % 5,
                44100,
                1,
                speaker=f"s{i % 4}",
            )
        )
    write_jsonl(root / "clips.jsonl", rows)
    return root / "clips.jsonl"


@pytest.mark.slow
@pytest.mark.parametrize("name", SIGNALS)
def test_cache(name, tiny_model, clip_manifest, tmp_path):
    # early: the tiny model caches 16 clips in a fraction of a second on an idle machine
    signum, at = SIGNALS[name], random.Random(f"cache{name}").randint(1, 3)
    out = tmp_path / "cache"
    command = cli(
        "cache",
        clip_manifest,
        "--model",
        tiny_model,
        "--out",
        out,
        "--jobs",
        "2",
        "--shard-size",
        "1",
    )
    result = interrupt(command, lambda: len(list(out.glob("shard-*.safetensors"))), at, signum)
    check_ending(result, signum, 130)
    deadline = time.time() + 30  # its worker processes end with it, even after SIGKILL
    while time.time() < deadline and processes_mentioning(str(out)):
        time.sleep(0.2)
    assert not processes_mentioning(str(out)), "orphaned cache workers"
    rerun = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "utterances 16" in rerun.stdout and "failed 0" in rerun.stdout
    spec = FeatureSpec.from_model(tiny_model)
    store = FeatureStore(out, spec)
    assert len(store) == 16
    for utterance in read_manifest(clip_manifest):
        assert np.isfinite(store.get(utterance_key(utterance, spec)).frames).all()


@pytest.fixture(scope="module")
def whole_evaluation(tiny_model, clip_manifest, tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("whole") / "eval"
    result = subprocess.run(
        cli(*EVALUATE, "--out", out, clip_manifest, "--model", tiny_model),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return {r["id"]: r["hypothesis"] for r in read_predictions(out / "predictions.jsonl")}


EVALUATE = [
    "evaluate",
    "--quantization",
    "none",
    "--batch-size",
    "1",
    "--max-new-tokens",
    "30",
    "--workers",
    "0",
    "--bootstrap",
    "0",
    "--no-report",
]


@pytest.mark.slow
@pytest.mark.parametrize("name", SIGNALS)
def test_evaluate(name, tiny_model, clip_manifest, whole_evaluation, tmp_path):
    signum, at = SIGNALS[name], random.Random(f"evaluate{name}").randint(2, 10)
    out = tmp_path / "eval"
    command = cli(*EVALUATE, "--out", out, clip_manifest, "--model", tiny_model)
    result = interrupt(command, lambda: lines(out / "predictions.jsonl"), at, signum)
    check_ending(result, signum, 130)
    resumed = subprocess.run(
        [*command, "--resume"], env=ENV, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == len({r["id"] for r in rows}) == 16
    assert {r["id"]: r["hypothesis"] for r in rows} == whole_evaluation
    assert json.loads((out / "metrics.json").read_text())["utterances"] == 16


@pytest.mark.slow
@pytest.mark.parametrize("name", SIGNALS)
def test_train(name, tiny_model, clip_manifest, tmp_path):
    signum, at = SIGNALS[name], random.Random(f"train{name}").randint(3, 6)
    out = tmp_path / "run"
    command = cli(
        "train",
        "--model",
        tiny_model,
        "--train",
        clip_manifest,
        "--valid",
        clip_manifest,
        "--eval-samples",
        "2",
        "--output-dir",
        out,
        "--max-steps",
        "10",
        "--batch-size",
        "2",
        "--grad-accum",
        "1",
        "--logging-steps",
        "1",
        "--eval-steps",
        "2",
        "--eval-tokens-per-second",
        "1",
        "--num-workers",
        "1",
        "--eval-workers",
        "0",
        "--warmup-ratio",
        "0",
    )

    def train_steps() -> int:
        log = out / "log.jsonl"
        return (
            sum('"loss"' in line for line in log.read_text().splitlines()) if (log.exists()) else 0
        )

    result = interrupt(command, train_steps, at, signum)
    check_ending(result, signum, 130)
    saved = json.loads((out / "checkpoint-last" / "state.json").read_text())["step"]
    assert saved >= 2
    resumed = subprocess.run(
        [*command, "--resume"], env=ENV, capture_output=True, text=True, timeout=400
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 11))
    assert [r["step"] for r in records if "eval_cer" in r] == [2, 4, 6, 8, 10]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["step"] == 10 and state["log_history"] == records


@pytest.mark.slow
@pytest.mark.parametrize("name", SIGNALS)
def test_export(name, tiny_model, adapters, tmp_path):
    """A killed export leaves its staging (a model's size) behind; the next run removes it."""
    signum = SIGNALS[name]
    out = tmp_path / "models" / "ko-med"
    command = cli("export", "--adapter", adapters["lora"], "--out", out, "--dtype", "fp32")

    def staging() -> list[Path]:
        return list(out.parent.glob(".voxadapt-staging-*"))

    result = interrupt(command, lambda: len(staging()), 1, signum)
    check_ending(result, signum, 130)
    assert not out.exists()  # it never appeared half-written
    if signum == signal.SIGKILL:
        assert staging(), "SIGKILL leaves no chance to clean up"
    else:
        assert not staging()  # an interrupted run cleans up after itself
    rerun = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert not staging() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == [
        ".voxadapt.json"
    ]
