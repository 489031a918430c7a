"""The training recipe: projector-only (Q)LoRA on Voxtral with CER-selected checkpoints.

Our own small loop rather than HF Trainer: only the projector trains, so gradients are
all-reduced by hand across ranks (no DDP wrapper around a 4-bit model), evaluation is
batched greedy generation scored by CER, and checkpoints hold only trainable weights.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import signal
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from voxadapt.config import save_config
from voxadapt.data import IGNORE_INDEX, Collator, PromptBuilder, TranscriptionDataset
from voxadapt.errors import VoxadaptError
from voxadapt.infer import autocast, compute_dtype, decode_cap, generate_batch, input_dtype
from voxadapt.manifest import Utterance, atomic_write, read_manifest
from voxadapt.model import (
    DTYPES,
    PROJECTOR_MODES,
    QUANTIZATIONS,
    AdapterOptions,
    attach_projector_adapter,
    check_only_projector_trains,
    format_audit,
    load_voxtral,
    parameter_audit,
    resolve_dtype,
    save_adapter,
)

log = logging.getLogger(__name__)

SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")


class TrainingInterrupted(VoxadaptError):
    """Ctrl-C: a resumable checkpoint was saved."""


@dataclass
class TrainConfig:
    """Options of `voxadapt train` (the YAML keys of `--config`). Defaults follow the seed."""

    model: str = "mistralai/Voxtral-Mini-3B-2507"  # hub id or local folder
    train: Path | None = None  # training manifest (JSONL from `voxadapt prepare`)
    valid: Path | None = None  # validation manifest; CER on it selects the best checkpoint
    cache: Path | None = None  # feature cache from `voxadapt cache`; None = features on the fly
    output_dir: Path = Path("runs/voxadapt")
    quantization: str = "nf4"  # LLM weights: nf4 | int8 | none (audio tower/projector stay)
    projector: str = "lora"  # lora | full
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    epochs: float = 2.0
    max_steps: int | None = None  # optimizer steps; overrides epochs
    batch_size: int = 8  # utterances per device per micro-batch
    grad_accum: int = 4  # micro-batches per optimizer step
    lr: float = 1e-4
    weight_decay: float = 0.0
    scheduler: str = "cosine"
    warmup_ratio: float = 0.03  # of all optimizer steps
    max_grad_norm: float = 1.0
    logging_steps: int = 10
    eval_steps: int | None = 200  # None: evaluate once per epoch
    eval_samples: int | None = None  # evaluate on a fixed random subset of the valid set
    eval_batch_size: int = 16
    early_stopping_patience: int | None = None  # evaluations without a better CER
    seed: int = 0
    dtype: str | None = None  # bf16 | fp16 | fp32; default bf16 on capable GPUs, fp32 on CPU
    gradient_checkpointing: bool = False
    torch_compile: bool = False
    num_workers: int = 2  # DataLoader workers per process
    language: str = "ko"  # prompt language; "auto" = none, "manifest" = each record's
    max_new_tokens_per_s: float = 15.0  # eval decoding cap: 20 + this x clip seconds
    resume: bool = False  # continue from output_dir/checkpoint-last

    def problems(self) -> list[str]:
        found = []
        if self.train is None:
            found.append("train manifest is required (--train)")
        if self.quantization not in QUANTIZATIONS:
            found.append(f"quantization must be one of {', '.join(QUANTIZATIONS)}")
        if self.projector not in PROJECTOR_MODES:
            found.append(f"projector must be one of {', '.join(PROJECTOR_MODES)}")
        if self.scheduler not in SCHEDULERS:
            found.append(f"scheduler must be one of {', '.join(SCHEDULERS)}")
        if self.dtype is not None and self.dtype not in DTYPES:
            found.append(f"dtype must be one of {', '.join(DTYPES)}")
        for name in ("batch_size", "grad_accum", "logging_steps", "lora_r", "eval_batch_size"):
            if getattr(self, name) < 1:
                found.append(f"{name} must be >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            found.append("max_steps must be >= 1")
        if self.eval_steps is not None and self.eval_steps < 1:
            found.append("eval_steps must be >= 1")
        if self.epochs <= 0 and self.max_steps is None:
            found.append("epochs must be > 0")
        if not 0 <= self.warmup_ratio < 1:
            found.append("warmup_ratio must be in [0, 1)")
        if self.early_stopping_patience is not None and self.valid is None:
            found.append("early_stopping_patience needs a valid manifest")
        return found

    @property
    def prompt_language(self) -> str | None:
        return None if self.language == "auto" else self.language


@dataclass
class TrainState:
    """Progress, saved in every checkpoint and as trainer_state.json."""

    step: int = 0  # optimizer steps done
    epoch: int = 0
    micro_batches_in_epoch: int = 0  # micro-batches of `epoch` already consumed
    total_steps: int = 0
    best_cer: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    log_history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TrainResult:
    output_dir: Path
    adapter_dir: Path
    state: TrainState
    trainable_parameters: int


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_distributed() -> _Dist:
    """Single process, or one of WORLD_SIZE processes started by torchrun/accelerate."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend)
    rank = torch.distributed.get_rank() if world > 1 else 0
    return _Dist(rank, world, local_rank, device)


