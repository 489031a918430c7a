"""`voxadapt doctor`: is this machine ready? One table, each line OK or what to do."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import platform
import re
import shutil
import sys
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxadapt import memory  # imports no torch: the counting imports it when it runs
from voxadapt.config import Config, option

WRITES_NO_FILES = True  # reports only

OK, WARN, FAIL, INFO = "ok", "warn", "FAIL", "info"
# Free space under which a training run is likely to stop on a full disk: the base model
# (~9 GB for Voxtral Mini in bf16, ~48 GB for Small), a feature cache (~11 kB per second of
# audio: ~4 GB for 100 h) and checkpoints.
LOW_DISK_GB = 30.0
MIN_PYTHON = (3, 10)
TRAIN_PARTS = ("projector", "llm", "encoder")  # voxadapt.model.TRAIN_PARTS, without torch
# Terminal width when stdout is not a terminal (a pipe, a log file) and COLUMNS is unset.
DEFAULT_COLUMNS = 100
MIN_DETAIL_COLUMNS = 24


@dataclass
class DoctorConfig(Config):
    """Options of `voxadapt doctor`."""

    path: Path = option(
        Path("."), help="folder whose free disk space to check (where runs and caches go)"
    )
    json: bool = option(False, help="print the checks as JSON lines instead of a table")
    plan: bool = option(
        False,
        help="estimate the GPU memory of training and inference instead of checking the "
        "machine: every base in one table, or one base's breakdown with --plan-model "
        "(estimates, not measurements: docs/gpu-memory.md)",
        group="memory plan (--plan)",
    )
    plan_model: str | None = option(
        None,
        help="the base to plan for: voxtral-mini, voxtral-small, qwen3-asr-0.6b, "
        "qwen3-asr-1.7b, their hub ids, or a local model folder (its config.json is read)",
        metavar="MODEL",
        group="memory plan (--plan)",
    )
    train_modules: list[str] = option(
        help="the parts that learn, as train --train-modules: projector, llm, encoder "
        "(default: projector)",
        default_factory=lambda: ["projector"],
        metavar="PART[,PART...]",
        group="memory plan (--plan)",
    )
    micro_batch: int = option(
        8,
        help="clips per micro-batch (train --batch-size); the decoding batch for inference",
        group="memory plan (--plan)",
    )
    clip_s: float = option(
        30.0,
        help="clip length in seconds (the longest clip of a batch)",
        group="memory plan (--plan)",
    )
    quantization: str = option(
        "nf4",
        help="LLM weights: nf4 (bitsandbytes 4-bit, as train's default) or none (bf16)",
        choices=memory.QUANTIZATIONS,
        group="memory plan (--plan)",
    )
    lora_r: int = option(
        8, help="the projector's LoRA rank (train --lora-r)", group="memory plan (--plan)"
    )
    llm_lora_r: int = option(
        16, help="the LLM's LoRA rank (train --llm-lora-r)", group="memory plan (--plan)"
    )
    encoder_lora_r: int = option(
        16, help="the encoder's LoRA rank (train --encoder-lora-r)", group="memory plan (--plan)"
    )
    gradient_checkpointing: bool = option(
        True,
        help="plan for train --gradient-checkpointing (train's default is off: plan that "
        "with --no-gradient-checkpointing)",
        group="memory plan (--plan)",
    )
    gpu_memory_gb: float | None = option(
        None,
        help="the GPU memory to check the plan against, in GiB (nvidia-smi's MiB / 1024: a "
        "'24 GB' card has 24; default: this machine's GPU)",
        metavar="GIB",
        group="memory plan (--plan)",
    )

    def __post_init__(self) -> None:
        if isinstance(self.train_modules, list) and set(self.train_modules) <= set(TRAIN_PARTS):
            self.train_modules = sorted(set(self.train_modules), key=TRAIN_PARTS.index)
        super().__post_init__()

    def problems(self) -> list[str]:
        found = super().problems()
        if not self.plan and self.plan_model is not None:
            found.append("plan_model needs --plan")
        if isinstance(self.plan_model, str) and not self.plan_model.strip():
            found.append("plan_model must name a base or a model folder")
        if not self.plan and self.gpu_memory_gb is not None:
            found.append("gpu_memory_gb needs --plan")
        if isinstance(self.train_modules, list):
            unknown = [part for part in self.train_modules if part not in TRAIN_PARTS]
            if unknown or not self.train_modules:
                found.append(f"train_modules must name one or more of {', '.join(TRAIN_PARTS)}")
        for name in ("micro_batch", "lora_r", "llm_lora_r", "encoder_lora_r"):
            value = getattr(self, name)
            if isinstance(value, int) and value < 1:
                found.append(f"{name} must be at least 1")
        if isinstance(self.clip_s, (int, float)) and not 0 < self.clip_s <= 3600:
            found.append("clip_s must be over 0 and at most 3600 (an hour)")
        if self.gpu_memory_gb is not None and not 0 < self.gpu_memory_gb <= 100_000:
            found.append("gpu_memory_gb must be a positive number of GiB")
        return found


@dataclass
class Check:
    """One line of the report: what was checked, its state, and what was found or to do."""

    name: str
    state: str
    detail: str


@dataclass
class MemoryPlan:
    """What `--plan` found: the whole table, or one base's training and inference."""

    blocks: list[tuple[str, str]]  # ("prose" | "table", text): prose wraps, tables do not
    records: list[dict[str, Any]]  # the same, one JSON object per estimate (--json)

    def text(self, columns: int) -> str:
        """The plan as text, its prose wrapped to `columns`."""
        out = []
        for kind, text in self.blocks:
            out.extend(wrap(text, columns) if kind == "prose" and text else [text])
        return "\n".join(out)


