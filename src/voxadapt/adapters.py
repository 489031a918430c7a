"""Trained adapters on disk: writing them (a PEFT adapter of every part, or a full
projector's weights, plus `voxadapt_adapter.json`), reading them back onto a base model, and
checking that base. Also the guard that turns a failed weights write (a full disk) into one
line, for adapters and training checkpoints alike."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxadapt.config import model_reference
from voxadapt.errors import ConfigError, ModelError
from voxadapt.families import FAMILIES, VOXTRAL, family_of
from voxadapt.manifest import atomic_write, honour_umask
from voxadapt.model import (
    DEFAULT_MODEL,
    QUANTIZATIONS,
    TRAIN_PARTS,
    WEIGHT_ERRORS,
    AdapterOptions,
    first_line,
    load_model,
    trainable_parameters,
)
from voxadapt.outputs import mount_point, set_aside_path, staging_path

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)

# Written by `voxadapt train` beside every adapter: mode, LoRA shape, base model, quantization.
ADAPTER_INFO = "voxadapt_adapter.json"


def parts_info(options: AdapterOptions) -> dict[str, Any]:
    """What `voxadapt_adapter.json` records of the parts beyond the projector: nothing for
    the projector alone (so its file is what it always was: no `train_modules` means the
    projector alone), else `train_modules` and each LoRA part's r, alpha and targets."""
    if options.train_modules == ("projector",):
        return {}
    info: dict[str, Any] = {"train_modules": list(options.train_modules)}
    for part in ("llm", "encoder"):
        if part in options.train_modules:
            lora = options.part_lora(part)
            info[f"{part}_lora"] = {"r": lora.r, "alpha": lora.alpha, "targets": list(lora.targets)}
    return info


def adapter_parts(info: dict[str, Any]) -> tuple[str, ...]:
    """The parts an adapter trained, from its voxadapt_adapter.json (the projector alone when
    it names none: every adapter before `--train-modules`, and the default since)."""
    parts = info.get("train_modules") or ["projector"]
    if not isinstance(parts, list) or not set(parts) <= set(TRAIN_PARTS):
        raise ModelError(
            f"{ADAPTER_INFO}: train_modules must list parts among {', '.join(TRAIN_PARTS)}, "
            f"not {parts!r}"
        )
    return tuple(parts)


def is_peft_adapter(info: dict[str, Any]) -> bool:
    """True for a PEFT adapter folder, False for a full projector's plain weights file."""
    return info.get("projector") != "full" or adapter_parts(info) != ("projector",)


