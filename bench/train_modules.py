"""CPU cost of one training step for each choice of what learns (`train --train-modules`) on
the tiny Voxtral with its LLM in NF4, as `voxadapt train` runs it: a 30 s clip per example,
40 target tokens, the label-position loss, AdamW. The choices take turns within each
repetition (the order rotates), so a busy neighbour slows them alike; the ratios against the
projector alone (of the median and of the fastest repetition) are the result, the absolute
seconds only describe this machine.

python -m bench.train_modules            # writes bench/results/train_modules.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import tiny_model, workdir, write_result
from bench.gpu import TRAIN_MODULES, _batch
from voxadapt.families import load_frontend
from voxadapt.model import (
    AdapterOptions,
    attach_adapter,
    check_trainable_parts,
    input_dtype,
    load_model,
)
from voxadapt.training import label_positions_loss


class StepRunner:
    """One choice's model, optimizer and fixed batch; `step()` is one optimizer step."""

    def __init__(self, model_dir: Path, parts: tuple[str, ...], prompts, batch_size: int):
        model = load_model(model_dir, quantization="nf4", device="cpu")
        model.config.use_cache = False
        torch.manual_seed(0)
        self.model = attach_adapter(model, AdapterOptions(train_modules=parts)).train()
        self.trainable = check_trainable_parts(self.model, parts)
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(parameters, lr=1e-5)
        self.batch = _batch(prompts, batch_size, torch.device("cpu"))
        self.batch["input_features"] = self.batch["input_features"].to(input_dtype(self.model))

    def step(self) -> None:
        label_positions_loss(self.model, self.batch).backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def run(steps: int = 4, repeats: int = 3, batch_size: int = 2) -> dict[str, Any]:
    torch.manual_seed(0)
    with workdir() as tmp:
        model_dir = tiny_model(Path(tmp))
        prompts = load_frontend(model_dir).prompts
        runners = {
            name: StepRunner(model_dir, parts, prompts, batch_size)
            for name, parts in TRAIN_MODULES.items()
        }
        for runner in runners.values():
            runner.step()  # warm-up: allocator, optimizer state
        seconds: dict[str, list[float]] = {name: [] for name in runners}
        names = list(runners)
        for repetition in range(repeats):
            shift = repetition % len(names)
            for name in names[shift:] + names[:shift]:
                started = time.perf_counter()
                for _ in range(steps):
                    runners[name].step()
                seconds[name].append((time.perf_counter() - started) / steps)
    base = statistics.median(seconds["projector"])
    best = min(seconds["projector"])
    return {
        "model": "tiny Voxtral, LLM in NF4 (bitsandbytes on CPU)",
        "micro_batch": batch_size,
        "steps_per_repetition": steps,
        "repetitions": repeats,
        "threads": torch.get_num_threads(),
        "choices": {
            name: {
                "train_modules": list(TRAIN_MODULES[name]),
                "trainable_parameters": runners[name].trainable,
                "seconds_per_step": {
                    "median": statistics.median(values),
                    "min": min(values),
                    "max": max(values),
                },
                "ratio_vs_projector": statistics.median(values) / base,
                # on a shared machine the fastest repetition is the least disturbed one
                "ratio_vs_projector_fastest": min(values) / best,
            }
            for name, values in seconds.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per repetition")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--results-dir", type=Path)
    args = parser.parse_args()
    result = run(args.steps, args.repeats, args.batch_size)
    print(write_result("train_modules", result, args.results_dir).read_text())


if __name__ == "__main__":
    main()
