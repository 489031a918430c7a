"""Training's building blocks: the `train` config and its resume rules, progress state,
the epoch sampler, distributed helpers, the stop flag and the label-positions loss.

The recipe that puts them together is `voxadapt.stages.train.Trainer`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxadapt.augment import SpecAugmentOptions, speed_factor_problems
from voxadapt.config import Config, option
from voxadapt.data import IGNORE_INDEX
from voxadapt.decoding import (
    DecodeOptions,
)
from voxadapt.errors import StageInterrupted, VoxadaptError
from voxadapt.model import (
    DEFAULT_MODEL,
    DTYPES,
    ENCODER_LORA_TARGETS,
    LLM_LORA_TARGETS,
    PROJECTOR_MODES,
    QUANTIZATIONS,
    TRAIN_PARTS,
    AdapterOptions,
    PartLora,
)
from voxadapt.trackers import TRACKERS, tracker_problems

if TYPE_CHECKING:
    import torch

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


# How messages name each part that `--train-modules` chooses.
PART_TITLES = {"projector": "the projector", "llm": "the LLM", "encoder": "the audio encoder"}


def part_option(part: str, default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """An option that configures one part (`TRAIN_PARTS`): validation refuses it, set to
    anything but its default, when --train-modules does not train that part. An `unordered`
    list (LoRA targets) is a set: --resume compares it as one."""
    unordered = kwargs.pop("unordered", False)
    item = option(default, **kwargs)
    return dataclasses.field(
        default=item.default,
        default_factory=item.default_factory,
        metadata={**item.metadata, "part": part, "unordered": unordered},
    )


class TrainingInterrupted(StageInterrupted):
    """Ctrl-C or SIGTERM: a resumable checkpoint was saved."""


class NonFiniteError(VoxadaptError):
    """The loss or the gradient became NaN/inf; nothing from that step was saved."""


@dataclass
class TrainConfig(Config):
    """Options of `voxadapt train` (the YAML keys of `--config`). Defaults follow the seed."""

    model: str = option(
        DEFAULT_MODEL, help="hub id or local folder", group="data and model", model_reference=True
    )
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
    lora_r: int = part_option("projector", 8, help="the projector's LoRA rank", group="what trains")
    lora_alpha: int = part_option(
        "projector", 16, help="the projector's LoRA alpha", group="what trains"
    )
    lora_dropout: float = option(0.05, help="LoRA dropout (every part)", group="what trains")
    train_modules: list[str] = option(
        help="the parts that learn, comma-separated: projector, llm (LoRA on the language "
        "model's 4-bit layers), encoder (LoRA on the audio encoder); everything else is "
        "frozen and the parameter audit refuses to start otherwise (default: projector)",
        default_factory=lambda: ["projector"],
        metavar="PART[,PART...]",
        group="what trains",
    )
    llm_lora_r: int = part_option(
        "llm", 16, help="LoRA rank of the language model", group="what trains"
    )
    llm_lora_alpha: int = part_option(
        "llm", 32, help="LoRA alpha of the language model", group="what trains"
    )
    llm_lora_targets: list[str] = part_option(
        "llm",
        help="the language model's linear layers that get LoRA: leaf names (q_proj) or "
        "dotted suffixes (mlp.down_proj), looked up inside the language model only (default: "
        + ",".join(LLM_LORA_TARGETS)
        + ")",
        default_factory=lambda: list(LLM_LORA_TARGETS),
        metavar="NAME[,NAME...]",
        group="what trains",
        unordered=True,
    )
    encoder_lora_r: int = part_option(
        "encoder", 16, help="LoRA rank of the audio encoder", group="what trains"
    )
    encoder_lora_alpha: int = part_option(
        "encoder", 32, help="LoRA alpha of the audio encoder", group="what trains"
    )
    encoder_lora_targets: list[str] = part_option(
        "encoder",
        help="the audio encoder's linear layers that get LoRA (as --llm-lora-targets, looked "
        "up inside the encoder only; default: " + ",".join(ENCODER_LORA_TARGETS) + ")",
        default_factory=lambda: list(ENCODER_LORA_TARGETS),
        metavar="NAME[,NAME...]",
        group="what trains",
        unordered=True,
    )
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
    resume: bool = option(False, help="continue from OUTPUT_DIR/checkpoint-last", invocation=True)
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

    def __post_init__(self) -> None:
        # "llm,projector" and "projector,llm" are one choice: kept in TRAIN_PARTS order, so
        # the saved config, the adapter and --resume compare equal choices as equal
        if isinstance(self.train_modules, list) and set(self.train_modules) <= set(TRAIN_PARTS):
            self.train_modules = sorted(set(self.train_modules), key=TRAIN_PARTS.index)
        super().__post_init__()

    def adapter_options(self) -> AdapterOptions:
        """What learns, as `voxadapt.model.attach_adapter` takes it."""
        return AdapterOptions(
            self.projector,
            self.lora_r,
            self.lora_alpha,
            self.lora_dropout,
            tuple(self.train_modules),
            PartLora(self.llm_lora_r, self.llm_lora_alpha, tuple(self.llm_lora_targets)),
            PartLora(
                self.encoder_lora_r, self.encoder_lora_alpha, tuple(self.encoder_lora_targets)
            ),
        )

    def problems(self) -> list[str]:
        found = super().problems()
        if self.train is None:
            found.append("train is required (the training manifest)")
        for name in (
            "batch_size",
            "grad_accum",
            "logging_steps",
            "lora_r",
            "lora_alpha",
            "llm_lora_r",
            "llm_lora_alpha",
            "encoder_lora_r",
            "encoder_lora_alpha",
        ):
            if getattr(self, name) < 1:
                found.append(f"{name} must be >= 1")
        found += _train_modules_problems(self)
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
        found += speed_factor_problems(self.speed_factors, "--speed-factors")
        found.extend(tracker_problems(self.report_to))
        if self.early_stopping_patience is not None and self.valid is None:
            found.append("early_stopping_patience needs a valid manifest")
        return found


def _train_modules_problems(config: TrainConfig) -> list[str]:
    found = []
    unknown = [part for part in config.train_modules if part not in TRAIN_PARTS]
    if unknown or not config.train_modules:
        found.append(
            f"train_modules must name one or more of {', '.join(TRAIN_PARTS)}"
            + (f", not {', '.join(unknown)}" if unknown else "")
        )
    if config.projector == "full" and "projector" not in config.train_modules:
        found.append("projector full needs the projector in train_modules")
    if not unknown and config.train_modules:
        found += _idle_part_options(config)
    for part in ("llm", "encoder"):
        targets = getattr(config, f"{part}_lora_targets")
        if not targets:
            found.append(f"{part}_lora_targets must name at least one layer")
        bad = [t for t in targets if not re.fullmatch(r"[A-Za-z_]\w*(\.\w+)*", t)]
        if bad:
            found.append(
                f"{part}_lora_targets: {', '.join(map(repr, bad))} is not a layer name "
                "(a leaf name such as q_proj, or a dotted suffix such as mlp.down_proj)"
            )
    return found


def _option_default(item: dataclasses.Field) -> Any:
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory()
    return item.default


def _idle_part_options(config: TrainConfig) -> list[str]:
    """Options that configure a part --train-modules leaves out, set to other than their
    default: accepted silently they would do nothing (`--llm-lora-r 64` beside
    `--train-modules projector`). A default cannot be told from the same value given, and
    means the same."""
    found = []
    chosen = ",".join(config.train_modules)
    for item in dataclasses.fields(config):
        part = item.metadata.get("part")
        if part is None or part in config.train_modules:
            continue
        value, default = getattr(config, item.name), _option_default(item)
        if value == default or (item.metadata["unordered"] and set(value) == set(default)):
            continue
        shown = ",".join(map(str, value)) if isinstance(value, list) else value
        found.append(
            f"{item.name} {shown} applies to {PART_TITLES[part]}, which train_modules {chosen} "
            f"does not train: add {part} to train_modules or drop {item.name}"
        )
    return found


def unordered_options() -> set[str]:
    """TrainConfig's list options whose order means nothing (LoRA targets)."""
    return {item.name for item in dataclasses.fields(TrainConfig) if item.metadata.get("unordered")}


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