@dataclass
class DoctorResult:
    checks: list[Check] = field(default_factory=list)
    as_json: bool = False  # how the CLI prints it (--json)
    plan: MemoryPlan | None = None  # --plan: the memory plan instead of the checks

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if check.state == FAIL]

    def render(self, columns: int | None = None) -> str:
        """What the CLI prints: the table fitted to `columns` (default: the terminal's
        width, else 100), JSON lines with --json, or the memory plan."""
        columns = columns or shutil.get_terminal_size((DEFAULT_COLUMNS, 24)).columns
        if self.plan is not None:
            if self.as_json:
                return "\n".join(json.dumps(r, ensure_ascii=False) for r in self.plan.records)
            return self.plan.text(columns)
        if self.as_json:
            return "\n".join(json.dumps(c.__dict__, ensure_ascii=False) for c in self.checks)
        text = format_checks(self.checks, columns)
        if self.failed:
            text += f"\n\n{len(self.failed)} problem(s) to fix before training: see FAIL above"
        return text


def _display_width(text: str) -> int:
    """Terminal columns of `text`: Hangul and other wide characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def wrap(text: str, columns: int) -> list[str]:
    """`text` in lines of at most `columns` terminal columns, broken between words (a word
    longer than a line, such as a path, is cut)."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        while _display_width(word) > columns:  # cut at the last character that fits
            head = ""
            for char in word:
                if _display_width(head + char) > columns:
                    break
                head += char
            if line:
                lines.append(line)
                line = ""
            lines.append(head)
            word = word[len(head) :]
        candidate = f"{line} {word}" if line else word
        if _display_width(candidate) <= columns:
            line = candidate
        else:
            lines.append(line)
            line = word
    if line or not lines:
        lines.append(line)
    return lines


def format_checks(checks: list[Check], columns: int) -> str:
    """The checks as a table no wider than `columns`: the detail column wraps."""
    from voxadapt.report import format_table

    header = ("check", "state", "detail / what to do")
    name_width = max(_display_width(c.name) for c in [Check(*header), *checks])
    state_width = max(_display_width(c.state) for c in [Check(*header), *checks])
    detail_width = max(MIN_DETAIL_COLUMNS, columns - name_width - state_width - 4)
    rows = []
    for check in checks:
        first, *rest = wrap(check.detail, detail_width)
        rows.append((check.name, check.state, first))
        rows.extend(("", "", line) for line in rest)
    return format_table(rows, header)


def _python() -> Check:
    version = platform.python_version()
    if sys.version_info[:2] < MIN_PYTHON:
        return Check("python", FAIL, f"{version}: voxadapt needs Python >= 3.10")
    return Check("python", OK, version)


def _torch() -> list[Check]:
    import torch

    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU build"
    checks = [
        Check(
            "torch",
            OK,
            f"{torch.__version__} ({build})",
        )
    ]
    if not torch.cuda.is_available():
        hint = (
            "no GPU: training and decoding run on CPU (fine for the demo and tests; a real "
            "run wants a CUDA GPU"
        )
        hint += (
            ", and this torch is a CPU build: install a CUDA build)"
            if not torch.version.cuda
            else ")"
        )
        checks.append(Check("cuda", WARN, hint))
        return checks
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        free, total = torch.cuda.mem_get_info(index)
        bf16 = "bf16" if torch.cuda.is_bf16_supported() else "no bf16 (use --dtype fp16)"
        state = OK if total >= 16e9 else WARN
        detail = (
            f"{props.name}, {total / 2**30:.0f} GiB ({free / 2**30:.0f} GiB free), "
            f"compute {props.major}.{props.minor}, {bf16}"
        )
        if state == WARN:
            detail += "; under 16 GiB: Voxtral Mini in NF4 fits, keep --batch-size small"
        checks.append(Check(f"gpu {index}", state, detail))
    return checks


