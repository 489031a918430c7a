"""GPU memory a team can plan with: estimates (not measurements) for training and inference.

Parameter counts are exact: each base's real transformers class is built from its config on
the meta device (no weights, no memory) and its parameters are counted per part. Bytes are
then estimated from stated assumptions (docs/gpu-memory.md gives the formulas):

- NF4 (`--quantization nf4`): the language model's linear layers take 4 bits per weight plus
  bitsandbytes' double-quantized block constants (an 8-bit absmax per 64 weights and an fp32
  scale per 256 absmax: 8/64 + 32/16384 = 0.127 bits), so 4.127 bits = 0.516 B per weight.
  Everything `voxadapt.model.quantization_config` skips (audio encoder, projector, LM head)
  and what bitsandbytes never quantizes (embeddings, norms) stays bf16, 2 B per parameter.
- LoRA: rank x (in + out) parameters per targeted linear, kept in fp32 by PEFT, with an fp32
  gradient and AdamW's two fp32 moments: 16 B per trainable parameter.
- Activations: per token and layer, 2 B x (sum of the layer's linear outputs + 4 x width +
  2 x MLP width), plus 5 B x in_features per LoRA'd linear (its fp32 dropout output and
  mask). With gradient checkpointing a trained stack keeps each layer's input (2 B x width
  per token) plus one layer being recomputed; a frozen encoder keeps no activations.
- The loss computes logits only over the transcript (`label_positions_loss`): bf16 logits,
  their fp32 copy and its gradient, 10 B x vocabulary per transcript token.
- Inference: weights, the KV cache (2 x layers x kv_heads x head_dim x tokens x 2 B) and one
  layer's activations at a time.
- Every process pays a CUDA context (~0.75 GiB) outside what PyTorch allocates.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxadapt.errors import ConfigError

GIB = 2**30
NF4_BYTES = (4 + 8 / 64 + 32 / (64 * 256)) / 8  # 4-bit weight + double-quantized constants
BF16_BYTES = 2
# fp32 LoRA weight + fp32 gradient + AdamW exp_avg and exp_avg_sq (fp32)
TRAINABLE_BYTES = 4 + 4 + 4 + 4
CUDA_CONTEXT_BYTES = int(0.75 * GIB)  # CUDA context and cuBLAS workspace (CUDA 12, lazy load)
LOGIT_BYTES = 2 + 4 + 4  # bf16 logits, their fp32 copy, its gradient (per vocabulary entry)
LORA_DROPOUT_BYTES = 4 + 1  # fp32 dropout output + its bool mask, per LoRA input feature
# Token counts besides the audio: the prompt's text (Voxtral's [INST]...[TRANSCRIBE], Qwen's
# chat template) and the transcript. Korean speech runs ~5-7 syllables per second and both
# tokenizers spend about one token per syllable: 8 tokens per second is a generous rate.
PROMPT_TOKENS = 32
TRANSCRIPT_TOKENS_PER_S = 8
QUANTIZATIONS = ("nf4", "none")
TRAIN_MODULE_CHOICES = (("projector",), ("projector", "llm"), ("projector", "llm", "encoder"))
MICRO_BATCHES = (1, 4, 8)
INFERENCE_BATCHES = (1, 8, 32)
TABLE_CLIP_S = 30.0
# Where "fits" turns into "tight": the allocator's fragmentation and the estimate's error.
TIGHT_SHARE = 0.9


# ------------------------------------------------------------------ the bases and their audio


def _voxtral_config(text: dict[str, Any]) -> Any:
    from transformers import VoxtralConfig

    return VoxtralConfig(text_config={"model_type": "llama", **text}, audio_config={})


def _voxtral_mini() -> Any:
    # VoxtralConfig's defaults are Voxtral-Mini-3B-2507's config.json (transformers documents
    # them with that checkpoint): a Whisper-large-v3 encoder (32 layers, d=1280, MLP 5120) and
    # a 30-layer decoder (3072 wide, MLP 8192, 32 heads, 8 KV heads of 128, vocab 131072)
    return _voxtral_config({"tie_word_embeddings": False})


def _voxtral_small() -> Any:
    # Voxtral-Small-24B-2507's text_config (Mistral Small 3.1 widths), from memory of the
    # public config.json: 40 layers, 5120 wide, MLP 32768, 32 heads, 8 KV heads of 128, vocab
    # 131072, untied head; the same audio encoder as Mini. The count (24.26B) matches the name.
    return _voxtral_config(
        {
            "vocab_size": 131072,
            "hidden_size": 5120,
            "intermediate_size": 32768,
            "num_hidden_layers": 40,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "tie_word_embeddings": False,
        }
    )


def _qwen3_asr(hub_id: str) -> Callable[[], Any]:
    def build() -> Any:
        from voxadapt.families.qwen3_asr_checkpoint import real_config

        return real_config(hub_id)

    return build


@dataclass(frozen=True)
class Base:
    """A released base to plan for: short name, hub id, and its config built offline."""

    name: str  # what --plan-model takes: "voxtral-mini"
    hub_id: str
    config: Callable[[], Any]


BASES: dict[str, Base] = {
    base.name: base
    for base in (
        Base("voxtral-mini", "mistralai/Voxtral-Mini-3B-2507", _voxtral_mini),
        Base("voxtral-small", "mistralai/Voxtral-Small-24B-2507", _voxtral_small),
        Base("qwen3-asr-0.6b", "Qwen/Qwen3-ASR-0.6B-hf", _qwen3_asr("Qwen/Qwen3-ASR-0.6B-hf")),
        Base("qwen3-asr-1.7b", "Qwen/Qwen3-ASR-1.7B-hf", _qwen3_asr("Qwen/Qwen3-ASR-1.7B-hf")),
    )
}


@dataclass(frozen=True)
class AudioGeometry:
    """How many positions a clip becomes: in the encoder's layers and in the LLM's prompt."""

    encoder_positions: Callable[[Any, float], int]  # (config, clip_s) -> positions per clip
    audio_tokens: Callable[[Any, float], int]  # (config, clip_s) -> LLM audio tokens per clip
    # the largest transient tensors of the convolution stem per clip (elements)
    stem_elements: Callable[[Any, float], int]


def _voxtral_chunks(clip_s: float) -> int:
    return max(1, math.ceil(clip_s / 30))  # Voxtral pads every clip to whole 30 s chunks


def _voxtral_positions(config: Any, clip_s: float) -> int:
    # 3000 mel frames per chunk -> 1500 encoder positions (max_source_positions)
    return _voxtral_chunks(clip_s) * config.audio_config.max_source_positions


def _voxtral_tokens(config: Any, clip_s: float) -> int:
    # the projector folds intermediate_size / hidden_size (= 4) positions into one token
    audio = config.audio_config
    fold = audio.intermediate_size // audio.hidden_size
    return _voxtral_positions(config, clip_s) // fold  # 375 per 30 s


def _voxtral_stem(config: Any, clip_s: float) -> int:
    # conv1 (stride 1) keeps 2 x max_source_positions frames per chunk; its output and its
    # GELU are alive together, no gradient reaches them (features need none)
    frames = 2 * _voxtral_positions(config, clip_s)
    return 2 * config.audio_config.hidden_size * frames


def _qwen_frames(clip_s: float) -> int:
    return max(1, math.ceil(clip_s * 100))  # 10 ms mel hop


def _qwen_tokens(config: Any, clip_s: float) -> int:
    # Qwen3ASRProcessor._get_audio_token_length: 13 tokens per 100-frame chunk, and the
    # remainder through three stride-2 convolutions
    chunk = 2 * config.audio_config.n_window
    frames = _qwen_frames(clip_s)
    remainder = frames % chunk
    tail = remainder
    for _ in range(3):
        tail = (tail - 1) // 2 + 1
    return tail + (frames // chunk) * 13


def _qwen_stem(config: Any, clip_s: float) -> int:
    # the first stride-2 Conv2d over every 100-frame chunk (downsample_hidden_size channels x
    # mel bins / 2 x 50 frames) and its GELU, alive together
    audio = config.audio_config
    chunk = 2 * audio.n_window
    chunks = math.ceil(_qwen_frames(clip_s) / chunk)
    per_chunk = audio.downsample_hidden_size * ((audio.num_mel_bins + 1) // 2) * ((chunk + 1) // 2)
    return 2 * chunks * per_chunk


# Looked up by config.json's model_type: what differs between families' audio paths.
GEOMETRY: dict[str, AudioGeometry] = {
    "voxtral": AudioGeometry(_voxtral_positions, _voxtral_tokens, _voxtral_stem),
    "qwen3_asr": AudioGeometry(_qwen_tokens, _qwen_tokens, _qwen_stem),
}


# ------------------------------------------------------------------ exact parameter counts


@dataclass(frozen=True)
class LinearShape:
    """One nn.Linear inside a part: its path inside the part and its widths."""

    path: str
    in_features: int
    out_features: int

    @property
    def layer(self) -> int | None:
        """The index of the transformer layer holding it (None outside the layer stack)."""
        match = re.search(r"(?:^|\.)layers\.(\d+)\.", self.path)
        return int(match.group(1)) if match else None


@dataclass(frozen=True)
class ModelShape:
    """Exact parameter counts per part and the widths the byte estimates need."""

    name: str
    model_type: str
    encoder_params: int
    projector_params: int
    llm_linear_params: int  # quantized under nf4
    llm_other_params: int  # embeddings, norms: bf16 always
    lm_head_params: int  # 0 when tied to the embeddings
    linears: dict[str, tuple[LinearShape, ...]]  # per part: projector, llm, encoder
    llm_layers: int
    llm_width: int
    llm_mlp_width: int
    kv_width: int  # num_key_value_heads x head_dim
    vocab_size: int
    encoder_layers: int
    encoder_width: int
    encoder_mlp_width: int
    config: Any = field(repr=False, compare=False)

    @property
    def total_params(self) -> int:
        return (
            self.encoder_params
            + self.projector_params
            + self.llm_linear_params
            + self.llm_other_params
            + self.lm_head_params
        )

    def encoder_positions(self, clip_s: float) -> int:
        return GEOMETRY[self.model_type].encoder_positions(self.config, clip_s)

    def audio_tokens(self, clip_s: float) -> int:
        return GEOMETRY[self.model_type].audio_tokens(self.config, clip_s)

    def stem_elements(self, clip_s: float) -> int:
        return GEOMETRY[self.model_type].stem_elements(self.config, clip_s)


def shape_of_model(model: Any, name: str) -> ModelShape:
    """Count a (meta or real) model's parameters per part and list each part's linears."""
    from torch import nn

    from voxadapt.model import PART_GROUPS, module_paths

    config = model.config
    if config.model_type not in GEOMETRY:
        raise ConfigError(f"no memory plan for model type {config.model_type!r}")
    paths = module_paths(model)
    roots = {part: paths[group] for part, group in PART_GROUPS.items()}

    def part_of(name: str) -> str | None:
        for part, part_roots in (*roots.items(), ("lm_head", paths["lm_head"])):
            for root in part_roots:
                if name == root or name.startswith(root + "."):
                    return part
        return None

    counts = {"projector": 0, "encoder": 0, "llm_linear": 0, "llm_other": 0, "lm_head": 0}
    # the weights NF4 quantizes: nn.Linear weights inside the LLM (not the head, which is
    # skipped, nor an embedding tied to it); biases and norms stay bf16
    quantizable = {
        id(module.weight)
        for module_name, module in model.named_modules()
        if isinstance(module, nn.Linear) and part_of(module_name) == "llm"
    }
    # named_parameters yields a tied weight once (under the embedding's name)
    for param_name, parameter in model.named_parameters():
        part = part_of(param_name) or "llm"
        if part == "llm":
            part = "llm_linear" if id(parameter) in quantizable else "llm_other"
        counts[part] += parameter.numel()
    linears: dict[str, list[LinearShape]] = {part: [] for part in roots}
    for module_name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        part = part_of(module_name)
        if part in linears:
            root = next(r for r in roots[part] if module_name.startswith(r + "."))
            inner = module_name[len(root) + 1 :]
            linears[part].append(LinearShape(inner, module.in_features, module.out_features))
    text, audio = config.text_config, config.audio_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return ModelShape(
        name=name,
        model_type=config.model_type,
        encoder_params=counts["encoder"],
        projector_params=counts["projector"],
        llm_linear_params=counts["llm_linear"],
        llm_other_params=counts["llm_other"],
        lm_head_params=counts["lm_head"],
        linears={part: tuple(items) for part, items in linears.items()},
        llm_layers=text.num_hidden_layers,
        llm_width=text.hidden_size,
        llm_mlp_width=text.intermediate_size,
        kv_width=text.num_key_value_heads * head_dim,
        vocab_size=text.vocab_size,
        encoder_layers=audio.num_hidden_layers,
        encoder_width=audio.hidden_size,
        encoder_mlp_width=audio.intermediate_size,
        config=config,
    )


@functools.cache
def _meta_shape(key: str) -> ModelShape:
    from voxadapt.families import family_for_config, load_config

    if key in BASES:
        config = BASES[key].config()
        source = BASES[key].hub_id
    else:
        config = load_config(key)
        source = key
    family = family_for_config(config, source)
    try:
        return shape_of_model(family.meta_model(config), key)
    except (RuntimeError, ValueError, TypeError, OverflowError) as exc:  # absurd widths
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(f"--plan-model {source}: its config cannot be built: {detail}") from None


def resolve_base(name: str) -> str:
    """The key of a base: a short name, a released hub id, or a local model folder."""
    by_hub = {base.hub_id.lower(): key for key, base in BASES.items()}
    text = str(name).strip()
    if text.lower() in BASES:
        return text.lower()
    if text.lower() in by_hub:
        return by_hub[text.lower()]
    folder = Path(text).expanduser()
    if (folder / "config.json").is_file():
        return str(folder.resolve())
    if folder.exists():
        raise ConfigError(f"--plan-model {text}: no config.json in that folder")
    raise ConfigError(
        f"--plan-model {text!r} is not a known base ({', '.join(BASES)}, or their hub ids) "
        "nor a local model folder with a config.json"
    )


def model_shape(name: str) -> ModelShape:
    """The exact parameter counts of a base (short name, hub id or local folder), counted on
    the meta device once per process."""
    return _meta_shape(resolve_base(name))


# ------------------------------------------------------------------ bytes


@dataclass(frozen=True)
class Setup:
    """What is planned: training (with these parts learning) or inference."""

    train_modules: tuple[str, ...] | None = ("projector",)  # None: inference
    micro_batch: int = 1  # clips per forward pass (train --batch-size, or a decoding batch)
    clip_s: float = TABLE_CLIP_S
    quantization: str = "nf4"
    lora_r: int = 8  # the projector's LoRA rank (train --lora-r)
    llm_lora_r: int = 16
    encoder_lora_r: int = 16
    llm_lora_targets: tuple[str, ...] = ()  # () = the family's defaults
    encoder_lora_targets: tuple[str, ...] = ()
    gradient_checkpointing: bool = True

    @property
    def training(self) -> bool:
        return self.train_modules is not None


@dataclass(frozen=True)
class Estimate:
    """Bytes per component of one setup (`total` adds them) and what trains."""

    weights: int
    lora_params: int  # trainable parameters (a count, not bytes)
    lora_optimizer: int  # their fp32 weights, gradients and AdamW moments
    activations: int  # saved for backward through the whole step
    transient: int  # the largest short-lived peak: logits, a recomputed layer, the encoder
    kv_cache: int
    cuda_context: int = CUDA_CONTEXT_BYTES

    @property
    def total(self) -> int:
        return (
            self.weights
            + self.lora_optimizer
            + self.activations
            + self.transient
            + self.kv_cache
            + self.cuda_context
        )


def weight_bytes(shape: ModelShape, quantization: str) -> int:
    """The base's weights on the GPU: NF4 LLM linears and bf16 for the rest, or all bf16."""
    if quantization not in QUANTIZATIONS:
        raise ConfigError(f"quantization must be one of {', '.join(QUANTIZATIONS)}")
    quantized = shape.llm_linear_params if quantization == "nf4" else 0
    return round(quantized * NF4_BYTES + (shape.total_params - quantized) * BF16_BYTES)


