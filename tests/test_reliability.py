"""Bad input, faults and operator mistakes: nothing lost, no wrong number, one-line errors.

Each test is a case an adversarial operator found; the fault-injection ones (corrupt cache,
NaN loss, SIGTERM, full disk) end with a correct re-run.
"""

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from voxadapt.decoding import DecodeOptions
from voxadapt.errors import ConfigError, NothingKeptError, VoxadaptError
from voxadapt.features import FeatureSpec, FeatureStore, utterance_key
from voxadapt.manifest import atomic_write, read_manifest, write_jsonl
from voxadapt.stages.cache import CacheConfig, build_cache
from voxadapt.stages.prepare import PrepareConfig, prepare

from conftest import CLIPS, df_mount_point, fit_duration, write_wav

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "voxadapt.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )


def one_line_error(result) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("voxadapt: error")]
    assert len(lines) == 1, result.stderr
    return lines[0]


# ------------------------------------------------------------------------- file modes


def test_outputs_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "a.json") as handle:
            handle.write("{}")
        assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
        os.umask(0o027)
        with atomic_write(tmp_path / "b.json") as handle:
            handle.write("{}")
        assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o640
    finally:
        os.umask(old)


# ---------------------------------------------------------------------------- prepare


@pytest.fixture
def clips(tmp_path, speech):
    samples, rate = speech
    return [
        write_wav(tmp_path / "audio" / f"c{i}.wav", fit_duration(samples, rate, 4.0 + i), rate)
        for i in range(4)
    ]


def test_one_audio_file_under_several_spellings_is_kept_once(tmp_path, clips):
    link = tmp_path / "link.wav"
    link.symlink_to(clips[0])
    scp = tmp_path / "in.scp"
    scp.write_text(
        "audio/c0.wav|첫 번째\naudio/../audio/c0.wav|두 번째\nlink.wav|세 번째\n"
        "audio/c1.wav|다른 파일\n",
        encoding="utf-8",
    )
    result = prepare(PrepareConfig(scp, "scp", tmp_path / "out"))
    assert result.stats["kept"] == 2
    assert result.stats["rejected_by_reason"] == {"duplicate": 2}


def test_renamed_ids_never_collide_with_existing_ones(tmp_path, clips):
    rows = [
        {"audio": str(clips[0]), "text": "하나", "id": "dupid"},
        {"audio": str(clips[1]), "text": "둘", "id": "dupid"},
        {"audio": str(clips[2]), "text": "셋", "id": "dupid-2"},
    ]
    write_jsonl(tmp_path / "in.jsonl", rows)
    result = prepare(PrepareConfig(tmp_path / "in.jsonl", "jsonl", tmp_path / "out"))
    ids = [u.id for u in read_manifest(result.manifests["train"])]
    assert len(ids) == len(set(ids)) == 3
    assert "dupid" in ids and "dupid-2" in ids


def test_implausibly_long_transcripts_are_rejected(tmp_path, clips):
    rows = [
        {"audio": str(clips[0]), "text": "가" * 2000},  # 2000 characters on a 4 s clip
        {"audio": str(clips[1]), "text": "나" * 100_000},
        {"audio": str(clips[2]), "text": "정상적인 문장입니다"},
    ]
    write_jsonl(tmp_path / "in.jsonl", rows)
    result = prepare(PrepareConfig(tmp_path / "in.jsonl", "jsonl", tmp_path / "out"))
    assert result.stats["rejected_by_reason"] == {
        "implausible_text_rate": 1,
        "text_too_long": 1,
    }


def test_splits_that_leave_nothing_to_train_are_refused(tmp_path, clips):
    with pytest.raises(ConfigError, match="nothing left to train"):
        PrepareConfig(tmp_path, "scp", tmp_path / "o", valid_size=0.6, test_size=0.6)
    scp = tmp_path / "in.scp"
    scp.write_text("audio/c0.wav|하나\naudio/c1.wav|둘\n", encoding="utf-8")
    with pytest.raises(NothingKeptError, match="train split is empty"):
        prepare(PrepareConfig(scp, "scp", tmp_path / "out", valid_size=1, test_size=1))
    assert not (tmp_path / "out" / "train.jsonl").exists()


