"""What learns (`train --train-modules`): the projector (default), plus LoRA on the 4-bit LLM,
plus LoRA on the audio encoder, or the LLM alone.

Each choice trains on the tiny model (real PEFT, real NF4 on CPU), resumes bit-identically,
evaluates, exports in both formats (merged weights = base + adapter, computed here from the
adapter's files) and reloads, also through plain `PeftModel.from_pretrained`. A default run
still writes the adapter files it wrote before the option existed.
"""

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from voxadapt.adapters import load_for_inference
from voxadapt.config import build_config, to_jsonable
from voxadapt.decoding import DecodeOptions
from voxadapt.errors import ConfigError
from voxadapt.model import (
    AdapterOptions,
    ModelError,
    attach_adapter,
    check_trainable_parts,
    load_model,
    lora_target_names,
)
from voxadapt.stages.train import TrainConfig, train
from voxadapt.training import resume_differences

from conftest import ASSETS, CLIPS

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from default_adapter import default_run, fingerprint

# (train_modules, projector mode): the ablation's four choices, and a full projector beside
# LoRA on the LLM (a PEFT modules_to_save)
CHOICES = [
    (["projector"], "lora"),
    (["projector", "llm"], "lora"),
    (["projector", "llm", "encoder"], "lora"),
    (["llm"], "lora"),
    (["projector", "llm"], "full"),
]


def run_config(tiny_model, manifest, out, parts, projector="lora", **changes) -> TrainConfig:
    options = dict(
        model=str(tiny_model),
        train=manifest,
        valid=None,
        output_dir=out,
        max_steps=4,
        batch_size=4,  # the 4 sample clips: every step sees the same data, so loss can fall
        grad_accum=1,
        lr=3e-3,
        logging_steps=1,
        warmup_ratio=0.0,
        num_workers=0,
        scheduler="constant",
        report_to=["none"],
        train_modules=parts,
        projector=projector,
        decode=DecodeOptions(tokens_per_s=1.0, num_workers=0),
    )
    options.update(changes)
    return TrainConfig(**options)


def losses(history):
    return [record["loss"] for record in history if "loss" in record]


@pytest.fixture(scope="module", params=CHOICES, ids=lambda c: "+".join(c[0]) + "-" + c[1])
def trained(request, tiny_model, sample_manifest, tmp_path_factory):
    """One choice trained 4 steps straight, and 2 steps + 2 resumed."""
    parts, projector = request.param
    root = tmp_path_factory.mktemp("choice")
    straight = train(run_config(tiny_model, sample_manifest, root / "straight", parts, projector))
    train(run_config(tiny_model, sample_manifest, root / "resumed", parts, projector, max_steps=2))
    resumed = train(
        run_config(tiny_model, sample_manifest, root / "resumed", parts, projector, resume=True)
    )
    return {
        "parts": parts,
        "projector": projector,
        "straight": straight,
        "resumed": resumed,
        "root": root,
    }


def _logits(model, processor):
    inputs = processor.apply_transcription_request(audio=str(CLIPS[1]), model_id="x", language="ko")
    with torch.no_grad():
        return model(**inputs).logits.float()