def _family_targets(shape: ModelShape, part: str) -> tuple[str, ...]:
    from voxadapt.families import FAMILIES

    family = next(f for f in FAMILIES.values() if f.model_type == shape.model_type)
    return family.llm_lora_targets if part == "llm" else family.encoder_lora_targets


def lora_linears(shape: ModelShape, part: str, targets: Sequence[str] = ()) -> list[LinearShape]:
    """The linears of `part` that LoRA targets name: the whole projector, or leaf names and
    dotted suffixes inside the LLM or the encoder (as `voxadapt.model.lora_target_names`;
    no targets: the family's defaults)."""
    if part == "projector":
        return list(shape.linears["projector"])
    targets = tuple(targets) or _family_targets(shape, part)
    return [
        linear
        for linear in shape.linears[part]
        if any(linear.path == t or linear.path.endswith("." + t) for t in targets)
    ]


def lora_parameter_count(linears: Sequence[LinearShape], rank: int) -> int:
    """LoRA's A (rank x in) and B (out x rank) of each linear: rank x (in + out)."""
    return sum(rank * (linear.in_features + linear.out_features) for linear in linears)


def layer_bytes_per_token(linears: Sequence[LinearShape], width: int, mlp_width: int) -> int:
    """bf16 activations one transformer layer saves per token for its backward: every
    linear's output, four width-sized tensors (two norms' inputs and outputs) and two
    MLP-sized ones (the activation function's input and output)."""
    outputs = sum(linear.out_features for linear in linears if linear.layer == 0)
    return BF16_BYTES * (outputs + 4 * width + 2 * mlp_width)