@pytest.mark.parametrize("kind", ["file", "under_file"])
def test_out_that_cannot_be_a_folder_is_one_line(tmp_path, samples, kind):
    blocker = tmp_path / "taken"
    blocker.write_text("x")
    out = blocker if kind == "file" else blocker / "sub"
    line = one_line_error(run_cli("prepare", "scp", samples / "train.scp", "--out", out))
    assert str(blocker) in line


# ------------------------------------------------------------------------------ cache


@pytest.fixture
def built_cache(tiny_model, sample_manifest, tmp_path):
    root = tmp_path / "cache"
    build_cache(CacheConfig([sample_manifest], str(tiny_model), root, jobs=1, shard_size=2))
    return root


def _store(tiny_model, root):
    return FeatureStore(root, FeatureSpec.from_model(tiny_model))


def _features(store, manifest):
    return {u.id: store.get(utterance_key(u, store.spec)).frames for u in read_manifest(manifest)}


@pytest.mark.parametrize("where", ["body", "header"])
def test_corrupt_shard_is_detected_named_and_recomputed(
    tiny_model, sample_manifest, built_cache, where
):
    store = _store(tiny_model, built_cache)
    expected = _features(store, sample_manifest)
    shard = sorted(built_cache.glob("shard-*.safetensors"))[0]
    data = bytearray(shard.read_bytes())
    if where == "body":
        for offset in range(len(data) - 40, len(data) - 8):  # inside the last entry's bytes
            data[offset] ^= 0xFF
    else:
        data[8:40] = b"{not json at all" + b" " * 16
    shard.write_bytes(bytes(data))
    store = _store(tiny_model, built_cache)
    if where == "body":
        assert store.verify() == [shard]
        bad = next(k for k, e in store.entries.items() if e.shard == shard and e.offset > 0)
        with pytest.raises(VoxadaptError, match=shard.name):
            store.get(bad)
    else:
        assert store.corrupt_shards == [shard]
    result = build_cache(CacheConfig([sample_manifest], str(tiny_model), built_cache, jobs=1))
    assert result.corrupt_shards == 1 and result.computed >= 1
    again = _features(_store(tiny_model, built_cache), sample_manifest)
    assert again.keys() == expected.keys()
    for key, frames in expected.items():
        np.testing.assert_allclose(again[key], frames, atol=1e-6)


def test_nan_in_a_cached_entry_is_never_returned(tiny_model, sample_manifest, tmp_path, spec):
    from voxadapt.features import compute_features, write_shard

    audio = np.sin(np.linspace(0, 3000, 16000 * 4)).astype(np.float32)
    features = compute_features(audio, spec)
    features.frames[:, 5] = np.nan
    root = tmp_path / "nan"
    root.mkdir()
    write_shard(root, spec, [("k", features)], "fp16")
    with pytest.raises(VoxadaptError, match="non-finite"):
        FeatureStore(root, spec).get("k")


# ------------------------------------------------------------------------------ train


def _train_config(tiny_model, manifest, out, **changes):
    from voxadapt.stages.train import TrainConfig

    base = dict(
        model=str(tiny_model),
        train=manifest,
        valid=manifest,
        output_dir=out,
        max_steps=3,
        batch_size=4,
        grad_accum=1,
        lr=1e-2,
        logging_steps=1,
        eval_steps=1,
        warmup_ratio=0.0,
        num_workers=0,
        scheduler="constant",
        decode=DecodeOptions(tokens_per_s=1.0, num_workers=0),
    )
    base.update(changes)
    return TrainConfig(**base)


