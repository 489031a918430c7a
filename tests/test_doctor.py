"""`voxadapt doctor`: real checks of this machine, one line each."""

import importlib.metadata
import json

import torch

from voxadapt.stages.doctor import FAIL, OK, DoctorConfig, doctor

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