def _cpu() -> torch.device:
    import torch

    return torch.device("cpu")


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=_cpu)

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Distributed:
    """Single process, or one of WORLD_SIZE processes started by torchrun/accelerate."""
    import torch

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
    return Distributed(rank, world, device)


def all_reduce_sum(tensor: torch.Tensor, dist: Distributed) -> torch.Tensor:
    import torch

    if dist.world > 1:
        torch.distributed.all_reduce(tensor)
    return tensor


def all_reduce_mean(tensor: torch.Tensor, dist: Distributed) -> torch.Tensor:
    import torch

    if dist.world > 1:
        torch.distributed.all_reduce(tensor)
        tensor /= dist.world
    return tensor


class EpochSampler:
    """This rank's share of a seeded shuffle of one epoch, from example `start` on.

    Rank r takes every world-th example of the shuffle from the r-th on, so over all ranks
    every example is seen exactly once per epoch: nothing is repeated to even out the
    shares (a rank may get one example fewer, and an epoch's last micro-batch may be
    short). The order depends only on (seed, epoch), so a resumed run continues the same
    sequence. Any iterable of indices serves a DataLoader as its sampler, so this is not a
    `torch.utils.data.Sampler` subclass (importing this module must not import torch).
    """

    def __init__(self, n: int, *, seed: int, epoch: int, dist: Distributed, start: int):
        order = list(range(n))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        self.indices = order[dist.rank :: dist.world][start:]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class StopFlag:
    """Ctrl-C or SIGTERM (docker stop, SLURM preemption) sets a flag; the loop saves a
    checkpoint at the next step boundary. A second Ctrl-C aborts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
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
    import torch

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


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        n: p.detach().to("cpu").contiguous() for n, p in model.named_parameters() if p.requires_grad
    }


def option_defaults() -> dict[str, Any]:
    """Every TrainConfig option's default, as config.yaml stores it."""
    values = {}
    for item in dataclasses.fields(TrainConfig):
        value = _option_default(item)
        if dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)
        values[item.name] = value
    return json.loads(json.dumps(values, default=str))