@pytest.mark.slow
def test_nan_loss_stops_training_and_keeps_the_good_adapter(
    tiny_model, sample_manifest, tmp_path, monkeypatch
):
    import torch
    from safetensors.torch import load_file

    import voxadapt.stages.train as train_module

    calls = {"n": 0}
    real_loss = train_module.label_positions_loss

    def loss_that_turns_nan(model, batch, **kwargs):  # the data going bad at micro-batch 3
        calls["n"] += 1
        loss = real_loss(model, batch, **kwargs)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(train_module, "label_positions_loss", loss_that_turns_nan)
    out = tmp_path / "run"
    with pytest.raises(train_module.NonFiniteError, match="step 3") as info:
        train_module.train(_train_config(tiny_model, sample_manifest, out))
    assert "ko_00" in str(info.value)  # names the batch's utterances
    for path in (out / "adapter").glob("*.safetensors"):
        assert all(torch.isfinite(t).all() for t in load_file(path).values())
    state = json.loads((out / "checkpoint-last" / "state.json").read_text())
    assert state["step"] == 2  # the last good step
    weights = load_file(out / "checkpoint-last" / "trainable.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())


@pytest.mark.slow
def test_resume_refuses_changed_hyperparameters(tiny_model, sample_manifest, tmp_path):
    from voxadapt.stages.train import train

    out = tmp_path / "run"
    train(_train_config(tiny_model, sample_manifest, out, max_steps=2, valid=None))
    with pytest.raises(ConfigError, match=r"lr: 0\.01 -> 0\.5.*scheduler"):
        train(
            _train_config(
                tiny_model,
                sample_manifest,
                out,
                max_steps=4,
                valid=None,
                resume=True,
                lr=0.5,
                scheduler="cosine",
            )
        )
    resumed = train(
        _train_config(tiny_model, sample_manifest, out, max_steps=4, valid=None, resume=True)
    )
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4] and resumed.state.step == 4


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_like_ctrl_c(tiny_model, sample_manifest, tmp_path):
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
        "30",
        "--batch-size",
        "2",
        "--grad-accum",
        "1",
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
    log_file = out / "log.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if log_file.exists() and len(log_file.read_text().splitlines()) >= 2:
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 130, stderr
    assert "interrupted at step" in stderr and "Traceback" not in stderr
    stopped = json.loads((out / "checkpoint-last" / "state.json").read_text())["step"]
    assert 2 <= stopped < 30
    logged = [json.loads(line)["step"] for line in log_file.read_text().splitlines()]
    assert logged == list(range(1, stopped + 1))


# --------------------------------------------------------------- evaluate / transcribe


def test_evaluate_refuses_duplicate_ids_and_bad_compare(tiny_model, sample_manifest, tmp_path):
    from voxadapt.stages.evaluate import EvaluateConfig, evaluate

    rows = [json.loads(line) for line in sample_manifest.read_text().splitlines()]
    doubled = tmp_path / "doubled.jsonl"
    write_jsonl(doubled, rows + rows[:1])
    common = dict(
        model=str(tiny_model),
        quantization="none",
        bootstrap=0,
        decode=DecodeOptions(max_new_tokens=2, num_workers=0),
    )
    with pytest.raises(VoxadaptError, match="more than once"):
        evaluate(EvaluateConfig(manifest=doubled, out_dir=tmp_path / "a", **common))
    with pytest.raises(ConfigError, match="not a manifest"):
        evaluate(
            EvaluateConfig(
                manifest=sample_manifest, out_dir=tmp_path / "b", compare=sample_manifest, **common
            )
        )
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ConfigError, match="--compare"):
        evaluate(
            EvaluateConfig(
                manifest=sample_manifest, out_dir=tmp_path / "c", compare=binary, **common
            )
        )
    with pytest.raises(ConfigError, match="limit must be >= 1"):
        EvaluateConfig(manifest=sample_manifest, limit=-1)


