"""Data loading: samples/s the training DataLoader delivers from the feature cache vs features
computed on the fly, against the rate the trainer consumes them (is data the bottleneck?).

python -m bench.dataloading --clips 64
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from bench.common import make_clips, timed, tiny_model, workdir, write_result
from voxadapt.data import Collator, TranscriptionDataset
from voxadapt.families import load_frontend
from voxadapt.features import FeatureStore
from voxadapt.manifest import read_manifest
from voxadapt.model import AdapterOptions, attach_projector_adapter, load_model
from voxadapt.stages.cache import CacheConfig, build_cache

# What the real model consumes on one H100 at the GPU benchmark's goal (bench/gpu.py).
GPU_GOAL_SAMPLES_PER_S = 35.0


def run(clips: int = 64, repeats: int = 3, batch_size: int = 8, root=None) -> dict[str, Any]:
    with workdir() as tmp:
        root = Path(root or tmp)
        model_dir = tiny_model(root)
        data = make_clips(root / "data", clips)
        utterances = read_manifest(data["manifest"])
        frontend = load_frontend(model_dir)
        spec, prompts = frontend.spec, frontend.prompts
        build_cache(
            CacheConfig(
                [data["manifest"]], str(model_dir), root / "cache", jobs=os.cpu_count() or 1
            )
        )
        store = FeatureStore(root / "cache", spec)
        collator = Collator(spec, prompts.pad_id)
        rates: dict[str, Any] = {}
        workers_all = min(4, os.cpu_count() or 1)
        for source, dataset in (
            ("cache", TranscriptionDataset(utterances, prompts, store=store)),
            ("on_the_fly", TranscriptionDataset(utterances, prompts)),
        ):
            for workers in sorted({0, workers_all}):
                loader = DataLoader(
                    dataset, batch_size=batch_size, collate_fn=collator, num_workers=workers
                )
                timing = timed(lambda _, loader=loader: [b for b in loader], repeats)
                rates[f"{source}_{workers}_workers"] = timing.rate(clips)

        model = attach_projector_adapter(
            load_model(model_dir, quantization="none"), AdapterOptions("lora")
        )
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
        batches = list(
            DataLoader(
                TranscriptionDataset(utterances, prompts, store=store),
                batch_size=batch_size,
                collate_fn=collator,
            )
        )

        def step(_):
            for batch in batches:
                model(**batch).loss.backward()
                optimizer.step()
                optimizer.zero_grad()

        trainer = timed(step, repeats).rate(clips)
        best_cache = max(v["median"] for k, v in rates.items() if k.startswith("cache"))
        return {
            "inputs": f"{clips} clips 3-25 s at 48 kHz, batch {batch_size}, {data['source']}",
            "repeats": repeats,
            "loader_samples_per_s": rates,
            "tiny_trainer_samples_per_s_cpu": trainer,
            "gpu_goal_samples_per_s": GPU_GOAL_SAMPLES_PER_S,
            "cache_vs_on_the_fly_same_workers": (
                rates[f"cache_{workers_all}_workers"]["median"]
                / rates[f"on_the_fly_{workers_all}_workers"]["median"]
            ),
            "cache_headroom_vs_gpu_goal": best_cache / GPU_GOAL_SAMPLES_PER_S,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(write_result("dataloading", run(args.clips, args.repeats)).read_text())


if __name__ == "__main__":
    main()