def _relative_error(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.slow
def test_each_choice_learns_and_resumes_bit_identically(trained):
    straight, resumed = trained["straight"], trained["resumed"]
    loss = losses(straight.state.log_history)
    assert len(loss) == 4 and loss[-1] < loss[0]
    assert losses(resumed.state.log_history) == loss  # resumed at step 2, same values
    a = load_file(straight.output_dir / "checkpoint-last" / "trainable.safetensors")
    b = load_file(resumed.output_dir / "checkpoint-last" / "trainable.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    for name in ("adapter_model.safetensors", "adapter_config.json", "voxadapt_adapter.json"):
        files = [run.adapter_dir / name for run in (straight, resumed)]
        assert files[0].read_bytes() == files[1].read_bytes(), name


@pytest.mark.slow
def test_each_choice_saves_exactly_its_parts(trained):
    parts = trained["parts"]
    adapter = trained["straight"].adapter_dir
    weights = load_file(adapter / "adapter_model.safetensors")
    held = {
        part
        for name in weights
        for part, marker in (
            ("projector", "multi_modal_projector"),
            ("llm", "language_model"),
            ("encoder", "audio_tower"),
        )
        if f".{marker}." in name
    }
    assert held == set(parts)
    assert sum(t.numel() for t in weights.values()) == trained["straight"].trainable_parameters
    info = json.loads((adapter / "voxadapt_adapter.json").read_text())
    if parts == ["projector"]:
        assert "train_modules" not in info  # the default adapter's file is unchanged
    else:
        assert info["train_modules"] == parts
        assert ("llm_lora" in info) == ("llm" in parts)
        assert ("encoder_lora" in info) == ("encoder" in parts)
    identity = json.loads((trained["straight"].output_dir / "identity.json").read_text())
    assert identity["train_modules"] == parts


@pytest.mark.slow
def test_each_choice_evaluates(trained, tiny_model, sample_manifest):
    from voxadapt.stages.evaluate import EvaluateConfig, evaluate

    result = evaluate(
        EvaluateConfig(
            manifest=sample_manifest,
            adapter=trained["straight"].adapter_dir,
            out_dir=trained["root"] / "eval",
            decode=DecodeOptions(tokens_per_s=1.0, num_workers=0),
            bootstrap=0,
            report=False,
        )
    )
    assert result.metrics["cer"] is not None and result.metrics["utterances"] == 4


def _alpha_of(name: str, info: dict) -> int:
    """The LoRA alpha voxadapt_adapter.json records for the part holding module `name`."""
    if ".language_model." in name:
        return info["llm_lora"]["alpha"]
    if ".audio_tower." in name:
        return info["encoder_lora"]["alpha"]
    return info["lora_alpha"]


def expected_merge(base: dict, adapter: Path) -> dict[str, torch.Tensor]:
    """The merged weights of every adapted layer, from the adapter's own files: W + alpha/r
    B @ A per LoRA layer (r = A's rows, alpha = its part's), and a full projector's weights.
    Names are `canonical_name`s (checkpoints on disk and models in memory name differently)."""
    from voxadapt.stages.export import canonical_name

    info = json.loads((adapter / "voxadapt_adapter.json").read_text())
    weights = load_file(adapter / "adapter_model.safetensors")
    expected = {}
    for key, tensor in weights.items():
        name = key.removeprefix("base_model.model.")
        if name.endswith(".lora_A.weight"):
            module = name.removesuffix(".lora_A.weight")
            lora_b = weights[key.replace(".lora_A.", ".lora_B.")].double()
            scale = _alpha_of(module, info) / tensor.shape[0]
            delta = scale * lora_b @ tensor.double()
            weight = canonical_name(module + ".weight")
            expected[weight] = (base[weight].double() + delta).float()
        elif ".lora_B." not in name:  # a full projector (modules_to_save)
            expected[canonical_name(name)] = tensor
    return expected


@pytest.mark.slow
def test_each_choice_exports_every_part_merged_and_reloads(trained, tiny_model, processor):
    from transformers import VoxtralForConditionalGeneration

    from voxadapt.stages.export import ExportConfig, canonical_name, export, mistral_to_hf

    adapter, out = trained["straight"].adapter_dir, trained["root"]
    hf = export(ExportConfig(adapter, out / "hf", str(tiny_model), format="hf", dtype="fp32"))
    merged = {canonical_name(n): t for n, t in load_file(hf.out_dir / "model.safetensors").items()}
    base = {canonical_name(n): t for n, t in load_file(tiny_model / "model.safetensors").items()}
    expected = expected_merge(base, adapter)
    assert expected and set(expected) <= set(merged)
    for name, tensor in merged.items():
        if name in expected:
            torch.testing.assert_close(tensor, expected[name], rtol=1e-5, atol=1e-6)
            assert not torch.equal(tensor, base[name]), name  # the adapter moved it
        else:
            assert torch.equal(tensor, base[name]), name  # every other weight is the base's
    export_info = json.loads((hf.out_dir / "voxadapt_export.json").read_text())
    assert export_info["merged_parts"] == trained["parts"]

    reloaded = VoxtralForConditionalGeneration.from_pretrained(hf.out_dir)
    unmerged, _ = load_for_inference(tiny_model, adapter, quantization="none")
    assert _relative_error(_logits(reloaded, processor), _logits(unmerged, processor)) < 1e-4

    mistral = export(
        ExportConfig(adapter, out / "mistral", str(tiny_model), format="mistral", dtype="fp32")
    )
    restored = mistral_to_hf(
        load_file(mistral.out_dir / "consolidated.safetensors"), reloaded.config
    )
    reference = {canonical_name(n): t for n, t in reloaded.state_dict().items()}
    assert set(restored) == set(reference)
    for name, tensor in reference.items():
        assert torch.equal(restored[name], tensor), name


@pytest.mark.slow
def test_each_choice_loads_with_plain_peft(trained, tiny_model, processor):
    from peft import PeftModel
    from transformers import VoxtralForConditionalGeneration

    adapter = trained["straight"].adapter_dir
    plain = PeftModel.from_pretrained(
        VoxtralForConditionalGeneration.from_pretrained(tiny_model), str(adapter)
    ).eval()
    ours, _ = load_for_inference(tiny_model, adapter, quantization="none")
    torch.testing.assert_close(_logits(plain, processor), _logits(ours, processor))


@pytest.mark.slow
def test_default_run_writes_todays_adapter_files(tiny_model, sample_manifest, tmp_path):
    """The default (the projector alone) writes what it wrote before `--train-modules`
    existed: the fingerprint recorded then (tests/helpers/default_adapter.py), and the same
    bytes as a run that names the projector explicitly."""
    import peft

    golden = json.loads((ASSETS / "default_adapter_golden.json").read_text())
    default = default_run(tiny_model, sample_manifest, tmp_path / "default")
    explicit = default_run(
        tiny_model, sample_manifest, tmp_path / "explicit", train_modules=["projector"]
    )
    for name in golden["files"]:
        assert (default / name).read_bytes() == (explicit / name).read_bytes(), name

    got = fingerprint(default, tiny_model)
    assert got["files"] == golden["files"]
    assert got["voxadapt_adapter.json"] == golden["voxadapt_adapter.json"]  # no new keys
    assert got["safetensors_header"] == golden["safetensors_header"]
    recorded = golden["adapter_config.json"]
    if peft.__version__ == recorded["peft_version"]:
        assert got["adapter_config.json"] == recorded
    else:  # another PEFT writes its own fields; ours must be as they were
        for key in ("r", "lora_alpha", "lora_dropout", "target_modules", "bias"):
            assert got["adapter_config.json"][key] == recorded[key], key
        for key in ("rank_pattern", "alpha_pattern", "modules_to_save"):
            assert not got["adapter_config.json"].get(key), key
    for key, sums in golden["tensor_sums"].items():
        assert got["tensor_sums"][key] == pytest.approx(sums, rel=1e-3), key
    if got["cpu_capability"] == golden["cpu_capability"]:  # same kernels: the same bytes
        assert got["adapter_model_sha256"] == golden["adapter_model_sha256"]


def test_train_refuses_when_an_unchosen_part_would_train(
    tiny_model, sample_manifest, tmp_path, monkeypatch
):
    """The audit runs on the model as training would use it: a parameter of the encoder
    left trainable by a (here deliberately broken) setup stops the run before any step."""
    import voxadapt.stages.train as stage

    attach = stage.attach_adapter

    def leaky(model, options):
        model = attach(model, options)
        next(p for n, p in model.named_parameters() if ".audio_tower." in n).requires_grad_(True)
        return model

    monkeypatch.setattr(stage, "attach_adapter", leaky)
    out = tmp_path / "run"
    refused = r"outside the chosen parts \(projector, llm\).*audio_tower"
    with pytest.raises(ModelError, match=refused):
        train(run_config(tiny_model, sample_manifest, out, ["projector", "llm"]))
    assert not (out / "checkpoint-last").exists() and not (out / "adapter").exists()


def test_audit_names_the_part_that_should_not_train(tiny_model):
    model = attach_adapter(
        load_model(tiny_model, quantization="nf4"),
        AdapterOptions(train_modules=("projector", "llm")),
    )
    assert check_trainable_parts(model, ("projector", "llm")) == 3_584 + 32_768
    with pytest.raises(ModelError, match=r"\(projector\).*language_model: 32768"):
        check_trainable_parts(model, ("projector",))
    with pytest.raises(ModelError, match="nothing in encoder is trainable"):
        check_trainable_parts(model, ("projector", "llm", "encoder"))


def test_lora_targets_are_resolved_inside_their_part(tiny_model):
    model = load_model(tiny_model, quantization="nf4")
    llm = lora_target_names(model, "llm", ["q_proj", "mlp.down_proj"])
    assert llm == [
        f"model.language_model.layers.{n}.{layer}"
        for n in (0, 1)
        for layer in ("self_attn.q_proj", "mlp.down_proj")
    ]
    encoder = lora_target_names(model, "encoder", ["q_proj"])
    assert encoder == [f"model.audio_tower.layers.{n}.self_attn.q_proj" for n in (0, 1)]
    with pytest.raises(ModelError, match=r"no linear layer of the llm is named 'fc1'.*gate_proj"):
        lora_target_names(model, "llm", ["q_proj", "fc1"])
    with pytest.raises(ModelError, match="named 'lm_head'"):  # the head is never a target
        lora_target_names(model, "llm", ["lm_head"])


def test_resume_refuses_another_choice_naming_old_and_new(tiny_model, sample_manifest, tmp_path):
    out = tmp_path / "run"
    train(run_config(tiny_model, sample_manifest, out, ["projector"], max_steps=1))
    with pytest.raises(ConfigError) as refused:
        train(
            run_config(
                tiny_model, sample_manifest, out, ["projector", "llm"], llm_lora_r=8, resume=True
            )
        )
    message = str(refused.value)
    assert "train_modules: ['projector'] -> ['projector', 'llm']" in message
    assert "llm_lora_r: 16 -> 8" in message
    assert message.count("train_modules") == 1  # from the config, not again from the identity


def test_a_checkpoint_from_before_the_option_resumes_as_the_projector(tmp_path):
    current = to_jsonable(run_config("m", tmp_path / "t.jsonl", tmp_path / "o", ["projector"]))
    new_keys = ("train_modules", "llm_lora_r", "llm_lora_alpha", "llm_lora_targets")
    older = {k: v for k, v in current.items() if k not in new_keys and "encoder_lora" not in k}
    assert resume_differences(older, current) == []
    other = to_jsonable(run_config("m", tmp_path / "t.jsonl", tmp_path / "o", ["llm"]))
    assert resume_differences(older, other) == ["train_modules: ['projector'] -> ['llm']"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"train_modules": "projector,decoder"}, "--train-modules must name one or more"),
        ({"train_modules": "llm", "projector": "full"}, "--projector full needs the projector in"),
        ({"llm_lora_targets": "q_proj,a/b"}, "'a/b' is not a layer name"),
        ({"encoder_lora_r": 0}, "--encoder-lora-r must be >= 1"),
    ],
)
def test_bad_choices_fail_before_any_model_loads(tiny_model, tmp_path, changes, message):
    options = dict(model=str(tiny_model), train=tmp_path / "t.jsonl", output_dir=tmp_path / "r")
    with pytest.raises(ConfigError, match=message):
        build_config(TrainConfig, **options, **changes)


