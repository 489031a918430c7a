"""`voxadapt.memory`: exact parameter counts from meta-device models, and GPU memory
estimates that are consistent (monotonic, hand-checkable) and documented."""

import re
from pathlib import Path

import pytest
import torch

from voxadapt import memory
from voxadapt.errors import ConfigError
from voxadapt.families import QWEN3_ASR, VOXTRAL
from voxadapt.model import TRAIN_PARTS, AdapterOptions, PartLora, attach_adapter

DOCS_PAGE = Path(__file__).parents[1] / "docs" / "gpu-memory.md"


def _real_and_meta(family, config):
    torch.manual_seed(0)
    real = family.model_class()(config)
    return real, family.meta_model(config)


def test_meta_counts_equal_a_real_tiny_voxtral_and_the_arithmetic():
    from voxadapt.tiny import tiny_config

    config = tiny_config()
    real, meta = _real_and_meta(VOXTRAL, config)
    counted = memory.shape_of_model(meta, "tiny")
    assert counted == memory.shape_of_model(real, "tiny")  # meta counts what CPU builds
    assert counted.total_params == sum(p.numel() for p in real.parameters())
    # independent arithmetic from the config's widths (Whisper-style encoder: k_proj has no
    # bias; LLaMA decoder: no biases; untied head)
    audio, text = config.audio_config, config.text_config
    d, f, mels, positions = 64, 256, 128, 1500
    assert (audio.hidden_size, audio.intermediate_size, audio.num_mel_bins) == (d, f, mels)
    layer = 4 * d * d + 3 * d + 2 * 2 * d + d * f + f + f * d + d
    encoder = mels * d * 3 + d + d * d * 3 + d + positions * d + 2 * layer + 2 * d
    assert counted.encoder_params == encoder
    assert counted.projector_params == f * 64 + 64 * 64
    h, i, q, kv, vocab = 64, 128, 4 * 16, 2 * 16, text.vocab_size
    linears = h * q + 2 * h * kv + q * h + 3 * h * i
    assert counted.llm_linear_params == 2 * linears
    assert counted.llm_other_params == vocab * h + 2 * 2 * h + h  # embeddings and norms
    assert counted.lm_head_params == vocab * h
    assert (counted.llm_layers, counted.kv_width, counted.vocab_size) == (2, kv, vocab)


def test_meta_counts_equal_a_real_tiny_qwen3_asr_with_a_tied_head():
    from voxadapt.families.qwen3_asr_checkpoint import tiny_config

    config = tiny_config()
    real, meta = _real_and_meta(QWEN3_ASR, config)
    counted = memory.shape_of_model(meta, "tiny")
    assert counted == memory.shape_of_model(real, "tiny")
    assert counted.total_params == sum(p.numel() for p in real.parameters())
    assert counted.lm_head_params == 0  # tied: the embedding counts it once
    d = config.audio_config.d_model
    out = config.audio_config.output_dim
    assert counted.projector_params == d * d + d + d * out + out


def test_released_bases_have_their_published_sizes():
    # Voxtral Mini's 4.68B parameters are its 9.35 GB bf16 checkpoint; the Qwen3-ASR counts
    # are the ones the family's known models state (0.78B and 2.0B)
    expected = {
        "voxtral-mini": (4.67e9, 4.69e9),
        "voxtral-small": (24.2e9, 24.4e9),
        "qwen3-asr-0.6b": (0.77e9, 0.79e9),
        "qwen3-asr-1.7b": (2.0e9, 2.1e9),
    }
    for name, (low, high) in expected.items():
        shape = memory.model_shape(name)
        assert low < shape.total_params < high, name
    mini = memory.model_shape("mistralai/Voxtral-Mini-3B-2507")  # the hub id, same shape
    assert mini is memory.model_shape("voxtral-mini")  # counted once per process
    # 30 layers x (q 3072x4096, k and v 3072x1024, o 4096x3072, gate/up/down 3072x8192)
    assert mini.llm_linear_params == 30 * (2 * 3072 * 4096 + 2 * 3072 * 1024 + 3 * 3072 * 8192)
    assert (mini.audio_tokens(30), mini.encoder_positions(30)) == (375, 1500)
    assert mini.audio_tokens(31) == 750  # a second 30 s chunk
    qwen = memory.model_shape("qwen3-asr-1.7b")
    assert qwen.audio_tokens(30) == 390  # 13 per second (the processor's count)


def test_a_local_model_folder_is_planned_from_its_config(tiny_model):
    from transformers import AutoConfig

    shape = memory.model_shape(str(tiny_model))
    with torch.device("meta"):
        model = VOXTRAL.model_class()(AutoConfig.from_pretrained(tiny_model))
    assert shape.total_params == sum(p.numel() for p in model.parameters())
    with pytest.raises(ConfigError, match="not a known base"):
        memory.model_shape("voxtral-huge")


