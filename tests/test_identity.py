"""Runs know what they are made of: --resume, --compare and score refuse other data, naming
what changed; only changed references are re-scored."""

import json
import shutil

import pytest

from voxadapt.decoding import DecodeOptions
from voxadapt.errors import ConfigError, VoxadaptError
from voxadapt.identity import changes, read_identity
from voxadapt.manifest import read_manifest, write_jsonl
from voxadapt.model import ModelError
from voxadapt.scoring.rows import read_predictions
from voxadapt.stages.evaluate import EvaluateConfig, evaluate
from voxadapt.stages.score import ScoreConfig, score

FAST = {
    "quantization": "none",
    "decode": DecodeOptions(max_new_tokens=4, num_workers=0),
    "bootstrap": 0,
    "report": False,
}


@pytest.fixture(scope="module")
def first_run(tiny_model, sample_manifest, tmp_path_factory):
    """An evaluate run of the sample manifest, and a copy of the manifest to edit."""
    root = tmp_path_factory.mktemp("identity")
    manifest = root / "test.jsonl"
    shutil.copy(sample_manifest, manifest)
    out = root / "eval"
    evaluate(EvaluateConfig(manifest=manifest, model=str(tiny_model), out_dir=out, **FAST))
    return manifest, out


def _edited(manifest, tmp_path, **change):
    records = [u.to_dict() for u in read_manifest(manifest)]
    records[0].update(change)
    path = tmp_path / "edited.jsonl"
    write_jsonl(path, records)
    return path


def test_changes_name_each_part_old_and_new():
    assert changes({"a": 1, "b": "x"}, {"a": 2, "b": "x", "c": None}) == ["a: 1 -> 2"]


def test_resume_refuses_other_audio_under_the_same_ids(tiny_model, first_run, tmp_path):
    manifest, out = first_run
    other_audio = read_manifest(manifest)[1].audio
    edited = _edited(manifest, tmp_path, audio=other_audio)
    copy = tmp_path / "eval"
    shutil.copytree(out, copy)
    config = EvaluateConfig(
        manifest=edited, model=str(tiny_model), out_dir=copy, resume=True, **FAST
    )
    with pytest.raises(ConfigError, match="manifest_audio: "):
        evaluate(config)


def test_resume_rescores_when_only_references_changed(tiny_model, first_run, tmp_path):
    manifest, out = first_run
    edited = _edited(manifest, tmp_path, text="완전히 다른 참조 문장")
    copy = tmp_path / "eval"
    shutil.copytree(out, copy)
    before = {r["id"]: r for r in read_predictions(copy / "predictions.jsonl")}
    result = evaluate(
        EvaluateConfig(manifest=edited, model=str(tiny_model), out_dir=copy, resume=True, **FAST)
    )
    assert result.decoded == 0
    rows = {r["id"]: r for r in read_predictions(copy / "predictions.jsonl")}
    first = read_manifest(edited)[0].id
    assert rows[first]["hypothesis"] == before[first]["hypothesis"]
    # metrics are computed against the references as they are now
    metrics = json.loads((copy / "metrics.json").read_text())
    assert (
        metrics["reference_characters"]
        != json.loads((out / "metrics.json").read_text())["reference_characters"]
    )
    assert read_identity(copy)["references"] != read_identity(out)["references"]


def test_resume_refuses_changed_decode_options_naming_them(tiny_model, first_run, tmp_path):
    manifest, out = first_run
    copy = tmp_path / "eval"
    shutil.copytree(out, copy)
    config = EvaluateConfig(
        manifest=manifest,
        model=str(tiny_model),
        out_dir=copy,
        resume=True,
        **{**FAST, "decode": DecodeOptions(max_new_tokens=9, num_workers=0, batch_size=3)},
    )
    with pytest.raises(ConfigError, match=r"decode\.max_new_tokens: 4 -> 9") as info:
        evaluate(config)
    assert "batch_size" not in str(info.value)  # throughput is not identity


def test_overwrite_with_a_mistyped_model_keeps_the_earlier_run(first_run, tmp_path):
    manifest, out = first_run
    copy = tmp_path / "eval"
    shutil.copytree(out, copy)
    before = (copy / "predictions.jsonl").read_bytes()
    config = EvaluateConfig(
        manifest=manifest, model=str(tmp_path / "no-such-model"), out_dir=copy, overwrite=True
    )
    config.quantization = "none"
    with pytest.raises(VoxadaptError, match="no-such-model"):
        evaluate(config)
    assert (copy / "predictions.jsonl").read_bytes() == before


def test_an_adapter_on_another_base_is_refused_unless_forced(
    tiny_model, adapters, sample_manifest, tmp_path
):
    other = tmp_path / "other-base"
    shutil.copytree(tiny_model, other)
    config = EvaluateConfig(
        manifest=sample_manifest, model=str(other), adapter=adapters["lora"], out_dir=tmp_path
    )
    with pytest.raises(ModelError, match="trained on"):
        config.check_adapter_base()
    config.force = True
    config.check_adapter_base()


def test_score_refuses_predictions_of_another_manifest_with_the_same_ids(first_run, tmp_path):
    manifest, out = first_run
    edited = _edited(manifest, tmp_path, audio=read_manifest(manifest)[2].audio)
    with pytest.raises(ConfigError, match="predictions of another manifest"):
        score(ScoreConfig(edited, out / "predictions.jsonl", tmp_path / "s", bootstrap=0))


def test_compare_covers_shared_ids_only_and_counts_the_rest(first_run, tmp_path):
    manifest, out = first_run
    partial = tmp_path / "partial.jsonl"
    rows = read_predictions(out / "predictions.jsonl")
    write_jsonl(partial, [{"id": r["id"], "text": r["hypothesis"]} for r in rows[:2]])
    result = score(
        ScoreConfig(
            manifest,
            out / "predictions.jsonl",
            tmp_path / "s",
            compare=partial,
            bootstrap=10,
        )
    )
    compare = result.metrics["compare"]
    assert compare["utterances"] == 2
    assert compare["missing_in_other"] == len(rows) - 2
    assert compare["delta"] == pytest.approx(0.0)  # the same hypotheses on the shared ids