def _bitsandbytes() -> Check:
    """Quantize one small layer to NF4 and run it: the 4-bit path training uses."""
    try:
        import bitsandbytes as bnb
        import torch
    except ImportError:
        return Check("bitsandbytes 4-bit", FAIL, "not installed: pip install bitsandbytes")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        layer = bnb.nn.Linear4bit(64, 64, compute_dtype=torch.float32, quant_type="nf4")
        layer = layer.to(device)
        output = layer(torch.ones(2, 64, device=device))
        if not torch.isfinite(output).all():
            raise RuntimeError("non-finite output")
    except Exception as exc:  # any failure of the library is the finding
        message = " ".join(str(exc).split())[:160]
        return Check(
            "bitsandbytes 4-bit",
            FAIL,
            f"{bnb.__version__}: NF4 on {device} failed ({message}); use --quantization none",
        )
    return Check("bitsandbytes 4-bit", OK, f"{bnb.__version__}: NF4 works on {device}")


def _flash_attention() -> Check:
    if importlib.util.find_spec("flash_attn") is None:
        return Check(
            "flash-attention",
            INFO,
            "not installed (optional, CUDA only: pip install -e '.[flash]'; sdpa is used)",
        )
    return Check("flash-attention", OK, importlib.metadata.version("flash-attn"))


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]


def _installed(name: str) -> bool:
    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _extras() -> list[Check]:
    """Each optional extra of the package: installed, or the command that installs it."""
    try:
        requires = importlib.metadata.requires("voxadapt") or []
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        return [Check("extras", WARN, "voxadapt is not installed: pip install -e .")]
    by_extra: dict[str, list[str]] = {}
    for requirement in requires:
        match = re.search(r"extra\s*==\s*['\"]([\w-]+)['\"]", requirement)
        if match:
            by_extra.setdefault(match.group(1), []).append(_requirement_name(requirement))
    checks = []
    for extra, names in sorted(by_extra.items()):
        if extra in ("dev", "flash"):
            continue  # dev is for working on voxadapt; flash has its own line
        missing = [name for name in names if name != "voxadapt" and not _installed(name)]
        if missing:
            detail = f"not installed ({', '.join(missing)}): pip install -e '.[{extra}]'"
            checks.append(Check(f"extra {extra}", INFO, detail))
        else:
            checks.append(Check(f"extra {extra}", OK, ", ".join(names)))
    return checks


def _korean_font() -> Check:
    from voxadapt.fonts import korean_font_file

    path = korean_font_file()
    if path is None:
        return Check(
            "korean font (plots)",
            WARN,
            "NanumGothic not found: Hangul in plots draws as boxes; "
            "pip install koreanize-matplotlib",
        )
    return Check("korean font (plots)", OK, f"{Path(path).name} (koreanize-matplotlib)")


def _disk(path: Path) -> Check:
    given = Path(path).absolute()
    if given.exists() and not given.is_dir():
        return Check("disk", FAIL, f"--path {given} is a file, not a folder")
    target = given
    while not target.exists() and target != target.parent:
        target = target.parent
    usage = shutil.disk_usage(target)
    free_gb = usage.free / 1e9
    detail = f"{free_gb:.0f} GB free of {usage.total / 1e9:.0f} GB at {target}"
    if target != given:  # a mistyped /scratch would report the root file system
        return Check("disk", WARN, f"--path {given} does not exist; {detail}")
    if free_gb < LOW_DISK_GB:
        return Check(
            "disk",
            WARN,
            detail + f"; under {LOW_DISK_GB:.0f} GB: the base model (~9 GB), a feature cache "
            "(~4 GB per 100 h) and checkpoints may not fit",
        )
    return Check("disk", OK, detail)


