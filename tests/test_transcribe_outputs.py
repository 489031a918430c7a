"""transcribe's outputs under operations: two inputs with one name, names the folder cannot
hold, a file that cannot be written, exit statuses, and progress over long recordings."""

import json
import logging
import shutil

import numpy as np
import pytest
import soundfile as sf

from voxadapt.cli import main
from voxadapt.decoding import AudioItem, DecodeOptions
from voxadapt.errors import ConfigError
from voxadapt.longform import AudioProgress
from voxadapt.outputs import OutputConflict
from voxadapt.stages.transcribe import (
    INPUTS_INDEX,
    SOME_FAILED,
    TranscribeConfig,
    output_formats,
    plan_outputs,
    transcribe,
)

from conftest import CLIPS

FAST = DecodeOptions(max_new_tokens=4, num_workers=0)


def plan(tmp_path, items, fmt="srt"):
    config = TranscribeConfig(inputs=[tmp_path / "x.wav"], out=tmp_path / "subs", format=fmt)
    return plan_outputs(config.out, output_formats(config), items, len(items))


def named(path: str) -> AudioItem:
    """An item given by name on the command line (its output takes the file's stem)."""
    return AudioItem(path, f"/abs/{path}", 1.0, named_file=True)


# ------------------------------------------------------------ names, before decoding


@pytest.mark.parametrize(
    ("items", "clash"),
    [
        ([named("day1/REC001.wav"), named("day2/REC001.wav")], "REC001.srt"),
        ([named("a/Visit.wav"), named("b/visit.flac")], "Visit.srt"),  # case-insensitive
        ([AudioItem("u0.wav", "/f/u0.wav", 1.0), AudioItem("u0.flac", "/f/u0.flac", 1.0)], "u0"),
        ([AudioItem("a b.wav", "/f/1", 1.0), AudioItem("a_b.wav", "/f/2", 1.0)], "a_b.srt"),
        ([AudioItem("s1", "/m.wav", 1.0), AudioItem("s1", "/m.wav", 1.0)], "s1.srt"),  # ids
    ],
)
def test_two_inputs_with_one_output_name_are_refused_naming_both(tmp_path, items, clash):
    with pytest.raises(ConfigError) as info:
        plan(tmp_path, items)
    [problem] = info.value.problems
    assert items[0].id in problem and items[1].id in problem and clash in problem
    assert "different --out folders" in problem


def test_every_clash_and_overlong_name_is_reported_at_once(tmp_path):
    long_stem = "가" * 84  # 252 bytes in UTF-8: with ".srt", one more than 255
    items = [
        named("day1/REC001.wav"),
        named("day2/REC001.wav"),
        named("x/a.wav"),
        named("y/a.wav"),
        named("z/a.wav"),
        named(f"{long_stem}.wav"),
        named("ok.wav"),
    ]
    with pytest.raises(ConfigError) as info:
        plan(tmp_path, items, "srt,vtt")
    problems = info.value.problems
    assert len(problems) == 4, problems  # two clashes; the long name as .srt and as .vtt
    assert "(and 1 more) would all be written as a.srt" in problems[1]
    assert sum("256 bytes, longer than the 255" in p for p in problems) == 2
    assert "ok" not in " ".join(problems)
    # a name that fits with the staging suffixes a temporary file would add: accepted
    assert plan(tmp_path, [named(f"{'가' * 83}.wav")]).names == [f"{'가' * 83}.srt"]


def test_an_output_file_named_too_long_is_refused(tmp_path):
    config = TranscribeConfig(inputs=[tmp_path / "x.wav"], out=tmp_path / f"{'나' * 90}.srt")
    with pytest.raises(ConfigError, match="274 bytes, longer than the 255"):
        plan_outputs(config.out, ["srt"], [named("x.wav")], 1)


def test_a_folder_named_too_long_is_one_problem_among_the_others(tmp_path):
    config = TranscribeConfig(inputs=[tmp_path / "x.wav"], out=tmp_path / ("다" * 90), format="srt")
    with pytest.raises(ConfigError) as info:
        plan_outputs(config.out, ["srt"], [named("a/x.wav"), named("b/x.wav")], 2)
    assert len(info.value.problems) == 2
    assert "270 bytes" in info.value.problems[0] and "would both" in info.value.problems[1]


def test_a_long_korean_name_that_fits_is_written(tiny_model, tmp_path):
    # 249 bytes + .srt: fits in 255, but not with a temporary file's prefix and suffix
    audio = tmp_path / f"{'가' * 83}.wav"
    shutil.copy(CLIPS[0], audio)
    out = tmp_path / "subs"
    common = dict(model=str(tiny_model), quantization="none", decode=FAST)
    transcribe(TranscribeConfig(inputs=[audio], out=out, format="srt,vtt", **common))
    assert (out / f"{'가' * 83}.srt").read_text("utf-8").startswith("1\n00:00:00,000 --> ")
    assert (out / f"{'가' * 83}.vtt").is_file()
    # one output file of a legal length (244..251 bytes + .srt): its lock and temporary file
    # must fit beside it too
    for length in (80, 83):
        single = tmp_path / "one" / f"{'한' * length}.srt"
        transcribe(TranscribeConfig(inputs=[audio], out=single, format="srt", **common))
        assert single.read_text("utf-8").startswith("1\n00:00:00,000 --> ")


