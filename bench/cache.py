"""Feature-cache benchmark: `voxadapt cache` vs the seed's per-clip processor + torch.save.

python -m bench.cache --clips 60 [--model DIR]   (default model: a tiny Voxtral built on the fly;
only its processor is used, which is the real Voxtral front end)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from voxadapt.features import FeatureSpec, FeatureStore, build_cache, utterance_key
from voxadapt.manifest import Utterance, read_manifest, write_jsonl


def make_clips(root: Path, n_clips: int, seed: int = 0) -> Path:
    """48 kHz WAVs of 3-25 s built from the bundled Korean speech, and their manifest."""
    from voxadapt.demo import sample_scp

    rng = np.random.default_rng(seed)
    speech = [sf.read(p, dtype="float32")[0] for p in sorted(sample_scp().parent.glob("clips/*"))]
    utterances = []
    for i in range(n_clips):
        seconds = float(rng.uniform(3, 25))
        source = np.concatenate([speech[(i + k) % len(speech)] for k in range(8)])
        audio = soxr.resample(np.resize(source, int(seconds * 16000)), 16000, 48000)
        path = root / f"clip{i:04d}.wav"
        sf.write(path, audio, 48000, subtype="PCM_16")
        utterances.append(Utterance(f"clip{i:04d}", str(path), "열", "열", seconds, 48000, 1))
    manifest = root / "clips.jsonl"
    write_jsonl(manifest, utterances)
    return manifest


def seed_cache(manifest: Path, model: Path, out_dir: Path) -> None:
    """The seed's build_cache.py: processor per clip, fp32 padded features, one .pt per clip."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    for utterance in read_manifest(manifest):
        inputs = processor.apply_transcription_request(
            audio=utterance.audio, model_id="x", language="ko"
        )
        torch.save({"input_features": inputs["input_features"]}, out_dir / f"{utterance.id}.pt")


def run(n_clips: int, model: Path | None, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if model is None:
            from voxadapt.tiny import build_tiny_voxtral

            model = build_tiny_voxtral(root / "model")
        manifest = make_clips(root, n_clips)
        seed_times, ours_times, ours1_times = [], [], []
        for r in range(repeats):
            started = time.perf_counter()
            seed_cache(manifest, model, root / f"seed{r}")
            seed_times.append(time.perf_counter() - started)
            for jobs, times in ((1, ours1_times), (os.cpu_count() or 1, ours_times)):
                started = time.perf_counter()
                build_cache([manifest], model, root / f"ours{jobs}_{r}", jobs=jobs, shard_size=32)
                times.append(time.perf_counter() - started)
        seed_bytes = sum(p.stat().st_size for p in (root / "seed0").glob("*.pt"))
        ours_bytes = sum(p.stat().st_size for p in (root / "ours1_0").glob("shard-*"))
        spec = FeatureSpec.from_model(model)
        store = FeatureStore(root / "ours1_0", spec)
        worst = 0.0
        for utterance in read_manifest(manifest)[:10]:
            ours = store.get(utterance_key(utterance, spec)).expand(spec)
            seed = torch.load(root / "seed0" / f"{utterance.id}.pt", weights_only=True)
            worst = max(worst, float((ours - seed["input_features"]).abs().max()))
        seed_rate = n_clips / statistics.median(seed_times)
        ours_rate = n_clips / statistics.median(ours_times)
        ours1_rate = n_clips / statistics.median(ours1_times)
        return {
            "clips": n_clips,
            "repeats": repeats,
            "cores": os.cpu_count(),
            "seed_clips_per_s": seed_rate,
            "ours_1_job_clips_per_s": ours1_rate,
            "ours_all_cores_clips_per_s": ours_rate,
            "speedup_1_job": ours1_rate / seed_rate,
            "speedup_all_cores": ours_rate / seed_rate,
            "seed_bytes_per_clip": seed_bytes / n_clips,
            "ours_bytes_per_clip": ours_bytes / n_clips,
            "bytes_ratio": ours_bytes / seed_bytes,
            "max_abs_feature_diff": worst,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", type=Path)
    args = parser.parse_args()
    print(json.dumps(run(args.clips, args.model, args.repeats), indent=2))


if __name__ == "__main__":
    main()