@dataclass(frozen=True)
class _Stack:
    """A stack of identical layers and the LoRA inputs it carries (per token)."""

    layers: int
    width: int
    per_token_layer: int  # bytes one layer saves per token
    lora_in_total: int  # in_features summed over its LoRA'd linears
    lora_in_layer: int  # the same, in the layer with the most

    def saved(self, tokens: int, checkpointing: bool) -> int:
        """Bytes kept for backward from forward to backward."""
        if checkpointing:  # each layer's input only
            return tokens * self.layers * BF16_BYTES * self.width
        lora = LORA_DROPOUT_BYTES * self.lora_in_total
        return tokens * (self.layers * self.per_token_layer + lora)

    def one_layer(self, tokens: int) -> int:
        """Bytes of one layer's activations (recomputed in backward, or a forward pass)."""
        return tokens * (self.per_token_layer + LORA_DROPOUT_BYTES * self.lora_in_layer)


def _stack(shape: ModelShape, part: str, lora: Sequence[LinearShape]) -> _Stack:
    width, mlp, layers = (
        (shape.llm_width, shape.llm_mlp_width, shape.llm_layers)
        if part == "llm"
        else (shape.encoder_width, shape.encoder_mlp_width, shape.encoder_layers)
    )
    by_layer: dict[int | None, int] = {}
    for linear in lora:
        by_layer[linear.layer] = by_layer.get(linear.layer, 0) + linear.in_features
    return _Stack(
        layers=layers,
        width=width,
        per_token_layer=layer_bytes_per_token(shape.linears[part], width, mlp),
        lora_in_total=sum(by_layer.values()),
        lora_in_layer=max(by_layer.values(), default=0),
    )


