"""The family registry: every model is recognized by its config, or refused in one line."""

import json

import pytest
import torch

from voxadapt.errors import ModelError
from voxadapt.families import FAMILIES, QWEN3_ASR, VOXTRAL, family_of, load_frontend
from voxadapt.families.qwen3_asr import ALIGNER_ARCHITECTURE, LANGUAGES
from voxadapt.model import ENCODER_LORA_TARGETS, LLM_LORA_TARGETS, module_paths

from conftest import run_cli


def write_config(folder, **fields):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(fields))
    return folder


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"model_type": "qwen3_asr", "architectures": [ALIGNER_ARCHITECTURE]},
            "a Qwen3 forced aligner .* not a speech recognizer.* Qwen/Qwen3-ASR-1.7B-hf",
        ),
        (
            {"model_type": "qwen3_asr", "architectures": ["Qwen3ASRForConditionalGeneration"],
             "thinker_config": {"audio_config": {}, "text_config": {}}},
            "original qwen_asr layout .* Qwen/Qwen3-ASR-1.7B-hf",
        ),
        ({"model_type": "whisper"}, "a 'whisper' model, which voxadapt cannot adapt"),
    ],
)  # fmt: skip
def test_models_no_family_can_use_are_refused_in_one_line(tmp_path, fields, message):
    folder = write_config(tmp_path / "model", **fields)
    with pytest.raises(ModelError, match=message) as caught:
        family_of(folder)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("path", ["/nonexistent/model", "./models/missing", "runs/a/b/c"])
def test_a_missing_model_folder_is_named_as_such(path):
    with pytest.raises(ModelError, match=f"model folder not found: {path}"):
        family_of(path)


def test_released_checkpoints_are_known_offline():
    """A hub id the families declare resolves without its config (checked before a
    download, and offline)."""
    for family in FAMILIES.values():
        assert family_of(family.default_model) is family
        for model in family.known_models:
            assert family_of(model.hub_id) is family


def test_transcribe_with_a_missing_model_is_one_line(tmp_path):
    from conftest import CLIPS

    result = run_cli("transcribe", CLIPS[0], "--model", "/nonexistent/voxtral")
    assert result.returncode == 1
    assert result.stderr.strip() == "voxadapt: error: model folder not found: /nonexistent/voxtral"


def test_qwen_languages_are_the_ones_its_processor_can_force():
    from transformers.models.qwen3_asr.processing_qwen3_asr import LANGUAGE_CODE_TO_NAME

    assert set(LANGUAGES) == set(LANGUAGE_CODE_TO_NAME) and "ko" in LANGUAGES
    assert "ko" not in VOXTRAL.languages  # its model card's list


def test_default_lora_targets_name_the_same_layers_in_every_family(tiny_model, tiny_qwen):
    """train's defaults (one list per part) must fit every family: each family declares
    them, and they name linear layers inside the part of both tiny models."""
    from voxadapt.model import lora_target_names

    for family in FAMILIES.values():
        assert family.llm_lora_targets == LLM_LORA_TARGETS
        assert family.encoder_lora_targets == ENCODER_LORA_TARGETS
    for folder in (tiny_model, tiny_qwen):
        family = family_of(folder)
        from voxadapt.families import load_config

        model = family.meta_model(load_config(folder))
        paths = module_paths(model)
        llm = lora_target_names(model, "llm", LLM_LORA_TARGETS)
        encoder = lora_target_names(model, "encoder", ENCODER_LORA_TARGETS)
        assert llm and all(n.startswith(tuple(paths["language_model"])) for n in llm)
        assert encoder and all(n.startswith(tuple(paths["audio_tower"])) for n in encoder)
        assert not set(llm) & set(encoder)


def test_each_family_frontend(tiny_model, tiny_qwen):
    voxtral, qwen = load_frontend(tiny_model), load_frontend(tiny_qwen)
    assert (voxtral.family, qwen.family) == (VOXTRAL, QWEN3_ASR)
    assert (voxtral.spec.layout, qwen.spec.layout) == ("chunked", "masked")
    assert voxtral.spec.fingerprint != qwen.spec.fingerprint
    assert voxtral.prompts.family is VOXTRAL and qwen.prompts.family is QWEN3_ASR
    assert not VOXTRAL.takes_context and QWEN3_ASR.takes_context
    assert "mistral" in VOXTRAL.export_formats and "mistral" not in QWEN3_ASR.export_formats
    assert torch.nn.Module in QWEN3_ASR.model_class().__mro__


def test_an_adapter_naming_an_unknown_family_is_refused(tiny_model):
    from voxadapt.adapters import check_base_model

    for family in ("bogus", 5, None):
        with pytest.raises(ModelError, match=r"names the model family .* which voxadapt does not"):
            check_base_model(str(tiny_model), {"family": family}, force=True)
    check_base_model(str(tiny_model), {}, force=False)  # no family: a Voxtral adapter


def test_new_weights_in_the_same_model_folder_are_another_model(tiny_model, tmp_path):
    import os
    import shutil

    from voxadapt.identity import model_identity

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    before = model_identity(folder)
    weights = folder / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # same size, rewritten
    assert model_identity(folder) != before


def test_a_config_transformers_refuses_is_one_line(tiny_model, tmp_path):
    from voxadapt.families import FamilyError, family_of

    config = json.loads((tiny_model / "config.json").read_text())
    config["text_config"]["hidden_size"] += 1  # not a multiple of the heads any more
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(FamilyError, match=r"cannot read the config of .*multiple"):
        family_of(tmp_path)
