"""Export a trained adapter (every part it trained merged into the base): a transformers
checkpoint, or Mistral's consolidated format.

The Mistral layout (`consolidated.safetensors`, `params.json`, `tekken.json`) is what vLLM's
Voxtral loader reads (`vllm serve DIR --tokenizer-mode mistral --config-format mistral
--load-format mistral`). The name mapping below is the inverse of transformers'
`convert_voxtral_weights_to_hf.py`, which vLLM's loader mirrors:

- LLM: Mistral names (`layers.N.attention.wq`, `feed_forward.w1`...), with q/k rows in
  Mistral's interleaved rotary order (transformers permutes them on import; we undo it).
- Audio encoder: `mm_whisper_embeddings.whisper_encoder.{conv_layers.0|1, transformer.*}`;
  its sinusoidal position table is not stored (loaders recompute it).
- Projector: `mm_whisper_embeddings.audio_language_projection.{0,2}.weight`.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from voxadapt.adapters import (
    adapter_parts,
    base_model_of,
    check_base_model,
    is_peft_adapter,
    read_adapter_info,
    writing_weights,
)
from voxadapt.config import Config, option
from voxadapt.errors import ConfigError, VoxadaptError
from voxadapt.families import family_of
from voxadapt.manifest import atomic_write, honour_umask
from voxadapt.model import DTYPES, resolve_dtype
from voxadapt.outputs import claim_output_entry
from voxadapt.staging import set_aside_path, staging_path

log = logging.getLogger(__name__)

EXPORT_FORMATS = ("hf", "mistral")
# What voxadapt export records beside the weights: base, adapter (absolute paths), format.
EXPORT_RECORD = "voxadapt_export.json"
_AUDIO = "mm_whisper_embeddings.whisper_encoder"
_LAYER = _AUDIO + ".transformer.layers.{n}"

# (our canonical transformers name, Mistral name); canonical names drop the wrapper prefixes
# that differ between transformers releases (see `canonical_name`). Placeholders: {n} layer
# index, {x} q/k/v/o, {a} q/k/v, {p} weight/bias, {i} 1/2.
_NAME_PAIRS = [
    ("llm.embed_tokens.weight", "tok_embeddings.weight"),
    ("llm.norm.weight", "norm.weight"),
    ("lm_head.weight", "output.weight"),
    ("llm.layers.{n}.input_layernorm.weight", "layers.{n}.attention_norm.weight"),
    ("llm.layers.{n}.post_attention_layernorm.weight", "layers.{n}.ffn_norm.weight"),
    ("llm.layers.{n}.self_attn.{x}_proj.weight", "layers.{n}.attention.w{x}.weight"),
    ("llm.layers.{n}.mlp.gate_proj.weight", "layers.{n}.feed_forward.w1.weight"),
    ("llm.layers.{n}.mlp.down_proj.weight", "layers.{n}.feed_forward.w2.weight"),
    ("llm.layers.{n}.mlp.up_proj.weight", "layers.{n}.feed_forward.w3.weight"),
    ("audio.conv{i}.{p}", _AUDIO + ".conv_layers.{i0}.{p}"),
    ("audio.layer_norm.{p}", _AUDIO + ".transformer.norm.{p}"),
    (
        "audio.layers.{n}.self_attn.{a}_proj.{p}",
        _LAYER + ".attention.w{a}.{p}",
    ),
    (
        "audio.layers.{n}.self_attn.out_proj.{p}",
        _LAYER + ".attention.wo.{p}",
    ),
    (
        "audio.layers.{n}.self_attn_layer_norm.{p}",
        _LAYER + ".attention_norm.{p}",
    ),
    ("audio.layers.{n}.fc{i}.{p}", _LAYER + ".feed_forward.w{i}.{p}"),
    ("audio.layers.{n}.final_layer_norm.{p}", _LAYER + ".ffn_norm.{p}"),
    ("projector.linear_1.weight", "mm_whisper_embeddings.audio_language_projection.0.weight"),
    ("projector.linear_2.weight", "mm_whisper_embeddings.audio_language_projection.2.weight"),
]
_PLACEHOLDERS = {
    "n": r"\d+",
    "x": "[qkvo]",
    "a": "[qkv]",
    "p": "weight|bias",
    "i": "[12]",
    "i0": "[01]",
}
POSITIONS = "audio.embed_positions.weight"


def _compile(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", template)
    regex = "".join(
        re.escape(part) if k % 2 == 0 else f"(?P<{part}>{_PLACEHOLDERS[part]})"
        for k, part in enumerate(parts)
    )
    return re.compile(regex)


def _fill(template: str, groups: dict[str, str]) -> str:
    # conv1/conv2 (transformers) are conv_layers.0/1 (Mistral)
    if "i" in groups and "i0" not in groups:
        groups = {**groups, "i0": str(int(groups["i"]) - 1)}
    elif "i0" in groups:
        groups = {**groups, "i": str(int(groups["i0"]) + 1)}
    return template.format(**groups)


_TO_MISTRAL = [(_compile(ours), mistral) for ours, mistral in _NAME_PAIRS]
_TO_CANONICAL = [(_compile(mistral), ours) for ours, mistral in _NAME_PAIRS]


def _convert(name: str, rules: list[tuple[re.Pattern[str], str]]) -> str | None:
    for pattern, template in rules:
        match = pattern.fullmatch(name)
        if match:
            return _fill(template, match.groupdict())
    return None


class ExportError(VoxadaptError):
    """The model cannot be written in the requested format."""


def canonical_name(name: str) -> str:
    """transformers parameter name -> release-independent name (llm./audio./projector./lm_head).

    transformers 4.x names `language_model.model.layers...`, 5.x `model.language_model.layers`.
    """
    name = name.removeprefix("model.") if not name.startswith("model.layers") else name
    for prefix, short in (
        ("language_model.model.", "llm."),
        ("language_model.lm_head.", "lm_head."),
        ("language_model.", "llm."),
        ("audio_tower.", "audio."),
        ("multi_modal_projector.", "projector."),
    ):
        if name.startswith(prefix):
            return short + name[len(prefix) :]
    return name


def _rope_rows_to_mistral(tensor: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo transformers' rotary permutation of q/k rows (half-split -> interleaved pairs)."""
    rows, cols = tensor.shape
    return tensor.view(n_heads, 2, rows // n_heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def _rope_rows_to_hf(tensor: torch.Tensor, n_heads: int) -> torch.Tensor:
    rows, cols = tensor.shape
    return tensor.view(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def _rope_heads(short: str, text_config: Any) -> int | None:
    """Heads whose rotary rows are permuted for this LLM q/k weight, None for other weights."""
    if short.startswith("llm.") and short.endswith("self_attn.q_proj.weight"):
        return text_config.num_attention_heads
    if short.startswith("llm.") and short.endswith("self_attn.k_proj.weight"):
        return text_config.num_key_value_heads
    return None


def hf_to_mistral(state: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """Rename (and re-permute) a transformers Voxtral state dict into Mistral's names."""
    text = config.text_config
    tied = bool(getattr(text, "tie_word_embeddings", False))
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        short = canonical_name(name)
        if short == POSITIONS or (tied and short == "lm_head.weight"):
            continue
        target = _convert(short, _TO_MISTRAL)
        if target is None:
            raise ExportError(f"no Mistral name for parameter {name}")
        heads = _rope_heads(short, text)
        if heads:
            tensor = _rope_rows_to_mistral(tensor, heads)
        out[target] = tensor.contiguous()
    return out


def mistral_to_hf(state: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """The inverse of `hf_to_mistral`, to canonical names (positions recomputed)."""
    from transformers.models.whisper.modeling_whisper import sinusoids

    text = config.text_config
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        short = _convert(name, _TO_CANONICAL)
        if short is None:
            raise ExportError(f"unknown Mistral parameter {name}")
        heads = _rope_heads(short, text)
        if heads:
            tensor = _rope_rows_to_hf(tensor, heads)
        out[short] = tensor
    audio = config.audio_config
    out[POSITIONS] = sinusoids(audio.max_source_positions, audio.hidden_size)
    if "lm_head.weight" not in out:
        out["lm_head.weight"] = out["llm.embed_tokens.weight"]
    return out


def mistral_params(config: Any, projector_in: int) -> dict[str, Any]:
    """params.json for a Voxtral config (the keys vLLM's Mistral config adapter reads)."""
    text, audio = config.text_config, config.audio_config
    rope = getattr(text, "rope_parameters", None) or {}
    rope_theta = rope.get("rope_theta", getattr(text, "rope_theta", None))
    return {
        "dim": text.hidden_size,
        "n_layers": text.num_hidden_layers,
        "head_dim": text.head_dim,
        "hidden_dim": text.intermediate_size,
        "n_heads": text.num_attention_heads,
        "n_kv_heads": text.num_key_value_heads,
        "rope_theta": rope_theta,
        "norm_eps": text.rms_norm_eps,
        "vocab_size": text.vocab_size,
        "max_seq_len": text.max_position_embeddings,
        "tied_embeddings": bool(getattr(text, "tie_word_embeddings", False)),
        "multimodal": {
            "whisper_model_args": {
                "encoder_args": {
                    "audio_encoding_args": {
                        "sampling_rate": 16000,
                        "num_mel_bins": audio.num_mel_bins,
                        "hop_length": 160,
                        "window_size": 400,
                    },
                    "dim": audio.hidden_size,
                    "n_layers": audio.num_hidden_layers,
                    "head_dim": audio.hidden_size // audio.num_attention_heads,
                    "hidden_dim": audio.intermediate_size,
                    "n_heads": audio.num_attention_heads,
                    "vocab_size": audio.vocab_size,
                    "max_source_positions": audio.max_source_positions,
                },
                "downsample_args": {"downsample_factor": projector_in // audio.hidden_size},
            }
        },
    }


def merged_model(
    model_id: str | Path, adapter: Path, *, dtype: torch.dtype = torch.float32
) -> torch.nn.Module:
    """Base model in `dtype` (never quantized) with the adapter merged into every part it
    trained (projector, LLM, encoder: each LoRA layer becomes W + alpha/r * B @ A, a full
    projector replaces the base's)."""
    from voxadapt.adapters import apply_adapter
    from voxadapt.model import load_model

    model = load_model(model_id, quantization="none", device="cpu", dtype=dtype)
    model = apply_adapter(model, adapter)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.eval()
    return model


def _tokenizer_file(model_id: str | Path) -> Path:
    local = Path(str(model_id)) / "tekken.json"
    if local.is_file():
        return local
    from transformers.utils.hub import cached_file

    try:
        return Path(cached_file(str(model_id), "tekken.json"))
    except OSError as exc:
        raise ExportError(f"cannot find tekken.json of {model_id}: {exc}") from None


@dataclass
class ExportConfig(Config):
    """Options of `voxadapt export`."""

    adapter: Path = option(help="adapter folder from `voxadapt train`", metavar="DIR")
    out: Path = option(help="new folder for the merged model", metavar="DIR")
    model: str | None = option(
        None, help="base model (default: the adapter's base model)", model_reference=True
    )
    format: str = option(
        "hf",
        help="hf: transformers checkpoint; mistral: consolidated layout for vLLM",
        choices=EXPORT_FORMATS,
    )
    dtype: str = option("bf16", help="dtype of the saved weights", choices=tuple(DTYPES))
    force: bool = option(
        False, help="merge even if --model is not the base the adapter was trained on"
    )
    overwrite: bool = option(
        False,
        help="replace an earlier export in --out (only a folder voxadapt export wrote; the "
        "old one goes once the new one is complete)",
        invocation=True,
    )


@dataclass
class ExportResult:
    out_dir: Path
    format: str
    files: list[Path]


def check_adapter(adapter: Path) -> dict[str, Any]:
    """The adapter's info; ExportError unless every file its mode needs is there."""
    info = read_adapter_info(adapter)
    needed = (
        ["adapter_config.json", "adapter_model.safetensors"]
        if is_peft_adapter(info)
        else ["projector.safetensors"]
    )
    missing = [name for name in needed if not (Path(adapter) / name).is_file()]
    if missing:
        raise ExportError(f"adapter {adapter} is incomplete: {', '.join(missing)} missing")
    return info


def _save_mistral(model: torch.nn.Module, model_id: str, out_dir: Path) -> None:
    from safetensors.torch import save_file
    from transformers.models.whisper.modeling_whisper import sinusoids

    state = {n: p.detach().cpu() for n, p in model.state_dict().items()}
    positions = next(t for n, t in state.items() if canonical_name(n) == POSITIONS)
    expected = sinusoids(*positions.shape).to(positions.dtype)
    if not torch.allclose(positions.float(), expected.float(), atol=1e-2):
        raise ExportError(
            "the audio encoder's position table is not sinusoidal; Mistral's format "
            "does not store it, so this model cannot be exported as --format mistral"
        )
    weights = hf_to_mistral(state, model.config)
    projector_in = next(
        t.shape[1] for n, t in state.items() if canonical_name(n) == "projector.linear_1.weight"
    )
    save_file(weights, str(out_dir / "consolidated.safetensors"), metadata={"format": "pt"})
    with atomic_write(out_dir / "params.json") as handle:
        json.dump(mistral_params(model.config, projector_in), handle, indent=2)
    shutil.copyfile(_tokenizer_file(model_id), out_dir / "tekken.json")


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Move the finished export into place; an earlier export (--overwrite) is set aside
    first and removed only once the new one is in place."""
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    if not any(out_dir.iterdir()):
        out_dir.rmdir()
        staging.rename(out_dir)
        return
    # named so that if this run dies before the swap is done, the next claim of the folder
    # puts the earlier export back (or removes it once the new one is in place)
    replaced = set_aside_path(out_dir.parent, out_dir.name)
    shutil.rmtree(replaced, ignore_errors=True)
    out_dir.rename(replaced)
    try:
        staging.rename(out_dir)
    except OSError:
        replaced.rename(out_dir)  # put the earlier export back
        raise
    shutil.rmtree(replaced, ignore_errors=True)
    log.info("replaced the earlier export in %s (--overwrite)", out_dir)


def _check_replaceable(out_dir: Path) -> None:
    """--overwrite replaces an earlier export only when it holds nothing but what export
    wrote (listed in its record): a model card or notes added since stay, by refusing."""
    record_path = out_dir / EXPORT_RECORD
    if not out_dir.is_dir() or not record_path.is_file():
        raise ConfigError(
            f"--overwrite: {out_dir} is not a voxadapt export (no {EXPORT_RECORD}); it "
            "stays as it is; choose a new --out"
        )
    try:
        written = json.loads(record_path.read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError):
        written = None
    if not isinstance(written, list):
        raise ConfigError(
            f"--overwrite: {record_path} does not list the files export wrote (an older or "
            "edited export); move the folder away or choose a new --out"
        )
    added = sorted(path.name for path in out_dir.iterdir() if path.name not in written)
    if added:
        raise ConfigError(
            f"--overwrite: {out_dir} holds files voxadapt export did not write "
            f"({', '.join(added[:5])}); move them out first, or choose a new --out"
        )


def export(config: ExportConfig) -> ExportResult:
    """Merge the adapter into its base model and write it to a new folder, which appears
    complete or not at all (built under a temporary name, then renamed)."""
    out_dir = Path(config.out).absolute()
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        if not config.overwrite:
            raise ConfigError(
                f"{out_dir} is not empty (or not a folder); choose a new --out, or --overwrite "
                "to replace an earlier export"
            )
        _check_replaceable(out_dir)
    info = check_adapter(config.adapter)
    model_id = base_model_of(config.model, config.adapter)
    check_base_model(model_id, info, force=config.force)
    family = family_of(model_id)
    if config.format not in family.export_formats:
        raise ConfigError(
            f"{model_id} is a {family.title} model, which --format {config.format} cannot hold "
            f"(Mistral's layout is Voxtral's): use --format {' or '.join(family.export_formats)}"
        )
    claim = claim_output_entry(
        "export", out_dir, trees=[config.adapter, model_id if Path(model_id).is_dir() else None]
    )
    with claim:
        return _export(config, model_id, claim.folder / out_dir.name, adapter_parts(info))


def _export(
    config: ExportConfig, model_id: str, out_dir: Path, parts: tuple[str, ...]
) -> ExportResult:
    # a killed run's staging (GBs for a real model) is removed by the next claim of the folder
    staging = staging_path(out_dir.parent, out_dir.name)
    shutil.rmtree(staging, ignore_errors=True)  # a dead run of this pid's number
    staging.mkdir()  # beside the claimed entry, in a folder the claim checked is writable
    try:
        model = merged_model(model_id, config.adapter, dtype=resolve_dtype(config.dtype))
        with writing_weights(out_dir):  # a full disk: one line, and no half export
            if config.format == "hf":
                from transformers import AutoProcessor

                model.save_pretrained(str(staging))
                AutoProcessor.from_pretrained(str(model_id)).save_pretrained(str(staging))
            else:
                _save_mistral(model, model_id, staging)
        written = sorted([*(path.name for path in staging.iterdir()), EXPORT_RECORD])
        with atomic_write(staging / EXPORT_RECORD) as handle:
            local_base = Path(model_id).is_dir()  # a hub id stays an id
            json.dump(
                {
                    "base_model": str(Path(model_id).absolute()) if local_base else model_id,
                    "adapter": str(Path(config.adapter).absolute()),
                    "format": config.format,
                    "dtype": config.dtype,
                    "merged_parts": list(parts),  # what the adapter trained, now in the weights
                    # what --overwrite may replace later: these names and nothing else
                    "files": written,
                },
                handle,
                indent=2,
            )
        honour_umask(staging)
        _swap_in(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(out_dir, config.format, sorted(out_dir.iterdir()))
