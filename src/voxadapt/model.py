"""Load a speech LLM of any supported family (quantized LLM only), attach the adapter of the
parts that learn, audit what trains. The family (`voxadapt.families`) says which class loads
a model; the parts are found by their module names, which every family shares. Adapters on
disk (writing, reading back, checking their base) are `voxadapt.adapters`."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxadapt.errors import ConfigError, ModelError
from voxadapt.families import VOXTRAL, family_of, load_config

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)

QUANTIZATIONS = ("nf4", "int8", "none")
# Option value -> name of the torch dtype (looked up when a model loads: torch stays unimported
# while the CLI builds its options).
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
PROJECTOR_MODES = ("lora", "full")
PROJECTOR_NAME = "multi_modal_projector"
AUDIO_TOWER_NAME = "audio_tower"
LANGUAGE_MODEL_NAME = "language_model"
# The parts `train --train-modules` may choose, in the order they are always listed.
TRAIN_PARTS = ("projector", "llm", "encoder")
# The parameter audit's group of each part (the LM head is never a part: it stays frozen).
PART_GROUPS = {"projector": "projector", "llm": "language_model", "encoder": "audio_tower"}
# Default LoRA targets per part: the same layer names in every supported family (each
# family declares its own; a test keeps them equal), resolved inside the chosen part.
LLM_LORA_TARGETS = VOXTRAL.llm_lora_targets
ENCODER_LORA_TARGETS = VOXTRAL.encoder_lora_targets
DEFAULT_MODEL = VOXTRAL.default_model


@dataclass(frozen=True)
class PartLora:
    """LoRA shape of one part beside the projector (the LLM or the audio encoder)."""

    r: int = 16
    alpha: int = 32
    # linear layers inside the part: a leaf name (`q_proj`) or a dotted suffix of the path
    # inside the part (`mlp.down_proj`); resolved to full module paths under the part
    targets: tuple[str, ...] = ()


@dataclass(frozen=True)
class AdapterOptions:
    """What learns: the parts, and how each of them is adapted."""

    mode: str = "lora"  # projector: "lora" on its linears, or "full": all its weights
    lora_r: int = 8  # the projector's LoRA
    lora_alpha: int = 16
    lora_dropout: float = 0.05  # every part's LoRA
    train_modules: tuple[str, ...] = ("projector",)  # a subset of TRAIN_PARTS, in its order
    llm: PartLora = field(default_factory=lambda: PartLora(targets=LLM_LORA_TARGETS))
    encoder: PartLora = field(default_factory=lambda: PartLora(targets=ENCODER_LORA_TARGETS))

    @property
    def uses_peft(self) -> bool:
        """One PEFT adapter holds every part's LoRA (and a full projector beside LoRA, as a
        PEFT `modules_to_save`); only a full projector on its own is a plain weights file."""
        return self.mode == "lora" or self.train_modules != ("projector",)

    def part_lora(self, part: str) -> PartLora:
        return {"llm": self.llm, "encoder": self.encoder}[part]


def module_paths(model: nn.Module) -> dict[str, list[str]]:
    """Full module paths of the audio tower, the projector, the language model and the LM
    head in this model.

    Paths differ across transformers versions (`audio_tower` vs `model.audio_tower`), so they
    are read from the model rather than written down.
    """
    paths: dict[str, list[str]] = {
        "audio_tower": [],
        "projector": [],
        "language_model": [],
        "lm_head": [],
    }
    for name, _ in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == AUDIO_TOWER_NAME:
            paths["audio_tower"].append(name)
        elif leaf == PROJECTOR_NAME:
            paths["projector"].append(name)
        elif leaf == LANGUAGE_MODEL_NAME:
            paths["language_model"].append(name)
        elif leaf == "lm_head":
            paths["lm_head"].append(name)
    if not paths["projector"]:
        raise ModelError(
            f"the model has no `{PROJECTOR_NAME}`: voxadapt trains the audio projector of a "
            "speech LLM (Voxtral, Qwen3-ASR)"
        )
    return paths


def projector_linear_names(model: nn.Module) -> list[str]:
    """Full paths of the nn.Linear layers inside the projector (the LoRA targets)."""
    from torch import nn

    projectors = module_paths(model)["projector"]
    names = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and any(name.startswith(p + ".") for p in projectors)
    ]
    if not names:
        raise ModelError(f"`{PROJECTOR_NAME}` has no linear layers to train")
    return names


def _inside(name: str, roots: Sequence[str]) -> str | None:
    """The path of `name` inside the first of `roots` that holds it, else None."""
    for root in roots:
        if name.startswith(root + "."):
            return name[len(root) + 1 :]
    return None


def part_roots(model: nn.Module, part: str) -> list[str]:
    """Full paths of the modules that are `part` (projector, llm or encoder)."""
    return module_paths(model)[PART_GROUPS[part]]


def lora_target_names(model: nn.Module, part: str, targets: Sequence[str]) -> list[str]:
    """Full paths of the linear layers of `part` (llm or encoder) that `targets` name.

    A target is a leaf name (`q_proj`) or a dotted suffix of the path inside the part
    (`self_attn.q_proj`). Only layers inside the part are considered, so the encoder's and
    the LLM's `q_proj`s never catch each other; the LM head is never a target.
    """
    from torch import nn

    paths = module_paths(model)
    roots = paths[PART_GROUPS[part]]
    names, matched = [], set()
    for name, module in model.named_modules():
        inner = _inside(name, roots)
        head = name in paths["lm_head"] or _inside(name, paths["lm_head"]) is not None
        if inner is None or head or not isinstance(module, nn.Linear):
            continue
        hits = [t for t in targets if inner == t or inner.endswith("." + t)]
        if hits:
            names.append(name)
            matched.update(hits)
    unmatched = [t for t in targets if t not in matched]
    if unmatched:
        leaves = sorted(
            {
                name.rsplit(".", 1)[-1]
                for name, module in model.named_modules()
                if isinstance(module, nn.Linear) and _inside(name, roots) is not None
            }
        )
        raise ModelError(
            f"no linear layer of the {part} is named {', '.join(map(repr, unmatched))} "
            f"(--{part}-lora-targets); its linear layers are {', '.join(leaves) or 'none'}"
        )
    return names


def _meta_model(model_id: str | Path) -> nn.Module:
    config = load_config(model_id)
    return family_of(model_id).meta_model(config)


def quantization_config(model_id: str | Path, quantization: str, compute_dtype: torch.dtype):
    """bitsandbytes config that quantizes the LLM only.

    `llm_int8_skip_modules` replaces transformers' default exclusion list (which holds the
    LM head) and matches module paths from the start, so we pass the full paths of the audio
    tower, the projector and the LM head: the projector we train is never a 4-bit layer.
    """
    if quantization == "none":
        return None
    from transformers import BitsAndBytesConfig

    paths = module_paths(_meta_model(model_id))
    skip = sorted({*paths["audio_tower"], *paths["projector"], *paths["lm_head"]})
    if quantization == "nf4":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
            llm_int8_skip_modules=skip,
        )
    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    raise ConfigError(f"quantization must be one of {', '.join(QUANTIZATIONS)}")


def quantized_modules(model: nn.Module) -> list[str]:
    """Paths of bitsandbytes-quantized linear layers."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return []
    kinds = (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
    return [name for name, module in model.named_modules() if isinstance(module, kinds)]


def check_quantization(model: nn.Module, quantization: str) -> None:
    """Raise unless exactly the LLM's linears are quantized (audio tower, projector, head not)."""
    quantized = quantized_modules(model)
    if quantization == "none":
        if quantized:
            raise ModelError(f"{len(quantized)} layers are quantized although quantization=none")
        return
    paths = module_paths(model)
    protected = [*paths["audio_tower"], *paths["projector"], *paths["lm_head"]]
    wrong = [q for q in quantized if any(q == p or q.startswith(p + ".") for p in protected)]
    if wrong:
        raise ModelError(
            f"{len(wrong)} layers that must stay unquantized were quantized, e.g. {wrong[0]}"
        )
    if not quantized:
        raise ModelError(f"quantization={quantization} requested but no layer was quantized")


def resolve_dtype(name: str | None) -> torch.dtype | None:
    """torch dtype of a --dtype name (bf16/fp16/fp32); None stays None (the default)."""
    import torch

    if name is None:
        return None
    if name not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}")
    return getattr(torch, DTYPES[name])


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPUs that support it, else fp16 on GPUs, fp32 on CPU."""
    import torch

    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def attention_implementation(device: torch.device) -> str:
    """flash_attention_2 where installed and on CUDA, else PyTorch SDPA."""
    if device.type == "cuda":
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2"
        except ImportError:
            pass
    return "sdpa"


def load_model(
    model_id: str | Path,
    *,
    quantization: str = "nf4",
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    attn_implementation: str | None = None,
) -> nn.Module:
    """Load the model (its family's class) with only the LLM quantized; verify the result."""
    import torch

    model_class = family_of(model_id).model_class()
    device = torch.device(device)
    dtype = dtype or default_dtype(device)
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("bf16 requested but this GPU does not support it; use --dtype fp16")
    quant = quantization_config(model_id, quantization, dtype)
    kwargs: dict[str, Any] = {
        "dtype": dtype,
        "attn_implementation": attn_implementation or attention_implementation(device),
    }
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = {"": device}
    try:
        model = model_class.from_pretrained(str(model_id), **kwargs)
    except WEIGHT_ERRORS as exc:  # missing, truncated or corrupt weights, wrong shapes
        raise ModelError(f"cannot load {model_id}: {first_line(exc)}") from None
    if quant is None:
        model.to(device)
    check_quantization(model, quantization)
    _keep_cpu_4bit_layout(model)
    return model


def _keep_cpu_4bit_layout(model: nn.Module) -> None:
    """Turn off bitsandbytes' CPU repacking of 4-bit weights.

    On CPUs with AVX512-BF16, Linear4bit repacks its weight at the first eval-mode forward
    and unpacks it whenever a state dict is taken (every adapter save), and the two layouts
    give slightly different results: the CER of the same weights would drift between
    evaluations during training and differ from `voxadapt evaluate`'s. One layout keeps
    every decode of the same weights identical.
    """
    try:
        import bitsandbytes as bnb
    except ImportError:
        return
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit) and hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def freeze_all(model: nn.Module) -> None:
    for parameter in model.parameters():
        parameter.requires_grad_(False)


