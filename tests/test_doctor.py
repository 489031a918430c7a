"""`voxadapt doctor`: real checks of this machine, one line each."""

import importlib.metadata
import json
import os
import subprocess
import sys

import pytest
import torch

from voxadapt.errors import ConfigError
from voxadapt.model import TRAIN_PARTS
from voxadapt.stages import doctor as doctor_module
from voxadapt.stages.doctor import FAIL, OK, DoctorConfig, _display_width, doctor, wrap

from conftest import run_cli


def test_doctor_checks_this_machine(tmp_path):
    result = doctor(DoctorConfig(path=tmp_path / "not" / "yet"))  # a folder still to be made
    checks = {check.name: check for check in result.checks}
    assert checks["python"].state == OK
    assert torch.__version__ in checks["torch"].detail
    # the NF4 layer really ran (bitsandbytes runs 4-bit on CPU too)
    assert (
        checks["bitsandbytes 4-bit"].state == OK
        and "NF4 works on" in checks["bitsandbytes 4-bit"].detail
    )
    assert checks["korean font (plots)"].state == OK
    # a folder still to be made: the nearest existing folder is measured, and said so
    assert checks["disk"].state == "warn" and "does not exist" in checks["disk"].detail
    assert "GB free of" in checks["disk"].detail and f"at {tmp_path}" in checks["disk"].detail
    (tmp_path / "afile").write_text("x")
    disk = {c.name: c for c in doctor(DoctorConfig(path=tmp_path / "afile")).checks}["disk"]
    assert disk.state == FAIL and "is a file, not a folder" in disk.detail
    disk = {c.name: c for c in doctor(DoctorConfig(path=tmp_path)).checks}["disk"]
    assert disk.state == OK
    if not torch.cuda.is_available():
        assert checks["cuda"].state == "warn"
    assert not result.failed
    line = run_cli("doctor", "--path", "").stderr
    assert "--path: '' is not a path" in line  # the flag, not the field name


def test_extras_report_what_to_install():
    result = doctor(DoctorConfig())
    extras = {
        c.name.removeprefix("extra "): c for c in result.checks if c.name.startswith("extra ")
    }
    assert {"hf", "lhotse", "mlflow", "serve", "wandb", "trackio"} <= set(extras)
    for name, check in extras.items():
        requirements = [
            r for r in importlib.metadata.requires("voxadapt") if f'extra == "{name}"' in r
        ]
        assert requirements
        try:
            for requirement in requirements:
                importlib.metadata.version(requirement.split(">")[0].split("[")[0].strip())
            installed = True
        except importlib.metadata.PackageNotFoundError:
            installed = False
        assert (check.state == OK) == installed, check
        if not installed:
            assert f"pip install -e '.[{name}]'" in check.detail


def test_doctor_cli_table_and_json():
    table = run_cli("doctor")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:2] == ["check", "state"]
    assert any(line.startswith("bitsandbytes 4-bit") and f" {OK} " in line for line in lines)
    as_json = run_cli("doctor", "--json")
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert {"python", "torch", "disk"} <= {record["name"] for record in records}
    assert all(record["state"] in (OK, "warn", "info", FAIL) for record in records)


def test_doctor_lists_the_model_families():
    from voxadapt.stages.doctor import DoctorConfig, doctor

    checks = {check.name: check for check in doctor(DoctorConfig()).checks}
    assert checks["family voxtral"].state == "ok"
    assert "does not list Korean" in checks["family voxtral"].detail
    assert checks["family qwen3_asr"].state == "ok"
    assert "Qwen/Qwen3-ASR-1.7B-hf" in checks["family qwen3_asr"].detail
    assert "lists Korean" in checks["family qwen3_asr"].detail


def test_a_family_this_transformers_lacks_is_a_warning(monkeypatch):
    import dataclasses

    from voxadapt import families

    missing = dataclasses.replace(
        families.VOXTRAL, name="future", architecture="FutureSpeechForConditionalGeneration"
    )
    monkeypatch.setitem(families.FAMILIES, "future", missing)
    checks = {check.name: check for check in doctor_module._families()}
    assert checks["family future"].state == "warn"
    assert "has no FutureSpeechForConditionalGeneration" in checks["family future"].detail
    assert checks["family voxtral"].state == OK