def save_adapter(
    model: nn.Module, out_dir: Path, options: AdapterOptions, extra: dict[str, Any]
) -> None:
    """One PEFT adapter for every part (LoRA, and a full projector beside LoRA parts);
    projector weights as safetensors for a full projector alone. Plus our config.

    Written beside `out_dir` and swapped in whole, so a failed save (a full disk) leaves
    the adapter that was there, and a reader never sees half of one.
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # the output scheme's staging names: the next claim of the folder cleans up after a
    # process killed mid-save (and puts back an adapter it had set aside)
    tmp = staging_path(out_dir.parent, out_dir.name)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    needed = sum(p.nbytes for _, p in trainable_parameters(model))
    try:
        with writing_weights(tmp, needed_bytes=needed):
            if options.uses_peft:
                model.save_pretrained(str(tmp))
            else:
                state = {
                    n: p.detach().to("cpu").contiguous() for n, p in trainable_parameters(model)
                }
                save_file(state, str(tmp / "projector.safetensors"))
            with atomic_write(tmp / ADAPTER_INFO) as handle:
                json.dump(
                    {
                        "projector": options.mode,
                        "lora_r": options.lora_r,
                        "lora_alpha": options.lora_alpha,
                        "lora_dropout": options.lora_dropout,
                        **parts_info(options),
                        **extra,
                    },
                    handle,
                    indent=2,
                    ensure_ascii=False,
                )
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    honour_umask(tmp)
    swap_in(tmp, out_dir, set_aside_path(out_dir.parent, out_dir.name))


def swap_in(new: Path, final: Path, old: Path) -> None:
    """Replace the folder `final` by the complete folder `new`: two renames, `old` holds
    the previous one in between and is removed after."""
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    new.rename(final)
    shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------ adapters for inference


def read_adapter_info(adapter_dir: Path) -> dict[str, Any]:
    """The voxadapt_adapter.json that `voxadapt train` writes beside every adapter."""
    path = Path(adapter_dir) / ADAPTER_INFO
    if not Path(adapter_dir).is_dir():
        raise ModelError(f"adapter folder not found: {adapter_dir}")
    if not path.is_file():
        raise ModelError(f"{adapter_dir} is not a voxadapt adapter (no {ADAPTER_INFO})")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path} is unreadable: {exc}") from None
    if not isinstance(info, dict):
        raise ModelError(f"{path} is not a JSON object")
    return info


def base_model_of(model: str | None, adapter: Path | None) -> str:
    """The base model to load: `model` if given, else the adapter's recorded base, else
    Voxtral-Mini-3B."""
    if model:
        return str(model)
    if adapter is not None:
        base = read_adapter_info(adapter).get("base_model")
        if base:
            return str(base)
    return DEFAULT_MODEL


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (never pickle); ModelError naming the file when it
    is missing, truncated or corrupt."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except WEIGHT_ERRORS as exc:
        raise ModelError(
            f"{path} is unreadable (truncated or corrupt?): {first_line(exc)}"
        ) from None


@contextlib.contextmanager
def writing_weights(path: Path, *, needed_bytes: int | None = None) -> Iterator[None]:
    """Writes in the block that fail become one line naming `path`, whatever library wrote
    (safetensors and torch raise their own kinds): a full disk says which file system and
    about how much the write needed (`needed_bytes`), a file size limit says so."""
    try:
        yield
    except WEIGHT_ERRORS as exc:
        raise ModelError(write_failure(path, exc, needed_bytes)) from None


def write_failure(path: Path, exc: BaseException, needed_bytes: int | None = None) -> str:
    """Why writing under `path` failed, in the user's words.

    torch.save reports ENOSPC as `[enforce fail at inline_container.cc:672] . unexpected
    pos`, and safetensors as an `IoError(Os { code: 28 ... })` text: the errno is read where
    there is one, the text where not, and an `unexpected pos` is a full disk when the file
    system has less room left than the write needed.
    """
    text, code = str(exc), getattr(exc, "errno", None)
    reason = next(
        (
            reason
            for reason, (number, words) in _WRITE_FAILURES.items()
            if code == number or any(word in text for word in words)
        ),
        None,
    )
    free, limit = _free_bytes(path), _file_size_limit()
    if reason is None and "unexpected pos" in text:  # torch: no errno, look at the disk
        if free is not None and free < max(needed_bytes or 0, 1 << 20):
            reason = "no space left"
        elif limit is not None:
            reason = "file size limit"
    needed = f" (needed ~{_size(needed_bytes)})" if needed_bytes else ""
    if reason == "file size limit":
        shown = f" of {_size(limit)}" if limit is not None else ""
        return f"file size limit{shown} (ulimit -f) reached writing {path}{needed}"
    if reason is not None:  # the file system by its mount point, as `df PATH` names it
        room = f", {_size(free)} free" if free is not None else ""
        return f"{reason} on {mount_point(path)} writing {path}{needed}{room}"
    detail = getattr(exc, "strerror", None) or first_line(exc)
    return f"cannot write {path}: {detail}"


# reason -> (errno, how torch and safetensors (Rust's io::Error) word it without one)
_WRITE_FAILURES = {
    "no space left": (errno.ENOSPC, ("No space left on device", "code: 28,", "os error 28")),
    "disk quota exceeded": (errno.EDQUOT, ("Disk quota exceeded", "code: 122,", "os error 122")),
    "file size limit": (errno.EFBIG, ("File too large", "code: 27,", "os error 27")),
}


def _size(size: int | None) -> str:
    """`12 kB`, `1.5 MB`, `123 MB`, `2.4 GB`."""
    if size is None:
        return "?"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            value = size / scale
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{size} B"


def _existing(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _free_bytes(path: Path) -> int | None:
    try:
        return shutil.disk_usage(_existing(path)).free
    except OSError:
        return None


def _file_size_limit() -> int | None:
    """The soft RLIMIT_FSIZE in bytes (`ulimit -f`), None when unlimited or unknown."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else soft