def _all_reduce_mean(tensor: torch.Tensor, dist: _Dist) -> torch.Tensor:
    if dist.world > 1:
        torch.distributed.all_reduce(tensor)
        tensor /= dist.world
    return tensor


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        n: p.detach().to("cpu").contiguous() for n, p in model.named_parameters() if p.requires_grad
    }


def _save_checkpoint(path: Path, model, optimizer, scheduler, state: TrainState) -> None:
    """Write a resumable checkpoint to `path` atomically (temp folder, then rename)."""
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(_trainable_state(model), str(tmp / "trainable.safetensors"))
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
        tmp / "optimizer.pt",
    )
    (tmp / "state.json").write_text(json.dumps(state.__dict__, indent=1), encoding="utf-8")
    old = path.with_name(path.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(path: Path, model, optimizer, scheduler) -> TrainState:
    from safetensors.torch import load_file

    weights = load_file(str(path / "trainable.safetensors"))
    parameters = dict(model.named_parameters())
    unknown = [n for n in weights if n not in parameters]
    if unknown:
        raise VoxadaptError(
            f"checkpoint {path} does not match this model/projector mode (e.g. {unknown[0]})"
        )
    with torch.no_grad():
        for name, tensor in weights.items():
            parameters[name].copy_(tensor)
    # Our own file, and weights_only refuses anything but tensors and plain containers.
    saved = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    return TrainState(**json.loads((path / "state.json").read_text(encoding="utf-8")))


class _StopFlag:
    """Ctrl-C sets a flag; the loop saves a checkpoint at the next step. A second Ctrl-C kills."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _StopFlag:
        if threading_is_main():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("interrupt: saving a checkpoint after this step (Ctrl-C again to abort)")

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _ignore_sigint(_: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the main process handles Ctrl-C


def label_positions_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Causal-LM loss with logits computed only from the batch's first label position on.

    Labels sit at the end of each row (prompt, then transcript), so the LM head is applied to
    the last K positions only: for Voxtral-Mini that skips a 3072 x 131072 projection over
    ~380 prompt/audio positions per clip (~0.3 TFLOP and ~200 MB of fp32 logits) whose
    predictions the loss ignores. Same value as the model's own loss (mean over label tokens).
    """
    labels = batch["labels"]
    width = labels.shape[1]
    first = int((labels != IGNORE_INDEX).int().argmax(dim=1).min())
    keep = min(width, width - first + 1)  # + the position that predicts the first label
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, logits_to_keep=keep).logits
    targets = labels[:, width - keep + 1 :]
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX
    )