def estimate(shape: ModelShape, setup: Setup) -> Estimate:
    """The memory of training or inference of `shape` under `setup`.

    Training keeps what backward needs through the step (`activations`) and passes through
    short peaks one at a time (`transient`: the frozen encoder's forward, the logits, a
    layer recomputed under gradient checkpointing); inference keeps the KV cache.
    """
    batch, clip_s = setup.micro_batch, setup.clip_s
    audio_tokens = shape.audio_tokens(clip_s)
    transcript = math.ceil(TRANSCRIPT_TOKENS_PER_S * clip_s)
    llm_tokens = batch * (audio_tokens + PROMPT_TOKENS + transcript)
    encoder_tokens = batch * shape.encoder_positions(clip_s)
    parts = setup.train_modules or ()
    ranks = {"projector": setup.lora_r, "llm": setup.llm_lora_r, "encoder": setup.encoder_lora_r}
    chosen = {"llm": setup.llm_lora_targets, "encoder": setup.encoder_lora_targets}
    lora = {part: lora_linears(shape, part, chosen.get(part, ())) for part in parts}
    lora_params = sum(lora_parameter_count(lora[part], ranks[part]) for part in parts)
    llm = _stack(shape, "llm", lora.get("llm", ()))
    encoder = _stack(shape, "encoder", lora.get("encoder", ()))
    stem = BF16_BYTES * batch * shape.stem_elements(clip_s)
    projector = (
        BF16_BYTES
        * batch
        * audio_tokens
        * sum(linear.in_features + linear.out_features for linear in shape.linears["projector"])
    )
    checkpointing = setup.gradient_checkpointing
    if setup.training:
        # the projector's gradient flows back through every LLM layer, trained or not
        saved = llm.saved(llm_tokens, checkpointing) + projector
        peaks = [
            stem,
            # logits over the transcript and the token before it (`label_positions_loss`)
            LOGIT_BYTES * batch * (transcript + 1) * shape.vocab_size,
            llm.one_layer(llm_tokens) if checkpointing else 0,
        ]
        if "encoder" in parts:
            saved += encoder.saved(encoder_tokens, checkpointing)
            peaks.append(encoder.one_layer(encoder_tokens) if checkpointing else 0)
        else:  # a frozen encoder runs without autograd: one layer at a time
            peaks.append(encoder.one_layer(encoder_tokens))
        kv_cache = 0
    else:
        saved = 0
        peaks = [
            stem,
            encoder.one_layer(encoder_tokens),
            llm.one_layer(llm_tokens),  # the prompt's prefill, layer by layer
            4 * batch * shape.vocab_size,  # one position's fp32 logits per step
        ]
        # K and V of every layer for every prompt and transcript token, bf16
        kv_cache = 2 * shape.llm_layers * shape.kv_width * llm_tokens * BF16_BYTES
    return Estimate(
        weights=weight_bytes(shape, setup.quantization),
        lora_params=lora_params,
        lora_optimizer=TRAINABLE_BYTES * lora_params,
        activations=saved,
        transient=max(peaks),
        kv_cache=kv_cache,
    )