@pytest.mark.parametrize(
    "parts",
    [("projector",), ("projector", "llm"), ("projector", "llm", "encoder"), ("llm",)],
)
def test_lora_count_is_what_peft_trains(parts):
    """rank x (in + out) per targeted linear, equal to the trainable parameters the real
    `attach_adapter` of `voxadapt train` makes on the tiny model."""
    from voxadapt.tiny import tiny_config

    config = tiny_config()
    torch.manual_seed(0)
    model = VOXTRAL.model_class()(config)
    options = AdapterOptions(
        lora_r=3,
        train_modules=parts,
        llm=PartLora(r=5, targets=VOXTRAL.llm_lora_targets),
        encoder=PartLora(r=7, targets=VOXTRAL.encoder_lora_targets),
    )
    model = attach_adapter(model, options)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    shape = memory.shape_of_model(VOXTRAL.meta_model(config), "tiny")
    setup = memory.Setup(parts, lora_r=3, llm_lora_r=5, encoder_lora_r=7)
    assert memory.estimate(shape, setup).lora_params == trainable
    by_hand = sum(
        rank * (linear.in_features + linear.out_features)
        for part, rank in (("projector", 3), ("llm", 5), ("encoder", 7))
        if part in parts
        for linear in memory.lora_linears(shape, part)
    )
    assert trainable == by_hand


def test_lora_targets_resolve_like_train():
    shape = memory.model_shape("voxtral-mini")
    only_down = memory.lora_linears(shape, "llm", ["mlp.down_proj"])
    assert len(only_down) == 30 and all(x.path.endswith("mlp.down_proj") for x in only_down)
    assert memory.lora_parameter_count(only_down, 16) == 30 * 16 * (8192 + 3072)
    assert len(memory.lora_linears(shape, "encoder", ())) == 32 * 6  # the family's defaults
    assert memory.TRAIN_MODULE_CHOICES[-1] == TRAIN_PARTS


@pytest.mark.parametrize("name", list(memory.BASES))
def test_estimates_grow_with_micro_batch_and_clip_length(name):
    shape = memory.model_shape(name)
    for parts in (None, *memory.TRAIN_MODULE_CHOICES):
        for quantization in memory.QUANTIZATIONS:
            by_batch = [
                memory.estimate(shape, memory.Setup(parts, batch, 30.0, quantization)).total
                for batch in (1, 2, 4, 8, 16, 32)
            ]
            assert by_batch == sorted(by_batch) and len(set(by_batch)) == len(by_batch)
            by_clip = [
                memory.estimate(shape, memory.Setup(parts, 4, clip_s, quantization)).total
                for clip_s in (0.5, 1, 1.5, 5, 10, 29.9, 30, 31, 60, 90, 300)
            ]
            assert by_clip == sorted(by_clip) and by_clip[-1] > by_clip[0]
    # more learns, more memory; NF4 takes less than bf16; checkpointing saves memory
    setups = [memory.Setup(parts, 8) for parts in memory.TRAIN_MODULE_CHOICES]
    totals = [memory.estimate(shape, setup).total for setup in setups]
    assert totals == sorted(totals)
    nf4, bf16 = (memory.estimate(shape, memory.Setup(quantization=q)) for q in ("nf4", "none"))
    assert nf4.weights < bf16.weights and nf4.total < bf16.total
    plain = memory.estimate(
        shape, memory.Setup(("projector", "llm"), 8, gradient_checkpointing=False)
    )
    assert (
        plain.activations
        > memory.estimate(shape, memory.Setup(("projector", "llm"), 8)).activations
    )


def test_weights_by_hand():
    """Voxtral Mini: 3,208,642,560 LLM linear weights in NF4 at 4.127 bits, the other
    1,467,628,544 parameters (encoder, projector, embeddings, norms, head) in bf16."""
    shape = memory.model_shape("voxtral-mini")
    assert shape.total_params - shape.llm_linear_params == 1_467_628_544
    nf4 = 3_208_642_560 * (4 + 8 / 64 + 32 / 16384) / 8 + 1_467_628_544 * 2
    assert memory.weight_bytes(shape, "nf4") == round(nf4)
    assert memory.weight_bytes(shape, "none") == 4_676_271_104 * 2
    # inference KV cache at batch 1, 30 s: (375 audio + 32 prompt + 240 transcript) tokens x
    # 30 layers x 2 (K, V) x 8 heads x 128 x 2 bytes
    found = memory.estimate(shape, memory.Setup(None, 1, 30.0))
    assert found.kv_cache == 647 * 30 * 2 * 8 * 128 * 2
    assert found.lora_params == found.lora_optimizer == found.activations == 0


def test_verdicts():
    gib = memory.GIB
    assert memory.verdict(10 * gib, 24 * gib) == "fits"
    assert memory.verdict(23 * gib, 24 * gib) == "tight"  # over 90%
    assert memory.verdict(24 * gib, 24 * gib) == "tight"
    assert memory.verdict(24 * gib + 1, 24 * gib) == "does not fit"


def test_the_docs_page_holds_the_table_the_code_renders():
    """docs/gpu-memory.md's tables are generated: regenerate them when the estimates change
    (the page says how)."""
    page = DOCS_PAGE.read_text(encoding="utf-8")
    generated = r"<!-- generated by voxadapt\.memory\.markdown_tables\(\) -->\n(.*?)\n"
    match = re.search(generated + r"<!-- end generated -->", page, re.S)
    assert match, "the page lost its generated-table markers"
    assert match.group(1).strip() == memory.markdown_tables().strip()
    # every relative link of the page names a file that exists
    for target in re.findall(r"\]\((?!https?://|#)([^)#]+)", page):
        assert (DOCS_PAGE.parent / target).exists(), target


def test_a_config_too_large_to_build_is_one_line(tiny_model, tmp_path):
    import json

    config = json.loads((tiny_model / "config.json").read_text())
    config["text_config"]["hidden_size"] = 10**12
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="cannot be built"):
        memory.model_shape(str(tmp_path))
