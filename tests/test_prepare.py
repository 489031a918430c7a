import json
from collections import Counter

import matplotlib.image
import numpy as np
import pytest
import soundfile as sf

from voxadapt.config import build_config
from voxadapt.errors import ConfigError, NothingKeptError, SourceError
from voxadapt.manifest import Utterance, read_manifest
from voxadapt.outputs import LEDGER  # records the failed run's report
from voxadapt.stages.prepare import PrepareConfig, prepare, split_utterances

from conftest import fit_duration, run_cli, write_wav


@pytest.fixture
def messy_scp(tmp_path, speech):
    """An SCP with every kind of bad line beside good ones from 12 speakers."""
    samples, rate = speech
    audio = tmp_path / "audio"
    lines: list[bytes] = []
    for speaker in range(12):
        for utt in range(3):
            seconds = 3.5 + (speaker * 3 + utt) % 7
            target_rate = (16000, 22050, 44100, 48000)[utt % 4]
            path = write_wav(
                audio / f"spk{speaker:02d}" / f"u{utt}.wav",
                fit_duration(samples, rate, seconds),
                rate,
                target_rate=target_rate,
                channels=2 if utt == 1 else 1,
            )
            lines.append(
                f"{path.relative_to(tmp_path)}|(3시)/(세 시)에 b/ 진료 {speaker}-{utt}".encode()
            )
    write_wav(audio / "short.wav", fit_duration(samples, rate, 1.0), rate)
    write_wav(audio / "long.wav", fit_duration(samples, rate, 26.0), rate)
    sf.write(audio / "empty.wav", np.zeros(0, dtype=np.float32), rate)
    sf.write(audio / "nan.wav", np.full(rate * 4, np.nan, dtype=np.float32), rate, subtype="FLOAT")
    (audio / "corrupt.wav").write_bytes(b"RIFF1234WAVEfmt not really")
    lines += [
        "audio/short.wav|짧아요".encode(),
        "audio/long.wav|길어요".encode(),
        "audio/empty.wav|비었어요".encode(),
        "audio/nan.wav|숫자가 아니에요".encode(),
        "audio/corrupt.wav|깨졌어요".encode(),
        "audio/nothere.wav|없는 파일".encode(),
        "구분자 없는 줄".encode(),
        b"audio/spk00/u0.wav|",
        b"audio/spk00/u0.wav|b/ n/",
        "audio/spk00/u0.wav|(괄호가 안 닫혀요".encode(),
        b"audio/spk00/u0.wav|\xff\xfe\xff",
        "audio/spk00/u2.wav|같은 파일 두 번".encode(),
        "audio/spk01/u0.wav|복통이 있어요".encode("cp949"),
    ]
    scp = tmp_path / "messy.scp"
    scp.write_bytes(b"\n".join(lines) + b"\n")
    return scp


EXPECTED_REJECTIONS = {
    "too_short": 1,
    "too_long": 1,
    "empty_audio": 1,
    "non_finite_samples": 1,
    "unreadable_audio": 1,
    "missing_audio": 1,
    "malformed_line": 1,
    "empty_text": 2,
    "unbalanced_brackets": 1,
    "undecodable_line": 1,
    "duplicate": 2,
}