def test_undefined_rates_are_reported_as_undefined():
    from voxadapt.scoring.intervals import bootstrap_interval
    from voxadapt.scoring.rates import corpus_metrics, score_row

    rows = [{"id": f"u{i}", "speaker": f"s{i}", **score_row("", "뭔가")} for i in range(3)]
    metrics = corpus_metrics(rows)
    assert metrics["cer"] is None and metrics["wer"] is None
    assert bootstrap_interval(rows, resamples=50) is None


def test_srt_names_never_collide(tiny_model, tmp_path):
    from voxadapt.stages.transcribe import TranscribeConfig, transcribe

    folder = tmp_path / "calls"
    for speaker in ("s1", "s2"):
        (folder / speaker).mkdir(parents=True)
        (folder / speaker / "u0.wav").write_bytes(CLIPS[0].read_bytes())
    (folder / "u0.flac").write_bytes(b"not audio")  # fails, and writes no cue
    result = transcribe(
        TranscribeConfig(
            inputs=[folder],
            model=str(tiny_model),
            out=tmp_path / "subs",
            format="srt",
            quantization="none",
            decode=DecodeOptions(max_new_tokens=2, num_workers=0),
        )
    )
    # hidden: the ledger and the index of which input each file holds
    written = sorted(p.name for p in (tmp_path / "subs").iterdir() if not p.name.startswith("."))
    assert written == ["s1_u0.srt", "s2_u0.srt"]
    assert result.n_errors == 1


@pytest.mark.parametrize("kind", ["folder", "under_file", "dot"])
def test_transcribe_checks_out_before_decoding(tiny_model, tmp_path, kind):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = {"folder": tmp_path, "under_file": blocker / "out.jsonl", "dot": Path(".")}[kind]
    started = time.perf_counter()
    line = one_line_error(
        run_cli("transcribe", CLIPS[0], "--model", tiny_model, "--out", out, "--format", "jsonl")
    )
    assert "--out" in line
    assert time.perf_counter() - started < 60  # refused up front, not after decoding


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--device", "tpu"], "tpu"),
        (["--device", "cuda"], "CUDA is not available"),
        (["--max-new-tokens", "-5"], "--max-new-tokens must be >= 1"),
        (["--language", "xx-nonsense"], "not an ISO 639-1"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
    ],
)
def test_transcribe_bad_options_are_one_line(flags, message):
    line = one_line_error(run_cli("transcribe", CLIPS[0], *flags))
    assert message in line


# ------------------------------------------------------------------------------ export


def test_export_refuses_incomplete_adapters_and_other_bases(tiny_model, adapters, tmp_path):
    import shutil

    from voxadapt.model import ModelError
    from voxadapt.stages.export import ExportConfig, ExportError, export

    broken = tmp_path / "broken"
    shutil.copytree(adapters["lora"], broken)
    (broken / "adapter_model.safetensors").unlink()
    with pytest.raises(ExportError, match=r"adapter_model\.safetensors missing"):
        export(ExportConfig(broken, tmp_path / "o1", str(tiny_model)))
    other = tmp_path / "other-base"
    shutil.copytree(tiny_model, other)
    with pytest.raises(ModelError, match="trained on"):
        export(ExportConfig(adapters["lora"], tmp_path / "o2", str(other)))
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_exported_files_are_readable_by_others(tiny_model, adapters, tmp_path):
    from voxadapt.stages.export import ExportConfig, export

    old = os.umask(0o022)
    try:
        result = export(
            ExportConfig(adapters["lora"], tmp_path / "hf", str(tiny_model), dtype="fp32")
        )
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in result.out_dir.iterdir()}
    assert modes and all(mode == 0o644 for mode in modes.values()), modes