def attach_adapter(model: nn.Module, options: AdapterOptions) -> nn.Module:
    """Make exactly the chosen parts trainable, everything else frozen.

    One PEFT LoRA adapter holds every part: its targets are full module paths (the
    projector's linears, and the LLM's and encoder's chosen linears, each resolved inside
    its part), the projector's rank and alpha are the adapter's defaults, and the other
    parts' are `rank_pattern`/`alpha_pattern` entries anchored to the part's path. A full
    projector beside LoRA parts is a PEFT `modules_to_save` (a trained copy saved whole);
    a full projector on its own keeps the plain weights file of earlier releases.
    """
    parts = options.train_modules
    unknown = [part for part in parts if part not in TRAIN_PARTS]
    if unknown or not parts:
        raise ConfigError(f"train_modules must be a non-empty subset of {', '.join(TRAIN_PARTS)}")
    if options.mode not in PROJECTOR_MODES:
        raise ConfigError(f"projector mode must be one of {', '.join(PROJECTOR_MODES)}")
    projector_linears = projector_linear_names(model)
    freeze_all(model)
    if not options.uses_peft:  # the full projector alone
        for name, module in model.named_modules():
            if name in projector_linears:
                for parameter in module.parameters():
                    parameter.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    targets = projector_linears if "projector" in parts and options.mode == "lora" else []
    patterns: dict[str, PartLora] = {}
    for part in ("llm", "encoder"):
        if part in parts:
            lora = options.part_lora(part)
            targets = [*targets, *lora_target_names(model, part, lora.targets)]
            patterns |= {re.escape(root) + r"\..+": lora for root in part_roots(model, part)}
    extra: dict[str, Any] = {}
    if patterns:  # absent for the projector alone: its adapter_config.json stays as it was
        extra["rank_pattern"] = {key: lora.r for key, lora in patterns.items()}
        extra["alpha_pattern"] = {key: lora.alpha for key, lora in patterns.items()}
    if "projector" in parts and options.mode == "full":
        extra["modules_to_save"] = part_roots(model, "projector")
    config = LoraConfig(
        r=options.lora_r,
        lora_alpha=options.lora_alpha,
        lora_dropout=options.lora_dropout,
        target_modules=targets,
        bias="none",
        **extra,
    )
    return get_peft_model(model, config)


