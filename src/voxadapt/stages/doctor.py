"""`voxadapt doctor`: is this machine ready? One table, each line OK or what to do."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from voxadapt.config import Config, option

WRITES_NO_FILES = True  # reports only

OK, WARN, FAIL, INFO = "ok", "warn", "FAIL", "info"
# Free space under which a training run is likely to stop on a full disk: the base model
# (~9 GB for Voxtral Mini in bf16, ~48 GB for Small), a feature cache (~11 kB per second of
# audio: ~4 GB for 100 h) and checkpoints.
LOW_DISK_GB = 30.0
MIN_PYTHON = (3, 10)


@dataclass
class DoctorConfig(Config):
    """Options of `voxadapt doctor`."""

    path: Path = option(
        Path("."), help="folder whose free disk space to check (where runs and caches go)"
    )
    json: bool = option(False, help="print the checks as JSON lines instead of a table")


@dataclass
class Check:
    """One line of the report: what was checked, its state, and what was found or to do."""

    name: str
    state: str
    detail: str


@dataclass
class DoctorResult:
    checks: list[Check] = field(default_factory=list)
    as_json: bool = False  # how the CLI prints it (--json)

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if check.state == FAIL]


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

    checks = []
    for family in FAMILIES.values():
        models = ", ".join(model.hub_id for model in family.known_models)
        korean = "lists Korean" if "ko" in family.languages else "does not list Korean"
        if not hasattr(transformers, family.architecture):
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


def doctor(config: DoctorConfig) -> DoctorResult:
    """Check Python, torch/CUDA and GPU memory, bitsandbytes NF4, flash-attention, the
    installed extras, the model families this transformers can load, the Korean plot font,
    the audio decoders (PyAV) and free disk space."""
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
    result = DoctorResult(as_json=config.json)
    for probe in probes:
        found = probe()
        result.checks.extend(found if isinstance(found, list) else [found])
    return result