def test_full_disk_during_prepare_leaves_the_earlier_outputs(messy_free_scp, tmp_path, monkeypatch):
    import errno

    import voxadapt.prepare_outputs as prepare_module

    out = tmp_path / "out"
    prepare(PrepareConfig(messy_free_scp, "scp", out, valid_size=1))
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    real_write = prepare_module.write_jsonl
    written = []

    def write_until_the_disk_is_full(path, records):
        if written:  # the first file fits, the second does not
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        written.append(path)
        return real_write(path, records)

    monkeypatch.setattr(prepare_module, "write_jsonl", write_until_the_disk_is_full)
    with pytest.raises(OSError, match="No space left"):
        prepare(PrepareConfig(messy_free_scp, "scp", out, valid_size=2))
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert leftovers == [".voxadapt.json"]  # the ledger of what voxadapt wrote; no temp files
    monkeypatch.undo()
    result = prepare(PrepareConfig(messy_free_scp, "scp", out, valid_size=2))
    assert result.stats["splits"]["valid"]["utterances"] == 2


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (errno.ENOSPC, "no space left on {mount}: {out}"),
        (errno.EDQUOT, "disk quota exceeded on {mount}: {out}"),
        (errno.EROFS, "read-only file system: {out}"),
    ],
)
def test_a_failed_first_prepare_leaves_nothing_and_says_why(
    messy_free_scp, tmp_path, monkeypatch, capsys, code, message
):
    from voxadapt.cli import main

    def refused(fd):  # a full disk often shows only when the data is flushed: no file name
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", refused)
    out = tmp_path / "prepared" / "ko"
    assert main(["prepare", "scp", str(messy_free_scp), "--out", str(out)]) == 1
    expected = message.format(mount=df_mount_point(tmp_path), out=out)
    assert capsys.readouterr().err == f"voxadapt: error: {expected}\n"
    assert not (tmp_path / "prepared").exists()  # no folder holding only a ledger


@pytest.fixture
def messy_free_scp(tmp_path, clips):
    scp = tmp_path / "clean.scp"
    scp.write_text("".join(f"audio/c{i}.wav|문장 {i}\n" for i in range(4)), encoding="utf-8")
    return scp


# ----------------------------------------------------- found by the adversarial review


@pytest.mark.parametrize("command", ["cache", "evaluate", "transcribe", "train"])
def test_non_utf8_manifest_is_one_line(command, sample_manifest, tiny_model, tmp_path):
    manifest = tmp_path / "u8.jsonl"
    manifest.write_bytes(sample_manifest.read_bytes().splitlines(keepends=True)[0] + b"\xff\n")
    args = {
        "cache": ["cache", manifest, "--model", tiny_model, "--out", tmp_path / "c"],
        "evaluate": ["evaluate", manifest, "--model", tiny_model, "--out", tmp_path / "e"],
        "transcribe": ["transcribe", manifest, "--model", tiny_model],
        "train": [
            "train",
            "--model",
            tiny_model,
            "--train",
            manifest,
            "--output-dir",
            tmp_path / "t",
        ],
    }[command]
    line = one_line_error(run_cli(*args))
    assert f"{manifest}:2: not UTF-8" in line


def test_empty_out_is_refused(samples):
    line = one_line_error(run_cli("prepare", "scp", samples / "train.scp", "--out", ""))
    assert "--out: '' is not a path" in line  # the flag the user typed, not the field


def test_yaml_typos_get_a_suggestion_and_readable_types(tmp_path):
    from voxadapt.config import build_config

    yaml_path = tmp_path / "p.yaml"
    yaml_path.write_text("min_duration: 2\njobs: true\ndecode: 3\n")
    from voxadapt.stages.transcribe import TranscribeConfig

    with pytest.raises(ConfigError) as info:
        build_config(
            PrepareConfig, yaml_path, source=tmp_path, source_format="scp", out_dir=tmp_path
        )
    message = str(info.value)
    assert "did you mean 'min_duration_s'" in message
    assert "jobs (--jobs): expected an integer, got True" in message  # key and flag
    section = tmp_path / "t.yaml"
    section.write_text("decode: 3\n")
    with pytest.raises(ConfigError, match="decode: expected a mapping"):
        build_config(TranscribeConfig, section, inputs=[tmp_path])
    with pytest.raises(ConfigError, match="is a folder"):
        build_config(PrepareConfig, tmp_path)