def attach_projector_adapter(model: nn.Module, options: AdapterOptions) -> nn.Module:
    """Make only the projector trainable (`attach_adapter` with the projector alone)."""
    return attach_adapter(model, options)


@dataclass
class AuditRow:
    group: str
    trainable: int
    total: int


def parameter_audit(model: nn.Module) -> list[AuditRow]:
    """Trainable and total parameters per part: audio tower, projector, LLM, LM head."""
    import torch

    paths = module_paths(model)

    def group_of(name: str) -> str:
        for group in ("audio_tower", "projector", "lm_head"):
            if any(
                name == p or name.startswith(p + ".") or f".{p}." in f".{name}"
                for p in paths[group]
            ):
                return group
        return "language_model"

    rows = {g: AuditRow(g, 0, 0) for g in ("audio_tower", "projector", "language_model", "lm_head")}
    for name, parameter in model.named_parameters():
        row = rows[group_of(name)]
        count = parameter.numel()
        if hasattr(parameter, "quant_state") or parameter.dtype == torch.uint8:
            count *= 2  # bitsandbytes packs two 4-bit weights per byte
        row.total += count
        if parameter.requires_grad:
            row.trainable += count
    return list(rows.values())


def trainable_parameters(model: nn.Module) -> Iterable[tuple[str, nn.Parameter]]:
    return ((n, p) for n, p in model.named_parameters() if p.requires_grad)


