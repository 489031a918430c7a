import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from voxadapt.config import build_config
from voxadapt.decoding import DecodeOptions
from voxadapt.errors import VoxadaptError
from voxadapt.features import (
    CacheMismatchError,
    FeatureSpec,
    compute_features,
    write_shard,
)
from voxadapt.manifest import read_manifest, write_jsonl
from voxadapt.stages.cache import CacheConfig, build_cache
from voxadapt.stages.train import TrainConfig, train

CONFIGS = Path(__file__).parents[1] / "configs"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def config(tiny_model, manifest, out, **changes):
    base = dict(
        model=str(tiny_model),
        train=manifest,
        valid=manifest,
        output_dir=out,
        max_steps=6,
        batch_size=4,
        grad_accum=1,
        lr=1e-2,
        logging_steps=1,
        eval_steps=3,
        warmup_ratio=0.0,
        num_workers=0,
        scheduler="constant",
        decode=DecodeOptions(tokens_per_s=1.0, num_workers=0),
    )
    base.update(changes)
    return TrainConfig(**base)


def losses(history):
    return [r["loss"] for r in history if "loss" in r]


@pytest.mark.slow
def test_lora_training_from_cache_selects_best_cer(
    tiny_model, sample_manifest, tmp_path, monkeypatch, caplog
):
    cache = tmp_path / "cache"
    build_cache(CacheConfig([sample_manifest], str(tiny_model), cache, jobs=1))
    monkeypatch.setattr("voxadapt.progress.on_terminal", lambda: False)  # as under SLURM
    monkeypatch.setenv("VOXADAPT_PROGRESS_INTERVAL_S", "0")
    caplog.set_level(logging.INFO, logger="voxadapt")
    result = train(config(tiny_model, sample_manifest, tmp_path / "run", cache=cache))
    messages = [record.getMessage() for record in caplog.records]
    batch = "world size 1, global batch size 4 = 4 per device x 1 accumulation x 1; 6 "
    assert any(m.startswith(batch) for m in messages)
    # a log file's progress line holds what log.jsonl holds, with the ETA; rates in percent
    step_3 = next(m for m in messages if m.startswith("train: 3/6 step (50%), "))
    assert re.search(r"step/s, ETA \d\d:\d\d, loss \d+\.\d{4}, lr 1\.00e-02, grad_norm", step_3)
    assert step_3.endswith(" samples/s")
    assert any(re.match(r"step 3: eval CER \d+\.\d\d%, WER \d+\.\d\d%", m) for m in messages)
    history = result.state.log_history
    loss = losses(history)
    assert len(loss) == 6 and loss[-1] < loss[0] - 0.02
    evals = [r for r in history if "eval_cer" in r]
    assert [r["step"] for r in evals] == [3, 6]
    best = min(evals, key=lambda r: r["eval_cer"])
    assert result.state.best_step == best["step"]
    assert result.state.best_cer == best["eval_cer"]
    adapter = result.adapter_dir
    assert (adapter / "adapter_config.json").is_file()
    weights = load_file(adapter / "adapter_model.safetensors")
    assert sum(t.numel() for t in weights.values()) == 3_584
    saved = json.loads((adapter / "voxadapt_adapter.json").read_text())
    assert saved["step"] == best["step"] and saved["quantization"] == "nf4"
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    assert state["step"] == 6 and len(state["log_history"]) == len(history)
    assert (tmp_path / "run" / "config.yaml").is_file()


@pytest.mark.slow
def test_full_projector_training(tiny_model, sample_manifest, tmp_path):
    result = train(
        config(
            tiny_model,
            sample_manifest,
            tmp_path / "run",
            projector="full",
            lr=1e-3,
            valid=None,
            quantization="none",
        )
    )
    loss = losses(result.state.log_history)
    assert loss[-1] < loss[0] - 0.02
    weights = load_file(result.adapter_dir / "projector.safetensors")
    assert sorted(t.numel() for t in weights.values()) == [64 * 64, 256 * 64]