# ------------------------------------------------------------------ verdicts and tables


def verdict(total_bytes: int, gpu_bytes: int) -> str:
    """'fits', 'tight' (over 90% of the GPU) or 'does not fit'."""
    if total_bytes > gpu_bytes:
        return "does not fit"
    if total_bytes > TIGHT_SHARE * gpu_bytes:
        return "tight"
    return "fits"


def gib(nbytes: float) -> str:
    return f"{nbytes / GIB:.1f}"


def count_label(count: int) -> str:
    """12.3M, 29.7K: a parameter count for tables."""
    if count >= 1e9:
        return f"{count / 1e9:.2f}B"
    if count >= 1e6:
        return f"{count / 1e6:.1f}M"
    return f"{count / 1e3:.1f}K"


def modules_label(parts: Sequence[str]) -> str:
    return "+".join(parts)


@dataclass(frozen=True)
class TableRow:
    """One line of a planning table: a base and setup, estimated at each batch size."""

    base: str
    setups: tuple[Setup, ...]  # the same setup at each batch size
    estimates: tuple[Estimate, ...]

    def fitting_batches(self, gpu_bytes: int) -> str:
        """The batch sizes whose total fits `gpu_bytes` ('none' if no batch does)."""
        fits = [
            str(s.micro_batch) for s, e in zip(self.setups, self.estimates) if e.total <= gpu_bytes
        ]
        return ",".join(fits) or "none"