def check_trainable_parts(model: nn.Module, parts: Sequence[str]) -> int:
    """Return the number of trainable parameters; raise if any lies outside the chosen
    `parts` (projector, llm, encoder), or if a chosen part has nothing to train."""
    rows = parameter_audit(model)
    chosen = {PART_GROUPS[part] for part in parts}
    outside = [r for r in rows if r.group not in chosen and r.trainable]
    if outside:
        detail = ", ".join(f"{r.group}: {r.trainable}" for r in outside)
        raise ModelError(
            f"refusing to train: parameters outside the chosen parts ({', '.join(parts)}) "
            f"are trainable ({detail})"
        )
    idle = [
        part for part in parts if not any(r.trainable for r in rows if r.group == PART_GROUPS[part])
    ]
    if idle:
        raise ModelError(f"refusing to train: nothing in {', '.join(idle)} is trainable")
    return sum(r.trainable for r in rows)


def check_only_projector_trains(model: nn.Module) -> int:
    """Return the number of trainable parameters; raise if any lies outside the projector."""
    return check_trainable_parts(model, ("projector",))


def describe_parts(options: AdapterOptions) -> dict[str, str]:
    """How each audit group learns under `options` (for the audit table)."""
    learns = {
        group: "frozen" for group in ("audio_tower", "projector", "language_model", "lm_head")
    }
    for part in options.train_modules:
        if part == "projector":
            shape = f"LoRA r={options.lora_r} alpha={options.lora_alpha}"
            learns["projector"] = shape if options.mode == "lora" else "all weights"
        else:
            lora = options.part_lora(part)
            learns[PART_GROUPS[part]] = (
                f"LoRA r={lora.r} alpha={lora.alpha} on {','.join(lora.targets)}"
            )
    return learns


def format_audit(rows: list[AuditRow], learns: dict[str, str] | None = None) -> str:
    """The audit as a table: per part, what is trainable of how many parameters (and how it
    learns, given `describe_parts`)."""
    from voxadapt.report import format_table

    table = [(r.group, f"{r.trainable:,}", f"{r.total:,}") for r in rows]
    table.append(
        ("total", f"{sum(r.trainable for r in rows):,}", f"{sum(r.total for r in rows):,}")
    )
    if learns is None:
        return format_table(table, ("part", "trainable", "parameters"))
    table = [(*row, learns.get(row[0], "")) for row in table]
    return format_table(table, ("part", "trainable", "parameters", "learns"))


def _weight_errors() -> tuple[type[BaseException], ...]:
    from safetensors import SafetensorError

    return (OSError, ValueError, RuntimeError, KeyError, SafetensorError)


# What loading weights raises for a missing, truncated or corrupt file or a shape mismatch.
WEIGHT_ERRORS = _weight_errors()


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    line = text.splitlines()[0]
    return line if len(line) <= 300 else line[:297] + "..."


# ------------------------------------------------------------------------------ dtypes


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast to `dtype` on `device`, or nothing for None (fp32 models)."""
    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def input_dtype(model: nn.Module) -> torch.dtype:
    """dtype the audio tower expects for input_features."""
    import torch

    for name, parameter in model.named_parameters():
        if AUDIO_TOWER_NAME in name and parameter.is_floating_point():
            return parameter.dtype
    return torch.float32


def compute_dtype(model: nn.Module) -> torch.dtype | None:
    """Autocast dtype for 4-bit/8-bit models (their lm_head dtype), None for fp32 models."""
    import torch

    dtype = next((p.dtype for n, p in model.named_parameters() if "lm_head" in n), torch.float32)
    return None if dtype == torch.float32 else dtype


def check_device(name: str | None) -> list[str]:
    """Problems with a --device value (unknown kind, CUDA absent, index out of range)."""
    import torch

    if name is None:
        return []
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        return [f"device {name!r} is not a torch device (cpu, cuda, cuda:1, ...)"]
    if device.type == "cpu":
        return []
    if device.type != "cuda":
        return [f"device {name!r} is not supported: use cpu or cuda[:N]"]
    if not torch.cuda.is_available():
        return [f"device {name!r} requested but CUDA is not available on this machine"]
    if device.index is not None and device.index >= torch.cuda.device_count():
        return [f"device {name!r}: only {torch.cuda.device_count()} CUDA devices"]
    return []
