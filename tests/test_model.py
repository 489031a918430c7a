import bitsandbytes as bnb
import pytest
import torch
from torch import nn

from voxadapt.model import (
    AdapterOptions,
    ModelError,
    attach_adapter,
    attach_projector_adapter,
    check_only_projector_trains,
    check_trainable_parts,
    load_model,
    parameter_audit,
    quantization_config,
)


def _by_group(rows):
    return {row.group: row for row in rows}


@pytest.fixture(scope="module")
def nf4_model(tiny_model):
    return load_model(tiny_model, quantization="nf4")


def test_nf4_quantizes_only_the_llm(nf4_model):
    modules = dict(nf4_model.named_modules())
    llm = [n for n, m in modules.items() if ".language_model." in n and isinstance(m, nn.Linear)]
    assert llm and all(isinstance(modules[n], bnb.nn.Linear4bit) for n in llm)
    kept = [
        n
        for n, m in modules.items()
        if isinstance(m, nn.Linear)
        and (".audio_tower." in n or ".multi_modal_projector." in n or n == "lm_head")
    ]
    assert len(kept) > 10
    for name in kept:
        assert not isinstance(modules[name], bnb.nn.Linear4bit), name
        assert modules[name].weight.dtype == torch.float32, name


def test_short_skip_names_would_quantize_the_projector(tiny_model):
    """The trap the skip list avoids: bare names don't match transformers' module paths."""
    from transformers import BitsAndBytesConfig, VoxtralForConditionalGeneration

    naive = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        llm_int8_skip_modules=["audio_tower", "multi_modal_projector"],
    )
    model = VoxtralForConditionalGeneration.from_pretrained(tiny_model, quantization_config=naive)
    projector = dict(model.named_modules())["model.multi_modal_projector.linear_1"]
    assert isinstance(projector, bnb.nn.Linear4bit)
    ours = quantization_config(tiny_model, "nf4", torch.float32).llm_int8_skip_modules
    assert "model.multi_modal_projector" in ours and "lm_head" in ours


def test_lora_audit_tiny(nf4_model):
    model = attach_projector_adapter(nf4_model, AdapterOptions())
    assert check_only_projector_trains(model) == 3_584  # 8*(256+64) + 8*(64+64)
    rows = _by_group(parameter_audit(model))
    assert rows["projector"].trainable == 3_584
    assert rows["audio_tower"].trainable == rows["language_model"].trainable == 0
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("multi_modal_projector" in n and "lora_" in n for n in trainable)


@pytest.mark.parametrize(("mode", "expected"), [("lora", 114_688), ("full", 25_165_824)])
def test_audit_of_the_real_voxtral_mini_3b(mode, expected):
    from transformers import VoxtralConfig, VoxtralForConditionalGeneration

    with torch.device("meta"):
        model = VoxtralForConditionalGeneration(VoxtralConfig())
    model = attach_projector_adapter(model, AdapterOptions(mode=mode))
    assert check_only_projector_trains(model) == expected
    rows = _by_group(parameter_audit(model))
    assert rows["audio_tower"].total > 600_000_000 and rows["language_model"].total > 3e9


def test_refuses_when_anything_else_trains(tiny_model):
    model = attach_projector_adapter(
        load_model(tiny_model, quantization="none"), AdapterOptions(mode="full")
    )
    model.lm_head.weight.requires_grad_(True)
    with pytest.raises(ModelError, match="lm_head"):
        check_only_projector_trains(model)