def test_a_choice_is_the_same_in_any_order(tmp_path):
    config = build_config(TrainConfig, train=tmp_path / "t.jsonl", train_modules="llm,projector")
    assert config.train_modules == ["projector", "llm"]
    assert config.adapter_options().train_modules == ("projector", "llm")
    assert build_config(TrainConfig, train=tmp_path / "t.jsonl").train_modules == ["projector"]


def test_the_ablation_configs_differ_only_in_what_learns(tmp_path):
    """configs/ablation/: one run per choice on the same data, seed, schedule and budget."""
    folder = Path(__file__).parents[1] / "configs" / "ablation"
    runs = {
        path.stem: to_jsonable(
            build_config(TrainConfig, path, train=tmp_path / "t.jsonl", valid=tmp_path / "v.jsonl")
        )
        for path in folder.glob("*.yaml")
    }
    assert {name: run["train_modules"] for name, run in runs.items()} == {
        "-".join(parts): parts for parts, projector in CHOICES if projector == "lora"
    }
    for name, run in runs.items():
        assert run["output_dir"] == f"runs/ablation/{name}"
    shared = [
        {k: v for k, v in run.items() if k not in ("train_modules", "output_dir")}
        for run in runs.values()
    ]
    assert all(run == shared[0] for run in shared)
    assert shared[0]["max_steps"] and shared[0]["early_stopping_patience"] is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"llm_lora_r": 64},
            "--llm-lora-r 64 applies to the LLM, which --train-modules projector does not "
            "train: add llm to --train-modules or drop --llm-lora-r",
        ),
        (
            {"train_modules": "projector,llm", "encoder_lora_targets": "fc1"},
            "--encoder-lora-targets fc1 applies to the audio encoder, which --train-modules "
            "projector,llm does not train: add encoder to --train-modules or drop "
            "--encoder-lora-targets",
        ),
        (
            {"train_modules": "llm", "lora_alpha": 4},
            "--lora-alpha 4 applies to the projector, which --train-modules llm does not train",
        ),
    ],
)
def test_an_option_of_a_part_that_does_not_train_is_refused(tmp_path, changes, message):
    with pytest.raises(ConfigError) as refused:
        build_config(TrainConfig, train=tmp_path / "t.jsonl", **changes)
    assert message in str(refused.value)