def read_rejected(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_conservation_and_reasons(messy_scp, tmp_path):
    result = prepare(PrepareConfig(messy_scp, "scp", tmp_path / "out", jobs=2))
    rejected = read_rejected(result.rejected_path)
    kept = read_manifest(result.manifests["train"])
    input_lines = sum(1 for line in messy_scp.read_bytes().splitlines() if line.strip())
    assert len(kept) + len(rejected) == input_lines == result.stats["input_items"]
    assert Counter(r["reason"] for r in rejected) == EXPECTED_REJECTIONS
    assert result.stats["rejected_by_reason"] == EXPECTED_REJECTIONS
    assert len(kept) == 36  # the first line of each audio file is kept, later ones are duplicates
    # the same file name in many folders: ids come from the path below the SCP folder
    assert {u.id for u in kept} == {f"audio_spk{s:02d}_u{u}" for s in range(12) for u in range(3)}


def test_records_carry_audio_facts_and_normalized_text(messy_scp, tmp_path):
    result = prepare(PrepareConfig(messy_scp, "scp", tmp_path / "out", jobs=2))
    kept = {u.id: u for u in read_manifest(result.manifests["train"])}
    stereo = next(u for u in kept.values() if u.audio.endswith("spk03/u1.wav"))
    assert (stereo.channels, stereo.sample_rate) == (2, 22050)
    assert stereo.text == "3시에 진료 3-1"
    assert stereo.raw_text == "(3시)/(세 시)에 b/ 진료 3-1"
    assert stereo.language == "ko"
    for utterance in kept.values():
        assert 3.0 <= utterance.duration <= 25.0
        assert utterance.audio.startswith("/")
        info = sf.info(utterance.audio)
        assert utterance.duration == pytest.approx(info.frames / info.samplerate, abs=1e-3)
    # duplicate file names in different folders get unique ids
    assert len(kept) == len({u.audio for u in kept.values()})


def test_rejected_records_say_where_they_came_from(messy_scp, tmp_path):
    result = prepare(PrepareConfig(messy_scp, "scp", tmp_path / "out", jobs=1))
    rejected = {r["reason"]: r for r in read_rejected(result.rejected_path)}
    assert rejected["malformed_line"]["line"] == 43
    assert rejected["malformed_line"]["raw_text"] == "구분자 없는 줄"
    assert rejected["unbalanced_brackets"]["raw_text"] == "(괄호가 안 닫혀요"
    assert rejected["too_long"]["file"] == str(messy_scp)
    assert rejected["missing_audio"]["audio"].endswith("audio/nothere.wav")


def _speaker_of(utterance: Utterance) -> str:
    return utterance.audio.split("/")[-2]


@pytest.mark.parametrize(("valid_size", "test_size"), [(0.1, 0.2), (4, 7)])
def test_speaker_disjoint_splits(tmp_path, speech, valid_size, test_size):
    samples, rate = speech
    lines = []
    for speaker in range(20):
        for utt in range(1 + speaker % 3):
            path = write_wav(
                tmp_path / "a" / f"s{speaker}" / f"{utt}.wav",
                fit_duration(samples, rate, 3.2),
                rate,
            )
            lines.append(
                json.dumps({"audio": str(path), "text": "열이 나요", "speaker": f"s{speaker}"})
            )
    manifest = tmp_path / "in.jsonl"
    manifest.write_text("\n".join(lines), encoding="utf-8")
    total = len(lines)
    config = PrepareConfig(
        manifest, "jsonl", tmp_path / "out", valid_size=valid_size, test_size=test_size, seed=3
    )
    result = prepare(config)
    splits = {name: read_manifest(path) for name, path in result.manifests.items()}
    speakers = {name: {u.speaker for u in items} for name, items in splits.items()}
    assert not speakers["train"] & speakers["valid"]
    assert not speakers["train"] & speakers["test"]
    assert not speakers["valid"] & speakers["test"]
    assert sum(len(items) for items in splits.values()) == total
    for name, size in (("valid", valid_size), ("test", test_size)):
        target = size * total if size < 1 else size
        # greedy over speaker groups of at most 3: within half a group of the target
        assert abs(len(splits[name]) - target) <= 1.5
    # deterministic for a seed, different for another seed
    again = prepare(config.__class__(**{**config.__dict__, "out_dir": tmp_path / "again"}))
    assert again.manifests["test"].read_text() == result.manifests["test"].read_text()
    other = prepare(config.__class__(**{**config.__dict__, "out_dir": tmp_path / "o", "seed": 4}))
    assert other.manifests["test"].read_text() != result.manifests["test"].read_text()


def test_split_by_utterance_mixes_speakers():
    utterances = [
        Utterance(f"u{i}", f"/a/{i}.wav", "t", "t", 4.0, 16000, 1, speaker="one") for i in range(50)
    ]
    by_speaker = split_utterances(utterances, valid_size=0.2, test_size=None, split_by="speaker")
    assert len(by_speaker["valid"]) in (0, 50)  # one speaker cannot be split
    by_utt = split_utterances(utterances, valid_size=0.2, test_size=None, split_by="utterance")
    assert len(by_utt["valid"]) == 10 and len(by_utt["train"]) == 40


def test_duration_filter_bounds_are_options(messy_scp, tmp_path):
    result = prepare(
        PrepareConfig(messy_scp, "scp", tmp_path / "out", min_duration_s=0.5, max_duration_s=30)
    )
    reasons = result.stats["rejected_by_reason"]
    assert "too_short" not in reasons and "too_long" not in reasons
    assert result.stats["kept"] == 36 + 2


def test_stats_and_plot(messy_scp, tmp_path):
    result = prepare(PrepareConfig(messy_scp, "scp", tmp_path / "out", valid_size=2))
    stats = json.loads(result.stats_path.read_text(encoding="utf-8"))
    kept = [u for path in result.manifests.values() for u in read_manifest(path)]
    assert stats["kept"] == len(kept)
    assert stats["hours"] == pytest.approx(sum(u.duration for u in kept) / 3600)
    assert stats["duration_s"]["mean"] == pytest.approx(np.mean([u.duration for u in kept]))
    assert stats["sample_rates"] == dict(Counter(str(u.sample_rate) for u in kept))
    histogram = stats["duration_histogram"]
    assert sum(histogram["kept"]) == len(kept)
    readable = len(kept) + 2  # plus the too_short and too_long clips
    assert sum(histogram["all"]) == readable
    image = matplotlib.image.imread(result.plot_path)
    assert image.shape[0] >= 300 and image.shape[1] >= 500
    colors = {tuple(np.round(px, 2)) for px in image.reshape(-1, image.shape[-1])[::7]}
    assert len(colors) > 20  # bars, lines, text: not a blank placeholder
    assert (tmp_path / "out" / "prepare_config.yaml").is_file()


def test_label_duration_mismatch_is_rejected(tmp_path, speech):
    samples, rate = speech
    path = write_wav(tmp_path / "a.wav", fit_duration(samples, rate, 5.0), rate)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        json.dumps({"audio": str(path), "text": "좋아요", "duration": 9.0})
        + "\n"
        + json.dumps({"audio": str(path), "text": "좋아요"}),
        encoding="utf-8",
    )
    with pytest.raises(NothingKeptError, match="duplicate: 1, duration_mismatch: 1"):
        prepare(PrepareConfig(manifest, "jsonl", tmp_path / "out"))
    result = prepare(PrepareConfig(manifest, "jsonl", tmp_path / "out2", duration_tolerance_s=5))
    assert result.stats["kept"] == 1


