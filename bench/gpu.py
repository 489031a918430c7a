"""Real-size Voxtral-Mini-3B on a GPU (random weights from the config: no download needed):
training samples/s, peak memory and MFU over {bf16, nf4} x {lora, full} x {grad ckpt off,
on} x micro-batch, the loss with logits at label positions only vs the full-logits loss,
samples/s and peak memory for each choice of what learns (`train --train-modules`: projector,
+ LoRA on the 4-bit LLM, + LoRA on the encoder, the LLM alone), and inference RTFx for
5/15/25 s clips at batch 1/16/64 with 40 generated tokens.

python -m bench.gpu                        # needs CUDA; writes bench/results/gpu.json
python -m bench.gpu --only train_modules   # just the what-learns grid
python -m bench.gpu --tiny                 # the same code paths on a tiny model on CPU (CI smoke)
python -m bench.gpu --family qwen3_asr     # Qwen3-ASR-1.7B's configuration instead (--size 0.6B)

Everything goes through the model-family interface (`voxadapt.families`): the family's tiny
builder supplies the tokenizer and processor, its prompt builder the prompts, its feature
layout the audio inputs. MFU is computed for Voxtral only (its FLOP count is written out
below); other families report samples/s and memory.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import tiny_model, workdir, write_result
from voxadapt.data import IGNORE_INDEX
from voxadapt.decoding import generate_batch
from voxadapt.families import FAMILIES, Prompts, family_named, load_config, load_frontend
from voxadapt.features import compute_features
from voxadapt.model import (
    AdapterOptions,
    attach_adapter,
    attach_projector_adapter,
    autocast,
    check_trainable_parts,
    compute_dtype,
    input_dtype,
    load_model,
)
from voxadapt.training import label_positions_loss

TARGET_TOKENS = 40  # ~ a 10 s Korean utterance
# The choices of `train --train-modules` (configs/ablation/), all on the nf4 base
TRAIN_MODULES = {
    "projector": ("projector",),
    "projector+llm": ("projector", "llm"),
    "projector+llm+encoder": ("projector", "llm", "encoder"),
    "llm": ("llm",),
}
SECTIONS = ("training", "train_modules", "inference")
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}  # dense bf16


def real_config(family: str = "voxtral", size: str = "1.7B"):
    """The released configuration to measure (random weights): Voxtral-Mini-3B, or
    Qwen3-ASR of `size`."""
    if family == "qwen3_asr":
        from voxadapt.families.qwen3_asr_checkpoint import real_config as qwen_config

        return qwen_config(f"Qwen/Qwen3-ASR-{size}-hf")
    from transformers import VoxtralConfig

    config = VoxtralConfig(audio_token_id=24)  # transformers' defaults are Voxtral-Mini-3B
    config.text_config.vocab_size = 131072
    return config


def flops_per_sample(config, prompt_tokens: int, target_tokens: int) -> dict[str, float]:
    """Matmul FLOPs of one 30 s clip: encoder forward, projector, LLM forward, and the LLM
    backward through activations (its weights are frozen: no weight gradients)."""
    audio, text = config.audio_config, config.text_config
    frames = audio.max_source_positions  # 1500 after the stride-2 conv
    d, ff = audio.hidden_size, audio.intermediate_size
    conv = 2 * 3 * frames * 2 * (audio.num_mel_bins * d) + 2 * 3 * d * d * frames
    layer = 2 * frames * (4 * d * d + 2 * d * ff) + 4 * frames * frames * d
    encoder = conv + audio.num_hidden_layers * layer
    audio_tokens = frames // 4
    projector = 2 * audio_tokens * (4 * d * text.hidden_size + text.hidden_size**2)
    tokens = prompt_tokens + target_tokens
    h, kv = text.hidden_size, text.num_key_value_heads * text.head_dim
    q = text.num_attention_heads * text.head_dim
    llm_layer = 2 * tokens * (h * (2 * q + 2 * kv) + 3 * h * text.intermediate_size)
    llm_layer += 4 * tokens * tokens * q
    head_full = 2 * tokens * h * text.vocab_size
    head_labels = 2 * (target_tokens + 1) * h * text.vocab_size
    llm = text.num_hidden_layers * llm_layer
    return {
        "encoder_forward": encoder,
        "projector": 3 * projector,  # forward + backward (weights and inputs)
        "llm_forward_backward_full_logits": 2 * (llm + head_full),
        "llm_forward_backward_label_logits": 2 * (llm + head_labels),
    }


def _clip_features(prompts: Prompts, seconds: float = 30.0):
    """Features of `seconds` of noise in the family's layout (30 s: one Voxtral chunk)."""
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(int(seconds * 16000)) * 0.1).astype(np.float32)
    return compute_features(audio, prompts.spec)


