import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from voxadapt.errors import SourceError
from voxadapt.sources import Origin, SourceItem, SourceRejection
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


def test_kaldi_requires_files(tmp_path):
    with pytest.raises(SourceError, match=r"wav\.scp"):
        list(read_kaldi(tmp_path))
    (tmp_path / "wav.scp").write_text("", encoding="utf-8")
    (tmp_path / "text").write_text("", encoding="utf-8")
    (tmp_path / "segments").mkdir()
    with pytest.raises(SourceError, match="segments"):
        list(read_kaldi(tmp_path))


def test_kaldi_segments_are_spans_of_recordings(tmp_path):
    (tmp_path / "wav.scp").write_text("rec1 long.wav\nrec2 other.wav\n", encoding="utf-8")
    (tmp_path / "segments").write_text(
        "s1 rec1 0.5 3.0\ns2 rec1 4.0 7.25\ns3 nope 0 1\ns4 rec1 5 2\ns5 rec2 x y\n",
        encoding="utf-8",
    )
    (tmp_path / "text").write_text(
        "s1 첫 번째\ns2 두 번째\ns3 세 번째\ns4 네 번째\ns6 여섯 번째\n", encoding="utf-8"
    )
    (tmp_path / "utt2spk").write_text("s1 spkA\ns2 spkB\n", encoding="utf-8")
    items, rejected = split(list(read_kaldi(tmp_path)))
    assert [(i.id, i.offset, i.segment_duration, i.speaker) for i in items] == [
        ("s1", 0.5, 2.5, "spkA"),
        ("s2", 4.0, 3.25, "spkB"),
    ]
    assert all(i.audio == tmp_path.absolute() / "long.wav" for i in items)
    assert sorted((r.reason, r.id) for r in rejected) == [
        ("malformed_line", "s4"),
        ("malformed_line", "s5"),
        ("missing_audio", "s3"),
        ("missing_audio", "s6"),
    ]


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


# --- hostile input: one bad item is one rejection, never an exception ---------------------


def records_within(parser, source: Path, seconds: float = 10.0) -> list:
    """All records of `parser(source)`, failing (not hanging) if it blocks, e.g. on a FIFO."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["records"] = list(parser(source))
        except Exception as exc:  # re-raised below, in the test's thread
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"{parser.__name__} blocked on {source}"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["records"]


def aihub_pair(root: Path, label_text: str, stem: str = "D1_0001") -> Path:
    """A doctor's label with the given content, and its (empty) audio file beside it."""
    folder = root / "의사" / "D1"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(label_text, encoding="utf-8")
    (folder / f"{stem}.wav").write_bytes(b"")
    return folder


def label(**fields) -> str:
    return json.dumps({"전사정보": {"LabelText": "배가 아파요"}, **fields}, ensure_ascii=False)


@pytest.mark.parametrize(
    ("label_text", "detail"),
    [
        (label(화자정보=[{"Gender": "남"}]), "화자정보 is a list"),
        (label(파일정보="3.2초"), "파일정보 is a string"),
        (json.dumps({"전사정보": "배가 아파요"}, ensure_ascii=False), "no 전사정보.LabelText"),
        (json.dumps({"전사정보": {"LabelText": ["배가"]}}), "LabelText is a list"),
        (json.dumps({"전사정보": {"LabelText": {"a": 1}}}), "LabelText is an object"),
        (json.dumps({"전사정보": {"LabelText": True}}), "LabelText is a boolean"),
        (json.dumps({"전사정보": {"LabelText": 3.5}}), "LabelText is a number"),
        (json.dumps({"전사정보": {"LabelText": "\ud800"}}), "lone surrogate"),
        (label(화자정보={"Age": "1e999"}), "non-finite"),
        (label(화자정보={"Gender": ["남"]}), "Gender is a list"),
        (label(화자정보={"Age": 10**400}), "non-finite"),
        (label(파일정보={"FileLength": "inf"}), "FileLength is not a finite number"),
        (label()[:-1] + ', "x": 1e999}', "non-finite"),
        (label()[:-1] + ', "x": NaN}', "non-finite"),
        ("[" * 100_000, "nested deeper"),
        ("1" * 5000, "invalid JSON"),
        ("[]", "label is a list"),
        ("null", "label is null"),
    ],
)
def test_aihub_malformed_label_is_one_rejection(tmp_path, label_text, detail):
    aihub_pair(tmp_path, label_text)
    records = list(read_aihub(tmp_path))
    # One record for the label and its audio together: no extra missing_label.
    assert [(r.reason, r.id) for r in records] == [("malformed_label", "D1_0001")]
    assert detail in records[0].detail
    assert records[0].audio == tmp_path.absolute() / "의사" / "D1" / "D1_0001.wav"