def test_everything_rejected_writes_rejections_and_keeps_earlier_outputs(messy_scp, tmp_path):
    out = tmp_path / "out"
    prepare(PrepareConfig(messy_scp, "scp", out, valid_size=0.2))
    before = files_of(out)
    scp = tmp_path / "bad.scp"
    scp.write_text("nope.wav|없어요\nno separator\n", encoding="utf-8")
    with pytest.raises(NothingKeptError, match="all 2 input items were rejected"):
        prepare(PrepareConfig(scp, "scp", out))
    assert len(read_rejected(out / "failed-run" / "rejected.jsonl")) == 2
    after = files_of(out)
    assert after == before  # the earlier run's manifests, stats and plot are untouched


def test_missing_and_wrong_kind_of_source(tmp_path):
    with pytest.raises(SourceError, match="SOURCE not found"):
        prepare(PrepareConfig(tmp_path / "nope.scp", "scp", tmp_path / "out"))
    with pytest.raises(SourceError, match="must be a folder"):
        prepare(
            PrepareConfig(tmp_path.joinpath("f.txt"), "aihub", tmp_path / "out")
            if tmp_path.joinpath("f.txt").write_text("x")
            else None
        )


def test_stale_split_files_are_removed(messy_scp, tmp_path):
    out = tmp_path / "out"
    prepare(PrepareConfig(messy_scp, "scp", out, valid_size=0.2))
    assert (out / "valid.jsonl").exists()
    prepare(PrepareConfig(messy_scp, "scp", out))
    assert not (out / "valid.jsonl").exists()


def test_config_yaml_flags_override_and_problems_reported_together(tmp_path):
    yaml_path = tmp_path / "p.yaml"
    yaml_path.write_text("min_duration_s: 1\nmax_duration_s: 10\nsplit_by: utterance\n")
    config = build_config(
        PrepareConfig,
        yaml_path,
        source=tmp_path,
        source_format="scp",
        out_dir=tmp_path,
        max_duration_s=12.0,
        seed=None,
    )
    assert (config.min_duration_s, config.max_duration_s, config.split_by) == (
        1.0,
        12.0,
        "utterance",
    )
    yaml_path.write_text("min_duration_s: 9\nmax_duration_s: 2\nsplit_by: room\ncolour: red\n")
    with pytest.raises(ConfigError) as info:
        build_config(
            PrepareConfig, yaml_path, source=tmp_path, source_format="scp", out_dir=tmp_path
        )
    message = str(info.value)
    assert "colour" in message and "split_by" in message and "min_duration_s" in message