@pytest.mark.slow
def test_early_stopping(tiny_model, sample_manifest, tmp_path):
    result = train(
        config(
            tiny_model,
            sample_manifest,
            tmp_path / "run",
            lr=0.0,
            eval_steps=1,
            max_steps=10,
            early_stopping_patience=2,
        )
    )
    evals = [r for r in result.state.log_history if "eval_cer" in r]
    assert len(evals) == 3  # best at the first, then two without improvement
    assert result.state.step == 3


def _wait_for_lines(path: Path, count: int, process, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"{path} did not reach {count} lines")


@pytest.mark.slow
def test_ctrl_c_saves_and_resume_continues(tiny_model, sample_manifest, tmp_path):
    out = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "voxadapt.cli",
        "train",
        "--model",
        str(tiny_model),
        "--train",
        str(sample_manifest),
        "--output-dir",
        str(out),
        "--max-steps",
        "8",
        "--batch-size",
        "2",
        "--grad-accum",
        "2",
        "--lr",
        "1e-2",
        "--logging-steps",
        "1",
        "--num-workers",
        "1",
        "--warmup-ratio",
        "0",
    ]
    process = subprocess.Popen(
        args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait_for_lines(out / "log.jsonl", 2, process)
    process.send_signal(signal.SIGINT)
    _stdout, stderr = process.communicate(timeout=240)
    assert process.returncode == 130, stderr
    assert "interrupted at step" in stderr and "--resume" in stderr
    assert "Traceback" not in stderr
    stopped = json.loads((out / "checkpoint-last" / "state.json").read_text())["step"]
    assert 2 <= stopped < 8

    resumed = subprocess.run(
        [*args, "--resume"], env=ENV, capture_output=True, text=True, timeout=400
    )
    assert resumed.returncode == 0, resumed.stderr
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == list(range(1, 9))  # continued, not restarted, nothing repeated
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["step"] == 8
    assert [r["step"] for r in state["log_history"] if "loss" in r] == steps
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def manifest_of(sample_manifest, count, path):
    """`count` utterances (the sample clips again and again, each with its own id)."""
    utterances = read_manifest(sample_manifest)
    rows = []
    for index in range(count):
        record = utterances[index % len(utterances)].to_dict()
        record["id"] = f"u{index:02d}"
        rows.append(record)
    write_jsonl(path, rows)
    return path


@pytest.mark.slow
@pytest.mark.parametrize(("count", "batch_size", "grad_accum"), [(7, 4, 1), (21, 8, 3)])
def test_each_utterance_trains_once_per_epoch(
    tiny_model, sample_manifest, tmp_path, count, batch_size, grad_accum
):
    """An uneven count never repeats an utterance to fill the last micro-batch: 7 at batch 4
    trains 4 + 3 per epoch (not 4 + 4), 21 at 8+8+5 trains 21 (not 24)."""
    manifest = manifest_of(sample_manifest, count, tmp_path / "train.jsonl")
    result = train(
        config(
            tiny_model,
            manifest,
            tmp_path / "run",
            valid=None,
            max_steps=None,
            epochs=2,
            batch_size=batch_size,
            grad_accum=grad_accum,
            quantization="none",
        )
    )
    micro = [batch_size] * (count // batch_size) + (
        [count % batch_size] if count % batch_size else []
    )
    per_step = [sum(micro[i : i + grad_accum]) for i in range(0, len(micro), grad_accum)]
    samples = [r["samples"] for r in result.state.log_history if "loss" in r]
    assert samples == per_step * 2  # two epochs, each utterance once in each


def test_two_process_ddp_on_cpu(tiny_model, sample_manifest, tmp_path):
    out = tmp_path / "ddp"
    manifest = manifest_of(sample_manifest, 5, tmp_path / "five.jsonl")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29613",
        "-m",
        "voxadapt.cli",
        "train",
        "--model",
        str(tiny_model),
        "--train",
        str(manifest),
        "--valid",
        str(sample_manifest),
        "--output-dir",
        str(out),
        "--max-steps",
        "3",
        "--batch-size",
        "1",
        "--grad-accum",
        "1",
        "--logging-steps",
        "1",
        "--eval-steps",
        "3",
        "--num-workers",
        "0",
    ]
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("adapter: ") == 1  # only rank 0 reports and writes
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3]
    # 5 utterances on 2 ranks: 3 + 2, each once (rank 1 sits out the last step)
    assert [r["samples"] for r in records if "loss" in r] == [2, 2, 1]
    evals = [r for r in records if "eval_cer" in r]
    assert len(evals) == 1 and evals[0]["eval_utterances"] == 4  # both ranks' halves