def training_table(clip_s: float = TABLE_CLIP_S) -> list[TableRow]:
    """Training of every base, each quantization and choice of parts, at each micro-batch."""
    rows = []
    for name in BASES:
        shape = model_shape(name)
        for quantization in QUANTIZATIONS:
            for parts in TRAIN_MODULE_CHOICES:
                setups = tuple(
                    Setup(parts, batch, clip_s, quantization=quantization)
                    for batch in MICRO_BATCHES
                )
                estimates = tuple(estimate(shape, setup) for setup in setups)
                rows.append(TableRow(name, setups, estimates))
    return rows


def inference_table(clip_s: float = TABLE_CLIP_S) -> list[TableRow]:
    """Inference of every base in each quantization at each decoding batch."""
    rows = []
    for name in BASES:
        shape = model_shape(name)
        for quantization in QUANTIZATIONS:
            setups = tuple(
                Setup(None, batch, clip_s, quantization=quantization) for batch in INFERENCE_BATCHES
            )
            rows.append(TableRow(name, setups, tuple(estimate(shape, s) for s in setups)))
    return rows


def training_rows(table: list[TableRow]) -> list[tuple[str, ...]]:
    """(base, quantization, train modules, parameters trained, GiB at each micro-batch)."""
    return [
        (
            row.base,
            row.setups[0].quantization,
            modules_label(row.setups[0].train_modules or ()),
            count_label(row.estimates[0].lora_params),
            *(gib(e.total) for e in row.estimates),
        )
        for row in table
    ]