@torch.no_grad()
def generate_transcripts(
    model: torch.nn.Module,
    dataset: TranscriptionDataset,
    indices: list[int],
    *,
    batch_size: int,
    device: torch.device,
    tokens_per_s: float = 15.0,
    autocast_dtype: torch.dtype | None = None,
) -> dict[int, str]:
    """Greedy, KV-cached, batched transcripts of dataset items (features from its cache).

    Items are grouped by chunk count and sorted by duration, so prompts of a batch have the
    same length and no padding enters the decoder.
    """
    was_training = model.training
    model.eval()
    groups: dict[int, list[tuple[int, Any]]] = {}
    for index in indices:
        features = dataset.features(index)
        groups.setdefault(features.n_chunks, []).append((index, features))
    results: dict[int, str] = {}
    for items in groups.values():
        items.sort(key=lambda item: dataset.utterances[item[0]].duration)
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            utterances = [dataset.utterances[i] for i, _ in batch]
            language = dataset.language
            languages = [u.language if language == "manifest" else language for u in utterances]
            transcripts = generate_batch(
                model,
                dataset.prompts,
                [f for _, f in batch],
                languages,
                [decode_cap(u.duration, tokens_per_s) for u in utterances],
                device=device,
                autocast_dtype=autocast_dtype,
            )
            for (index, _), transcript in zip(batch, transcripts):
                results[index] = transcript.text
    model.train(was_training)
    return results


def evaluate_cer(
    model,
    dataset: TranscriptionDataset,
    config: TrainConfig,
    dist: _Dist,
    autocast_dtype: torch.dtype | None,
) -> dict[str, float]:
    """CER/WER of greedy transcripts on `dataset`, computed over all ranks' shares."""
    from voxadapt.metrics import error_rates

    mine = list(range(dist.rank, len(dataset), dist.world))
    texts = generate_transcripts(
        model,
        dataset,
        mine,
        batch_size=config.eval_batch_size,
        device=dist.device,
        tokens_per_s=config.max_new_tokens_per_s,
        autocast_dtype=autocast_dtype,
    )
    pairs = [(dataset.utterances[i].text, texts[i]) for i in mine]
    if dist.world > 1:
        gathered: list[Any] = [None] * dist.world
        torch.distributed.all_gather_object(gathered, pairs)
        pairs = [pair for part in gathered for pair in part]
    rates = error_rates([r for r, _ in pairs], [h for _, h in pairs])
    return {"eval_cer": rates.cer, "eval_wer": rates.wer, "eval_utterances": len(pairs)}