def test_the_transcripts_name_is_still_shared_by_renaming_the_clip(tmp_path):
    # not two inputs: a clip called `transcripts` beside transcripts.txt gets ~2, as before
    items = [AudioItem("transcripts.wav", "/t.wav", 1.0)]
    assert plan(tmp_path, items, "text,txt").names == ["transcripts~2.txt", "transcripts.txt"]


def test_a_clash_is_refused_before_decoding_and_writes_nothing(tiny_model, tmp_path, capsys):
    for day in ("day1", "day2"):
        (tmp_path / day).mkdir()
        shutil.copy(CLIPS[0], tmp_path / day / "REC001.wav")
    out = tmp_path / "out"
    code = main(
        [
            "transcribe",
            str(tmp_path / "day1" / "REC001.wav"),
            str(tmp_path / "day2" / "REC001.wav"),
            *("--out", str(out), "--format", "srt", "--model", str(tiny_model)),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "REC001.wav would both be written as REC001.srt" in err
    assert len([line for line in err.splitlines() if "error" in line]) == 1
    assert not out.exists()


# ------------------------------------------------------------ across runs


def test_a_file_written_for_another_input_is_kept_without_overwrite(tiny_model, tmp_path):
    for day, clip in (("day1", CLIPS[0]), ("day2", CLIPS[1])):
        (tmp_path / day).mkdir()
        shutil.copy(clip, tmp_path / day / "REC001.wav")
    out = tmp_path / "subs"
    common = dict(model=str(tiny_model), quantization="none", decode=FAST, out=out, format="srt")
    transcribe(TranscribeConfig(inputs=[tmp_path / "day1" / "REC001.wav"], **common))
    day1 = (out / "REC001.srt").read_bytes()
    index = json.loads((out / INPUTS_INDEX).read_text())["files"]
    assert index == {"REC001.srt": str((tmp_path / "day1" / "REC001.wav").resolve())}

    # the same input again: its own file, rewritten
    transcribe(TranscribeConfig(inputs=[tmp_path / "day1" / "REC001.wav"], **common))
    # another input of the same name: refused before decoding, the file kept
    with pytest.raises(
        OutputConflict, match=r"REC001\.srt holds the transcript of .*day1.*--overwrite"
    ):
        transcribe(TranscribeConfig(inputs=[tmp_path / "day2" / "REC001.wav"], **common))
    assert (out / "REC001.srt").read_bytes() == day1

    transcribe(
        TranscribeConfig(inputs=[tmp_path / "day2" / "REC001.wav"], overwrite=True, **common)
    )
    assert (out / "REC001.srt").read_bytes() != day1
    index = json.loads((out / INPUTS_INDEX).read_text())["files"]
    assert index == {"REC001.srt": str((tmp_path / "day2" / "REC001.wav").resolve())}
    # a file removed by hand is forgotten: nothing left to protect
    (out / "REC001.srt").unlink()
    transcribe(TranscribeConfig(inputs=[tmp_path / "day1" / "REC001.wav"], **common))
    assert (out / "REC001.srt").read_bytes() == day1


# ------------------------------------------------------------ writing and exit status


def test_a_file_that_cannot_be_written_does_not_cost_the_others(tiny_model, tmp_path, capsys):
    inputs = [tmp_path / "a.wav", tmp_path / "b.wav"]
    for path, clip in zip(inputs, CLIPS):
        shutil.copy(clip, path)
    out = tmp_path / "out"
    (out / "a.srt").mkdir(parents=True)  # an empty folder where a.srt goes: nothing to lose
    args = ["transcribe", *map(str, inputs), "--out", str(out), "--format", "srt,jsonl"]
    args += ["--model", str(tiny_model), "--quantization", "none", "--workers", "0"]
    assert main([*args, "--max-new-tokens", "4"]) == 1
    err = capsys.readouterr().err
    assert "1 output file could not be written" in err and "a.srt" in err
    assert "the others were written" in err
    assert (out / "b.srt").read_text("utf-8").startswith("1\n00:00:00,000 --> ")
    rows = [json.loads(line) for line in (out / "transcripts.jsonl").read_text().splitlines()]
    assert [row.get("srt") for row in rows] == [None, "b.srt"]  # rows name what exists
    assert json.loads((out / INPUTS_INDEX).read_text())["files"] == {
        "b.srt": str(inputs[1].resolve())
    }
    assert not [p for p in out.iterdir() if p.name.startswith(".voxadapt-staging-")]  # no staging


def test_some_failed_inputs_exit_3_unless_allowed(tiny_model, tmp_path, capsys):
    good = tmp_path / "good.wav"
    shutil.copy(CLIPS[0], good)
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00not a wav")
    out = tmp_path / "t.txt"
    args = ["transcribe", str(good), str(tmp_path / "broken.wav"), str(tmp_path / "gone.wav")]
    args += ["--model", str(tiny_model), "--quantization", "none", "--workers", "0"]
    args += ["--max-new-tokens", "4", "--out", str(out)]
    assert main(args) == SOME_FAILED == 3
    err = capsys.readouterr().err
    assert "transcribed 1 of 3 inputs" in err
    assert (
        f"2 of 3 inputs failed: see the warnings above and the [error: reason] rows in {out}" in err
    )
    lines = out.read_text("utf-8").splitlines()
    assert f"{tmp_path / 'broken.wav'}\t[error: unreadable_audio]" in lines

    assert main([*args, "--allow-failures"]) == 0
    assert "(--allow-failures: exit status 0)" in capsys.readouterr().err
    # all failing stays an error, --allow-failures or not
    broken = ["transcribe", str(tmp_path / "broken.wav"), "--model", str(tiny_model)]
    assert main([*broken, "--allow-failures"]) == 1
    assert "nothing to transcribe" in capsys.readouterr().err


def test_the_failure_marker_is_in_the_help():
    import dataclasses

    from voxadapt.stages.transcribe import TranscribeConfig as Config

    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(Config)}
    assert "[error: reason]" in helps["format"] and "[error: reason]" in helps["allow_failures"]


def test_a_lone_surrogate_in_a_manifest_stays_valid_jsonl(tiny_model, tmp_path):
    manifest = tmp_path / "m.jsonl"
    row = {"id": "u1", "audio": str(CLIPS[0]), "duration": 4.2, "text": "네", "raw_text": "네"}
    row |= {"sample_rate": 16000, "channels": 1, "speaker": "\ud800"}
    manifest.write_text(json.dumps(row) + "\n", encoding="utf-8")  # escaped: valid JSON
    out = tmp_path / "t.jsonl"
    transcribe(
        TranscribeConfig(
            inputs=[manifest], out=out, model=str(tiny_model), quantization="none", decode=FAST
        )
    )
    [written] = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert written["speaker"] == "\ud800"


# ------------------------------------------------------------ progress of long recordings


def test_progress_counts_the_files_seconds_not_their_speech():
    long = AudioItem("long.wav", "/long.wav", 52.0)
    silent = AudioItem("silent.wav", "/silent.wav", 40.0)
    short = AudioItem("short.wav", "/short.wav", 3.0)
    parts = [AudioItem("long.wav#0", "/long.wav", 20.0), AudioItem("long.wav#1", "/long.wav", 16.5)]
    segments = {
        id(long): [(parts[0], 1.0, 21.0), (parts[1], 30.0, 46.5)],
        id(silent): [],
    }
    with AudioProgress([long, silent, short], "transcribe", segments=segments) as progress:
        assert progress.bar.total == 95.0
        assert progress.bar.n == 40.0  # a recording without speech: done at once
        progress.done([parts[0], short])
        assert progress.bar.n == 63.0  # speech so far, not yet the long file's silence
        progress.done([parts[1]])
        assert progress.bar.n == 95.0  # its last segment: the silence counts too


def test_segments_longer_than_the_header_never_pass_the_total():
    item = AudioItem("a.wav", "/a.wav", 10.0)
    parts = [AudioItem("a#0", "/a.wav", 6.0), AudioItem("a#1", "/a.wav", 6.0)]
    segments = {id(item): [(parts[0], 0.0, 6.0), (parts[1], 6.0, 12.0)]}
    with AudioProgress([item], "t", segments=segments) as progress:
        progress.done(parts)
        assert progress.bar.n == pytest.approx(10.0)


def test_a_long_file_ends_on_its_duration(tiny_model, tmp_path, caplog):
    rate = 16000
    silence = np.zeros(5 * rate, dtype=np.float32)
    speech = [sf.read(clip, dtype="float32")[0] for clip in CLIPS[:2]]
    recording = np.concatenate([silence, speech[0], silence, speech[1], silence])
    path = tmp_path / "long.wav"
    sf.write(path, recording, rate)
    duration = len(recording) / rate
    caplog.set_level(logging.INFO, logger="voxadapt.progress")
    decode = DecodeOptions(max_new_tokens=4, num_workers=0, long_form_threshold_s=10.0)
    result = transcribe(
        TranscribeConfig(inputs=[path], model=str(tiny_model), quantization="none", decode=decode)
    )
    assert len(result.rows[0]["segments"]) >= 2  # decoded as its speech
    [final] = [r.message for r in caplog.records if r.message.startswith("transcribe:")][-1:]
    assert f"{duration:.1f}/{duration:.1f} s audio (100%)" in final
