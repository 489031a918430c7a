"""Feature cache: `voxadapt cache` vs the seed's build_cache.py (processor per clip, fp32
features padded to 30 s, one torch.save .pt per clip), on the same 48 kHz Korean clips.

python -m bench.cache --clips 200
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
import torch

from bench.common import make_clips, ratio, timed, tiny_model, workdir, write_result
from voxadapt.features import (
    FeatureSpec,
    FeatureStore,
    compute_features,
    utterance_key,
)
from voxadapt.manifest import read_manifest
from voxadapt.stages.cache import CacheConfig, build_cache


def seed_cache(manifest: Path, model: Path, out_dir: Path) -> None:
    """The seed's approach, faithfully: one processor call and one pickle per clip."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    for utterance in read_manifest(manifest):
        inputs = processor.apply_transcription_request(
            audio=utterance.audio, model_id="x", language="ko"
        )
        torch.save({"input_features": inputs["input_features"]}, out_dir / f"{utterance.id}.pt")


def physical_floor(manifest: Path, spec: FeatureSpec) -> None:
    """Decode + resample + STFT/mel of the real audio only: no re-encoding, no storage."""
    for utterance in read_manifest(manifest):
        samples, rate = sf.read(utterance.audio, dtype="float32")
        samples = soxr.resample(samples, rate, spec.sampling_rate, quality="HQ")
        compute_features(samples, spec)


def run(clips: int = 200, repeats: int = 3, root: Path | None = None) -> dict[str, Any]:
    with workdir() as tmp:
        root = Path(root or tmp)
        model = tiny_model(root)  # only its processor is used: the real Voxtral front end
        data = make_clips(root / "data", clips)
        manifest = data["manifest"]
        spec = FeatureSpec.from_model(model)
        cores = os.cpu_count() or 1
        seed = timed(lambda r: seed_cache(manifest, model, root / f"seed{r}"), repeats)
        ours1 = timed(
            lambda r: build_cache(
                CacheConfig([manifest], str(model), root / f"one{r}", jobs=1, shard_size=256)
            ),
            repeats,
        )
        ours = timed(
            lambda r: build_cache(
                CacheConfig([manifest], str(model), root / f"all{r}", jobs=cores, shard_size=256)
            ),
            repeats,
        )
        floor = timed(lambda r: physical_floor(manifest, spec), repeats)
        seed_bytes = sum(p.stat().st_size for p in (root / "seed0").glob("*.pt")) / clips
        ours_bytes = sum(p.stat().st_size for p in (root / "one0").glob("shard-*")) / clips
        store = FeatureStore(root / "one0", spec)
        worst = 0.0
        for utterance in read_manifest(manifest):
            mine = store.get(utterance_key(utterance, spec)).expand(spec)
            theirs = torch.load(root / "seed0" / f"{utterance.id}.pt", weights_only=True)
            worst = max(worst, float((mine - theirs["input_features"]).abs().max()))
        seconds = np.array(data["seconds"])
        result = {
            "inputs": f"{clips} clips, 3-25 s (mean {seconds.mean():.1f} s), 48 kHz 16-bit WAV, "
            f"{data['source']}",
            "repeats": repeats,
            "clips_per_s": {
                "seed": seed.rate(clips),
                "voxadapt_1_process": ours1.rate(clips),
                f"voxadapt_{cores}_processes": ours.rate(clips),
                "floor_decode_resample_stft_1_process": floor.rate(clips),
            },
            "speedup_1_process": ratio(ours1.rate(clips), seed.rate(clips)),
            "speedup_all_cores": ratio(ours.rate(clips), seed.rate(clips)),
            "floor_speedup_1_process": ratio(floor.rate(clips), seed.rate(clips)),
            "bytes_per_clip": {"seed": seed_bytes, "voxadapt": ours_bytes},
            "bytes_ratio": ours_bytes / seed_bytes,
            "max_abs_feature_diff": worst,
            "targets": {"speedup": ">= 8", "bytes_ratio": "<= 0.1", "max_abs_feature_diff": 1e-3},
        }
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(write_result("cache", run(args.clips, args.repeats)).read_text())


if __name__ == "__main__":
    main()
