"""voxadapt.outputs: the guard every stage's outputs go through (issue: trust by construction).

Outputs never land on inputs, never replace a file voxadapt did not write, and one run at a
time writes a folder. The stage-level cases are the examples a hostile review found.
"""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from voxadapt.errors import ConfigError
from voxadapt.manifest import read_manifest, write_jsonl
from voxadapt.outputs import (
    LOCK,
    OutputConflict,
    claim_output_file,
    claim_outputs,
    read_ledger,
    written_by,
)
from voxadapt.stages.prepare import PrepareConfig, prepare
from voxadapt.stages.score import ScoreConfig, score
from voxadapt.stages.transcribe import TranscribeConfig, transcribe

from conftest import CLIPS, dead_pid, staging_of

# ------------------------------------------------------------------------ the mechanism


def test_an_output_may_not_equal_contain_or_lie_inside_an_input(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    source = data / "train.jsonl"
    source.write_text("{}\n")
    with pytest.raises(OutputConflict, match="overwrite the input"):
        claim_output_file("transcribe", source, inputs=[source])
    with pytest.raises(OutputConflict, match="contain the input"):
        claim_outputs("prepare", data, names=["train.jsonl"], inputs=[source])
    with pytest.raises(OutputConflict, match="lies inside the input"):
        claim_outputs("prepare", data / "out", trees=[data])
    link = tmp_path / "link.jsonl"
    link.symlink_to(source)  # the same file under another name
    with pytest.raises(OutputConflict, match="overwrite the input"):
        claim_output_file("transcribe", link, inputs=[source])
    hard = tmp_path / "hard.jsonl"
    os.link(source, hard)
    with pytest.raises(OutputConflict, match="overwrite the input"):
        claim_output_file("transcribe", hard, inputs=[source])
    assert source.read_text() == "{}\n"


def test_files_voxadapt_did_not_write_are_never_replaced(tmp_path):
    (tmp_path / "metrics.json").write_text("mine")
    with pytest.raises(OutputConflict, match="not written by voxadapt"):
        claim_outputs("score", tmp_path, names=["metrics.json"])
    # a file the same stage wrote is replaced; another stage's file is not
    with claim_outputs("score", tmp_path / "run", names=["metrics.json"]) as claim:
        claim.path("metrics.json").write_text("{}")
    claim_outputs("score", tmp_path / "run", names=["metrics.json"])
    with pytest.raises(OutputConflict, match="voxadapt score"):
        claim_outputs("evaluate", tmp_path / "run", names=["metrics.json"])
    assert (tmp_path / "metrics.json").read_text() == "mine"


def test_a_folder_a_stage_owns_must_be_new_empty_or_its_own(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(OutputConflict, match="not empty and was not written by voxadapt"):
        claim_outputs("cache", tmp_path, owns_folder=True)
    with claim_outputs("cache", tmp_path / "cache", owns_folder=True):
        (tmp_path / "cache" / "shard.safetensors").write_bytes(b"")
    claim_outputs("cache", tmp_path / "cache", owns_folder=True)  # re-run: fine
    with pytest.raises(OutputConflict, match="outputs of `voxadapt cache`"):
        claim_outputs("train", tmp_path / "cache", owns_folder=True)


def test_one_run_at_a_time_and_stale_locks_are_taken_over(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        folder = tmp_path / "run"
        folder.mkdir()
        owner = {"pid": sleeper.pid, "host": os.uname().nodename, "stage": "train"}
        (folder / LOCK).write_text(json.dumps(owner))
        claim = claim_outputs("train", folder, owns_folder=True)
        with pytest.raises(OutputConflict, match=rf"another run: train \(pid {sleeper.pid}"):
            claim.lock()
    finally:
        sleeper.kill()
        sleeper.wait()
    # the owner is dead now: its lock is taken over, and released when the block ends
    with claim_outputs("train", folder, owns_folder=True):
        assert json.loads((folder / LOCK).read_text())["pid"] == os.getpid()
    assert not (folder / LOCK).exists()


def test_dash_means_standard_output_or_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="not standard output"):
        claim_outputs("evaluate", Path("-"))


def test_the_ledger_records_what_was_written_not_what_was_claimed(tmp_path):
    with claim_outputs("prepare", tmp_path, names=["train.jsonl", "test.jsonl"]):
        (tmp_path / "train.jsonl").write_text("{}\n")
    files = read_ledger(tmp_path)["files"]
    assert set(files) == {"train.jsonl"}  # test.jsonl was claimed, never written
    assert files["train.jsonl"]["stage"] == "prepare" and files["train.jsonl"]["size"] == 3
    assert written_by(tmp_path, "train.jsonl", "prepare")
    # a hand-made file under a name the stage might write is not vouched for
    (tmp_path / "test.jsonl").write_text("mine\n")
    assert not written_by(tmp_path, "test.jsonl")
    with pytest.raises(OutputConflict, match="not written by voxadapt"):
        claim_outputs("prepare", tmp_path, names=["test.jsonl"])
    # an output of ours edited by hand since is not ours any more
    (tmp_path / "train.jsonl").write_text("edited\n")
    assert not written_by(tmp_path, "train.jsonl")


def test_a_rerun_of_prepare_keeps_a_hand_made_split_it_never_wrote(tmp_path):
    from voxadapt.stages.prepare import PrepareConfig, prepare

    from conftest import SAMPLES

    sample_scp = SAMPLES / "train.scp"

    out = tmp_path / "out"
    prepare(PrepareConfig(sample_scp, "scp", out, jobs=1))
    (out / "test.jsonl").write_text('{"hand": "made"}\n')
    with pytest.raises(OutputConflict, match=r"test\.jsonl exists and was not written"):
        prepare(PrepareConfig(sample_scp, "scp", out, jobs=1))
    assert (out / "test.jsonl").read_text() == '{"hand": "made"}\n'


@pytest.mark.parametrize("name", [".voxadapt.lock", ".voxadapt.json"])
def test_a_fifo_under_a_guard_file_name_is_refused_not_waited_on(tmp_path, name):
    import os

    os.mkfifo(tmp_path / name)
    with pytest.raises(OutputConflict, match="not a regular file"):
        claim_outputs("prepare", tmp_path, names=["train.jsonl"]).lock()


def test_concurrent_claims_in_one_folder_lose_no_ledger_entry(tmp_path):
    import threading

    from voxadapt.outputs import claim_output_file

    def write(index: int) -> None:
        path = tmp_path / f"clip{index}.srt"
        with claim_output_file("transcribe", path):
            path.write_text(f"{index}\n")

    threads = [threading.Thread(target=write, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(read_ledger(tmp_path)["files"]) == {f"clip{i}.srt" for i in range(12)}


# ------------------------------------------------------- the examples, through the stages


def test_transcribe_never_replaces_the_recording(tmp_path):
    visit = tmp_path / "visit.wav"
    visit.write_bytes(CLIPS[0].read_bytes())
    before = visit.read_bytes()
    with pytest.raises(OutputConflict, match="overwrite the input"):
        transcribe(TranscribeConfig(inputs=[visit], out=visit, format="jsonl"))
    assert visit.read_bytes() == before


def test_transcribe_keeps_a_human_made_subtitle_beside_the_recording(tmp_path):
    visit = tmp_path / "visit.wav"
    visit.write_bytes(CLIPS[0].read_bytes())
    (tmp_path / "visit.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\n손으로 쓴 자막\n")
    with pytest.raises(OutputConflict, match=r"visit\.srt exists and was not written"):
        transcribe(TranscribeConfig(inputs=[visit], out=tmp_path, format="srt"))
    assert "손으로 쓴 자막" in (tmp_path / "visit.srt").read_text()


def test_score_never_replaces_the_vendors_file(sample_manifest, tmp_path):
    vendor = tmp_path / "vendor"
    vendor.mkdir()
    predictions = vendor / "predictions.jsonl"
    rows = [{"id": u.id, "text": u.text} for u in read_manifest(sample_manifest)]
    write_jsonl(predictions, rows)
    before = predictions.read_bytes()
    with pytest.raises(OutputConflict, match="contain the input"):
        score(ScoreConfig(sample_manifest, predictions, vendor, bootstrap=0))
    assert predictions.read_bytes() == before


def test_prepare_never_overwrites_its_own_source(sample_manifest, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    source = data / "train.jsonl"
    source.write_bytes(sample_manifest.read_bytes())
    before = source.read_bytes()
    with pytest.raises(OutputConflict, match="contain the input"):
        prepare(PrepareConfig(source, "jsonl", data, jobs=1))
    assert source.read_bytes() == before


def test_prepare_refuses_an_output_inside_its_source_tree(assets, tmp_path):
    import shutil

    tree = tmp_path / "aihub"
    shutil.copytree(assets / "aihub", tree)
    with pytest.raises(OutputConflict, match="lies inside the input"):
        prepare(PrepareConfig(tree, "aihub", tree / "prepared", jobs=1))
    assert not (tree / "prepared").exists()


def test_phone_recordings_are_listed_not_skipped_in_silence(tmp_path):
    from voxadapt.stages.transcribe import collect_inputs

    folder = tmp_path / "calls"
    folder.mkdir()
    (folder / "a.wav").write_bytes(CLIPS[0].read_bytes())
    (folder / "b.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A ")
    (folder / "c.webm").write_bytes(b"\x1a\x45\xdf\xa3")
    items, errors = collect_inputs([folder])
    assert [item.id for item in items] == ["a.wav"]
    # read through PyAV now (tests/test_containers.py); these two are broken: one line each
    assert [(e["id"], e["error"]) for e in errors] == [
        ("b.m4a", "unreadable_audio"),
        ("c.webm", "unreadable_audio"),
    ]
    assert all(e["detail"].startswith(f"{folder / e['id']}: ") for e in errors)
    assert all("\n" not in e["detail"] for e in errors)


def test_a_second_claim_in_the_same_process_is_refused_too(tmp_path):
    with claim_outputs("evaluate", tmp_path / "run", names=["metrics.json"]):
        second = claim_outputs("evaluate", tmp_path / "run", names=["metrics.json"])
        with pytest.raises(OutputConflict, match=f"pid {os.getpid()}"):
            second.lock()
    assert not (tmp_path / "run" / LOCK).exists()


def test_txt_refuses_ids_it_cannot_keep_before_any_model_loads(tmp_path):
    from voxadapt.errors import VoxadaptError

    folder = tmp_path / "calls"
    folder.mkdir()
    (folder / "a\tb.wav").write_bytes(CLIPS[0].read_bytes())
    config = TranscribeConfig(inputs=[folder], out=tmp_path / "out.txt", format="txt")
    with pytest.raises(VoxadaptError, match="use --format jsonl"):
        transcribe(config)  # the default hub model is not here: it never got that far
    assert not (tmp_path / "out.txt").exists()


# ------------------------------------- staging of killed runs, failed first runs, OS errors


def test_a_claim_removes_the_staging_of_dead_runs_and_nothing_else(tmp_path):
    folder, dead = tmp_path / "models", dead_pid()
    folder.mkdir()
    stale = staging_of(folder, "ko-med", dead)
    (stale / "nested").mkdir(parents=True)
    (stale / "nested" / "model.safetensors").write_bytes(b"\0" * 4096)
    stale_file = staging_of(folder, "notes.txt", dead)
    stale_file.write_text("half")
    live = staging_of(folder, "other", os.getppid())  # pytest's parent: alive
    live.mkdir()
    elsewhere = folder / f".voxadapt-staging-{dead}-00000000-ko-med"  # another host's run
    elsewhere.mkdir()
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    link = staging_of(folder, "link", dead)
    link.symlink_to(outside, target_is_directory=True)
    look_alikes = [f".ko-med.tmp-{dead}", f"voxadapt-staging-{dead}-x", ".voxadapt-staging-x-y"]
    for name in look_alikes:
        (folder / name).write_text("the user's")
    with claim_outputs("export", folder, names=["ko-med"]):
        pass
    left = set(os.listdir(folder)) - {".voxadapt.json"}
    assert left == {live.name, elsewhere.name, *look_alikes}
    assert (outside / "keep.txt").read_text() == "keep"  # the link went, not its target


def test_an_output_a_dead_run_set_aside_is_put_back_or_dropped(tmp_path):
    from voxadapt.staging import set_aside_path

    dead = dead_pid()

    def set_aside(name: str) -> Path:
        mine = set_aside_path(tmp_path, name)
        path = mine.with_name(mine.name.replace(f"-{os.getpid()}-", f"-{dead}-", 1))
        path.mkdir()
        (path / "config.json").write_text(name)
        return path

    set_aside("swapped")  # killed mid-swap: the new one never arrived
    set_aside("replaced")  # killed after the swap: the new one is in place
    (tmp_path / "replaced").mkdir()
    (tmp_path / "replaced" / "config.json").write_text("new")
    with claim_outputs("export", tmp_path, names=["other"]):
        pass
    assert (tmp_path / "swapped" / "config.json").read_text() == "swapped"
    assert (tmp_path / "replaced" / "config.json").read_text() == "new"
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".voxadapt-")]


def test_a_failed_first_run_leaves_no_folder_behind(tmp_path):
    out = tmp_path / "runs" / "first"
    with pytest.raises(RuntimeError), claim_outputs("prepare", out, names=["train.jsonl"]):
        raise RuntimeError("a bad input found late")
    assert not (tmp_path / "runs").exists()
    # train releases its claim from an `except` block, not a `with`
    claim = claim_outputs("train", out, owns_folder=True)
    claim.lock()
    try:
        raise RuntimeError("no model there")
    except RuntimeError:
        claim.release()
    assert not (tmp_path / "runs").exists()
    # a run that wrote something before failing keeps it, vouched for
    with pytest.raises(RuntimeError), claim_outputs("prepare", out, names=["train.jsonl"]):
        (out / "train.jsonl").write_text("{}\n")
        raise RuntimeError("later")
    assert written_by(out, "train.jsonl", "prepare")


def test_a_failed_run_leaves_an_existing_folder_as_it_was(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RuntimeError), claim_outputs("train", empty, owns_folder=True):
        raise RuntimeError("early")
    assert empty.is_dir() and not os.listdir(empty)
    run = tmp_path / "run"
    with claim_outputs("evaluate", run, names=["metrics.json"]):
        (run / "metrics.json").write_text("{}")
    before = read_ledger(run)
    names = ["metrics.json", "predictions.jsonl"]
    with pytest.raises(RuntimeError), claim_outputs("evaluate", run, names=names):
        raise RuntimeError("early")
    assert read_ledger(run) == before and sorted(os.listdir(run)) == [
        ".voxadapt.json",
        "metrics.json",
    ]


@pytest.mark.parametrize(
    ("read_only", "message"), [(True, "read-only file system"), (False, "permission denied")]
)
def test_an_unwritable_parent_is_told_apart_from_a_read_only_mount(
    tmp_path, monkeypatch, read_only, message
):
    # tests run as root, where a chmod 0o500 folder denies nothing: the refusal the kernel
    # would give is injected at the OS boundary instead
    real_statvfs = os.statvfs

    def statvfs(path):
        result = real_statvfs(path)
        if Path(path) != tmp_path:
            return result
        return SimpleNamespace(f_flag=result.f_flag | (os.ST_RDONLY if read_only else 0))

    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != tmp_path)
    monkeypatch.setattr(os, "statvfs", statvfs)
    with pytest.raises(
        ConfigError, match=f"cannot create {tmp_path / 'new'} \\({message}: {tmp_path}\\)"
    ):
        claim_outputs("prepare", tmp_path / "new", names=["train.jsonl"])


def test_a_staging_folder_is_readable_by_others_and_swept_when_its_run_is_dead(tmp_path):
    from voxadapt.staging import make_staging_dir

    old = os.umask(0o022)
    try:
        first, second = make_staging_dir(tmp_path, "out"), make_staging_dir(tmp_path, "out")
    finally:
        os.umask(old)
    assert first != second and first.is_dir() and second.is_dir()
    assert stat.S_IMODE(first.stat().st_mode) == 0o755  # mkdtemp's would be 0700
    dead = dead_pid()
    killed = first.rename(first.with_name(first.name.replace(f"-{os.getpid()}-", f"-{dead}-")))
    with claim_outputs("transcribe", tmp_path, names=["out"]):
        pass
    assert not killed.exists() and second.is_dir()  # this process's own staging stays
