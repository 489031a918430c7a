"""The training recipe: projector-only (Q)LoRA on Voxtral with CER-selected checkpoints.

Our own small loop rather than HF Trainer: only the projector trains, so gradients are
all-reduced by hand across ranks (no DDP wrapper around a 4-bit model), and checkpoints hold
only trainable weights. Evaluation decodes the valid set with the same engine
(`decoding.Transcriber`) and scores it with the same functions (`metrics.score_row`,
`corpus_metrics`) as `voxadapt evaluate`, so the CER that selects the best adapter is the CER
`evaluate` reports for it. `Trainer` reads as a recipe: `setup()`, `fit()`, `save_checkpoint()`.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import random
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

from voxadapt.audio import AudioError
from voxadapt.augment import SpecAugmentOptions
from voxadapt.config import Config, load_yaml, option, save_config, to_jsonable
from voxadapt.data import IGNORE_INDEX, Collator, PromptBuilder, TranscriptionDataset
from voxadapt.decoding import (
    AudioItem,
    DecodeOptions,
    FeatureSource,
    Transcriber,
    ignore_stop_signals,
)
from voxadapt.errors import ConfigError, StageInterrupted, VoxadaptError
from voxadapt.features import FeatureSpec, FeatureStore
from voxadapt.manifest import (
    Utterance,
    atomic_write,
    check_output_dir,
    honour_umask,
    read_manifest,
)
from voxadapt.metrics import corpus_metrics, score_row
from voxadapt.model import (
    DEFAULT_MODEL,
    DTYPES,
    PROJECTOR_MODES,
    QUANTIZATIONS,
    AdapterOptions,
    attach_projector_adapter,
    autocast,
    check_only_projector_trains,
    compute_dtype,
    format_audit,
    input_dtype,
    load_voxtral,
    parameter_audit,
    resolve_dtype,
    save_adapter,
)
from voxadapt.trackers import TRACKERS, Trackers, missing_libraries, tracker_problems

log = logging.getLogger(__name__)

SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")
# Options that may change on --resume (they do not change what was learned so far).
RESUMABLE_CHANGES = {
    "resume",
    "num_workers",
    "logging_steps",
    "eval_steps",
    "max_steps",
    "epochs",
    "early_stopping_patience",
    "gradient_checkpointing",
    "torch_compile",
    "decode",
}


class TrainingInterrupted(StageInterrupted):
    """Ctrl-C or SIGTERM: a resumable checkpoint was saved."""


class NonFiniteError(VoxadaptError):
    """The loss or the gradient became NaN/inf; nothing from that step was saved."""


@dataclass
class TrainConfig(Config):
    """Options of `voxadapt train` (the YAML keys of `--config`). Defaults follow the seed."""

    model: str = option(DEFAULT_MODEL, help="hub id or local folder", group="data and model")
    train: Path | None = option(
        None,
        help="training manifest (JSONL from `voxadapt prepare`)",
        metavar="JSONL",
        group="data and model",
    )
    valid: Path | None = option(
        None,
        help="validation manifest; CER on it selects the best checkpoint",
        metavar="JSONL",
        group="data and model",
    )
    cache: Path | None = option(
        None,
        help="feature cache from `voxadapt cache` (default: features on the fly)",
        metavar="DIR",
        group="data and model",
    )
    output_dir: Path = option(
        Path("runs/voxadapt"),
        help="where adapter/, checkpoints and logs go",
        metavar="DIR",
        group="data and model",
    )
    quantization: str = option(
        "nf4",
        help="LLM weights (the audio tower, projector and LM head stay unquantized)",
        choices=QUANTIZATIONS,
        group="what trains",
    )
    projector: str = option(
        "lora",
        help="LoRA on the projector, or the full projector",
        choices=PROJECTOR_MODES,
        group="what trains",
    )
    lora_r: int = option(8, help="LoRA rank", group="what trains")
    lora_alpha: int = option(16, help="LoRA alpha", group="what trains")
    lora_dropout: float = option(0.05, help="LoRA dropout", group="what trains")
    dtype: str | None = option(
        None,
        help="compute dtype (default bf16 on capable GPUs, fp32 on CPU)",
        choices=tuple(DTYPES),
        group="what trains",
    )
    gradient_checkpointing: bool = option(
        False, help="recompute LLM activations in backward", group="what trains"
    )
    torch_compile: bool = option(False, help="torch.compile the model", group="what trains")
    epochs: float = option(2.0, help="passes over the training set", group="schedule")
    max_steps: int | None = option(
        None, help="optimizer steps (overrides --epochs)", group="schedule"
    )
    batch_size: int = option(8, help="utterances per device per micro-batch", group="schedule")
    grad_accum: int = option(4, help="micro-batches per optimizer step", group="schedule")
    lr: float = option(1e-4, help="peak learning rate", group="schedule")
    weight_decay: float = option(0.0, help="AdamW weight decay", group="schedule")
    scheduler: str = option(
        "cosine", help="learning-rate schedule", choices=SCHEDULERS, group="schedule"
    )
    warmup_ratio: float = option(0.03, help="warmup, as a share of all steps", group="schedule")
    max_grad_norm: float = option(1.0, help="gradient clipping norm", group="schedule")
    seed: int = option(0, help="shuffling and initialization seed", group="schedule")
    num_workers: int = option(2, help="DataLoader workers per process", group="schedule")
    logging_steps: int = option(10, help="log every N steps", group="logging and evaluation")
    eval_steps: int | None = option(
        200,
        help="evaluate every N steps, and at the end (none: once per epoch)",
        group="logging and evaluation",
    )
    eval_samples: int | None = option(
        None,
        help="evaluate on a fixed random subset of N valid utterances",
        group="logging and evaluation",
    )
    early_stopping_patience: int | None = option(
        None,
        help="stop after N evaluations without a better CER",
        group="logging and evaluation",
    )
    resume: bool = option(False, help="continue from OUTPUT_DIR/checkpoint-last")
    report_to: list[str] = option(
        help=f"experiment trackers, comma-separated: {', '.join(TRACKERS)} (mlflow writes to "
        "OUTPUT_DIR/mlruns unless MLFLOW_TRACKING_URI is set)",
        default_factory=lambda: ["tensorboard"],
        metavar="NAME[,NAME...]",
        group="logging and evaluation",
    )
    speed_perturb: bool = option(
        False,
        help="draw one speed factor per clip per epoch from --speed-factors "
        "(cache them with `voxadapt cache --speed`)",
        group="augmentation",
    )
    speed_factors: list[float] = option(
        help="speed-perturbation factors",
        default_factory=lambda: [0.9, 1.0, 1.1],
        metavar="F[,F...]",
        group="augmentation",
    )
    spec_augment: SpecAugmentOptions = option(
        help="SpecAugment on the training features", default_factory=SpecAugmentOptions
    )
    decode: DecodeOptions = option(
        help="prompt language (training and evaluation) and evaluation decoding",
        default_factory=DecodeOptions,
        flag_prefix="eval-",
    )

    def problems(self) -> list[str]:
        found = super().problems()
        if self.train is None:
            found.append("train manifest is required (--train)")
        for name in ("batch_size", "grad_accum", "logging_steps", "lora_r", "lora_alpha"):
            if getattr(self, name) < 1:
                found.append(f"{name} must be >= 1")
        for name in ("max_steps", "eval_steps", "eval_samples", "early_stopping_patience"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                found.append(f"{name} must be >= 1")
        if not (math.isfinite(self.epochs) and self.epochs > 0) and self.max_steps is None:
            found.append("epochs must be > 0")
        if not (math.isfinite(self.lr) and self.lr >= 0):
            found.append("lr must be >= 0")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            found.append("weight_decay must be >= 0")
        if not 0 <= self.lora_dropout < 1:
            found.append("lora_dropout must be in [0, 1)")
        if not 0 <= self.warmup_ratio < 1:
            found.append("warmup_ratio must be in [0, 1)")
        if not self.max_grad_norm > 0:
            found.append("max_grad_norm must be > 0")
        if self.num_workers < 0:
            found.append("num_workers must be >= 0")
        if not 0 <= self.seed < 2**31:
            found.append("seed must be in [0, 2**31)")
        if not self.speed_factors or not all(0.5 <= s <= 2.0 for s in self.speed_factors):
            found.append("speed_factors must be numbers in [0.5, 2.0]")
        found.extend(tracker_problems(self.report_to))
        if self.early_stopping_patience is not None and self.valid is None:
            found.append("early_stopping_patience needs a valid manifest")
        return found


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
    world_size: int = 1  # processes that trained it: micro-batch offsets are per rank
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
    return _Dist(rank, world, device)


def _all_reduce_sum(tensor: torch.Tensor, dist: _Dist) -> torch.Tensor:
    if dist.world > 1:
        torch.distributed.all_reduce(tensor)
    return tensor


def _all_reduce_mean(tensor: torch.Tensor, dist: _Dist) -> torch.Tensor:
    if dist.world > 1:
        torch.distributed.all_reduce(tensor)
        tensor /= dist.world
    return tensor


class EpochSampler(Sampler[int]):
    """This rank's share of a seeded shuffle of one epoch, from micro-batch `start` on.

    Every rank gets `per_rank` indices (its share wraps around), so all ranks run the same
    number of micro-batches; the order depends only on (seed, epoch), so a resumed run
    continues the same sequence.
    """

    def __init__(self, n: int, *, seed: int, epoch: int, dist: _Dist, per_rank: int, start: int):
        order = list(range(n))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        shard = order[dist.rank :: dist.world] or order
        shard = (shard * math.ceil(per_rank / len(shard)))[:per_rank]
        self.indices = shard[start:]

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class _StopFlag:
    """Ctrl-C or SIGTERM (docker stop, SLURM preemption) sets a flag; the loop saves a
    checkpoint at the next step boundary. A second Ctrl-C aborts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        import threading

        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("%s: saving a checkpoint after this step", signal.Signals(signum).name)

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


