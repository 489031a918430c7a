"""Shared fixtures: paths to the committed assets and writers for tiny audio files."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

ASSETS = Path(__file__).parent / "assets"
SAMPLES = Path(__file__).parents[1] / "src" / "voxadapt" / "samples"  # shipped with the package
CLIPS = sorted((SAMPLES / "clips").glob("*.wav"))


def run_cli(*args, cwd=None, env=None) -> subprocess.CompletedProcess:
    """`voxadapt ARGS...` in a fresh interpreter, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "voxadapt.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        check=False,
    )


# Stages default to folders under runs/ (train: runs/voxadapt, evaluate: runs/eval, ...): a
# test that forgets --out (or cwd=tmp_path) writes into the checkout. The session fails then.
CHECKOUT_RUNS = Path(__file__).parents[1] / "runs"
RUNS_BEFORE = pytest.StashKey[set]()


def _runs_in_checkout() -> set[str]:
    try:
        return set(os.listdir(CHECKOUT_RUNS))
    except FileNotFoundError:
        return set()


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[RUNS_BEFORE] = _runs_in_checkout()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = session.config.stash.get(RUNS_BEFORE, None)
    if before is None:  # the session never started (a usage error)
        return
    added = sorted(_runs_in_checkout() - before)
    if added:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = (
            f"the tests left {', '.join(added)} in {CHECKOUT_RUNS}: a test ran a stage with its "
            "default output folder; give it one under tmp_path (or cwd=tmp_path)"
        )
        if reporter is not None:
            reporter.write("\n")  # after the progress line
            reporter.write_line(message, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def staging_of(folder: Path, name: str, pid: int) -> Path:
    """`voxadapt.staging.staging_path(folder, name)` as process `pid` of this host names it."""
    from voxadapt.staging import staging_path

    mine = staging_path(folder, name)
    return mine.with_name(mine.name.replace(f"-{os.getpid()}-", f"-{pid}-", 1))


def df_mount_point(path: Path) -> str:
    """What `df` says `path` is mounted on: the oracle for `mount_point`."""
    output = subprocess.run(
        ["df", "--output=target", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return output.splitlines()[-1].strip()


def access_lines(caplog, wanted: str, timeout_s: float = 10.0) -> list[str]:
    """The server's access-log lines once one contains WANTED (or after TIMEOUT_S).

    The line is written after the answer is sent, so a client can see its answer first."""
    deadline = time.monotonic() + timeout_s
    while True:
        lines = [r.getMessage() for r in caplog.records if r.name == "voxadapt.access"]
        if any(wanted in line for line in lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.01)


@pytest.fixture(scope="session")
def assets() -> Path:
    return ASSETS


@pytest.fixture(scope="session")
def samples() -> Path:
    return SAMPLES


@pytest.fixture(scope="session")
def speech() -> tuple[np.ndarray, int]:
    """A real Korean utterance (espeak-ng), mono float32 at 16 kHz."""
    samples, rate = sf.read(CLIPS[0], dtype="float32")
    return samples, rate


def write_wav(
    path: Path,
    samples: np.ndarray,
    rate: int,
    *,
    target_rate: int | None = None,
    channels: int = 1,
    subtype: str = "PCM_16",
) -> Path:
    """Write `samples` (mono) as a WAV, optionally resampled and duplicated to `channels`."""
    if target_rate and target_rate != rate:
        samples = soxr.resample(samples, rate, target_rate)
        rate = target_rate
    if channels > 1:
        samples = np.stack([samples * (0.5 + 0.5 * c / channels) for c in range(channels)], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, rate, subtype=subtype)
    return path


def fit_duration(samples: np.ndarray, rate: int, seconds: float) -> np.ndarray:
    """Repeat or cut `samples` to exactly `seconds`."""
    frames = round(seconds * rate)
    reps = int(np.ceil(frames / len(samples)))
    return np.tile(samples, reps)[:frames]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random Voxtral on disk, loadable with from_pretrained(dir) like a hub model."""
    from voxadapt.tiny import build_tiny_voxtral

    return build_tiny_voxtral(tmp_path_factory.mktemp("tiny-voxtral"))


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory) -> Path:
    """A tiny random Qwen3-ASR on disk (real special-token ids and chat template)."""
    from voxadapt.families import QWEN3_ASR

    return QWEN3_ASR.build_tiny(tmp_path_factory.mktemp("tiny-qwen3-asr"))


@pytest.fixture(scope="session")
def processor(tiny_model):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model)


@pytest.fixture(scope="session")
def spec(processor):
    from voxadapt.features import FeatureSpec

    return FeatureSpec.from_feature_extractor(processor.feature_extractor)


@pytest.fixture(scope="session")
def sample_manifest(tmp_path_factory) -> Path:
    """train.jsonl prepared from the bundled sample clips (4 utterances)."""
    from voxadapt.stages.prepare import PrepareConfig, prepare

    out = tmp_path_factory.mktemp("samples")
    return prepare(PrepareConfig(SAMPLES / "train.scp", "scp", out, jobs=1)).manifests["train"]


@pytest.fixture(scope="session")
def adapters(tiny_model, tmp_path_factory) -> dict[str, Path]:
    """A 'trained' LoRA and full-projector adapter for the tiny model (random, non-zero
    updates, so merged and unmerged models differ from the base), as `voxadapt train`
    saves them, marked as trained on an nf4 base."""
    import torch

    from voxadapt.adapters import save_adapter
    from voxadapt.model import AdapterOptions, attach_projector_adapter, load_model

    out = tmp_path_factory.mktemp("adapters")
    result = {}
    for mode in ("lora", "full"):
        options = AdapterOptions(mode)
        model = attach_projector_adapter(load_model(tiny_model, quantization="none"), options)
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.requires_grad:
                    noise = torch.randn(parameter.shape, generator=generator)
                    parameter.add_(0.05 * noise)
        info = {"base_model": str(tiny_model), "quantization": "nf4", "language": "ko"}
        save_adapter(model, out / mode, options, info)
        result[mode] = out / mode
    return result


@pytest.fixture(scope="session")
def tiny_aligner(tmp_path_factory) -> Path:
    """A tiny random Qwen3 forced aligner on disk (real token ids, the aligner's prompt)."""
    from voxadapt.families.qwen3_asr_checkpoint import build_tiny_qwen3_aligner

    return build_tiny_qwen3_aligner(tmp_path_factory.mktemp("tiny-qwen3-aligner"))


@pytest.fixture
def file_size_limit():
    """Set RLIMIT_FSIZE (`ulimit -f`) for this process while the block runs: writes past the
    limit fail with EFBIG (Python ignores SIGXFSZ), as writes to a full disk fail with
    ENOSPC, in every library that writes (safetensors in Rust, torch.save in C++)."""
    import contextlib
    import resource

    @contextlib.contextmanager
    def limited(size: int):
        previous = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, previous[1]))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, previous)

    return limited