@pytest.mark.parametrize(
    ("label_text", "raw_text", "duration", "metadata"),
    [
        (json.dumps({"전사정보": {"LabelText": None}}), "", None, {"role": "의사"}),
        (label(파일정보=None, 화자정보=None), "배가 아파요", None, {"role": "의사"}),
        (label(파일정보={"FileLength": "abc"}), "배가 아파요", None, {"role": "의사"}),
        (label(파일정보={"FileLength": True}), "배가 아파요", None, {"role": "의사"}),
        (label(화자정보={"Age": 40}), "배가 아파요", None, {"role": "의사", "age": "40"}),
    ],
)
def test_aihub_lenient_fields(tmp_path, label_text, raw_text, duration, metadata):
    aihub_pair(tmp_path, label_text)
    (item,) = read_aihub(tmp_path)
    assert isinstance(item, SourceItem)
    assert (item.raw_text, item.label_duration, item.metadata) == (raw_text, duration, metadata)


def test_aihub_labels_that_are_not_files(tmp_path):
    folder = aihub_pair(tmp_path, label(), stem="ok")
    (folder / "dangling.json").symlink_to(folder / "nowhere.json")
    (folder / "dangling.wav").write_bytes(b"")
    os.mkfifo(folder / "fifo.json")  # opening it would block until a writer appears
    (folder / "folder.json").mkdir()  # a folder is not an input item at all
    records = records_within(read_aihub, tmp_path)
    assert sorted((type(r).__name__, getattr(r, "reason", None), r.id) for r in records) == [
        ("SourceItem", None, "ok"),
        ("SourceRejection", "not_a_file", "dangling"),
        ("SourceRejection", "not_a_file", "fifo"),
    ]
    dangling = next(r for r in records if r.id == "dangling")
    assert dangling.detail == "broken symbolic link"
    assert dangling.audio == folder.absolute() / "dangling.wav"


def test_aihub_unreadable_label(tmp_path, monkeypatch):
    aihub_pair(tmp_path, label())

    def refuse(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", refuse)
    (rejection,) = read_aihub(tmp_path)
    assert (rejection.reason, rejection.detail) == (
        "unreadable_label",
        "cannot read label: Permission denied",
    )


def test_aihub_undecodable_file_name(tmp_path):
    # A CP949 name unpacked on Linux: the path cannot be written to a UTF-8 manifest.
    folder = aihub_pair(tmp_path, label())
    name = os.fsdecode("환자".encode("cp949"))
    (folder / f"{name}.json").write_text(label(), encoding="utf-8")
    (folder / f"{name}.wav").write_bytes(b"")
    records = list(read_aihub(tmp_path))
    assert sorted(getattr(r, "reason", "item") for r in records) == ["item", "undecodable_path"]
    rejection = next(r for r in records if isinstance(r, SourceRejection))
    json.dumps(rejection.origin.file + rejection.id + str(rejection.audio)).encode()


def test_aihub_unreadable_root_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="cannot read SOURCE"):
        list(read_aihub(tmp_path / "missing"))