def label_positions_loss(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], *, reduction: str = "mean"
) -> torch.Tensor:
    """Causal-LM loss with logits computed only from the batch's first label position on.

    Labels sit at the end of each row (prompt, then transcript), so the LM head is applied to
    the last K positions only: for Voxtral-Mini that skips a 3072 x 131072 projection over
    ~380 prompt/audio positions per clip (~0.3 TFLOP and ~200 MB of fp32 logits) whose
    predictions the loss ignores. Same value as the model's own loss (mean over label tokens);
    `reduction="sum"` gives the sum over label tokens (for token-exact accumulation).
    """
    labels = batch["labels"]
    width = labels.shape[1]
    first = int((labels != IGNORE_INDEX).int().argmax(dim=1).min())
    keep = min(width, width - first + 1)  # + the position that predicts the first label
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, logits_to_keep=keep).logits
    targets = labels[:, width - keep + 1 :]
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(),
        targets.flatten(),
        ignore_index=IGNORE_INDEX,
        reduction=reduction,
    )


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        n: p.detach().to("cpu").contiguous() for n, p in model.named_parameters() if p.requires_grad
    }


def resume_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Options that differ between a checkpoint's config and this run's, except those that
    may change on resume (RESUMABLE_CHANGES)."""
    changed = [
        f"{key}: {saved.get(key)!r} -> {current.get(key)!r}"
        for key in sorted(set(saved) | set(current))
        if key not in RESUMABLE_CHANGES and str(saved.get(key)) != str(current.get(key))
    ]
    # decode.language is also the training prompt's language: it may not change
    old_language = (saved.get("decode") or {}).get("language")
    new_language = (current.get("decode") or {}).get("language")
    if old_language is not None and old_language != new_language:
        changed.append(f"decode.language: {old_language!r} -> {new_language!r}")
    return changed


class Trainer:
    """The recipe: `setup()` builds data, model, optimizer and logs (restoring a checkpoint
    on --resume); `fit()` runs the loop; `save_checkpoint()` writes a resumable state."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.dist = _setup_distributed()
        self.output_dir = Path(config.output_dir)
        self.last_dir = self.output_dir / "checkpoint-last"
        self.adapter_dir = self.output_dir / "adapter"
        self.state = TrainState()
        self.trackers: Trackers | None = None

    # ------------------------------------------------------------------------ setup

    def setup(self) -> None:
        """Validate inputs, then build everything; nothing heavy happens before the checks."""
        if self.dist.main:
            check_output_dir(self.output_dir, "--output-dir")
            missing = missing_libraries(self.config.report_to)
            if missing:
                raise ConfigError("; ".join(missing), missing)
        if self.config.resume:
            self._check_resume()
        self._setup_data()
        self._setup_model()
        self._setup_optimizer()
        if self.config.resume:
            self._restore()
        elif self.dist.main and self.last_dir.exists():
            log.warning("%s exists: starting over (use --resume to continue it)", self.last_dir)
        self._setup_logging()

    def _check_resume(self) -> None:
        old = self.last_dir.with_name(self.last_dir.name + ".old")
        if not (self.last_dir / "state.json").is_file() and (old / "state.json").is_file():
            old.rename(self.last_dir)  # killed between the two renames of save_checkpoint
        if not (self.last_dir / "state.json").is_file():
            raise VoxadaptError(f"--resume: no checkpoint in {self.last_dir}")
        saved_path = self.last_dir / "config.yaml"
        if not saved_path.is_file():
            saved_path = self.output_dir / "config.yaml"
        if not saved_path.is_file():
            return
        changed = resume_differences(load_yaml(saved_path), to_jsonable(self.config))
        if changed:
            raise ConfigError(
                f"--resume: options differ from the checkpoint's ({'; '.join(changed)}); "
                f"resume with the same values or train into another --output-dir"
            )

    def _setup_data(self) -> None:
        from transformers import AutoProcessor

        config = self.config
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
        self.spec = FeatureSpec.from_feature_extractor(processor.feature_extractor)
        self.prompts = PromptBuilder(processor, self.spec)
        self.store = FeatureStore(config.cache, self.spec) if config.cache else None
        language = config.decode.language
        self.train_set = TranscriptionDataset(
            train_utts,
            self.prompts,
            store=self.store,
            language=language,
            augment=config.spec_augment,
            speeds=config.speed_factors if config.speed_perturb else (1.0,),
            seed=config.seed,
        )
        self.valid_set = (
            TranscriptionDataset(valid_utts, self.prompts, store=self.store, language=language)
            if valid_utts
            else None
        )
        self.collator = Collator(self.spec, self.prompts.pad_id)

    def _setup_model(self) -> None:
        config, dist = self.config, self.dist
        model = load_voxtral(
            config.model,
            quantization=config.quantization,
            device=dist.device,
            dtype=resolve_dtype(config.dtype),
        )
        self.autocast_dtype = compute_dtype(model)
        if dist.main:
            where = "bitsandbytes on CPU" if dist.device.type == "cpu" else str(dist.device)
            dtype_name = str(self.autocast_dtype or torch.float32).removeprefix("torch.")
            log.info(
                "model %s: LLM quantization %s (%s), compute dtype %s",
                config.model,
                config.quantization,
                where,
                dtype_name,
            )
        if config.gradient_checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        model.config.use_cache = False
        self.adapter_options = AdapterOptions(
            config.projector, config.lora_r, config.lora_alpha, config.lora_dropout
        )
        torch.manual_seed(config.seed)  # identical adapter init on every rank
        self.model = attach_projector_adapter(model, self.adapter_options)
        if dist.main:
            log.info("parameters:\n%s", format_audit(parameter_audit(self.model)))
        self.n_trainable = check_only_projector_trains(self.model)
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.forward_model = torch.compile(self.model) if config.torch_compile else self.model
        self.transcriber = Transcriber(self.model, self.prompts, dist.device)

    def _setup_optimizer(self) -> None:
        from transformers import get_scheduler

        config = self.config
        per_rank = math.ceil(len(self.train_set) / (config.batch_size * self.dist.world))
        self.micro_per_epoch = per_rank
        steps_per_epoch = max(1, math.ceil(per_rank / config.grad_accum))
        self.total_steps = config.max_steps or math.ceil(config.epochs * steps_per_epoch)
        self.eval_every = config.eval_steps or steps_per_epoch
        self.optimizer = torch.optim.AdamW(
            self.parameters, lr=config.lr, weight_decay=config.weight_decay
        )
        self.scheduler = get_scheduler(
            config.scheduler,
            self.optimizer,
            num_warmup_steps=math.ceil(config.warmup_ratio * self.total_steps),
            num_training_steps=self.total_steps,
        )
        self.state.total_steps = self.total_steps
        self.state.world_size = self.dist.world

    def _restore(self) -> None:
        """Load checkpoint-last: trainable weights, optimizer, scheduler, progress."""
        from safetensors.torch import load_file

        weights = load_file(str(self.last_dir / "trainable.safetensors"))
        parameters = dict(self.model.named_parameters())
        unknown = [n for n in weights if n not in parameters]
        if unknown:
            raise VoxadaptError(
                f"checkpoint {self.last_dir} does not match this model/projector mode "
                f"(e.g. {unknown[0]})"
            )
        with torch.no_grad():
            for name, tensor in weights.items():
                parameters[name].copy_(tensor)
        # Our own file, and weights_only refuses anything but tensors and plain containers.
        saved = torch.load(self.last_dir / "optimizer.pt", map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        state = json.loads((self.last_dir / "state.json").read_text(encoding="utf-8"))
        self.state = TrainState(**state)
        if self.state.world_size != self.dist.world:
            raise ConfigError(
                f"--resume: the checkpoint was trained by {self.state.world_size} processes, "
                f"this run has {self.dist.world}: resume with the same number (the epoch's "
                "position is counted per process)"
            )
        self.state.total_steps = self.total_steps
        self.state.world_size = self.dist.world
        if self.dist.main:
            log.info(
                "resumed at step %d of %d (epoch %d)",
                self.state.step,
                self.total_steps,
                self.state.epoch,
            )

    def _setup_logging(self) -> None:
        if not self.dist.main:
            return
        save_config(self.config, self.output_dir / "config.yaml")
        # log.jsonl holds exactly the checkpoint's history: records of steps after it (a
        # killed run) are dropped, so a resumed run never logs a step twice.
        with atomic_write(self.output_dir / "log.jsonl") as handle:
            for record in self.state.log_history:
                handle.write(json.dumps(record) + "\n")
        self.trackers = Trackers(
            self.config.report_to,
            self.output_dir,
            run_name=self.output_dir.name,
            resume_step=self.state.step,
        )
        self.trackers.log_params(to_jsonable(self.config))

    # ------------------------------------------------------------------------ loop

    def fit(self) -> None:
        """Train to total_steps (or early stop); evaluate every eval_every steps and at the end."""
        from tqdm.auto import tqdm

        self.model.train()
        self.progress = tqdm(
            total=self.total_steps,
            initial=self.state.step,
            desc="train",
            unit="step",
            disable=not self.dist.main or None,
        )
        self._reset_window()
        stop_early = False
        with _StopFlag() as stop:
            while self.state.step < self.total_steps and not stop_early:
                stop_early = self._train_epoch(stop)
        self.progress.close()
        if not stop_early:
            stop_early = self.evaluate()
        self.save_checkpoint()
        if self.dist.main and self.valid_set is None:
            self._save_adapter()
        if stop_early and self.dist.main:
            log.info(
                "early stopping: no better CER in %d evaluations",
                self.config.early_stopping_patience,
            )

    def _train_epoch(self, stop: _StopFlag) -> bool:
        """Run the rest of the current epoch; True if early stopping says stop."""
        config, state = self.config, self.state
        self.train_set.epoch = state.epoch  # workers copy the dataset when the loader starts
        sampler = EpochSampler(
            len(self.train_set),
            seed=config.seed,
            epoch=state.epoch,
            dist=self.dist,
            per_rank=self.micro_per_epoch * config.batch_size,
            start=state.micro_batches_in_epoch * config.batch_size,
        )
        loader = DataLoader(
            self.train_set,
            batch_size=config.batch_size,
            sampler=sampler,
            collate_fn=self.collator,
            num_workers=config.num_workers,
            worker_init_fn=ignore_stop_signals if config.num_workers else None,
            persistent_workers=False,
        )
        batches = iter(loader)
        while True:
            left = self.micro_per_epoch - state.micro_batches_in_epoch
            group = list(itertools.islice(batches, min(config.grad_accum, left)))
            if not group:
                return False
            self.accumulate(group)
            state.micro_batches_in_epoch += len(group)
            epoch_done = state.micro_batches_in_epoch >= self.micro_per_epoch
            self._optimizer_step()
            if epoch_done:
                state.epoch += 1
                state.micro_batches_in_epoch = 0
            stop_early = self._after_step()
            self._stop_if_requested(stop)
            if state.step >= self.total_steps or stop_early or epoch_done:
                return stop_early

    def accumulate(self, group: list[dict[str, Any]]) -> None:
        """Gradients of one optimizer step: the mean loss over every label token of the
        step's micro-batches on every rank, whatever the split into micro-batches and ranks
        (a short last step of an epoch included), as if it were one batch.

        Each micro-batch contributes its summed token losses divided by the step's global
        token count; `reduce_gradients` then sums over ranks.
        """
        # LoRA dropout draws from torch's RNG: seeding it per (seed, step, rank) makes a
        # resumed run draw exactly what an uninterrupted one would.
        torch.manual_seed(self.config.seed * 1_000_003 + self.state.step * 1_009 + self.dist.rank)
        local = sum(int((batch["labels"] != IGNORE_INDEX).sum()) for batch in group)
        tokens = _all_reduce_sum(torch.tensor(float(local)), self.dist).item()
        for batch in group:
            ids = batch.pop("ids")
            batch = {k: v.to(self.dist.device) for k, v in batch.items()}
            batch["input_features"] = batch["input_features"].to(input_dtype(self.model))
            with autocast(self.dist.device, self.autocast_dtype):
                loss_sum = label_positions_loss(self.forward_model, batch, reduction="sum")
            if not torch.isfinite(loss_sum):
                self.window["bad_ids"].extend(ids)
            (loss_sum / max(tokens, 1.0)).backward()
            self.window["loss_sum"] += float(loss_sum.detach())
            self.window["samples"] += batch["input_ids"].shape[0]
        self.window["tokens"] += local

    def reduce_gradients(self) -> None:
        """Sum the gradients over ranks (each rank's share is already divided by the
        step's global token count)."""
        for parameter in self.parameters:
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
            _all_reduce_sum(parameter.grad, self.dist)

    def _optimizer_step(self) -> None:
        self.reduce_gradients()
        grad_norm = float(
            torch.nn.utils.clip_grad_norm_(self.parameters, self.config.max_grad_norm)
        )
        if not math.isfinite(grad_norm):  # identical on every rank after the all-reduce
            self.optimizer.zero_grad(set_to_none=True)
            bad = self.window["bad_ids"]
            where = f" (non-finite loss on {', '.join(bad[:5])})" if bad else ""
            kept = (
                f"; the best adapter so far is in {self.adapter_dir}"
                if (self.state.best_step is not None)
                else ""
            )
            raise NonFiniteError(
                f"non-finite gradient at step {self.state.step + 1}{where}: training stopped, "
                f"nothing from this step was saved{kept}; check the data "
                "(`voxadapt cache` re-verifies the feature cache) or lower --lr"
            )
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        self.window["grad_norm"] = grad_norm
        self.progress.update()

    def _after_step(self) -> bool:
        """Log, evaluate and checkpoint as scheduled; True if early stopping says stop."""
        step, config = self.state.step, self.config
        if step % config.logging_steps == 0 or step == self.total_steps:
            self._log_training(step)
        if step % self.eval_every == 0 and step < self.total_steps:
            stop_early = self.evaluate()
            self.save_checkpoint()
            self.window["start"] = time.perf_counter()  # samples/s counts training time only
            return stop_early
        return False

    def _stop_if_requested(self, stop: _StopFlag) -> None:
        flag = torch.tensor(float(stop.requested))
        if _all_reduce_mean(flag, self.dist).item() > 0:  # every rank stops at the same step
            self.save_checkpoint()
            self.progress.close()
            raise TrainingInterrupted(
                f"interrupted at step {self.state.step}/{self.total_steps}; checkpoint saved "
                f"in {self.last_dir}; continue with --resume"
            )

    def _reset_window(self) -> None:
        self.window: dict[str, Any] = {
            "loss_sum": 0.0,
            "tokens": 0,
            "samples": 0,
            "start": time.perf_counter(),
            "bad_ids": [],
            "grad_norm": 0.0,
        }

    def _log_training(self, step: int) -> None:
        # the mean over every label token of the window's steps, on all ranks
        totals = torch.tensor([self.window["loss_sum"], float(self.window["tokens"])])
        loss_sum, tokens = _all_reduce_sum(totals, self.dist).tolist()
        loss_value = loss_sum / max(tokens, 1.0)
        elapsed = time.perf_counter() - self.window["start"]
        self._log_record(
            {
                "step": step,
                "epoch": self.state.epoch,
                "loss": loss_value,
                "learning_rate": self.scheduler.get_last_lr()[0],
                "grad_norm": self.window["grad_norm"],
                "samples_per_second": self.window["samples"] * self.dist.world / elapsed,
            }
        )
        self.progress.set_postfix(loss=f"{loss_value:.4f}")
        if self.dist.main and not sys.stderr.isatty():  # log files and SLURM: a line per log
            log.info("step %d/%d: loss %.4f", step, self.total_steps, loss_value)
        self._reset_window()

    def _log_record(self, record: dict[str, Any]) -> None:
        self.state.log_history.append(record)
        if not self.dist.main:
            return
        assert self.trackers is not None
        self.trackers.log({k: v for k, v in record.items() if k != "step"}, record["step"])
        with open(self.output_dir / "log.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------------ evaluation

    def evaluate(self) -> bool:
        """CER on the valid set; keep the best adapter. True if early stopping says stop."""
        if self.valid_set is None:
            return False
        started = time.perf_counter()
        metrics = self._valid_metrics()
        metrics["eval_seconds"] = time.perf_counter() - started
        state, cer = self.state, metrics["eval_cer"]
        if cer is not None and (state.best_cer is None or cer < state.best_cer):
            state.best_cer, state.best_step = cer, state.step
            state.evals_without_improvement = 0
            if self.dist.main:
                self._save_adapter()
        else:
            state.evals_without_improvement += 1
        self._log_record(
            {"step": state.step, "epoch": state.epoch, **metrics, "best_cer": state.best_cer}
        )
        if self.dist.main:
            log.info(
                "step %d: eval CER %s WER %s (best %s at step %s)",
                state.step,
                _fmt(cer),
                _fmt(metrics["eval_wer"]),
                _fmt(state.best_cer),
                state.best_step,
            )
        patience = self.config.early_stopping_patience
        return bool(patience and state.evals_without_improvement >= patience)

    def _valid_metrics(self) -> dict[str, Any]:
        """Decode this rank's share with the decoding engine; score all shares together."""
        valid = self.valid_set
        assert valid is not None
        mine = list(range(self.dist.rank, len(valid), self.dist.world))
        items = [AudioItem.from_utterance(valid.utterances[i]) for i in mine]
        source = FeatureSource(
            items, self.spec, store=self.store, keys=[valid.keys[i] for i in mine]
        )
        rows, failed = [], 0
        for batch in self.transcriber.transcribe(items, self.config.decode, source):
            for item, result in batch:
                if isinstance(result, AudioError):
                    failed += 1
                    continue
                rows.append({"id": item.id, **score_row(item.record["text"], result.text)})
        if self.dist.world > 1:
            gathered: list[Any] = [None] * self.dist.world
            torch.distributed.all_gather_object(gathered, (rows, failed))
            rows = [row for part, _ in gathered for row in part]
            failed = sum(n for _, n in gathered)
        metrics = corpus_metrics(rows)
        return {
            "eval_cer": metrics.get("cer"),
            "eval_wer": metrics.get("wer"),
            "eval_utterances": len(rows),
            "eval_failed": failed,
        }

    # ------------------------------------------------------------------ saving

    def _save_adapter(self) -> None:
        info = {
            "base_model": str(self.config.model),
            "quantization": self.config.quantization,
            "language": self.config.decode.language,
            "step": self.state.step,
        }
        if self.state.best_step == self.state.step and self.state.best_cer is not None:
            info["eval_cer"] = self.state.best_cer
        save_adapter(self.model, self.adapter_dir, self.adapter_options, info)

    def save_checkpoint(self) -> None:
        """checkpoint-last (atomically: temp folder, then rename) and trainer_state.json."""
        if not self.dist.main:
            return
        from safetensors.torch import save_file

        path = self.last_dir
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(_trainable_state(self.model), str(tmp / "trainable.safetensors"))
        torch.save(
            {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
            tmp / "optimizer.pt",
        )
        (tmp / "state.json").write_text(json.dumps(self.state.__dict__, indent=1), "utf-8")
        save_config(self.config, tmp / "config.yaml")
        honour_umask(tmp)
        old = path.with_name(path.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
        with atomic_write(self.output_dir / "trainer_state.json") as handle:
            json.dump(self.state.__dict__, handle, indent=1)

    def close(self, *, finished: bool = True) -> None:
        """End the trackers' runs; after a finished run, wait for every rank."""
        if self.trackers is not None:
            self.trackers.close()
            self.trackers = None
        if finished and self.dist.world > 1:
            torch.distributed.barrier()


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def train(config: TrainConfig) -> TrainResult:
    """Train the projector; see TrainConfig. Returns where the adapter went and the state."""
    trainer = Trainer(config)
    try:
        trainer.setup()
        trainer.fit()
    except BaseException:  # trackers end their runs after an interrupt or an error too
        trainer.close(finished=False)
        raise
    trainer.close()
    return TrainResult(trainer.output_dir, trainer.adapter_dir, trainer.state, trainer.n_trainable)
