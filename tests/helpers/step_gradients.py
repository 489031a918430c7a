"""The gradient of one optimizer step, as `Trainer.accumulate` + `reduce_gradients` compute
it for a split of 32 examples into ranks and micro-batches; written as safetensors.

Run directly (one process) or under `torchrun --nproc_per_node=N` (each rank takes its share).
usage: step_gradients.py MODEL MANIFEST OUT.safetensors MICRO_BATCH_SIZES (e.g. 8,8)
"""

import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from voxadapt.decoding import DecodeOptions
from voxadapt.stages.train import TrainConfig, Trainer


def step_gradients(model: str, manifest: Path, sizes: list[int]) -> dict[str, torch.Tensor]:
    """Gradients after accumulating micro-batches of `sizes` examples, this rank's share of
    the manifest's examples in order (rank r takes the r-th block of sum(sizes))."""
    config = TrainConfig(
        model=model,
        train=manifest,
        output_dir=Path(os.environ.get("OUT_DIR", "/tmp")),
        quantization="none",
        lora_dropout=0.0,
        num_workers=0,
        seed=0,
        decode=DecodeOptions(num_workers=0),
    )
    trainer = Trainer(config)
    trainer._setup_data()
    trainer._setup_model()
    trainer._setup_optimizer()
    trainer._reset_window()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # LoRA B starts at zero, which would leave A without a gradient
        for name, parameter in trainer.model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(0.05 * torch.randn(parameter.shape, generator=generator))
    start = trainer.dist.rank * sum(sizes)
    group, offset = [], start
    for size in sizes:
        examples = [trainer.train_set[i] for i in range(offset, offset + size)]
        group.append(trainer.collator(examples))
        offset += size
    trainer.accumulate(group)
    trainer.reduce_gradients()
    return {
        n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad
    }


if __name__ == "__main__":
    model, manifest, out, sizes = sys.argv[1:5]
    gradients = step_gradients(model, Path(manifest), [int(x) for x in sizes.split(",")])
    if int(os.environ.get("RANK", "0")) == 0:
        save_file(gradients, out)
