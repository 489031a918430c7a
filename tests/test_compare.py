"""`voxadapt compare`: several bases and adapters on one manifest, one table, resumable."""

import json

import pytest

from voxadapt.decoding import DecodeOptions
from voxadapt.errors import ConfigError, ModelError
from voxadapt.stages.compare import CompareConfig, compare, resolve_systems
from voxadapt.stages.train import TrainConfig, train

from conftest import run_cli

FAST = DecodeOptions(max_new_tokens=4, num_workers=0, batch_size=4)


@pytest.fixture(scope="module")
def voxtral_adapter(tiny_model, sample_manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare-train") / "run"
    result = train(
        TrainConfig(
            model=str(tiny_model), train=sample_manifest, output_dir=out, max_steps=2,
            batch_size=4, grad_accum=1, lr=1e-2, warmup_ratio=0.0, num_workers=0,
            quantization="none", decode=FAST,
        )
    )  # fmt: skip
    return result.adapter_dir


@pytest.mark.slow
def test_compare_two_bases_and_an_adapter_then_resume(
    tiny_model, tiny_qwen, voxtral_adapter, sample_manifest, tmp_path
):
    out = tmp_path / "cmp"
    config = CompareConfig(
        manifest=sample_manifest,
        systems=[f"voxtral={tiny_model}", f"qwen={tiny_qwen}", str(voxtral_adapter)],
        out_dir=out,
        quantization="none",
        decode=FAST,
        bootstrap=50,
    )
    result = compare(config)
    names = [row["name"] for row in result.table]
    adapter_name = f"{tiny_model.name}+run"  # the base's name + the run's folder
    assert sorted(names) == sorted(["voxtral", "qwen", adapter_name])
    assert result.decoded == dict.fromkeys(names, 4)
    cers = [row["cer"] for row in result.table]
    assert cers == sorted(cers)  # best first
    saved = json.loads((out / "compare.json").read_text())
    assert saved["best"] == names[0] and len(saved["verdicts"]) == 2
    for row in saved["systems"]:
        assert row["rtf"] > 0 and row["weights_gib"] > 0 and row["peak_gib"] is None
        assert (out / "systems" / row["name"] / "predictions.jsonl").is_file()
        metrics = json.loads((out / "systems" / row["name"] / "metrics.json").read_text())
        assert metrics["cer"] == row["cer"]
    for row in saved["systems"][1:]:
        versus = row["versus_best"]
        assert versus["difference"] == pytest.approx(row["cer"] - saved["systems"][0]["cer"])
        assert "too_few_speakers" in versus and "ci95" not in versus  # 4 clips, 1-2 speakers
    page = (out / "report.html").read_text()
    assert "Which system transcribes this data best?" in page and names[0] in page
    assert {r["family"] for r in saved["systems"]} == {"voxtral", "qwen3_asr"}

    again = compare(config)  # resumes: nothing decoded again, the same table
    assert again.decoded == dict.fromkeys(names, 0)
    assert [r["cer"] for r in again.table] == cers
    assert [r["rtf"] for r in again.table] == [r["rtf"] for r in result.table]


def test_systems_are_resolved_and_checked_before_anything_loads(tiny_model, tiny_qwen, tmp_path):
    systems = resolve_systems([str(tiny_model), f"q={tiny_qwen}"])
    assert [s.family for s in systems] == ["voxtral", "qwen3_asr"]
    assert systems[1].name == "q" and systems[0].adapter is None
    with pytest.raises(ConfigError, match="two systems are named 'a'"):
        resolve_systems([f"a={tiny_model}", f"a={tiny_qwen}"])
    with pytest.raises(ConfigError, match="name 'bad name' must be"):
        resolve_systems([f"bad name={tiny_model}", str(tiny_qwen)])
    with pytest.raises(ModelError, match="model folder not found"):
        resolve_systems([str(tmp_path / "nowhere"), str(tiny_qwen)])


def test_one_system_is_refused(tiny_model, sample_manifest, tmp_path):
    with pytest.raises(ConfigError, match="at least two systems"):
        CompareConfig(manifest=sample_manifest, systems=[str(tiny_model)], out_dir=tmp_path)


def test_cli_takes_repeated_system_flags(tiny_model, sample_manifest, tmp_path):
    missing = tmp_path / "missing"
    result = run_cli(
        "compare", sample_manifest, "--system", str(tiny_model), "--system", f"x={missing}",
        "--out", tmp_path / "out",
    )  # fmt: skip
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert (
        last
        == f"voxadapt: error: --system x={missing}: the model: model folder not found: {missing}"
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_path_holding_an_equals_sign_is_a_path_and_an_empty_value_is_refused(
    tiny_model, tiny_qwen, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m=1").symlink_to(tiny_model)
    systems = resolve_systems(["m=1", str(tiny_qwen)])
    assert systems[0].name == "m_1" and systems[0].model == "m=1"
    with pytest.raises(ConfigError, match="give a model or adapter after a="):
        resolve_systems(["a=", str(tiny_qwen)])


@pytest.mark.slow
def test_references_empty_after_normalization_are_reported_not_a_crash(
    tiny_model, tiny_qwen, sample_manifest, tmp_path
):
    from voxadapt.manifest import read_manifest, write_jsonl

    rows = [
        {**u.to_dict(), "text": "...", "raw_text": "..."} for u in read_manifest(sample_manifest)
    ]
    manifest = tmp_path / "dots.jsonl"
    write_jsonl(manifest, rows)
    result = compare(
        CompareConfig(
            manifest=manifest, systems=[str(tiny_model), str(tiny_qwen)], out_dir=tmp_path / "o",
            quantization="none", decode=FAST, bootstrap=20,
        )
    )  # fmt: skip
    assert result.table[1]["versus_best"]["difference"] is None
    assert "cannot be compared" in result.verdicts[0]
    assert (tmp_path / "o" / "compare.json").is_file()