def test_every_part_option_is_checked_and_defaults_pass(tmp_path):
    """The mechanism covers every option that declares a part: each, set away from its
    default while its part does not train, is refused; the defaults (as a saved config.yaml
    or an ablation config repeats them), in any order for target lists, are not."""
    import dataclasses

    part_options = {
        f.name: f.metadata["part"]
        for f in dataclasses.fields(TrainConfig)
        if f.metadata.get("part")
    }
    assert part_options == {
        "lora_r": "projector",
        "lora_alpha": "projector",
        "llm_lora_r": "llm",
        "llm_lora_alpha": "llm",
        "llm_lora_targets": "llm",
        "encoder_lora_r": "encoder",
        "encoder_lora_alpha": "encoder",
        "encoder_lora_targets": "encoder",
    }
    changed = {"lora_r": 4, "lora_alpha": 4, "llm_lora_r": 4, "llm_lora_alpha": 4,
               "llm_lora_targets": "q_proj", "encoder_lora_r": 4, "encoder_lora_alpha": 4,
               "encoder_lora_targets": "fc1"}  # fmt: skip
    for name, part in part_options.items():
        others = ",".join(p for p in ("projector", "llm", "encoder") if p != part)
        with pytest.raises(ConfigError, match=f"add {part} to --train-modules"):
            build_config(
                TrainConfig, train=tmp_path / "t.jsonl", train_modules=others,
                **{name: changed[name]},
            )  # fmt: skip
        build_config(
            TrainConfig, train=tmp_path / "t.jsonl", train_modules=part, **{name: changed[name]}
        )
    defaults = to_jsonable(TrainConfig(train=tmp_path / "t.jsonl"))
    defaults["llm_lora_targets"] = list(reversed(defaults["llm_lora_targets"]))
    assert build_config(TrainConfig, **defaults).train_modules == ["projector"]


def test_resume_compares_lora_targets_as_sets(tiny_model, sample_manifest, tmp_path):
    out = tmp_path / "run"
    parts = ["projector", "llm"]
    train(run_config(tiny_model, sample_manifest, out, parts, max_steps=1,
                     llm_lora_targets=["q_proj", "v_proj"]))  # fmt: skip
    resumed = train(run_config(tiny_model, sample_manifest, out, parts, max_steps=2, resume=True,
                               llm_lora_targets=["v_proj", "q_proj"]))  # fmt: skip
    assert resumed.state.step == 2  # the same layers in another order: the same adapter
    with pytest.raises(ConfigError) as refused:
        train(run_config(tiny_model, sample_manifest, out, parts, max_steps=3, resume=True,
                         llm_lora_targets=["o_proj", "q_proj"]))  # fmt: skip
    assert "llm_lora_targets: adds o_proj, drops v_proj" in str(refused.value)
    assert (
        resume_differences(
            {"encoder_lora_targets": ["fc1", "fc2"]}, {"encoder_lora_targets": ["fc2", "fc1"]}
        )
        == []
    )
