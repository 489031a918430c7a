"""Shared fixtures: paths to the committed assets and writers for tiny audio files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

ASSETS = Path(__file__).parent / "assets"
SAMPLES = Path(__file__).parents[1] / "src" / "voxadapt" / "samples"  # shipped with the package
CLIPS = sorted((SAMPLES / "clips").glob("*.wav"))


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