@pytest.mark.parametrize("rule", ["parent", "regex:/(?P<speaker>spk\\d+)/"])
def test_speakers_from_paths_keep_splits_speaker_disjoint(messy_scp, tmp_path, rule):
    result = prepare(
        PrepareConfig(
            messy_scp, "scp", tmp_path / "out", valid_size=0.2, test_size=0.2, speaker_from=rule
        )
    )
    splits = {name: read_manifest(path) for name, path in result.manifests.items()}
    speakers = {name: {u.speaker for u in utts} for name, utts in splits.items()}
    assert None not in set().union(*speakers.values())
    assert all(s.startswith("spk") for s in set().union(*speakers.values()))
    assert not speakers["train"] & speakers["test"] and not speakers["train"] & speakers["valid"]
    assert not speakers["valid"] & speakers["test"]
    assert result.stats["speakers"]["count"] == 12


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("uncle", "parent, grandparent or regex"),
        ("regex:(", "invalid regular expression"),
        ("regex:spk\\d+", "named group"),
    ],
)
def test_bad_speaker_rules_are_refused(tmp_path, rule, message):
    with pytest.raises(ConfigError, match=message):
        PrepareConfig(tmp_path, "scp", tmp_path / "o", speaker_from=rule)


# ------------------------------------------------- seams: data loss, stratified splits, emits


def _role_corpus(tmp_path, speech, roles=(("의사", 10), ("간호사", 6), ("환자", 4))):
    """A JSONL source: speakers with 2 clips each and a role field (의사 10, 간호사 6, 환자 4
    speakers)."""
    samples, rate = speech
    lines = []
    for role, speakers in roles:
        for speaker in range(speakers):
            for utt in range(2):
                path = write_wav(
                    tmp_path / "a" / f"{role}{speaker}" / f"{utt}.wav",
                    fit_duration(samples, rate, 3.2),
                    rate,
                )
                record = {"audio": str(path), "text": "열이 나요", "speaker": f"{role}{speaker}"}
                lines.append(json.dumps({**record, "role": role}, ensure_ascii=False))
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines), encoding="utf-8")
    return source


def test_stratified_split_keeps_every_role_in_every_split(tmp_path, speech):
    source = _role_corpus(tmp_path, speech)
    result = prepare(
        PrepareConfig(
            source, "jsonl", tmp_path / "out", valid_size=0.2, test_size=0.2, stratify="role"
        )
    )
    splits = {name: read_manifest(path) for name, path in result.manifests.items()}
    for name in ("valid", "test"):
        roles = Counter(u.metadata["role"] for u in splits[name])
        # 20% of each role's clips, in whole speakers of 2 clips: 의사 4, 간호사 2 or 3, 환자 2
        assert roles["의사"] == 4 and roles["환자"] == 2 and roles["간호사"] in (2, 4)
    speakers = {name: {u.speaker for u in items} for name, items in splits.items()}
    assert not speakers["train"] & (speakers["valid"] | speakers["test"])
    counts = result.stats["splits"]["test"]["by_role"]
    assert counts == dict(sorted(Counter(u.metadata["role"] for u in splits["test"]).items()))
    with pytest.raises(ConfigError, match="--stratify ward: no kept utterance has that field"):
        prepare(PrepareConfig(source, "jsonl", tmp_path / "o2", test_size=0.2, stratify="ward"))