def _batch(prompts: Prompts, batch_size: int, device) -> dict[str, torch.Tensor]:
    features = _clip_features(prompts)
    prompt = prompts.prompt_for(features, "ko")
    target = [*range(1000, 1000 + TARGET_TOKENS - 1), prompts.eos_id]
    ids = torch.tensor([prompt + target] * batch_size, device=device)
    labels = ids.clone()
    labels[:, : len(prompt)] = IGNORE_INDEX
    audio = prompts.family.audio_inputs([features] * batch_size, prompts.spec)
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": labels,
        **{name: tensor.to(device) for name, tensor in audio.items()},
    }


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_step_rate(model, prompts, batch_size, device, steps, *, label_logits: bool):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    batch = _batch(prompts, batch_size, device)
    batch["input_features"] = batch["input_features"].to(input_dtype(model))
    autocast_dtype = compute_dtype(model)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step():
        with autocast(device, autocast_dtype):
            loss = label_positions_loss(model, batch) if label_logits else model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up (allocator, kernels)
    _sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    return batch_size * steps / seconds, peak


def inference_rtfx(model, prompts, spec, duration_s, batch_size, device):
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(int(duration_s * 16000)) * 0.1).astype(np.float32)
    features = [compute_features(audio, spec)] * batch_size
    kwargs = {
        "device": device,
        "min_new_tokens": TARGET_TOKENS,
        "autocast_dtype": compute_dtype(model),
    }
    run = lambda: generate_batch(  # noqa: E731
        model, prompts, features, ["ko"] * batch_size, [TARGET_TOKENS] * batch_size, **kwargs
    )
    run()
    _sync(device)
    started = time.perf_counter()
    run()
    _sync(device)
    return duration_s * batch_size / (time.perf_counter() - started)


def inference_grid(model_dir, prompts, spec, device, tiny: bool, quick: bool) -> list[dict]:
    """RTFx of batched greedy decoding for 5/15/25 s clips (unquantized model)."""
    model = load_model(
        model_dir,
        quantization="none",
        device=device,
        dtype=torch.bfloat16 if device.type == "cuda" else torch.float32,
    )
    model.eval()
    batches = ([2] if quick else [1, 2]) if tiny else ([1, 16] if quick else [1, 16, 64])
    return [
        {
            "clip_s": seconds,
            "batch": batch_size,
            "rtfx": inference_rtfx(model, prompts, spec, seconds, batch_size, device),
        }
        for seconds, batch_size in itertools.product((5, 15, 25), batches)
    ]


