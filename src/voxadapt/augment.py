"""SpecAugment on cached log-mel features, deterministic per (seed, epoch, utterance).

Masks and the optional time warp touch only the frames that hold real audio
(`CompactFeatures.frames`); the padded tail stays the constant the cache encodes, as Voxtral
would compute it for the same clip. The random draws depend only on (seed, epoch, utterance
id), so a resumed run augments every clip exactly as an uninterrupted one.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from voxadapt.config import Config, option
from voxadapt.features import CompactFeatures

if TYPE_CHECKING:
    import numpy as np


@dataclass
class SpecAugmentOptions(Config):
    """SpecAugment (Park et al., 2019) on log-mel frames; the `spec_augment:` section."""

    enabled: bool = option(
        False,
        help="apply SpecAugment to training features",
        flag="--spec-augment",
        group="augmentation",
    )
    freq_masks: int = option(2, help="frequency masks per clip", group="augmentation")
    freq_mask_max_bins: int = option(
        27, help="widest frequency mask, in mel bins", group="augmentation"
    )
    time_masks: int = option(2, help="time masks per clip", group="augmentation")
    time_mask_max_frames: int = option(
        40, help="widest time mask, in frames (10 ms each)", group="augmentation"
    )
    time_mask_max_ratio: float = option(
        0.2,
        help="a time mask covers at most this share of the clip's frames",
        group="augmentation",
    )
    time_warp_frames: int = option(
        0,
        help="time warp: move a boundary by up to this many frames (0 = off)",
        group="augmentation",
    )

    def problems(self) -> list[str]:
        found = super().problems()
        for name in (
            "freq_masks",
            "freq_mask_max_bins",
            "time_masks",
            "time_mask_max_frames",
            "time_warp_frames",
        ):
            if getattr(self, name) < 0:
                found.append(f"spec_augment.{name} must be >= 0")
        if not 0 < self.time_mask_max_ratio <= 1:
            found.append("spec_augment.time_mask_max_ratio must be in (0, 1]")
        return found


def augment_rng(seed: int, epoch: int, utterance_id: str, stream: int = 0) -> np.random.Generator:
    """The random stream of one clip in one epoch: the same on every rank and every resume.
    `stream` separates independent draws (0: SpecAugment, 1: speed factor)."""
    import numpy as np

    ident = zlib.crc32(utterance_id.encode("utf-8"))
    return np.random.default_rng([seed, epoch, ident, stream])


def _time_warp(frames: np.ndarray, window: int, rng: np.random.Generator) -> np.ndarray:
    """Move a random boundary by up to `window` frames, stretching one side and squeezing
    the other (linear interpolation along time), as ESPnet's time warp does."""
    import numpy as np

    n = frames.shape[1]
    if window <= 0 or n <= 2 * window + 2:
        return frames
    center = int(rng.integers(window + 1, n - window))
    moved = center + int(rng.integers(-window, window + 1))
    source = np.concatenate(
        [np.linspace(0, center, moved, endpoint=False), np.linspace(center, n - 1, n - moved)]
    )
    lower = np.floor(source).astype(int)
    upper = np.minimum(lower + 1, n - 1)
    weight = (source - lower)[None, :]
    return frames[:, lower] * (1 - weight) + frames[:, upper] * weight


def spec_augment(
    features: CompactFeatures, options: SpecAugmentOptions, rng: np.random.Generator
) -> CompactFeatures:
    """Masked (and optionally warped) copy of the real-audio frames; masks take the clip's
    mean log-mel value, so they carry no energy cue the model could learn."""
    import numpy as np

    frames = np.array(features.frames, dtype=np.float32)  # fp16 caches too; never in place
    n_mels, n_frames = frames.shape
    frames = _time_warp(frames, options.time_warp_frames, rng).astype(np.float32)
    fill = float(frames.mean()) if frames.size else 0.0
    for _ in range(options.freq_masks):
        width = int(rng.integers(0, min(options.freq_mask_max_bins, n_mels) + 1))
        start = int(rng.integers(0, n_mels - width + 1))
        frames[start : start + width, :] = fill
    widest = min(options.time_mask_max_frames, int(options.time_mask_max_ratio * n_frames))
    for _ in range(options.time_masks):
        width = int(rng.integers(0, widest + 1))
        start = int(rng.integers(0, n_frames - width + 1))
        frames[:, start : start + width] = fill
    return CompactFeatures(frames, features.pad_value, features.n_chunks)


def speed_factor_problems(factors: list[float], what: str = "--speed") -> list[str]:
    """What is wrong with a list of speed-perturbation factors (cache and train check the
    same rule): distinct finite numbers in [0.5, 2.0]."""
    if not factors:
        return [f"{what}: give at least one speed factor"]
    if not all(isinstance(s, int | float) and 0.5 <= s <= 2.0 for s in factors):
        return [f"{what}: speed factors must be numbers in [0.5, 2.0]"]
    if len(set(factors)) != len(factors):
        return [f"{what}: speed factors must be distinct (each is one cache entry per clip)"]
    return []