def train(config: TrainConfig) -> TrainResult:
    """Train the projector; see TrainConfig. Returns where the adapter went and the state."""
    from transformers import AutoProcessor, get_scheduler

    from voxadapt.features import FeatureSpec, FeatureStore

    dist = _setup_distributed()
    output_dir = Path(config.output_dir)
    if dist.main:
        output_dir.mkdir(parents=True, exist_ok=True)
    train_utts = read_manifest(config.train)
    if not train_utts:
        raise VoxadaptError(f"the training manifest {config.train} is empty")
    valid_utts: list[Utterance] = read_manifest(config.valid) if config.valid else []
    if config.valid and not valid_utts:
        raise VoxadaptError(f"the validation manifest {config.valid} is empty")
    if config.eval_samples and len(valid_utts) > config.eval_samples:
        valid_utts = random.Random(config.seed).sample(valid_utts, config.eval_samples)

    try:
        processor = AutoProcessor.from_pretrained(config.model)
    except OSError as exc:
        raise VoxadaptError(f"cannot load the processor of {config.model}: {exc}") from None
    spec = FeatureSpec.from_feature_extractor(processor.feature_extractor)
    prompts = PromptBuilder(processor, spec)
    store = FeatureStore(config.cache, spec) if config.cache else None
    language = config.prompt_language
    train_set = TranscriptionDataset(train_utts, prompts, store=store, language=language)
    valid_set = (
        TranscriptionDataset(valid_utts, prompts, store=store, language=language)
        if valid_utts
        else None
    )

    model = load_voxtral(
        config.model,
        quantization=config.quantization,
        device=dist.device,
        dtype=resolve_dtype(config.dtype),
    )
    autocast_dtype = compute_dtype(model)
    if dist.main:
        where = "bitsandbytes on CPU" if dist.device.type == "cpu" else str(dist.device)
        log.info(
            "model %s: LLM quantization %s (%s), compute dtype %s",
            config.model,
            config.quantization,
            where,
            str(autocast_dtype or torch.float32).removeprefix("torch."),
        )
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    options = AdapterOptions(
        config.projector, config.lora_r, config.lora_alpha, config.lora_dropout
    )
    torch.manual_seed(config.seed)  # identical adapter init on every rank
    model = attach_projector_adapter(model, options)
    rows = parameter_audit(model)
    if dist.main:
        print(format_audit(rows), flush=True)
    n_trainable = check_only_projector_trains(model)
    parameters = [p for p in model.parameters() if p.requires_grad]
    forward_model = torch.compile(model) if config.torch_compile else model

    micro_per_epoch = math.ceil(len(train_set) / (config.batch_size * dist.world))
    steps_per_epoch = max(1, math.ceil(micro_per_epoch / config.grad_accum))
    total_steps = config.max_steps or math.ceil(config.epochs * steps_per_epoch)
    eval_every = config.eval_steps or steps_per_epoch
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_scheduler(
        config.scheduler,
        optimizer,
        num_warmup_steps=math.ceil(config.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    last_dir, adapter_dir = output_dir / "checkpoint-last", output_dir / "adapter"
    state = TrainState(total_steps=total_steps)
    if config.resume:
        if not (last_dir / "state.json").is_file():
            raise VoxadaptError(f"--resume: no checkpoint in {last_dir}")
        state = _load_checkpoint(last_dir, model, optimizer, scheduler)
        state.total_steps = total_steps
        if dist.main:
            log.info("resumed at step %d of %d (epoch %d)", state.step, total_steps, state.epoch)
    elif dist.main and last_dir.exists():
        log.warning("%s exists: starting over (use --resume to continue it)", last_dir)
    if dist.main:
        save_config(config, output_dir / "config.yaml")

    writer = None
    if dist.main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(output_dir / "tensorboard"), purge_step=state.step + 1)
    adapter_extra = {
        "base_model": str(config.model),
        "quantization": config.quantization,
        "language": config.language,
    }
    collator = Collator(spec, prompts.pad_id)

    def log_record(record: dict[str, Any]) -> None:
        state.log_history.append(record)
        if dist.main:
            for key, value in record.items():
                if key not in ("step", "epoch") and isinstance(value, (int, float)):
                    writer.add_scalar(
                        key.replace("eval_", "eval/").replace("train_", "train/"),
                        value,
                        record["step"],
                    )
            writer.flush()
            with open(output_dir / "log.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")

    def save_state() -> None:
        if dist.main:
            _save_checkpoint(last_dir, model, optimizer, scheduler, state)
            with atomic_write(output_dir / "trainer_state.json") as handle:
                json.dump(state.__dict__, handle, indent=1)

    def run_eval() -> bool:
        """Evaluate, keep the best adapter; True if early stopping says stop."""
        if valid_set is None:
            return False
        started = time.perf_counter()
        metrics = evaluate_cer(model, valid_set, config, dist, autocast_dtype)
        metrics["eval_seconds"] = time.perf_counter() - started
        improved = state.best_cer is None or metrics["eval_cer"] < state.best_cer
        if improved:
            state.best_cer, state.best_step = metrics["eval_cer"], state.step
            state.evals_without_improvement = 0
            if dist.main:
                save_adapter(
                    model,
                    adapter_dir,
                    options,
                    {**adapter_extra, "step": state.step, "eval_cer": state.best_cer},
                )
        else:
            state.evals_without_improvement += 1
        log_record(
            {"step": state.step, "epoch": state.epoch, **metrics, "best_cer": state.best_cer}
        )
        if dist.main:
            log.info(
                "step %d: eval CER %.4f WER %.4f (best %.4f at step %s)",
                state.step,
                metrics["eval_cer"],
                metrics["eval_wer"],
                state.best_cer,
                state.best_step,
            )
        patience = config.early_stopping_patience
        return bool(patience and state.evals_without_improvement >= patience)

    from tqdm.auto import tqdm

    model.train()
    progress = tqdm(
        total=total_steps,
        initial=state.step,
        desc="train",
        unit="step",
        disable=not dist.main or None,
    )
    window_loss, window_samples, window_start = 0.0, 0, time.perf_counter()
    stop_early = False
    with _StopFlag() as stop:
        while state.step < total_steps and not stop_early:
            order = list(range(len(train_set)))
            random.Random(config.seed * 1_000_003 + state.epoch).shuffle(order)
            shard = order[dist.rank :: dist.world]
            # every rank runs the same number of micro-batches (pad by wrapping around)
            needed = micro_per_epoch * config.batch_size
            shard = (shard * math.ceil(needed / max(1, len(shard))))[:needed]
            start = state.micro_batches_in_epoch * config.batch_size
            loader = DataLoader(
                train_set,
                batch_size=config.batch_size,
                sampler=shard[start:],
                collate_fn=collator,
                num_workers=config.num_workers,
                worker_init_fn=_ignore_sigint if config.num_workers else None,
                persistent_workers=False,
            )
            micro = 0
            for batch in loader:
                batch = {k: v.to(dist.device) for k, v in batch.items()}
                batch["input_features"] = batch["input_features"].to(input_dtype(model))
                with autocast(dist.device, autocast_dtype):
                    loss = label_positions_loss(forward_model, batch)
                (loss / config.grad_accum).backward()
                window_loss += float(loss.detach()) / config.grad_accum
                window_samples += batch["input_ids"].shape[0]
                micro += 1
                state.micro_batches_in_epoch += 1
                epoch_done = state.micro_batches_in_epoch >= micro_per_epoch
                if micro % config.grad_accum and not epoch_done:
                    continue
                for parameter in parameters:
                    if parameter.grad is None:
                        parameter.grad = torch.zeros_like(parameter)
                    _all_reduce_mean(parameter.grad, dist)
                grad_norm = torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state.step += 1
                progress.update()
                if epoch_done:
                    state.epoch += 1
                    state.micro_batches_in_epoch = 0
                if state.step % config.logging_steps == 0 or state.step == total_steps:
                    steps_in_window = (state.step - 1) % config.logging_steps + 1
                    loss_value = _all_reduce_mean(
                        torch.tensor(window_loss / steps_in_window), dist
                    ).item()
                    elapsed = time.perf_counter() - window_start
                    record = {
                        "step": state.step,
                        "epoch": state.epoch,
                        "train_loss": loss_value,
                        "learning_rate": scheduler.get_last_lr()[0],
                        "grad_norm": float(grad_norm),
                        "samples_per_second": window_samples * dist.world / elapsed,
                    }
                    log_record(record)
                    progress.set_postfix(loss=f"{loss_value:.4f}")
                    window_loss, window_samples, window_start = 0.0, 0, time.perf_counter()
                if state.step % eval_every == 0 and state.step < total_steps:
                    stop_early = run_eval()
                    save_state()
                flag = torch.tensor(float(stop.requested))
                if _all_reduce_mean(flag, dist).item() > 0:  # every rank stops at the same step
                    save_state()
                    progress.close()
                    raise TrainingInterrupted(
                        f"interrupted at step {state.step}/{total_steps}; checkpoint saved in "
                        f"{last_dir}; continue with --resume"
                    )
                if state.step >= total_steps or stop_early or epoch_done:
                    break
    progress.close()
    if not stop_early:
        stop_early = run_eval()
    save_state()
    if dist.main:
        if valid_set is None:
            save_adapter(model, adapter_dir, options, {**adapter_extra, "step": state.step})
        writer.close()
    if stop_early and dist.main:
        log.info("early stopping: no better CER in %d evaluations", config.early_stopping_patience)
    if dist.world > 1:
        torch.distributed.barrier()
    return TrainResult(output_dir, adapter_dir, state, n_trainable)


def resolved(config: TrainConfig, **changes: Any) -> TrainConfig:
    """A copy of `config` with changes (used by demo and tests)."""
    return replace(config, **changes)