def train_modules_grid(model_dir, prompts, device, batches, steps, checkpointing_modes):
    """Samples/s and peak memory of a training step for each choice of what learns (nf4 base,
    label-position loss, as `voxadapt train` runs it)."""
    rows = []
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    for (name, parts), checkpointing, batch_size in itertools.product(
        TRAIN_MODULES.items(), checkpointing_modes, batches
    ):
        model = load_model(model_dir, quantization="nf4", device=device, dtype=dtype)
        if checkpointing:
            model.gradient_checkpointing_enable({"use_reentrant": False})
        model.config.use_cache = False
        model = attach_adapter(model, AdapterOptions(train_modules=parts))
        trainable = check_trainable_parts(model, parts)
        try:
            rate, memory = train_step_rate(
                model, prompts, batch_size, device, steps, label_logits=True
            )
        except torch.OutOfMemoryError:
            rate, memory = None, "OOM"
        rows.append(
            {
                "train_modules": name, "gradient_checkpointing": checkpointing,
                "micro_batch": batch_size, "trainable_parameters": trainable,
                "samples_per_s": rate, "peak_memory_gib": memory,
            }
        )  # fmt: skip
        del model
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def run(
    tiny: bool = False,
    quick: bool = False,
    sections: tuple[str, ...] = SECTIONS,
    family_name: str = "voxtral",
    size: str = "1.7B",
) -> dict[str, Any]:
    family = family_named(family_name)

    device = torch.device("cuda" if torch.cuda.is_available() and not tiny else "cpu")
    if device.type != "cuda" and not tiny:
        return {"skipped": "no CUDA device (use --tiny for the CPU smoke run)"}
    with workdir() as tmp:
        root = Path(tmp)
        # the family's tiny checkpoint: the real special tokens, processor and template
        tiny_dir = tiny_model(root) if family.name == "voxtral" else family.build_tiny(root / "t")
        frontend = load_frontend(tiny_dir)
        spec, prompts = frontend.spec, frontend.prompts
        config = load_config(tiny_dir) if tiny else None
        if tiny:
            model_dir = tiny_dir
        else:  # real-size random weights on disk, loadable in bf16 and nf4
            config = real_config(family.name, size)
            model_dir = root / f"{family.name}-random"
            with torch.device("cuda"):
                model = family.model_class()(config).to(torch.bfloat16)
            model.save_pretrained(model_dir)
            frontend.processor.save_pretrained(model_dir)
            del model
            gc.collect()
            torch.cuda.empty_cache()
        prompt_tokens = len(prompts.prompt_for(_clip_features(prompts), "ko"))
        # the FLOP count is written out for Voxtral's architecture only
        flops = (
            flops_per_sample(config, prompt_tokens, TARGET_TOKENS)
            if family.name == "voxtral"
            else None
        )
        name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
        batches = ([2] if quick else [1, 2]) if tiny else ([1, 4] if quick else [1, 4, 8, 16])
        steps = 1 if tiny else 5
        training = []
        checkpointing_modes = (False,) if tiny and quick else (False, True)
        grid = itertools.product(
            ("bf16", "nf4") if "training" in sections else (),
            ("lora", "full"),
            checkpointing_modes,
            batches,
        )
        for base, projector, checkpointing, batch_size in grid:
            quantization = "none" if base == "bf16" else "nf4"
            dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
            model = load_model(model_dir, quantization=quantization, device=device, dtype=dtype)
            if checkpointing:
                model.gradient_checkpointing_enable({"use_reentrant": False})
            model.config.use_cache = False
            model = attach_projector_adapter(model, AdapterOptions(projector))
            for label_logits in (False, True) if batch_size == batches[-1] else (True,):
                try:
                    rate, memory = train_step_rate(
                        model, prompts, batch_size, device, steps, label_logits=label_logits
                    )
                except torch.OutOfMemoryError:
                    rate, memory = None, "OOM"
                total = flops["encoder_forward"] + flops["projector"] + flops[
                    "llm_forward_backward_label_logits" if label_logits
                    else "llm_forward_backward_full_logits"
                ] if flops else None  # fmt: skip
                training.append(
                    {
                        "base": base, "projector": projector,
                        "gradient_checkpointing": checkpointing, "micro_batch": batch_size,
                        "loss": "label_logits" if label_logits else "full_logits",
                        "samples_per_s": rate, "peak_memory_gib": memory,
                        "mfu": rate * total / (peak * 1e12) if rate and peak and total else None,
                    }
                )  # fmt: skip
            del model
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        train_modules = []
        if "train_modules" in sections:
            train_modules = train_modules_grid(
                model_dir,
                prompts,
                device,
                [2] if tiny else ([4] if quick else [1, 4, 8]),
                steps,
                checkpointing_modes,
            )
        inference = []
        if "inference" in sections:
            inference = inference_grid(model_dir, prompts, spec, device, tiny, quick)
        return {
            "device": name,
            "family": family.name,
            "model": f"tiny {family.title} (CPU smoke run)"
            if tiny
            else f"{family.title} {size if family.name != 'voxtral' else 'Mini-3B'} config, random",
            "tflop_per_sample": {k: v / 1e12 for k, v in flops.items()} if flops else None,
            "peak_tflops_bf16": peak,
            "prompt_tokens": prompt_tokens,
            "target_tokens": TARGET_TOKENS,
            "training": training,
            "train_modules": train_modules,
            "inference": inference,
            "goals": {"mfu_bf16": ">= 0.40", "nf4_peak_gib_at_mb4": "<= 8", "rtfx_b64": ">= 400"},
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model on CPU (smoke run)")
    parser.add_argument("--quick", action="store_true", help="fewer batch sizes")
    parser.add_argument("--results-dir", type=Path)
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="a subset of the sections")
    parser.add_argument("--family", choices=tuple(FAMILIES), default="voxtral")
    parser.add_argument("--size", choices=("0.6B", "1.7B"), default="1.7B", help="Qwen3-ASR size")
    args = parser.parse_args()
    result = run(
        tiny=args.tiny,
        quick=args.quick,
        sections=tuple(args.only or SECTIONS),
        family_name=args.family,
        size=args.size,
    )
    name = "gpu_tiny_cpu" if args.tiny else "gpu"
    if args.family != "voxtral":
        name += f"_{args.family}_{args.size}" if not args.tiny else f"_{args.family}"
    if args.only:
        name += "_" + "_".join(args.only)
    print(write_result(name, result, args.results_dir).read_text())


if __name__ == "__main__":
    main()