def model_fingerprint(model: str | Path) -> str | None:
    """What identifies a local model folder's content wherever it lies: its config and the
    names and sizes of its weight files (None for a hub id). Cheap: no weights are read."""
    folder = Path(str(model)).expanduser()
    config = folder / "config.json"
    if not config.is_file():
        return None
    digest = hashlib.sha256(config.read_bytes())
    for path in sorted(folder.glob("*.safetensors*")) + sorted(folder.glob("*.bin")):
        digest.update(f"{path.name}:{path.stat().st_size}".encode())
        if path.name.endswith(".index.json"):
            digest.update(path.read_bytes())
    return digest.hexdigest()


def check_base_model(model_id: str, info: dict[str, Any], *, force: bool) -> None:
    """Refuse an adapter on another base than the one it was trained on: a base of equal
    shapes takes it silently and gives a model nobody trained. A copy of the same model
    under another path or id passes with --force (with a warning)."""
    trained_family = info.get("family", VOXTRAL.name)  # adapters without one are Voxtral's
    if trained_family not in FAMILIES:
        raise ModelError(
            f"the adapter's {ADAPTER_INFO} names the model family {str(trained_family)[:40]!r}, "
            f"which voxadapt does not know ({', '.join(FAMILIES)})"
        )
    family = family_of(model_id).name
    if trained_family != family:
        message = f"the adapter is a {trained_family} adapter, and {model_id} is a {family} model"
        if not force:
            raise ModelError(f"{message}; give its base model (or --force)")
        log.warning("--force: %s", message)
    recorded = info.get("base_model")
    if not recorded or model_reference(recorded) == model_reference(model_id):
        return
    fingerprint = info.get("base_model_fingerprint")
    if fingerprint and fingerprint == model_fingerprint(model_id):
        log.warning(
            "the adapter was trained on %s; %s holds the same config and weight files (a moved "
            "or copied base): using it",
            recorded,
            model_id,
        )
        return
    if force:
        log.warning("--force: using an adapter trained on %s with %s", recorded, model_id)
        return
    raise ModelError(
        f"the adapter was trained on {recorded}, not {model_id}; pass --force if {model_id} "
        "is the same model under another name"
    )


def apply_adapter(model: nn.Module, adapter_dir: Path, name: str = "default") -> nn.Module:
    """Put a trained adapter onto a loaded base model: a PEFT adapter (any parts), or a full
    projector's weights. On a model that has PEFT adapters already, a PEFT adapter is added
    beside them under `name` (select it with `set_adapter(name)`)."""
    import torch

    info = read_adapter_info(adapter_dir)
    if not is_peft_adapter(info):
        weights = load_weights(Path(adapter_dir) / "projector.safetensors")
        names = dict(model.named_parameters())
        unknown = sorted(set(weights) - set(names))
        misfit = sorted(n for n in set(weights) & set(names) if weights[n].shape != names[n].shape)
        if unknown or misfit:
            raise ModelError(
                f"{adapter_dir}: projector weights do not fit this model "
                f"(e.g. {(unknown or misfit)[0]})"
            )
        with torch.no_grad():
            for name, tensor in weights.items():
                names[name].copy_(tensor.to(names[name].dtype))
        return model
    import warnings

    from peft import PeftModel

    with warnings.catch_warnings():  # peft probes a deprecated transformers attribute
        warnings.simplefilter("ignore", FutureWarning)
        try:
            if isinstance(model, PeftModel):
                model.load_adapter(str(adapter_dir), adapter_name=name, is_trainable=False)
                return model
            return PeftModel.from_pretrained(
                model, str(adapter_dir), adapter_name=name, is_trainable=False
            )
        except WEIGHT_ERRORS as exc:
            raise ModelError(f"cannot apply the adapter {adapter_dir}: {first_line(exc)}") from None


def load_for_inference(
    model_id: str | Path,
    adapter: Path | None = None,
    *,
    quantization: str | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[nn.Module, str]:
    """Base model (+ adapter) in eval mode; quantization defaults to what the adapter trained
    with (nf4 without an adapter). Returns the model and the quantization used."""
    import torch

    if quantization is None:
        quantization = read_adapter_info(adapter).get("quantization", "nf4") if adapter else "nf4"
    if quantization not in QUANTIZATIONS:
        raise ConfigError(f"quantization must be one of {', '.join(QUANTIZATIONS)}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load_model(model_id, quantization=quantization, device=device, dtype=dtype)
    if adapter is not None:
        model = apply_adapter(model, adapter)
    model.eval()
    return model, quantization