def test_empty_manifest_is_refused(tiny_model, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(VoxadaptError, match="is empty"):
        train(config(tiny_model, empty, tmp_path / "run"))


def test_cache_for_another_processor_is_refused(tiny_model, sample_manifest, spec, tmp_path):
    other = FeatureSpec(**{**spec.__dict__, "n_fft": 512})
    cache = tmp_path / "cache"
    cache.mkdir()
    import numpy as np

    write_shard(cache, other, [("k", compute_features(np.ones(16000, dtype=np.float32), spec))])
    with pytest.raises(CacheMismatchError, match="another processor"):
        train(config(tiny_model, sample_manifest, tmp_path / "run", cache=cache))


def test_shipped_config_loads_and_validates(tmp_path):
    shipped = sorted(CONFIGS.rglob("*.yaml"))  # configs/ablation/ too
    assert len(shipped) >= 6
    for path in shipped:
        loaded = build_config(
            TrainConfig, path, train=tmp_path / "t.jsonl", valid=tmp_path / "v.jsonl"
        )
        assert loaded.lora_r == 8 and loaded.quantization == "nf4"
    with pytest.raises(VoxadaptError, match=r"train \(--train\) is required"):
        build_config(TrainConfig, CONFIGS / "ko-medical-qlora.yaml")


def test_resume_without_checkpoint_is_an_error(tiny_model, sample_manifest, tmp_path):
    with pytest.raises(VoxadaptError, match="no checkpoint"):
        train(config(tiny_model, sample_manifest, tmp_path / "run", resume=True))
    shutil.rmtree(tmp_path / "run", ignore_errors=True)


@pytest.mark.slow
def test_best_checkpoint_cer_equals_what_evaluate_reports(tiny_model, sample_manifest, tmp_path):
    """One decoding engine and one scoring path: the CER that picked the adapter is the CER
    `voxadapt evaluate` reports for it on the same valid set with the same options."""
    from voxadapt.stages.evaluate import EvaluateConfig, evaluate

    cache = tmp_path / "cache"
    build_cache(CacheConfig([sample_manifest], str(tiny_model), cache, jobs=1))
    decode = DecodeOptions(batch_size=3, tokens_per_s=1.0, num_workers=0)
    result = train(
        config(tiny_model, sample_manifest, tmp_path / "run", cache=cache, decode=decode)
    )
    evaluation = evaluate(
        EvaluateConfig(
            manifest=sample_manifest,
            adapter=result.adapter_dir,
            cache=cache,
            out_dir=tmp_path / "eval",
            decode=decode,
            bootstrap=0,
            report=False,
        )
    )
    assert result.state.best_cer is not None
    assert evaluation.metrics["cer"] == result.state.best_cer
    best = next(
        r
        for r in result.state.log_history
        if r.get("step") == result.state.best_step and "eval_wer" in r
    )
    assert evaluation.metrics["wer"] == best["eval_wer"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr": -1.0}, "--lr must be >= 0"),
        ({"weight_decay": -1.0}, "--weight-decay must be >= 0"),
        ({"lora_dropout": 2.0}, "--lora-dropout must be in"),
        ({"num_workers": -1}, "--num-workers must be >= 0"),
        ({"eval_samples": -1}, "--eval-samples must be >= 1"),
        ({"decode.language": "xx"}, "not an ISO 639-1"),
        ({"scheduler": "sometimes"}, "--scheduler must be one of"),
    ],
)
def test_bad_options_fail_before_any_model_loads(
    tiny_model, sample_manifest, tmp_path, changes, message
):
    from voxadapt.errors import ConfigError

    options = dict(model=str(tiny_model), train=sample_manifest, output_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match=message):
        build_config(TrainConfig, **options, **changes)
    assert not (tmp_path / "run").exists()