def test_split_table_shows_the_stratified_field(tmp_path, speech):
    source = _role_corpus(tmp_path, speech)
    result = run_cli(
        "prepare", "jsonl", source, "--out", tmp_path / "out", "--test-size", "0.2",
        "--stratify", "role", "--emit", "nemo",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = result.stdout[result.stdout.index("split by role") :].splitlines()
    assert table[0].split() == ["split", "by", "role", "간호사", "의사", "환자"]
    assert table[2].split()[0] == "train" and table[3].split() == ["test", "2", "4", "2"]
    assert f"emitted:   {tmp_path / 'out' / 'train.nemo.json'}" in result.stdout


def test_emitted_files_are_in_the_result(messy_scp, tmp_path):
    result = prepare(
        PrepareConfig(messy_scp, "scp", tmp_path / "out", test_size=0.2, emit=["nemo", "lhotse"])
    )
    names = sorted(path.name for path in result.emitted)
    kinds = ("recordings", "supervisions")
    assert names == sorted(
        [f"{split}.nemo.json" for split in ("train", "test")]
        + [f"{split}.lhotse_{kind}.jsonl.gz" for split in ("train", "test") for kind in kinds]
    )
    assert all(path.is_file() for path in result.emitted)


def test_high_rejected_share_warns_and_max_rejected_fails(messy_scp, tmp_path, caplog):
    # 36 good clips of 49 items: 13 rejected (26.53%)
    with caplog.at_level("WARNING"):
        result = prepare(PrepareConfig(messy_scp, "scp", tmp_path / "out"))
    warning = next(r.getMessage() for r in caplog.records if "were rejected" in r.getMessage())
    assert "13 of 49 input items (26.53%) were rejected" in warning
    assert "--max-rejected" in warning and "3-25 s" in warning
    before = {
        p.name: p.read_bytes() for p in result.out_dir.iterdir() if p.is_file() and p.name != LEDGER
    }
    with pytest.raises(NothingKeptError, match=r"13 of 49 .*--max-rejected 0.2\)"):
        prepare(PrepareConfig(messy_scp, "scp", tmp_path / "out", max_rejected=0.2))
    after = {
        p.name: p.read_bytes() for p in result.out_dir.iterdir() if p.is_file() and p.name != LEDGER
    }
    assert after == before  # the earlier run stays; the report of this one is in failed-run/
    assert len(read_rejected(result.out_dir / "failed-run" / "rejected.jsonl")) == 13
    assert not (result.out_dir / "failed-run" / "train.jsonl").exists()
    # at or under the bound: a normal run
    prepare(PrepareConfig(messy_scp, "scp", tmp_path / "ok", max_rejected=0.3))
    result = run_cli("prepare", "scp", messy_scp, "--out", tmp_path / "c", "--max-rejected", "2")
    assert result.returncode == 1 and "--max-rejected must be a fraction in [0, 1]" in result.stderr


def test_every_utterance_its_own_speaker_warns_only_when_splitting(tmp_path, speech, caplog):
    samples, rate = speech
    lines = [
        json.dumps({"audio": str(write_wav(tmp_path / f"{i}.wav", samples, rate)), "text": "네"})
        for i in range(4)
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines), encoding="utf-8")
    config = {"min_duration_s": 0.1}
    with caplog.at_level("WARNING"):
        prepare(PrepareConfig(source, "jsonl", tmp_path / "a", **config))
    assert "its own speaker" not in caplog.text
    with caplog.at_level("WARNING"):
        prepare(PrepareConfig(source, "jsonl", tmp_path / "b", test_size=0.25, **config))
    assert "its own speaker" in caplog.text


def test_saved_config_is_enough_to_run_again(messy_scp, tmp_path):
    assert messy_scp.parent == tmp_path
    first = run_cli(
        "prepare", "scp", messy_scp.name, "--out", "a", "--test-size", "0.2", cwd=tmp_path
    )
    assert first.returncode == 0, first.stderr
    saved = tmp_path / "a" / "prepare_config.yaml"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()  # SOURCE is saved absolute: the config works from any folder
    again = run_cli("prepare", "--config", saved, "--out", tmp_path / "b", cwd=elsewhere)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "b" / "test.jsonl").read_text() == (
        tmp_path / "a" / "test.jsonl"
    ).read_text()
    missing = run_cli("prepare", "--out", tmp_path / "c")
    assert missing.returncode == 1
    assert "FORMAT is required (or `source_format:` in --config)" in missing.stderr


def test_stratified_values_too_rare_for_a_split_are_named(caplog):
    utterances = [
        Utterance(f"{role}{spk}-{i}", f"/a/{role}{spk}/{i}.wav", "t", "t", 4.0, 16000, 1,
                  speaker=f"{role}{spk}", metadata={"role": role})
        for role, speakers in (("의사", 10), ("환자", 1))
        for spk in range(speakers)
        for i in range(2)
    ]  # fmt: skip
    with caplog.at_level("WARNING"):
        splits = split_utterances(
            utterances, valid_size=None, test_size=0.2, stratify="role", seed=0
        )
    assert len(splits["test"]) == 4 and {u.metadata["role"] for u in splits["test"]} == {"의사"}
    assert "--stratify role: the test split has no 환자" in caplog.text