def test_failed_run_report_is_minimal_and_cleared_by_success(tmp_path, messy_free_scp):
    out = tmp_path / "out"
    bad = tmp_path / "bad.scp"
    bad.write_text("nope.wav|없어요\n", encoding="utf-8")
    with pytest.raises(NothingKeptError):
        prepare(PrepareConfig(bad, "scp", out))
    assert sorted(p.name for p in (out / "failed-run").iterdir()) == [
        "rejected.jsonl",
        "stats.json",
    ]
    prepare(PrepareConfig(messy_free_scp, "scp", out))
    assert not (out / "failed-run").exists()


def test_jsonl_bad_duration_and_missing_text_are_rejected(tmp_path, clips):
    rows = [
        {"audio": str(clips[0]), "text": "하나", "duration": "abc"},
        {"audio": str(clips[1])},
        {"audio": str(clips[2]), "text": "셋"},
    ]
    write_jsonl(tmp_path / "in.jsonl", rows)
    result = prepare(PrepareConfig(tmp_path / "in.jsonl", "jsonl", tmp_path / "out"))
    assert result.stats["rejected_by_reason"] == {"malformed_line": 1, "missing_transcript": 1}


def test_adapter_and_checkpoint_weights_are_readable_by_others(adapters, tiny_model):
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in adapters["lora"].iterdir()}
    modes |= {p.name: stat.S_IMODE(p.stat().st_mode) for p in Path(tiny_model).iterdir()}
    umask = os.umask(0)
    os.umask(umask)
    assert all(mode == 0o666 & ~umask for mode in modes.values()), modes


# ------------------------------------------------------------- found by the code review


def test_compare_with_differently_labelled_speakers_pairs_by_this_runs_speakers():
    from voxadapt.scoring.intervals import paired_bootstrap
    from voxadapt.scoring.rates import score_row

    mine = [
        {"id": f"u{i}", "speaker": f"s{i % 3}", **score_row("가나다라", "가나다")} for i in range(6)
    ]
    theirs = [
        {"id": f"u{i}", "speaker": f"p{i % 2}", **score_row("가나다라", "가나")} for i in range(6)
    ]
    result = paired_bootstrap(mine, theirs, resamples=50)
    assert result["delta"] == pytest.approx(0.25 - 0.5)


def test_resume_may_not_change_the_training_prompt_language():
    from voxadapt.training import resume_differences

    saved = {"lr": 0.1, "decode": {"language": "ko", "batch_size": 16}}
    assert (
        resume_differences(saved, {"lr": 0.1, "decode": {"language": "ko", "batch_size": 4}}) == []
    )
    changed = resume_differences(saved, {"lr": 0.1, "decode": {"language": "en"}})
    assert changed == ["decode.language: 'ko' -> 'en'"]


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("seed: -1\n", r"seed \(--seed\) must be in"),
        ("model: null\n", "expected a string, got None"),
        ("model: no\n", "expected a string, got False"),
    ],
)
def test_train_config_values_that_would_fail_late(tmp_path, yaml_text, message):
    from voxadapt.config import build_config
    from voxadapt.stages.train import TrainConfig

    path = tmp_path / "c.yaml"
    path.write_text(yaml_text + "train: t.jsonl\n")
    with pytest.raises(ConfigError, match=message):
        build_config(TrainConfig, path)


def test_a_commented_out_section_is_an_empty_one(tmp_path):
    from voxadapt.config import build_config
    from voxadapt.stages.transcribe import TranscribeConfig

    path = tmp_path / "c.yaml"
    path.write_text("decode:\n  # batch_size: 4\n")
    assert build_config(TranscribeConfig, path, inputs=[tmp_path]).decode.batch_size == 16