def test_output_dir_that_is_a_file_is_refused(tiny_model, sample_manifest, tmp_path):
    from voxadapt.errors import ConfigError

    target = tmp_path / "run"
    target.write_text("not a folder")
    with pytest.raises(ConfigError, match="not a folder"):
        train(config(tiny_model, sample_manifest, target))


@pytest.fixture(scope="module")
def examples_32(sample_manifest, tmp_path_factory):
    """32 utterances (the 4 sample clips, transcripts of different lengths, 8 times)."""
    from voxadapt.manifest import read_manifest, write_jsonl

    utterances = read_manifest(sample_manifest)
    rows = []
    for index in range(32):
        record = utterances[index % 4].to_dict()
        record["id"] = f"u{index:02d}"
        if index % 3 == 0:  # vary transcript lengths within micro-batches
            record["text"] = record["text"][: 4 + index % 7]
        rows.append(record)
    path = tmp_path_factory.mktemp("examples") / "train32.jsonl"
    write_jsonl(path, rows)
    return path


def _step_gradients(tiny_model, manifest, sizes, tmp_path):
    sys.path.insert(0, str(Path(__file__).parent / "helpers"))
    from step_gradients import step_gradients

    return step_gradients(str(tiny_model), manifest, sizes)


def _assert_same(a, b):
    import torch

    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-8)