def _audio_decoders() -> Check:
    """PyAV: the FFmpeg decoders that read phone and browser audio (M4A, WebM, MP4)."""
    try:
        import av
    except ImportError as exc:
        return Check("audio decoders (PyAV)", FAIL, f"{exc}: pip install av")
    return Check(
        "audio decoders (PyAV)",
        OK,
        f"PyAV {av.__version__}, FFmpeg {av.ffmpeg_version_info}: reads M4A/AAC, WebM/Opus, "
        "MP4 and other containers libsndfile cannot",
    )


def _families() -> list[Check]:
    """One line per supported model family: can this transformers load it, which released
    checkpoints, and whether Korean is among the languages its model card lists."""
    import transformers

    from voxadapt.families import FAMILIES

    # The names transformers exports, from its lazy import structure: `hasattr` would import
    # each family's modeling code (seconds) only to find out that the class exists.
    exported = set(dir(transformers))
    checks = []
    for family in FAMILIES.values():
        models = ", ".join(model.hub_id for model in family.known_models)
        korean = "lists Korean" if "ko" in family.languages else "does not list Korean"
        if family.architecture not in exported:
            checks.append(
                Check(
                    f"family {family.name}",
                    WARN,
                    f"transformers {transformers.__version__} has no {family.architecture}: "
                    "pip install -U transformers",
                )
            )
        else:
            detail = f"{models}; {len(family.languages)} languages, {korean}"
            checks.append(Check(f"family {family.name}", OK, detail))
    return checks


def _gpu_memory(config: DoctorConfig) -> tuple[int | None, str]:
    """The GPU memory to check a plan against, in bytes, and where it comes from."""
    if config.gpu_memory_gb is not None:
        return round(config.gpu_memory_gb * memory.GIB), f"--gpu-memory-gb {config.gpu_memory_gb:g}"
    import torch

    if not torch.cuda.is_available():
        return None, "no GPU seen: compare with your GPU's memory (or give --gpu-memory-gb N)"
    free, total = torch.cuda.mem_get_info(0)
    name = torch.cuda.get_device_name(0)
    return (
        total,
        f"GPU 0 ({name}, {total / memory.GIB:.1f} GiB, {free / memory.GIB:.1f} GiB free now)",
    )


def _estimate_record(
    base: str, setup: memory.Setup, found: memory.Estimate, gpu_bytes: int | None
) -> dict[str, Any]:
    record = {
        "base": base,
        "task": "training" if setup.training else "inference",
        "train_modules": list(setup.train_modules or []),
        "micro_batch": setup.micro_batch,
        "clip_s": setup.clip_s,
        "quantization": setup.quantization,
        "gradient_checkpointing": setup.gradient_checkpointing if setup.training else None,
        "trainable_parameters": found.lora_params,
        "bytes": {
            "weights": found.weights,
            "lora_optimizer": found.lora_optimizer,
            "activations": found.activations,
            "transient": found.transient,
            "kv_cache": found.kv_cache,
            "cuda_context": found.cuda_context,
            "total": found.total,
        },
        "estimate": "not measured",
    }
    if gpu_bytes is not None:
        record["gpu_bytes"] = gpu_bytes
        record["verdict"] = memory.verdict(found.total, gpu_bytes)
    return record


def _plan_table(config: DoctorConfig) -> MemoryPlan:
    """Every base, each quantization and choice of parts, at each batch size."""
    from voxadapt.report import format_table

    gpu_bytes, gpu = _gpu_memory(config)
    training = memory.training_table(config.clip_s)
    inference = memory.inference_table(config.clip_s)
    fits = [f"fits {gpu_bytes / memory.GIB:.0f} GiB"] if gpu_bytes else []

    def table(header: tuple[str, ...], rows: list, cells: list) -> str:
        if gpu_bytes:
            cells = [(*cell, row.fitting_batches(gpu_bytes)) for cell, row in zip(cells, rows)]
        return format_table(cells, (*header, *fits))

    checked = f"the last column: batch sizes that fit {gpu}" if gpu_bytes else gpu
    title = (
        f"GPU memory in GiB for {config.clip_s:g} s clips: estimates, not measured (formulas: "
        "docs/gpu-memory.md). One base in detail: --plan --plan-model NAME."
    )
    blocks = [
        ("prose", title),
        ("prose", ""),
        ("prose", "training (gradient checkpointing on, LoRA ranks as train's defaults):"),
        ("table", table(memory.TRAINING_HEADER, training, memory.training_rows(training))),
        ("prose", ""),
        ("prose", "inference:"),
        ("table", table(memory.INFERENCE_HEADER, inference, memory.inference_rows(inference))),
        ("prose", ""),
        ("prose", checked),
    ]
    records = [
        _estimate_record(row.base, setup, found, gpu_bytes)
        for row in [*training, *inference]
        for setup, found in zip(row.setups, row.estimates)
    ]
    return MemoryPlan(blocks, records)