def test_model_without_projector_is_a_clear_error(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(
        LlamaConfig(
            vocab_size=100,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
        )
    ).save_pretrained(tmp_path)
    with pytest.raises(
        ModelError, match=r"a .llama. model, which voxadapt cannot adapt.*Qwen3-ASR"
    ):
        load_model(tmp_path, quantization="nf4")


# ------------------------------------------------- what learns, on the real configurations


def mini_3b_config():
    """Voxtral-Mini-3B-2507: transformers' VoxtralConfig defaults are its configuration."""
    from transformers import VoxtralConfig

    return VoxtralConfig(audio_token_id=24)


def small_24b_config():
    """Voxtral-Small-24B-2507's config.json: Mistral-Small-24B's LLM behind the same
    Whisper-large-v3-sized encoder; its projector maps 4 x 1280 -> 5120 -> 5120."""
    from transformers import VoxtralConfig

    return VoxtralConfig(
        audio_token_id=24,
        text_config={
            "model_type": "llama",
            "hidden_size": 5120,
            "intermediate_size": 32768,
            "num_hidden_layers": 40,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "vocab_size": 131072,
            "max_position_embeddings": 131072,
            "rms_norm_eps": 1e-5,
            "rope_theta": 100_000_000.0,
        },
    )


def lora_parameters(r: int, shapes: list[tuple[int, int]]) -> int:
    """LoRA on a linear layer of (in, out) features adds A (r x in) and B (out x r)."""
    return sum(r * (fan_in + fan_out) for fan_in, fan_out in shapes)


def expected_trainable(config, parts: tuple[str, ...], mode: str) -> dict[str, int]:
    """Trainable parameters per audit group, from the configuration's sizes alone."""
    text, audio = config.text_config, config.audio_config
    h, ff = text.hidden_size, text.intermediate_size
    q, kv = text.num_attention_heads * text.head_dim, text.num_key_value_heads * text.head_dim
    llm_layer = [(h, q), (h, kv), (h, kv), (q, h), (h, ff), (h, ff), (ff, h)]
    d, encoder_ff = audio.hidden_size, audio.intermediate_size
    encoder_layer = [(d, d)] * 4 + [(d, encoder_ff), (encoder_ff, d)]
    # the projector stacks 4 encoder frames: 4 x 1280 = 5120 = the encoder's intermediate size
    projector = [(4 * d, h), (h, h)]
    counts = dict.fromkeys(("audio_tower", "projector", "language_model", "lm_head"), 0)
    if "projector" in parts:
        full = sum(fan_in * fan_out for fan_in, fan_out in projector)
        counts["projector"] = lora_parameters(8, projector) if mode == "lora" else full
    if "llm" in parts:
        counts["language_model"] = lora_parameters(16, llm_layer * text.num_hidden_layers)
    if "encoder" in parts:
        counts["audio_tower"] = lora_parameters(16, encoder_layer * audio.num_hidden_layers)
    return counts


# what `voxadapt train --train-modules ...` trains on the released models (README table)
REAL_SIZES = {
    ("mini", ("projector",), "lora"): 114_688,
    ("mini", ("projector",), "full"): 25_165_824,
    ("mini", ("projector", "llm"), "lora"): 27_148_288,
    ("mini", ("projector", "llm", "encoder"), "lora"): 38_944_768,
    ("mini", ("llm",), "lora"): 27_033_600,
    ("small", ("projector",), "lora"): 163_840,
    ("small", ("projector",), "full"): 52_428_800,
    ("small", ("projector", "llm"), "lora"): 92_569_600,
    ("small", ("projector", "llm", "encoder"), "lora"): 104_366_080,
    ("small", ("llm",), "lora"): 92_405_760,
}


@pytest.mark.parametrize(("size", "parts", "mode"), list(REAL_SIZES))
def test_what_learns_on_the_real_mini_and_small(size, parts, mode):
    """The audit of each choice on Voxtral-Mini-3B's and Voxtral-Small-24B's configurations,
    built on the meta device (no weights): trainable parameters per part equal the counts
    computed from the configuration's sizes, and nothing else trains."""
    from transformers import VoxtralForConditionalGeneration

    config = mini_3b_config() if size == "mini" else small_24b_config()
    with torch.device("meta"):
        model = VoxtralForConditionalGeneration(config)
        model = attach_adapter(model, AdapterOptions(mode, train_modules=parts))
    expected = expected_trainable(config, parts, mode)
    rows = _by_group(parameter_audit(model))
    assert {group: row.trainable for group, row in rows.items()} == expected
    assert (
        check_trainable_parts(model, parts)
        == sum(expected.values())
        == REAL_SIZES[(size, parts, mode)]
    )
    frozen = {group: row.total - row.trainable for group, row in rows.items()}
    billions = (frozen["language_model"] + frozen["lm_head"]) / 1e9
    assert 3.9 < billions < 4.1 if size == "mini" else 23.4 < billions < 23.8  # LLM + head
    assert 630e6 < frozen["audio_tower"] < 640e6  # Whisper-large-v3's encoder


@pytest.mark.parametrize(
    "name, dtype",
    [("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32), (None, None)],
)
def test_a_dtype_option_resolves_to_its_torch_dtype(name, dtype):
    from voxadapt.model import resolve_dtype

    assert resolve_dtype(name) is dtype


def test_an_unknown_dtype_option_names_the_choices():
    from voxadapt.errors import ConfigError
    from voxadapt.model import resolve_dtype

    with pytest.raises(ConfigError, match="bf16, fp16, fp32"):
        resolve_dtype("float16")