def test_cache_counts_failed_utterances_not_entries(tiny_model, sample_manifest, tmp_path):
    rows = [json.loads(line) for line in sample_manifest.read_text().splitlines()]
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not audio")
    rows[0]["audio"] = str(broken)
    manifest = tmp_path / "m.jsonl"
    write_jsonl(manifest, rows)
    result = build_cache(
        CacheConfig([manifest], str(tiny_model), tmp_path / "c", jobs=1, speed=[0.9, 1.0, 1.1])
    )
    assert result.failed == 1 and result.computed == 3 * (len(rows) - 1)


def test_compare_refuses_predictions_of_another_manifest(tmp_path):
    from voxadapt.manifest import Utterance
    from voxadapt.scoring.rows import read_compare

    def utterance(text, audio="/a.wav"):
        return Utterance("u1", audio, text, text, 1.0, 16000, 1)

    other = tmp_path / "predictions.jsonl"
    row = {"id": "u1", "audio": "/a.wav", "offset": None, "reference": "다른 문장"}
    write_jsonl(other, [{**row, "hypothesis": "x"}])
    with pytest.raises(ConfigError, match="other references"):
        read_compare(other, [utterance("원래 문장")])
    with pytest.raises(ConfigError, match=r"decoded from /a\.wav"):  # same ids, other audio
        read_compare(other, [utterance("다른 문장", audio="/b.wav")])
    assert read_compare(other, [utterance("다른 문장")])[0]["id"] == "u1"


def test_unreadable_terms_files_are_one_line_errors_before_any_work(tmp_path, sample_manifest):
    from voxadapt.stages.score import ScoreConfig, score

    bad = tmp_path / "terms.txt"
    bad.write_bytes(b"\xff\xfe\x00 not text")
    line = one_line_error(run_cli("transcribe", CLIPS[0], "--bias-terms", bad))
    assert "--bias-terms" in line and "not UTF-8" in line
    with pytest.raises(ConfigError, match="not UTF-8"):
        score(ScoreConfig(sample_manifest, sample_manifest, tmp_path / "out", terms=bad))
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------- trust by construction (issue 18)


@pytest.mark.slow
def test_a_fresh_train_never_discards_a_finished_run(tiny_model, sample_manifest, tmp_path):
    from voxadapt.stages.train import train

    out = tmp_path / "run"
    train(_train_config(tiny_model, sample_manifest, out, max_steps=1, eval_steps=1))
    adapter = (out / "adapter" / "adapter_model.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="holds a training run"):
        train(_train_config(tiny_model, sample_manifest, out, max_steps=2))
    assert (out / "adapter" / "adapter_model.safetensors").read_bytes() == adapter
    # a truncated checkpoint is a one-line error naming the file, not a traceback
    weights = out / "checkpoint-last" / "trainable.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(VoxadaptError, match=r"trainable\.safetensors is unreadable"):
        train(_train_config(tiny_model, sample_manifest, out, max_steps=2, resume=True))


def test_a_second_train_into_a_live_runs_folder_is_refused(tiny_model, sample_manifest, tmp_path):
    from voxadapt.outputs import LOCK, OutputConflict
    from voxadapt.stages.train import train

    out = tmp_path / "run"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owner = {"pid": sleeper.pid, "host": os.uname().nodename, "stage": "train"}
        (out / LOCK).write_text(json.dumps(owner))
        with pytest.raises(OutputConflict, match="being written by another run"):
            train(_train_config(tiny_model, sample_manifest, out))
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not (out / "log.jsonl").exists()


def test_a_second_cache_run_cannot_touch_a_live_runs_shards(tiny_model, sample_manifest, tmp_path):
    from voxadapt.outputs import OutputConflict

    out = tmp_path / "cache"
    live = subprocess.Popen(  # a cache run that holds the folder and is writing a shard
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from voxadapt.outputs import claim_outputs; "
            "claim = claim_outputs('cache', Path(sys.argv[1]), owns_folder=True); "
            "claim.lock(); (Path(sys.argv[1]) / '.shard-0001.tmp').write_bytes(b'partial'); "
            "print('ready', flush=True); time.sleep(60)",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert live.stdout.readline().strip() == "ready"
        with pytest.raises(OutputConflict, match=rf"another run: cache \(pid {live.pid}"):
            build_cache(CacheConfig([sample_manifest], str(tiny_model), out, jobs=1))
        assert (out / ".shard-0001.tmp").read_bytes() == b"partial"
    finally:
        live.kill()
        live.wait()
    # its process gone, the lock is taken over and the leftover shard cleaned up
    result = build_cache(CacheConfig([sample_manifest], str(tiny_model), out, jobs=1))
    assert result.failed == 0 and not (out / ".shard-0001.tmp").exists()


def test_a_truncated_adapter_is_one_line_naming_it(tiny_model, adapters, sample_manifest, tmp_path):
    import shutil

    broken = tmp_path / "adapter"
    shutil.copytree(adapters["lora"], broken)
    weights = broken / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:64])
    args = ["--model", tiny_model, "--adapter", broken, "--quantization", "none"]
    line = one_line_error(run_cli("transcribe", CLIPS[0], *args))
    assert "adapter" in line and str(broken) in line