def test_the_family_check_and_the_font_check_import_no_model_code_nor_matplotlib():
    """Finding a class in transformers' exports costs ~0.2 s; importing its modeling files
    to find it cost seconds. The font check only looks for the file."""
    script = """
import sys
from voxadapt.stages.doctor import _families, _korean_font
states = [check.state for check in _families()] + [_korean_font().state]
loaded = [name for name in sys.modules if ".modeling_" in name or name == "matplotlib"]
print(states, loaded)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["['ok',", "'ok',", "'ok']", "[]"]


# ------------------------------------------------------------------ the table's width


@pytest.mark.parametrize(
    ("text", "columns", "lines"),
    [
        ("a b c", 3, ["a b", "c"]),
        ("one two three", 100, ["one two three"]),
        ("가나다 라마", 6, ["가나다", "라마"]),  # Hangul takes two columns each
        ("see /very/long/path/x", 6, ["see", "/very/", "long/p", "ath/x"]),  # a long word is cut
        ("", 10, [""]),
    ],
)
def test_wrap(text, columns, lines):
    assert wrap(text, columns) == lines


def test_the_table_fits_the_terminal():
    result = doctor(DoctorConfig())
    names = {check.name for check in result.checks}
    states = {check.state for check in result.checks}
    every_detail = "".join(check.detail for check in result.checks).replace(" ", "")
    for columns in (60, 80, 100, 200):
        lines = result.render(columns).splitlines()
        assert all(_display_width(line) <= columns for line in lines), columns
        detail_at = lines[0].index("detail")
        # each line: a check's name and state, or blank columns before a continued detail
        for line in lines[2:]:
            head = line[:detail_at].split()
            assert head == [] or (" ".join(head[:-1]) in names and head[-1] in states), line
        # nothing is lost: the details, read in order, are all there
        assert "".join(line[detail_at:] for line in lines[2:]).replace(" ", "") == every_detail
    assert len(result.render(60).splitlines()) > len(result.checks) + 2  # wrapped
    # in a pipe without COLUMNS: 100 columns
    table = run_cli("doctor", env={**os.environ, "COLUMNS": "70"})
    assert table.returncode == 0, table.stderr
    assert max(len(line) for line in table.stdout.splitlines()) <= 70


# ------------------------------------------------------------------ --plan


def _qwen_small_by_hand() -> int:
    """Qwen3-ASR-0.6B, projector LoRA (r=8), micro-batch 1, 30 s, NF4, checkpointing."""
    linear, total = 440_401_920, 782_426_112  # the LLM's linear weights, all parameters
    weights = round(linear * (4 + 8 / 64 + 32 / 16384) / 8 + (total - linear) * 2)
    lora = 8 * (896 + 896) + 8 * (896 + 1024)  # projector: 896 -> 896 -> 1024
    tokens = 390 + 32 + 240  # 13 audio tokens/s, the prompt, 8 transcript tokens/s
    kept = tokens * 28 * 1024 * 2 + 390 * ((896 + 896) + (896 + 1024)) * 2
    logits = 10 * (240 + 1) * 151936  # the largest transient: bf16 + fp32 + fp32 gradient
    return weights + 16 * lora + kept + logits + int(0.75 * 2**30)


def test_plan_says_what_fits_on_a_given_gpu():
    by_hand = _qwen_small_by_hand()  # 2.12e9 B = 1.98 GiB
    options = ["--plan", "--plan-model", "qwen3-asr-0.6b", "--micro-batch", "1"]
    records = [
        json.loads(line)
        for line in run_cli(
            "doctor", *options, "--gpu-memory-gb", "24", "--json"
        ).stdout.splitlines()
    ]
    training = next(r for r in records if r["task"] == "training")
    assert training["bytes"]["total"] == by_hand and training["verdict"] == "fits"
    for gib, verdict in ((24, "fits"), (2, "tight"), (1.5, "does not fit")):
        result = doctor(
            DoctorConfig(plan=True, plan_model="qwen3-asr-0.6b", micro_batch=1, gpu_memory_gb=gib)
        )
        assert f"training {verdict}: 2.0 of {gib:.1f} GiB" in result.render(100)
    # Voxtral Small in bf16: its 24.26e9 parameters x 2 B = 45.2 GiB of weights alone
    shown = run_cli(
        "doctor", "--plan", "--plan-model", "voxtral-small", "--quantization", "none",
        "--gpu-memory-gb", "24", "--micro-batch", "1",
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "training does not fit" in shown.stdout and "inference does not fit" in shown.stdout
    assert "45.2" in shown.stdout and "estimate, not measured" in shown.stdout


def test_plan_table_of_every_base():
    result = doctor(DoctorConfig(plan=True, gpu_memory_gb=24))
    assert not result.checks  # the plan replaces the machine checks
    text = result.render(100)
    for name in ("voxtral-mini", "voxtral-small", "qwen3-asr-0.6b", "qwen3-asr-1.7b"):
        assert name in text
    assert "fits 24 GiB" in text and "estimates, not measured" in text
    small_bf16 = [line for line in text.splitlines() if line.startswith("voxtral-small   none")]
    assert small_bf16 and all(line.endswith("none") for line in small_bf16)  # no batch fits
    # one JSON record per estimate: 4 bases x 2 quantizations x (3 x 3 training + 3 inference)
    result.as_json = True
    assert len(result.render().splitlines()) == 4 * 2 * (3 * 3 + 3)
    without_gpu = doctor(DoctorConfig(plan=True)).render(100)
    if not torch.cuda.is_available():
        assert "no GPU seen: compare with your GPU's memory" in without_gpu


def test_plan_options_are_checked():
    with pytest.raises(ConfigError, match="plan_model needs --plan"):
        DoctorConfig(plan_model="voxtral-mini")
    with pytest.raises(ConfigError) as caught:
        DoctorConfig(plan=True, train_modules=["decoder"], micro_batch=0, clip_s=-1)
    assert len(caught.value.problems) == 3
    assert DoctorConfig(plan=True, train_modules=["llm", "projector"]).train_modules == [
        "projector",
        "llm",
    ]
    with pytest.raises(ConfigError, match="not a known base"):
        doctor(DoctorConfig(plan=True, plan_model="voxtral-huge"))
    with pytest.raises(ConfigError, match="must name a base"):
        DoctorConfig(plan=True, plan_model=" ")


def test_plan_refuses_folders_of_other_models(tmp_path):
    from voxadapt.families import FamilyError
    from voxadapt.families.qwen3_asr_checkpoint import ALIGNER_CONFIG

    for name, config in (
        ("whisper", '{"model_type": "whisper"}'),
        ("broken", "{not json"),
        ("aligner", json.dumps(ALIGNER_CONFIG)),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(config)
        with pytest.raises(FamilyError):
            doctor(DoctorConfig(plan=True, plan_model=str(tmp_path / name)))
    with pytest.raises(ConfigError, match=r"no config\.json in that folder"):
        doctor(DoctorConfig(plan=True, plan_model=str(tmp_path)))


def test_plan_of_a_local_qwen3_asr_folder(tiny_qwen):
    config = DoctorConfig(plan=True, plan_model=str(tiny_qwen), micro_batch=1, gpu_memory_gb=2)
    text = " ".join(doctor(config).render(100).split())
    assert "9.9M parameters" in text and "LM head tied to the embeddings" in text
    # 10M parameters, but the real 151936-entry vocabulary: the logits of 241 transcript
    # tokens (10 B each: 0.34 GiB) and the CUDA context (0.75 GiB) are most of it
    assert "training fits: 1.1 of 2.0 GiB" in text and "inference fits" in text, text
    assert doctor_module.TRAIN_PARTS == TRAIN_PARTS  # doctor keeps torch out of its import