def inference_rows(table: list[TableRow]) -> list[tuple[str, ...]]:
    """(base, parameters, quantization, weights GiB, GiB at each decoding batch)."""
    return [
        (
            row.base,
            count_label(model_shape(row.base).total_params),
            row.setups[0].quantization,
            gib(row.estimates[0].weights),
            *(gib(e.total) for e in row.estimates),
        )
        for row in table
    ]


TRAINING_HEADER = (
    "base",
    "weights",
    "train modules",
    "trained",
    *(f"batch {b}" for b in MICRO_BATCHES),
)
INFERENCE_HEADER = (
    "base",
    "parameters",
    "weights",
    "weights GiB",
    *(f"batch {b}" for b in INFERENCE_BATCHES),
)


def _markdown(header: Sequence[str], rows: list[tuple[str, ...]]) -> str:
    numeric = [
        all(re.fullmatch(r"[\d.]+[KMB]?", row[i]) for row in rows) for i in range(len(header))
    ]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if right else "---" for right in numeric) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_tables(clip_s: float = TABLE_CLIP_S) -> str:
    """The planning tables of docs/gpu-memory.md (GiB, estimates), rendered from the code."""
    return "\n".join(
        [
            f"Training, {clip_s:g} s clips, gradient checkpointing on, GiB per GPU "
            "(estimate, not measured):",
            "",
            _markdown(TRAINING_HEADER, training_rows(training_table(clip_s))),
            "",
            f"Inference, {clip_s:g} s clips, GiB per GPU (estimate, not measured):",
            "",
            _markdown(INFERENCE_HEADER, inference_rows(inference_table(clip_s))),
        ]
    )
