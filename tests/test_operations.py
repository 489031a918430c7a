"""Issue 29's classes of operator trouble, each fixed at its mechanism: models named by a
relative path, saved configs that describe a run (not its invocation), paths as the user
meant them."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from voxadapt.adapters import check_base_model, model_fingerprint
from voxadapt.config import build_config, model_reference, run_description, save_config
from voxadapt.decoding import ModelChoice
from voxadapt.errors import ModelError, VoxadaptError
from voxadapt.evaluation import EvaluateConfig
from voxadapt.families import family_of
from voxadapt.training import TrainConfig


@pytest.mark.parametrize(
    "given, expected",
    [
        ("mistralai/Voxtral-Mini-3B-2507", "mistralai/Voxtral-Mini-3B-2507"),  # hub id
        ("Qwen/Qwen3-ASR-1.7B-hf", "Qwen/Qwen3-ASR-1.7B-hf"),
        ("./missing/model", "{cwd}/missing/model"),  # a path stays a path (and absolute)
        ("~/models/x", "{home}/models/x"),
    ],
)
def test_a_model_reference_is_a_hub_id_or_an_absolute_folder(given, expected):
    expected = expected.format(cwd=Path.cwd(), home=Path.home())
    assert model_reference(given) == expected


def test_a_relative_model_is_recorded_absolute_and_found_from_anywhere(
    tiny_model, tmp_path, monkeypatch
):
    monkeypatch.chdir(tiny_model.parent)
    relative = f"./{tiny_model.name}"
    config = TrainConfig(train=Path("train.jsonl"), model=relative)
    assert config.model == str(tiny_model.resolve())
    assert ModelChoice(model=relative).model == str(tiny_model.resolve())
    info = {"base_model": config.model, "base_model_fingerprint": model_fingerprint(config.model)}
    monkeypatch.chdir(tmp_path)  # another folder: the recorded base is the same model
    check_base_model(str(tiny_model), info, force=False)
    assert family_of(info["base_model"]).name == "voxtral"


def test_a_moved_copy_of_the_base_is_accepted_with_a_warning(tiny_model, tmp_path, caplog):
    copy = tmp_path / "moved-base"
    shutil.copytree(tiny_model, copy)
    info = {"base_model": str(tiny_model), "base_model_fingerprint": model_fingerprint(tiny_model)}
    check_base_model(str(copy), info, force=False)
    assert "same config and weight files" in caplog.text
    # another model with the same file names is not the same model
    config = json.loads((copy / "config.json").read_text())
    config["text_config"]["num_hidden_layers"] = 1
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="trained on"):
        check_base_model(str(copy), info, force=False)
    assert model_fingerprint("mistralai/Voxtral-Mini-3B-2507") is None


def test_a_missing_model_folder_is_one_line_not_a_repo_id_complaint(tmp_path):
    with pytest.raises(VoxadaptError, match="model folder not found"):
        family_of(str(tmp_path / "nonexistent"))
    with pytest.raises(VoxadaptError, match="model folder not found"):
        family_of("/nonexistent")


def test_a_saved_config_describes_the_run_not_the_invocation(tmp_path):
    config = TrainConfig(train=Path("train.jsonl"), resume=True)
    saved = tmp_path / "config.yaml"
    save_config(config, saved)
    data = yaml.safe_load(saved.read_text())
    assert "resume" not in data and data["train"] == "train.jsonl"
    reused = build_config(TrainConfig, saved)  # --config with the saved file: a fresh run
    assert reused.resume is False and reused.train == Path("train.jsonl")
    manifest = tmp_path / "test.jsonl"
    manifest.write_text("")
    evaluate = EvaluateConfig(manifest=manifest, resume=True, overwrite=False)
    assert not {"resume", "overwrite"} & set(run_description(evaluate))
    assert "decode" in run_description(evaluate)  # sections stay whole


def test_a_home_path_in_a_yaml_file_is_the_home_folder(tmp_path):
    yaml_file = tmp_path / "train.yaml"
    yaml_file.write_text("train: ~/data/train.jsonl\noutput_dir: ~/runs/x\n")
    config = build_config(TrainConfig, yaml_file)
    assert config.output_dir == Path.home() / "runs/x"
    assert config.train == Path.home() / "data/train.jsonl"
