import bitsandbytes as bnb
import pytest
import torch
from torch import nn

from voxadapt.model import (
    AdapterOptions,
    ModelError,
    attach_projector_adapter,
    check_only_projector_trains,
    load_voxtral,
    parameter_audit,
    quantization_config,
)


def _by_group(rows):
    return {row.group: row for row in rows}


@pytest.fixture(scope="module")
def nf4_model(tiny_model):
    return load_voxtral(tiny_model, quantization="nf4")


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
        load_voxtral(tiny_model, quantization="none"), AdapterOptions(mode="full")
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
    with pytest.raises(ModelError, match="not Voxtral"):
        load_voxtral(tmp_path, quantization="nf4")
