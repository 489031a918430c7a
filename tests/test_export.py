"""Export: merged transformers checkpoint and Mistral's consolidated layout for vLLM."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file
from transformers import VoxtralForConditionalGeneration

from voxadapt.adapters import load_for_inference
from voxadapt.cli import main
from voxadapt.errors import ConfigError
from voxadapt.stages.export import (
    ExportConfig,
    ExportError,
    _rope_rows_to_hf,
    _rope_rows_to_mistral,
    canonical_name,
    export,
    mistral_to_hf,
)

from conftest import CLIPS, dead_pid, staging_of


def logits(model, processor):
    inputs = processor.apply_transcription_request(audio=str(CLIPS[1]), model_id="x", language="ko")
    with torch.no_grad():
        return model(**inputs).logits.float()


def relative_error(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_hf_export_matches_base_plus_adapter(tiny_model, adapters, processor, tmp_path, mode):
    result = export(
        ExportConfig(adapters[mode], tmp_path / "hf", str(tiny_model), format="hf", dtype="fp32")
    )
    merged = VoxtralForConditionalGeneration.from_pretrained(result.out_dir)
    unmerged, _ = load_for_inference(tiny_model, adapters[mode], quantization="none")
    base, _ = load_for_inference(tiny_model, quantization="none")
    expected = logits(unmerged, processor)
    assert relative_error(logits(merged, processor), expected) < 1e-3
    assert relative_error(logits(base, processor), expected) > 1e-2  # the adapter matters
    names = {p.name for p in result.files}
    assert {"config.json", "model.safetensors", "tekken.json", "processor_config.json"} <= names
    assert not any("lora" in k for k in load_file(result.out_dir / "model.safetensors"))


def test_mistral_export_round_trips_exactly(tiny_model, adapters, tmp_path):
    result = export(
        ExportConfig(
            adapters["lora"], tmp_path / "mistral", str(tiny_model), format="mistral", dtype="fp32"
        )
    )
    assert {p.name for p in result.files} >= {
        "consolidated.safetensors",
        "params.json",
        "tekken.json",
    }
    weights = load_file(result.out_dir / "consolidated.safetensors")
    # Names vLLM's Voxtral loader expects
    for name in (
        "tok_embeddings.weight",
        "output.weight",
        "layers.1.attention.wk.weight",
        "layers.0.feed_forward.w3.weight",
        "mm_whisper_embeddings.whisper_encoder.conv_layers.1.bias",
        "mm_whisper_embeddings.whisper_encoder.transformer.layers.0.attention.wo.weight",
        "mm_whisper_embeddings.whisper_encoder.transformer.layers.1.feed_forward.w2.bias",
        "mm_whisper_embeddings.whisper_encoder.transformer.norm.weight",
        "mm_whisper_embeddings.audio_language_projection.0.weight",
        "mm_whisper_embeddings.audio_language_projection.2.weight",
    ):
        assert name in weights, name
    assert not any("embed_positions" in n for n in weights)  # sinusoidal, recomputed

    merged = VoxtralForConditionalGeneration.from_pretrained(
        export(
            ExportConfig(adapters["lora"], tmp_path / "hf", str(tiny_model), dtype="fp32")
        ).out_dir
    )
    reference = {canonical_name(n): t for n, t in merged.state_dict().items()}
    restored = mistral_to_hf(weights, merged.config)
    assert set(restored) == set(reference)
    for name, tensor in reference.items():
        assert torch.equal(restored[name], tensor), name
    # q/k rows really are re-ordered for Mistral's rotary layout (not a silent identity)
    assert not torch.equal(
        weights["layers.0.attention.wq.weight"],
        reference["llm.layers.0.self_attn.q_proj.weight"],
    )

    params = json.loads((result.out_dir / "params.json").read_text())
    text = merged.config.text_config
    assert (params["dim"], params["n_layers"], params["n_heads"], params["n_kv_heads"]) == (
        text.hidden_size,
        text.num_hidden_layers,
        text.num_attention_heads,
        text.num_key_value_heads,
    )
    encoder = params["multimodal"]["whisper_model_args"]
    assert encoder["downsample_args"]["downsample_factor"] == 4
    assert encoder["encoder_args"]["audio_encoding_args"]["num_mel_bins"] == 128


def test_rope_permutation_inverts():
    tensor = torch.randn(64, 8)
    moved = _rope_rows_to_mistral(tensor, 4)
    assert not torch.equal(moved, tensor)
    assert torch.equal(_rope_rows_to_hf(moved, 4), tensor)


def test_mistral_export_refuses_learned_positions(tiny_model, adapters, tmp_path):
    broken = tmp_path / "learned"
    model = VoxtralForConditionalGeneration.from_pretrained(tiny_model)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("embed_positions.weight"):
                parameter.normal_()
    model.save_pretrained(broken)
    for extra in ("tekken.json", "processor_config.json"):
        (broken / extra).write_bytes((tiny_model / extra).read_bytes())
    with pytest.raises(ExportError, match="not sinusoidal"):
        export(
            ExportConfig(
                adapters["lora"],
                tmp_path / "models" / "out",
                str(broken),
                format="mistral",
                dtype="fp32",
                force=True,
            )
        )
    # found after the model was merged: the folder the run made goes again, staging and all
    assert not (tmp_path / "models").exists()


def test_export_cli(adapters, tmp_path, capsys):
    out = tmp_path / "vllm"
    assert (
        main(
            ["export", "--adapter", str(adapters["full"]), "--out", str(out), "--format", "mistral"]
        )
        == 0
    )
    assert "vllm serve" in capsys.readouterr().out
    assert main(["export", "--adapter", str(adapters["full"]), "--out", str(out)]) == 1
    assert "not empty" in capsys.readouterr().err


def test_overwrite_replaces_only_an_earlier_export(adapters, tiny_model, tmp_path, capsys):
    out = tmp_path / "hf"
    config = ExportConfig(adapters["full"], out, str(tiny_model), format="hf", dtype="fp32")
    export(config)
    record = json.loads((out / "voxadapt_export.json").read_text())
    # absolute paths: the record means the same thing from any working directory
    assert record["adapter"] == str(adapters["full"].absolute())
    assert record["base_model"] == str(tiny_model.absolute())
    weights = (out / "model.safetensors").read_bytes()
    (out / "stale.txt").write_text("from the earlier export")
    with pytest.raises(ConfigError, match="--overwrite to replace an earlier export"):
        export(config)
    # a failing re-export (another base, refused) leaves the earlier export as it was
    bad = ExportConfig(adapters["lora"], out, str(tmp_path / "nobase"), overwrite=True)
    with pytest.raises(Exception):  # noqa: B017 - any refusal; the point is what stays
        export(bad)
    assert (out / "stale.txt").is_file() and (out / "model.safetensors").read_bytes() == weights
    again = ExportConfig(**{**config.__dict__, "overwrite": True})
    with pytest.raises(ConfigError, match=r"holds files voxadapt export did not write \(stale"):
        export(again)  # a file the user added (a model card, notes) is never deleted
    (out / "stale.txt").unlink()
    (out / "config.json").write_text("{}")  # export's own files are replaced
    result = export(again)
    assert json.loads((out / "config.json").read_text()) != {}
    assert (out / "model.safetensors").read_bytes() == weights  # same inputs, same weights
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith((".hf.", ".voxadapt-"))]
    assert not leftovers
    assert result.out_dir == out.absolute()
    # a folder voxadapt export did not write is never replaced, even with --overwrite
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert main(["export", "--adapter", str(adapters["full"]), "--out", str(mine),
                 "--overwrite"]) == 1  # fmt: skip
    assert "is not a voxadapt export" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "keep"


def test_export_removes_the_staging_a_killed_export_left(adapters, tiny_model, tmp_path):
    dead = dead_pid()
    stale = staging_of(tmp_path, "hf", dead)  # what a SIGKILLed `export --out hf` leaves
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"\0" * (1 << 20))
    live = staging_of(tmp_path, "hf", os.getppid())  # a run still going: never touched
    live.mkdir()
    mine = tmp_path / f".hf.tmp-{dead}"  # not voxadapt's scheme: the user's
    mine.mkdir()
    export(ExportConfig(adapters["lora"], tmp_path / "hf", str(tiny_model), dtype="fp32"))
    assert not stale.exists() and live.is_dir() and mine.is_dir()
    assert (tmp_path / "hf" / "model.safetensors").is_file()