@pytest.mark.slow
def test_step_gradient_is_the_token_mean_whatever_the_split(tiny_model, examples_32, tmp_path):
    """1 x 32, 4 x 8 and 2 ranks x 2 x 8 give the gradient of the mean over all the step's
    label tokens; so does a short last step (3 micro-batches of 8, 8, 5 vs 1 x 21)."""
    import torch
    from safetensors.torch import load_file

    whole = _step_gradients(tiny_model, examples_32, [32], tmp_path)
    assert all(t.abs().sum() > 0 for t in whole.values())  # every LoRA matrix has a gradient
    _assert_same(whole, _step_gradients(tiny_model, examples_32, [8, 8, 8, 8], tmp_path))
    _assert_same(whole, _step_gradients(tiny_model, examples_32, [1, 7, 16, 8], tmp_path))
    short = _step_gradients(tiny_model, examples_32, [21], tmp_path)
    _assert_same(short, _step_gradients(tiny_model, examples_32, [8, 8, 5], tmp_path))
    # a 4 + 28 split: per-micro-batch means / grad_accum would weigh 4 examples like 28
    uneven = _step_gradients(tiny_model, examples_32, [4, 28], tmp_path)
    _assert_same(whole, uneven)

    out = tmp_path / "ranks.safetensors"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29617",
        str(Path(__file__).parent / "helpers" / "step_gradients.py"),
        str(tiny_model),
        str(examples_32),
        str(out),
        "8,8",
    ]
    result = subprocess.run(
        command, env={**ENV, "OUT_DIR": str(tmp_path)}, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_same(whole, load_file(out))
    assert torch.isfinite(next(iter(whole.values()))).all()


@pytest.mark.slow
def test_spec_augment_resume_reproduces_an_uninterrupted_run(tiny_model, sample_manifest, tmp_path):
    import torch

    from voxadapt.augment import SpecAugmentOptions

    augment = SpecAugmentOptions(enabled=True, time_mask_max_frames=30)
    common = dict(valid=None, batch_size=2, scheduler="constant", spec_augment=augment)
    straight = train(config(tiny_model, sample_manifest, tmp_path / "a", max_steps=4, **common))
    train(config(tiny_model, sample_manifest, tmp_path / "b", max_steps=2, **common))
    resumed = train(
        config(tiny_model, sample_manifest, tmp_path / "b", max_steps=4, resume=True, **common)
    )
    assert straight.state.step == resumed.state.step == 4
    a = load_file(tmp_path / "a" / "checkpoint-last" / "trainable.safetensors")
    b = load_file(tmp_path / "b" / "checkpoint-last" / "trainable.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)
    plain = train(
        config(
            tiny_model,
            sample_manifest,
            tmp_path / "c",
            max_steps=4,
            valid=None,
            batch_size=2,
            scheduler="constant",
        )
    )
    assert losses(plain.state.log_history) != losses(straight.state.log_history)


@pytest.mark.slow
def test_metrics_reach_mlflow_offline_with_hugging_face_names(
    tiny_model, sample_manifest, tmp_path, monkeypatch
):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "run"
    result = train(
        config(
            tiny_model,
            sample_manifest,
            out,
            max_steps=2,
            eval_steps=2,
            report_to=["tensorboard", "mlflow"],
        )
    )
    assert {"loss", "learning_rate", "grad_norm", "epoch"} <= set(result.state.log_history[0])
    client = MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    run = client.get_run((out / "mlflow_run_id").read_text().strip())
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]
    cer = client.get_metric_history(run.info.run_id, "eval_cer")
    assert [m.value for m in cer] == [result.state.best_cer]
    assert run.data.params["lr"] == "0.01" and run.data.params["decode.tokens_per_s"] == "1.0"


def test_off_a_terminal_every_logging_step_is_a_loss_line(tiny_model, sample_manifest, tmp_path):
    """In a log file (stderr not a TTY) `--logging-steps 2` gives a line per 2 optimizer
    steps, as the HF Trainer prints its loss dicts; the 30 s progress interval does not
    hold them back."""
    env = {k: v for k, v in ENV.items() if k != "VOXADAPT_PROGRESS_INTERVAL_S"}
    result = subprocess.run(
        [sys.executable, "-m", "voxadapt.cli", "train", "--model", str(tiny_model),
         "--train", str(sample_manifest), "--output-dir", str(tmp_path / "run"),
         "--max-steps", "6", "--logging-steps", "2", "--batch-size", "4", "--grad-accum", "1",
         "--num-workers", "0", "--report-to", "none", "--warmup-ratio", "0"],
        env=env, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = re.findall(
        r"step (\d+)/6, epoch ([\d.]+): loss ([\d.]+), lr ([\d.e+-]+), grad_norm", result.stderr
    )
    assert [int(step) for step, *_ in lines] == [2, 4, 6]
    assert [float(epoch) for _, epoch, *_ in lines] == [2.0, 4.0, 6.0]  # 1 step per epoch
    logged = [r for r in map(json.loads, (tmp_path / "run" / "log.jsonl").open()) if "loss" in r]
    assert [float(loss) for _, _, loss, _ in lines] == [
        pytest.approx(r["loss"], abs=1e-4) for r in logged
    ]


def test_a_failed_checkpoint_write_is_one_line_and_keeps_the_earlier_checkpoint(
    tiny_model, sample_manifest, tmp_path, file_size_limit
):
    out = tmp_path / "run"
    options = dict(valid=None, projector="full", report_to=["none"], eval_steps=None)
    train(config(tiny_model, sample_manifest, out, max_steps=2, **options))
    before = {p.name: p.read_bytes() for p in (out / "checkpoint-last").iterdir()}
    # the full projector's 96 kB of weights cannot be written; everything else is small
    with file_size_limit(60_000), pytest.raises(VoxadaptError) as failed:
        train(config(tiny_model, sample_manifest, out, max_steps=3, resume=True, **options))
    message = str(failed.value)
    assert "file size limit of 60 kB (ulimit -f) reached writing" in message
    assert "checkpoint-last.tmp (needed ~" in message
    assert "unexpected pos" not in message and "\n" not in message
    assert {p.name: p.read_bytes() for p in (out / "checkpoint-last").iterdir()} == before
    assert not (out / "checkpoint-last.tmp").exists()
    assert json.loads((out / "trainer_state.json").read_text())["step"] == 2
    resumed = train(config(tiny_model, sample_manifest, out, max_steps=3, resume=True, **options))
    assert resumed.state.step == 3  # room again: the run continues from the kept checkpoint