@pytest.mark.parametrize(
    ("wav_scp", "text", "expected"),
    [
        # Each utterance id is one record, however many of its lines are wrong.
        (b"u1\n", "u1 배가 아파요\n".encode(), [("malformed_line", "u1")]),
        (b"u1 sox a.wav -t wav - |\n", "u1 배가\n".encode(), [("unsupported_audio_command", "u1")]),
        (b"u1 \xff\xfe.wav\n", "u1 배가\n".encode(), [("undecodable_line", "u1")]),
        (b"u1 a.wav\n", b"u1 \xff\xfe\xff\n", [("undecodable_line", "u1")]),
        (
            b"u1 a.wav\n",
            b"\xff\xfe\xff \xff\n",
            [("missing_transcript", "u1"), ("undecodable_line", None)],
        ),
        (
            b"u1 a.wav\n",
            b"\xef\xbb\xbf \xea\xb0\x80\n",  # a BOM starting a line is removed: id 가
            [("missing_audio", "가"), ("missing_transcript", "u1")],
        ),
        (b"u1 a.wav\nu1 b.wav\n", b"u1 \xff\n", [("duplicate", "u1"), ("undecodable_line", "u1")]),
        (b"u1\ta.wav\n", "u1\t배가 아파요\n".encode(), [("item", "u1")]),
        (b"u1 ~nosuchuser/a.wav\n", "u1 배가\n".encode(), [("item", "u1")]),
    ],
)
def test_kaldi_counts_each_utterance_once(tmp_path, wav_scp, text, expected):
    (tmp_path / "wav.scp").write_bytes(wav_scp)
    (tmp_path / "text").write_bytes(text)
    records = list(read_kaldi(tmp_path))
    assert sorted((getattr(r, "reason", "item"), r.id) for r in records) == sorted(
        expected, key=lambda x: (x[0], x[1] or "")
    )


def test_kaldi_undecodable_transcript_keeps_its_audio(tmp_path):
    (tmp_path / "wav.scp").write_bytes(b"u1 a.wav\n")
    (tmp_path / "text").write_bytes(b"u1 \xff\xfe\xff\n")
    (rejection,) = read_kaldi(tmp_path)
    assert rejection.audio == tmp_path.absolute() / "a.wav"
    assert rejection.origin == Origin(str(tmp_path / "text"), 1)


def test_kaldi_tables_that_are_not_files(tmp_path):
    (tmp_path / "text").write_text("u1 배가\n", encoding="utf-8")
    os.mkfifo(tmp_path / "wav.scp")
    with pytest.raises(SourceError, match=r"wav\.scp"):
        records_within(read_kaldi, tmp_path)
    (tmp_path / "wav.scp").unlink()
    (tmp_path / "wav.scp").write_text("u1 a.wav\n", encoding="utf-8")
    os.mkfifo(tmp_path / "utt2spk")  # optional: skipped, not opened
    (item,) = records_within(read_kaldi, tmp_path)
    assert item.speaker is None


