import json
import shutil
from pathlib import Path

import pytest

from voxadapt.errors import SourceError
from voxadapt.sources import SourceItem, SourceRejection
from voxadapt.sources.aihub import read_aihub
from voxadapt.sources.jsonl import read_jsonl
from voxadapt.sources.kaldi import read_kaldi
from voxadapt.sources.scp import read_scp


def split(records):
    items = [r for r in records if isinstance(r, SourceItem)]
    rejected = [r for r in records if isinstance(r, SourceRejection)]
    return items, rejected


def test_scp_relative_paths_and_bad_lines(tmp_path):
    scp = tmp_path / "sub" / "train.scp"
    scp.parent.mkdir()
    scp.write_bytes(
        "a.wav|첫 번째 문장\n".encode()
        + b"\n"  # blank lines are not items
        + "/abs/b.wav|두 번째|파이프 포함\n".encode()
        + "줄에 구분자가 없음\n".encode()
        + "|경로 없음\n".encode()
        + "c.wav|복통이 있어요\r\n".encode("cp949")
        + b"d.wav|\xff\xfe\xff\n"
        + b"e.wav|\n"
    )
    items, rejected = split(list(read_scp(scp)))
    assert [i.audio for i in items] == [
        scp.parent / "a.wav",
        Path("/abs/b.wav"),
        scp.parent / "c.wav",
        scp.parent / "e.wav",
    ]
    assert items[1].raw_text == "두 번째|파이프 포함"
    assert items[2].raw_text == "복통이 있어요"
    assert items[3].raw_text == ""  # empty transcripts are rejected later, as empty_text
    assert [(r.reason, r.origin.line) for r in rejected] == [
        ("malformed_line", 4),
        ("malformed_line", 5),
        ("undecodable_line", 7),
    ]


def test_aihub_tree(assets):
    items, rejected = split(list(read_aihub(assets / "aihub")))
    by_id = {i.id: i for i in items}
    assert set(by_id) == {"D0001_0001", "P0007_0003", "N0003_0012"}
    doctor = by_id["D0001_0001"]
    assert doctor.speaker == "D0001"
    assert doctor.metadata == {"role": "의사", "gender": "남", "age": "40대", "region": "서울/경기"}
    assert doctor.label_duration == pytest.approx(3.93)  # string in the label
    assert by_id["P0007_0003"].label_duration == pytest.approx(3.31)  # number in the label (BOM)
    assert by_id["P0007_0003"].metadata["role"] == "환자"
    assert by_id["N0003_0012"].metadata["role"] == "간호사"
    assert [(r.reason, r.id) for r in rejected] == [("missing_audio", "P0007_0004")]


def test_aihub_parallel_label_and_source_trees(assets, tmp_path):
    root = tmp_path / "208"
    for json_path in (assets / "aihub").rglob("*.json"):
        rel = json_path.relative_to(assets / "aihub")
        role = rel.parts[0]
        label = root / "Training" / "02.라벨링데이터" / f"TL_{role}" / Path(*rel.parts[1:])
        label.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(json_path, label)
        wav = json_path.with_suffix(".wav")
        if wav.exists():
            target = (
                root
                / "Training"
                / "01.원천데이터"
                / f"TS_{role}"
                / label.relative_to(label.parents[1]).with_suffix(".wav")
            )
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(wav, target)
    (root / "Training" / "01.원천데이터" / "TS_환자" / "P0007" / "orphan.wav").write_bytes(b"")
    items, rejected = split(list(read_aihub(root)))
    by_id = {i.id: i for i in items}
    assert set(by_id) == {"D0001_0001", "P0007_0003", "N0003_0012"}
    assert "01.원천데이터" in str(by_id["D0001_0001"].audio)
    assert by_id["D0001_0001"].metadata["role"] == "의사"
    assert by_id["D0001_0001"].speaker == "D0001"
    assert sorted((r.reason, r.id) for r in rejected) == [
        ("missing_audio", "P0007_0004"),
        ("missing_label", "orphan"),
    ]


def test_aihub_bad_labels(tmp_path):
    folder = tmp_path / "의사" / "D1"
    folder.mkdir(parents=True)
    (folder / "a.json").write_text("{not json", encoding="utf-8")
    (folder / "b.json").write_text(json.dumps({"파일정보": {}}), encoding="utf-8")
    (folder / "c.json").write_bytes(b"\xff\xfe\xff")
    items, rejected = split(list(read_aihub(tmp_path)))
    assert not items
    assert [r.reason for r in rejected] == [
        "malformed_label",
        "malformed_label",
        "undecodable_label",
    ]


def test_kaldi_dir(tmp_path):
    (tmp_path / "wav.scp").write_text(
        "u1 a.wav\nu2 /data/b.wav\nu3 sox x.wav -t wav - |\nu4 d.wav\nu1 again.wav\n",
        encoding="utf-8",
    )
    (tmp_path / "text").write_text(
        "u1 가슴이 아파요\nu2 숨이 차요\nu5 대응 오디오 없음\n", encoding="utf-8"
    )
    (tmp_path / "utt2spk").write_text("u1 spkA\nu2 spkB\n", encoding="utf-8")
    items, rejected = split(list(read_kaldi(tmp_path)))
    assert [(i.id, i.speaker, i.raw_text) for i in items] == [
        ("u1", "spkA", "가슴이 아파요"),
        ("u2", "spkB", "숨이 차요"),
    ]
    assert items[0].audio == tmp_path.absolute() / "a.wav"
    assert sorted((r.reason, r.id) for r in rejected) == [
        ("duplicate", "u1"),
        ("missing_audio", "u5"),
        ("missing_transcript", "u4"),
        ("unsupported_audio_command", "u3"),
    ]


def test_kaldi_requires_files_and_refuses_segments(tmp_path):
    with pytest.raises(SourceError, match=r"wav\.scp"):
        list(read_kaldi(tmp_path))
    (tmp_path / "wav.scp").write_text("", encoding="utf-8")
    (tmp_path / "text").write_text("", encoding="utf-8")
    (tmp_path / "segments").write_text("", encoding="utf-8")
    with pytest.raises(SourceError, match="segments"):
        list(read_kaldi(tmp_path))


def test_jsonl_field_names(tmp_path):
    lines = [
        {"audio": "a.wav", "text": "하나", "speaker": "s1", "role": "의사"},
        {"audio_filepath": "/x/b.wav", "transcript": "둘", "duration": 4.5, "lang": "en"},
        {"audio_path": "c.wav", "sentence": "셋", "speaker_id": 7, "id": "utt-c"},
        {"audio": {"path": "d.wav"}, "text": "넷"},
        {"text": "오디오 없음"},
        [1, 2],
    ]
    path = tmp_path / "m.jsonl"
    path.write_text(
        "\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n{broken\n",
        encoding="utf-8",
    )
    items, rejected = split(list(read_jsonl(path)))
    assert [i.raw_text for i in items] == ["하나", "둘", "셋", "넷"]
    assert items[0].metadata == {"role": "의사"} and items[0].speaker == "s1"
    assert items[1].label_duration == 4.5 and items[1].language == "en"
    assert items[2].id == "utt-c" and items[2].speaker == "7"
    assert items[3].audio == tmp_path / "d.wav"
    assert [(r.reason, r.origin.line) for r in rejected] == [
        ("malformed_line", 5),
        ("malformed_line", 6),
        ("malformed_line", 7),
    ]