def resume_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Options that differ between a checkpoint's config and this run's, except those that
    may change on resume (RESUMABLE_CHANGES). An option the checkpoint's config lacks was
    added since, and that run trained with its default (the projector alone, for
    `train_modules`)."""
    defaults = option_defaults()
    saved = {**{key: defaults[key] for key in current if key in defaults}, **saved}
    unordered = unordered_options()
    changed = []
    for key in sorted(set(saved) | set(current)):
        old, new = saved.get(key), current.get(key)
        if key in RESUMABLE_CHANGES:
            continue
        if key in unordered and isinstance(old, list) and isinstance(new, list):
            # a set of layers: the same layers in another order train the same adapter
            if set(map(str, old)) != set(map(str, new)):
                changed.append(f"{key}: {_set_change(old, new)}")
        elif str(old) != str(new):
            changed.append(f"{key}: {old!r} -> {new!r}")
    # decode.language is also the training prompt's language: it may not change
    old_language = (saved.get("decode") or {}).get("language")
    new_language = (current.get("decode") or {}).get("language")
    if old_language is not None and old_language != new_language:
        changed.append(f"decode.language: {old_language!r} -> {new_language!r}")
    return changed


def _set_change(old: list[Any], new: list[Any]) -> str:
    """`adds o_proj, drops v_proj`: how the set `new` differs from `old`."""
    added = [str(x) for x in new if str(x) not in set(map(str, old))]
    dropped = [str(x) for x in old if str(x) not in set(map(str, new))]
    parts = [f"adds {', '.join(added)}"] if added else []
    parts += [f"drops {', '.join(dropped)}"] if dropped else []
    return ", ".join(parts)