def files_of(folder):
    """A folder's files and their bytes, but the ledger (it records each run's report)."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != LEDGER}


# ------------------------------------------------------- what the summary says, and the sample


def test_summary_says_speakers_consistently(messy_scp, samples, tmp_path):
    from voxadapt.report import format_prepare_summary

    unlabeled = format_prepare_summary(
        prepare(PrepareConfig(samples / "train.scp", "scp", tmp_path / "none")).stats
    )
    assert "speakers: none given (every utterance is its own speaker)" in unlabeled
    assert unlabeled.splitlines()[0].split() == ["split", "utterances", "hours"]  # no zeros
    labeled = prepare(PrepareConfig(messy_scp, "scp", tmp_path / "twelve", speaker_from="parent"))
    text = format_prepare_summary(labeled.stats)
    assert text.splitlines()[0].split()[-1] == "speakers" and "speakers: 12" in text
    assert "every utterance is its own speaker" not in text
    # some utterances with a speaker, some without
    stats = {**labeled.stats, "speakers": {"count": 3, "without_speaker": 2}}
    assert "speakers: 3, and 2 utterances without one (each its own speaker)" in (
        format_prepare_summary(stats)
    )


def test_the_bundled_samples_deliberate_rejections_are_labeled(samples, tmp_path, caplog, capsys):
    from voxadapt.cli import main
    from voxadapt.samples import DELIBERATE_NOTE, TRAIN_SCP_SHA256, fingerprint

    # the marker is the sample's content: an edit of train.scp must update it (and the lines)
    assert fingerprint(samples / "train.scp") == TRAIN_SCP_SHA256
    with caplog.at_level("WARNING"):
        result = prepare(PrepareConfig(samples / "train.scp", "scp", tmp_path / "o"))
    assert not [r for r in caplog.records if "were rejected" in r.getMessage()]
    assert result.stats["deliberate_rejections"] == {
        "count": 2,
        "lines": [5, 6],
        "note": DELIBERATE_NOTE,
    }
    reasons = {r["line"]: r["reason"] for r in read_rejected(result.rejected_path)}
    assert reasons == {5: "missing_audio", 6: "duplicate"}
    assert main(["prepare", "scp", str(samples / "train.scp"), "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert f"2 rejected (deliberate: {DELIBERATE_NOTE})" in out
    assert "rejected 2 of 6 (33.33%; 2 on purpose, see above)" in out


def test_a_copy_of_the_sample_is_labeled_by_content_and_an_edited_one_is_not(
    samples, tmp_path, caplog
):
    from voxadapt.report import format_prepare_summary

    copy = tmp_path / "copy" / "train.scp"  # elsewhere, CRLF: still the sample's content
    copy.parent.mkdir()
    copy.write_bytes((samples / "train.scp").read_bytes().replace(b"\n", b"\r\n"))
    (copy.parent / "clips").symlink_to(samples / "clips")
    assert prepare(PrepareConfig(copy, "scp", tmp_path / "a")).stats["deliberate_rejections"]
    edited = tmp_path / "edited" / "train.scp"  # one line more: the user's own file now
    edited.parent.mkdir()
    edited.write_bytes((samples / "train.scp").read_bytes() + b"clips/ko_002.wav|\xeb\x84\xa4\n")
    (edited.parent / "clips").symlink_to(samples / "clips")
    with caplog.at_level("WARNING"):
        result = prepare(PrepareConfig(edited, "scp", tmp_path / "b"))
    assert result.stats["deliberate_rejections"] == {}
    assert "3 of 7 input items (42.86%) were rejected" in caplog.text
    assert "deliberate" not in format_prepare_summary(result.stats)
    # a source named like the sample but with other content gets no label either
    impostor = tmp_path / "samples" / "train.scp"
    impostor.parent.mkdir()
    impostor.write_text("a.wav|하나\nb.wav|둘\nc.wav|셋\nd.wav|넷\ne.wav|다섯\na.wav|하나\n")
    with pytest.raises(NothingKeptError):
        prepare(PrepareConfig(impostor, "scp", tmp_path / "c"))
    stats = json.loads((tmp_path / "c" / "failed-run" / "stats.json").read_text("utf-8"))
    assert stats["deliberate_rejections"] == {}