@pytest.mark.parametrize(
    ("line", "detail"),
    [
        ('{"audio": "a.wav", "text": ["배가"]}', "text is a list"),
        ('{"audio": "a.wav", "text": 5}', "text is a number"),
        ('{"audio": "a.wav", "text": true}', "text is a boolean"),
        ('{"audio": "a.wav", "transcript": {"a": 1}}', "transcript is an object"),
        ('{"audio": "a.wav", "text": "x", "metadata": "oops"}', "metadata is a string"),
        ('{"audio": "a.wav", "text": "x", "duration": 1e999}', "non-finite"),
        ('{"audio": "a.wav", "text": "x", "duration": NaN}', "non-finite"),
        ('{"audio": "a.wav", "text": "x", "duration": -Infinity}', "non-finite"),
        ('{"audio": "a.wav", "text": "x", "duration": "inf"}', "duration is not a finite"),
        ('{"audio": "a.wav", "text": "x", "snr": [1, NaN]}', "non-finite"),
        ('{"audio": "a.wav", "text": "x", "metadata": {"snr": Infinity}}', "non-finite"),
        ('{"audio": "a.wav", "text": "x", "age": "1e999"}', "age reads as a non-finite"),
        ('{"audio": "a.wav", "text": "x", "age": 1' + "0" * 400 + "}", "age reads as a non-finite"),
        ('{"audio": "a.wav", "text": "x", "duration": 1' + "0" * 400 + "}", "not a finite"),
        ('{"audio": "a.wav", "text": "x", "metadata": {"age": "NaN"}}', "age reads as a non"),
        ('{"audio": "a.wav", "text": "x", "id": [1]}', "id is a list"),
        ('{"audio": "a.wav", "text": "x", "speaker": {"a": 1}}', "speaker is an object"),
        ('{"audio": "a.wav", "text": "x", "lang": false}', "lang is a boolean"),
        ('{"audio": "a.wav", "text": "\\ud800"}', "lone surrogate"),
        ('{"audio": "a.wav", "text": "x", "n": ' + "1" * 5000 + "}", "invalid JSON"),
        ("[" * 100_000, "nested deeper"),
        ('{"audio": "a.wav", "x": ' + "[" * 40 + "]" * 40 + "}", "nested deeper"),
        ('{"audio": ["a.wav"], "text": "x"}', "no audio path"),
        ('"a.wav"', "expected a JSON object"),
    ],
)
def test_jsonl_malformed_line_is_one_rejection(tmp_path, line, detail):
    path = tmp_path / "m.jsonl"
    path.write_text(line + "\n", encoding="utf-8", errors="surrogatepass")
    (rejection,) = read_jsonl(path)
    assert (rejection.reason, rejection.origin.line) == ("malformed_line", 1)
    assert detail in rejection.detail


def test_jsonl_metadata_object_and_strict_fields(tmp_path):
    lines = [
        {"audio": "a.wav", "text": "하나", "metadata": {"role": "의사", "sample_rate": 8000}},
        {"audio": "b.wav", "text": "둘", "duration": "4.5", "age": "40"},
        {"audio": "~nosuchuser/d.wav", "text": ""},
        # a duration that is not a number is not dropped silently, nor a missing transcript
        {"audio": "c.wav", "text": "셋", "duration": "약 4초", "metadata": None},
        {"audio": "e.wav"},
    ]
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines), encoding="utf-8")
    records = list(read_jsonl(path))
    items = [r for r in records if isinstance(r, SourceItem)]
    assert [i.metadata for i in items] == [{"role": "의사"}, {"age": "40"}, {}]
    assert [i.label_duration for i in items] == [None, 4.5, None]
    assert items[2].audio == tmp_path / "~nosuchuser" / "d.wav"
    assert items[2].raw_text == ""
    rejected = [(r.reason, r.origin.line) for r in records if isinstance(r, SourceRejection)]
    assert rejected == [("malformed_line", 4), ("missing_transcript", 5)]


@pytest.mark.parametrize("parser", [read_scp, read_jsonl])
def test_line_sources_that_are_not_files(tmp_path, parser):
    os.mkfifo(tmp_path / "source")
    with pytest.raises(SourceError, match="not a regular file"):
        records_within(parser, tmp_path / "source")
    with pytest.raises(SourceError, match="file not found"):
        list(parser(tmp_path / "missing"))


def test_scp_odd_bytes(tmp_path):
    scp = tmp_path / "train.scp"
    scp.write_bytes(b"a\x00.wav|\x00\x07\n~nosuchuser/b.wav|x\n\xef\xbb\xbf\n\x0b\x0c\n|\n")
    records = list(read_scp(scp))
    assert (
        [getattr(r, "reason", "item") for r in records]
        == [
            "item",
            "item",
            "malformed_line",  # the BOM-only line is blank: one line holds \x0b\x0c only
            "malformed_line",
        ][: len(records)]
    )
    assert len(records) == 4 - 1  # a line holding only a BOM is blank
    assert records[1].audio == tmp_path / "~nosuchuser" / "b.wav"