@pytest.mark.parametrize("weight", ["1e39", "inf", "-1"])
def test_extreme_bias_weights_are_refused_before_any_work(weight):
    line = one_line_error(run_cli("transcribe", CLIPS[0], "--bias-weight", weight))
    assert "--bias-weight" in line


def test_a_catastrophic_speaker_regex_is_stopped(tmp_path):
    from voxadapt.stages.prepare import speaker_from_path

    path = Path("/" + "a" * 40 + "!")
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="catastrophic backtracking"):
        speaker_from_path(path, r"regex:(?P<speaker>(a|aa)+)b")
    assert time.perf_counter() - started < 30


def test_a_yaml_alias_bomb_gives_a_short_error(tmp_path):
    layers = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for index in range(1, 9):
        previous = chr(ord("a") + index - 1)
        name = chr(ord("a") + index)
        layers.append(f"{name}: &{name} [{', '.join(['*' + previous] * 9)}]")
    layers.append("valid_size: *i")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(layers) + "\n")
    result = run_cli("prepare", "scp", CLIPS[0], "--out", tmp_path / "o", "--config", bomb)
    line = one_line_error(result)
    assert len(result.stderr) < 2000 and "valid_size" in line


def test_terms_that_all_normalize_away_are_an_error(tmp_path, sample_manifest):
    from voxadapt.stages.score import ScoreConfig, score

    terms = tmp_path / "terms.txt"
    terms.write_text("...\n!!|??\n", "utf-8")
    with pytest.raises(ConfigError, match="none of its 2 terms"):
        score(ScoreConfig(sample_manifest, sample_manifest, tmp_path / "out", terms=terms))


def test_dash_out_is_refused_where_it_cannot_mean_stdout(sample_manifest):
    line = one_line_error(run_cli("score", sample_manifest, sample_manifest, "--out", "-"))
    assert "standard output" in line


def test_korean_output_in_a_latin1_locale_is_no_traceback(sample_manifest, tmp_path):
    hypotheses = tmp_path / "h.txt"
    hypotheses.write_text(
        "".join(f"{u.id}\t{u.text}\n" for u in read_manifest(sample_manifest)), "utf-8"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "voxadapt.cli",
            "score",
            str(sample_manifest),
            str(hypotheses),
            "--out",
            str(tmp_path / "s"),
            "--bootstrap",
            "0",
        ],
        capture_output=True,
        env={**ENV, "PYTHONIOENCODING": "latin-1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert b"Traceback" not in result.stderr