def _plan_model(config: DoctorConfig) -> MemoryPlan:
    """One base's training (the chosen parts) and inference, component by component."""
    from voxadapt.report import format_table

    shape = memory.model_shape(config.plan_model or "")
    common = {
        "micro_batch": config.micro_batch,
        "clip_s": config.clip_s,
        "quantization": config.quantization,
    }
    training_setup = memory.Setup(
        tuple(config.train_modules),
        lora_r=config.lora_r,
        llm_lora_r=config.llm_lora_r,
        encoder_lora_r=config.encoder_lora_r,
        gradient_checkpointing=config.gradient_checkpointing,
        **common,
    )
    inference_setup = memory.Setup(None, **common)
    training = memory.estimate(shape, training_setup)
    inference = memory.estimate(shape, inference_setup)
    gpu_bytes, gpu = _gpu_memory(config)

    def cells(label: str, train_bytes: int | None, infer_bytes: int | None) -> tuple[str, ...]:
        shown = [memory.gib(b) if b is not None else "" for b in (train_bytes, infer_bytes)]
        return (label, *shown)

    trained = memory.count_label(training.lora_params)
    weights = "LLM in NF4, the rest bf16" if config.quantization == "nf4" else "all bf16"
    rows = [
        cells(f"weights ({weights})", training.weights, inference.weights),
        cells(f"LoRA {trained} + gradients + AdamW", training.lora_optimizer, None),
        cells("activations kept for backward", training.activations, None),
        cells("transient peak", training.transient, inference.transient),
        cells("KV cache", None, inference.kv_cache),
        cells("CUDA context", training.cuda_context, inference.cuda_context),
        cells("total", training.total, inference.total),
    ]
    checkpointing = "on" if config.gradient_checkpointing else "off"
    head = (
        f"LM head {memory.count_label(shape.lm_head_params)}"
        if shape.lm_head_params
        else "LM head tied to the embeddings"
    )
    counts = (
        f"{config.plan_model}: {memory.count_label(shape.total_params)} parameters (encoder "
        f"{memory.count_label(shape.encoder_params)}, projector "
        f"{memory.count_label(shape.projector_params)}, LLM "
        f"{memory.count_label(shape.llm_linear_params + shape.llm_other_params)}, {head})"
    )
    setups = (
        f"training: {memory.modules_label(training_setup.train_modules or ())} learn, "
        f"micro-batch {config.micro_batch}, {config.clip_s:g} s clips, gradient "
        f"checkpointing {checkpointing}; inference: batch {config.micro_batch}"
    )
    blocks = [("prose", counts), ("prose", setups), ("prose", "")]
    blocks.append(
        ("table", format_table(rows, ("GiB (estimate, not measured)", "training", "inference")))
    )
    blocks.append(("prose", ""))
    if gpu_bytes is None:
        blocks.append(("prose", gpu))
    else:
        for task, found in (("training", training), ("inference", inference)):
            text = (
                f"{task} {memory.verdict(found.total, gpu_bytes)}: {memory.gib(found.total)} "
                f"of {memory.gib(gpu_bytes)} GiB ({gpu})"
            )
            blocks.append(("prose", text))
    blocks.append(("prose", "formulas, assumptions and how to measure: docs/gpu-memory.md"))
    records = [
        _estimate_record(config.plan_model or "", setup, found, gpu_bytes)
        for setup, found in ((training_setup, training), (inference_setup, inference))
    ]
    return MemoryPlan(blocks, records)


def doctor(config: DoctorConfig) -> DoctorResult:
    """Check Python, torch/CUDA and GPU memory, bitsandbytes NF4, flash-attention, the
    installed extras, the model families this transformers can load, the Korean plot font,
    the audio decoders (PyAV) and free disk space. With `plan`, estimate GPU memory instead
    (`voxadapt.memory`)."""
    result = DoctorResult(as_json=config.json)
    if config.plan:
        result.plan = _plan_model(config) if config.plan_model else _plan_table(config)
        return result
    probes: list[Callable[[], Check | list[Check]]] = [
        _python,
        _torch,
        _bitsandbytes,
        _flash_attention,
        _extras,
        _families,
        _korean_font,
        _audio_decoders,
        lambda: _disk(config.path),
    ]
    for probe in probes:
        found = probe()
        result.checks.extend(found if isinstance(found, list) else [found])
    return result
