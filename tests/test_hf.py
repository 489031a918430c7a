"""sources.hf: Hugging Face datasets on disk, built with datasets/pyarrow from the bundled clips."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voxadapt.errors import SourceError
from voxadapt.manifest import read_manifest
from voxadapt.sources.base import SourceItem, SourceRejection
from voxadapt.sources.hf import read_hf

from conftest import CLIPS, write_wav

datasets = pytest.importorskip("datasets")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

CORRUPT = b"RIFF\x00\x00\x00\x00WAVEnot really audio"


def clip_bytes(index: int) -> bytes:
    return CLIPS[index].read_bytes()


def audio_files(audio_dir: Path) -> dict[Path, int]:
    """Every file under `audio_dir` (temp files included) with its modification time."""
    if not audio_dir.exists():
        return {}
    return {path: path.stat().st_mtime_ns for path in audio_dir.rglob("*") if path.is_file()}


def embedded_dataset() -> datasets.Dataset:
    """Six rows as the hub stores them: audio bytes inside the table, a ClassLabel speaker."""
    rows = [
        # (bytes, original name, text, speaker, age)
        (clip_bytes(0), "ko_001.wav", "안녕하세요", 0, 34),
        (CORRUPT, "broken.wav", "깨진 파일", 1, 40),
        (clip_bytes(1), "ko_002.wav", None, 0, 41),
        (clip_bytes(2), "ko_003.wav", "같은 소리", 1, float("nan")),
        (clip_bytes(2), "ko_003_copy.wav", "같은 소리 다시", 1, 29),
        (clip_bytes(3), "ko_004.wav", "넷", 0, 50),
    ]
    dataset = datasets.Dataset.from_dict(
        {
            "audio": [{"bytes": data, "path": name} for data, name, *_ in rows],
            "sentence": [text for _, _, text, *_ in rows],
            "speaker_id": [speaker for *_, speaker, _ in rows],
            "age": [age for *_, age in rows],
            "tags": [["read", "clean"]] * len(rows),
        }
    )
    dataset = dataset.cast_column("audio", datasets.Audio())
    return dataset.cast_column("speaker_id", datasets.ClassLabel(names=["f01", "m02"]))


def test_parquet_with_embedded_audio(tmp_path):
    source = tmp_path / "train.parquet"
    embedded_dataset().to_parquet(str(source))
    audio_dir = tmp_path / "out" / "audio"

    records = list(read_hf(source, audio_dir=audio_dir))

    assert len(records) == 6  # one record per row
    kinds = [r.reason if isinstance(r, SourceRejection) else "item" for r in records]
    assert kinds == ["item", "unreadable_audio", "missing_transcript", "item", "item", "item"]
    first = records[0]
    assert isinstance(first, SourceItem)
    assert first.raw_text == "안녕하세요"
    assert first.id == "ko_001"  # the original file name, not the content hash
    assert first.speaker == "f01"  # ClassLabel integer shown as its name
    assert first.metadata == {"age": 34}  # lists are not metadata
    assert (first.origin.file, first.origin.line) == (str(source), 1)
    assert first.audio.parent.parent == audio_dir.absolute()
    assert first.audio.name.endswith(".flac") and first.audio.parent.name == first.audio.name[:2]
    assert records[3].metadata == {}  # NaN is not a value
    # Identical bytes share one FLAC file; the corrupt and untranscribed rows write none.
    assert records[3].audio == records[4].audio
    assert set(audio_files(audio_dir)) == {records[i].audio for i in (0, 3, 5)}
    assert records[1].origin.line == 2 and "cannot be read" in records[1].detail


def test_non_string_transcript_is_malformed(tmp_path):
    source = tmp_path / "numbers.parquet"
    table = pa.table({"audio": [clip_bytes(0)], "text": [12345]})
    pq.write_table(table, source)
    (record,) = read_hf(source, audio_dir=tmp_path / "audio")
    assert isinstance(record, SourceRejection)
    assert record.reason == "malformed_line"
    assert not (tmp_path / "audio").exists()  # a rejected row writes no audio


@pytest.mark.parametrize(("subtype", "channels"), [("PCM_16", 1), ("PCM_24", 2), ("FLAC", 1)])
def test_written_flac_is_sample_identical(tmp_path, speech, subtype, channels):
    samples, rate = speech
    if subtype == "FLAC":
        wav = tmp_path / "clip.flac"
        sf.write(wav, samples, rate, format="FLAC", subtype="PCM_16")
    else:
        wav = write_wav(tmp_path / "clip.wav", samples, rate, channels=channels, subtype=subtype)
    source = tmp_path / "clip.parquet"
    pq.write_table(pa.table({"audio": [wav.read_bytes()], "text": ["소리"]}), source)

    (item,) = read_hf(source, audio_dir=tmp_path / "audio")

    assert isinstance(item, SourceItem)
    original, original_rate = sf.read(wav, dtype="int32", always_2d=True)
    written, written_rate = sf.read(item.audio, dtype="int32", always_2d=True)
    assert sf.info(item.audio).format == "FLAC"
    assert written_rate == original_rate
    np.testing.assert_array_equal(written, original)


@pytest.mark.parametrize("subtype", ["FLOAT", "DOUBLE", "PCM_32"])
def test_audio_flac_cannot_hold_is_kept_exactly(tmp_path, speech, subtype):
    """Float samples beyond full scale and 32-bit integers are stored as they came, never
    clipped or requantized to FLAC's 24 bits."""
    samples, rate = speech
    loud = samples.astype(np.float64) * 3.0 + 1e-9  # peaks above 1.0, bits below 24-bit steps
    if subtype == "PCM_32":
        loud = np.clip(loud, -1.0, 1.0)
    wav = tmp_path / "clip.wav"
    sf.write(wav, loud, rate, subtype=subtype)
    source = tmp_path / "clip.parquet"
    pq.write_table(pa.table({"audio": [wav.read_bytes()], "text": ["소리"]}), source)

    (item,) = read_hf(source, audio_dir=tmp_path / "audio")

    assert isinstance(item, SourceItem)
    assert item.audio.read_bytes() == wav.read_bytes()
    dtype = "int32" if subtype == "PCM_32" else "float64"
    np.testing.assert_array_equal(sf.read(item.audio, dtype=dtype)[0], sf.read(wav, dtype=dtype)[0])
    if subtype != "PCM_32":
        assert np.abs(sf.read(item.audio)[0]).max() > 1.0


def test_rerun_writes_nothing_new(tmp_path):
    source = tmp_path / "train.parquet"
    embedded_dataset().to_parquet(str(source))
    audio_dir = tmp_path / "audio"
    first = list(read_hf(source, audio_dir=audio_dir))
    files = audio_files(audio_dir)

    second = list(read_hf(source, audio_dir=audio_dir))

    assert audio_files(audio_dir) == files  # same files, none rewritten, no temp leftovers
    assert [r.audio for r in second] == [r.audio for r in first]


@pytest.mark.parametrize("as_dict", [False, True], ids=["Dataset", "DatasetDict"])
def test_save_to_disk(tmp_path, as_dict):
    dataset = embedded_dataset()
    source = tmp_path / "saved"
    if as_dict:
        datasets.DatasetDict({"train": dataset, "test": dataset.select([0])}).save_to_disk(source)
    else:
        dataset.save_to_disk(source)

    records = list(read_hf(source, audio_dir=tmp_path / "audio"))

    assert len(records) == 7 if as_dict else 6
    items = [r for r in records if isinstance(r, SourceItem)]
    assert items[0].speaker == "f01" and items[0].raw_text == "안녕하세요"
    if as_dict:
        assert items[0].metadata["split"] == "train"
        assert items[-1].metadata["split"] == "test"
        assert (items[-1].origin.file, items[-1].origin.line) == (str(source / "test"), 1)
        assert items[-1].audio == items[0].audio  # the test split repeats the first clip
    else:
        assert "split" not in items[0].metadata
        assert items[0].origin.file == str(source)


def test_parquet_folder_with_audio_paths(tmp_path):
    """Paths are referenced, not copied; relative ones start at the parquet file's folder."""
    source = tmp_path / "hub"
    shard = source / "data" / "train-00000-of-00001.parquet"
    shard.parent.mkdir(parents=True)
    (source / "data" / "clips").mkdir()
    relative = source / "data" / "clips" / "a.wav"
    relative.write_bytes(clip_bytes(0))
    table = pa.table(
        {
            "audio": [
                {"bytes": None, "path": "clips/a.wav"},
                {"bytes": None, "path": str(CLIPS[1])},
                {"bytes": None, "path": None},
            ],
            "transcription": ["하나", "둘", "셋"],
            "utt_id": ["u1", "u2", "u3"],
        }
    )
    pq.write_table(table, shard)
    audio_dir = tmp_path / "audio"

    records = list(read_hf(source, audio_dir=audio_dir))

    assert [r.audio for r in records[:2]] == [relative, CLIPS[1].absolute()]
    assert [r.id for r in records] == ["u1", "u2", "u3"]
    assert records[0].metadata == {"split": "train"}  # from the hub's shard name
    assert isinstance(records[2], SourceRejection) and records[2].reason == "missing_audio"
    assert records[2].origin.file == str(shard)
    assert not audio_dir.exists()


@pytest.mark.parametrize("metadata_format", ["csv", "jsonl"])
def test_audiofolder(tmp_path, metadata_format):
    source = tmp_path / "audiofolder"
    (source / "spk1").mkdir(parents=True)
    for index, name in enumerate(["spk1/a.wav", "b.wav"]):
        (source / name).write_bytes(clip_bytes(index))
    rows = [
        {"file_name": "spk1/a.wav", "transcription": "가나다", "speaker_id": "7", "age": "30"},
        {"file_name": "b.wav", "transcription": "라마바", "speaker_id": "8", "age": "41"},
    ]
    if metadata_format == "csv":
        with (source / "metadata.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        lines = [json.dumps(row, ensure_ascii=False) for row in rows] + ["{not json"]
        (source / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")

    records = list(read_hf(source, audio_dir=tmp_path / "audio"))

    assert [r.audio for r in records[:2]] == [source / "spk1/a.wav", source / "b.wav"]
    assert [(r.raw_text, r.speaker) for r in records[:2]] == [("가나다", "7"), ("라마바", "8")]
    assert records[0].metadata == {"age": "30"}
    # The file's line number: CSV data starts after the header.
    assert records[1].origin.line == (3 if metadata_format == "csv" else 2)
    if metadata_format == "jsonl":
        assert len(records) == 3 and records[2].reason == "malformed_line"
    assert not (tmp_path / "audio").exists()


def test_explicit_columns(tmp_path):
    source = tmp_path / "custom.parquet"
    table = pa.table(
        {"clip": [clip_bytes(0)], "script": ["직접 지정"], "who": [3], "text": ["아님"]}
    )
    pq.write_table(table, source)

    (item,) = read_hf(
        source,
        audio_dir=tmp_path / "audio",
        audio_column="clip",
        text_column="script",
        speaker_column="who",
    )

    assert (item.raw_text, item.speaker, item.metadata) == ("직접 지정", "3", {"text": "아님"})
    with pytest.raises(SourceError, match=r"no text column 'transcript'.*clip, script, who, text"):
        list(read_hf(source, audio_dir=tmp_path / "audio", text_column="transcript"))
    with pytest.raises(SourceError, match=r"no audio column .*available columns: clip"):
        list(read_hf(source, audio_dir=tmp_path / "audio"))


def test_unreadable_sources(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        list(read_hf(tmp_path / "absent", audio_dir=tmp_path / "audio"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no parquet files"):
        list(read_hf(tmp_path / "empty", audio_dir=tmp_path / "audio"))
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(SourceError, match="cannot read parquet file"):
        list(read_hf(tmp_path / "bad.parquet", audio_dir=tmp_path / "audio"))


def test_missing_extra_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    with pytest.raises(SourceError, match=r'pip install "voxadapt\[hf\]"'):
        list(read_hf(tmp_path, audio_dir=tmp_path / "audio"))


def test_prepare_hf_end_to_end_then_cache(tmp_path, tiny_model):
    """`voxadapt prepare hf` on a parquet with embedded audio: FLACs under --out/audio, a
    manifest every later stage can read, conservation, a cache built from it."""
    from voxadapt.cli import main
    from voxadapt.stages.cache import CacheConfig, build_cache

    embedded_dataset().to_parquet(str(tmp_path / "train.parquet"))
    out = tmp_path / "out"
    assert (
        main(
            [
                "prepare",
                "hf",
                str(tmp_path / "train.parquet"),
                "--out",
                str(out),
                "--min-duration",
                "0.5",
            ]
        )
        == 0
    )
    utterances = read_manifest(out / "train.jsonl")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["kept"] + stats["rejected"] == stats["input_items"] == 6
    assert utterances and all(Path(u.audio).parent.parent == out / "audio" for u in utterances)
    assert all(u.audio.endswith(".flac") for u in utterances)
    result = build_cache(
        CacheConfig([out / "train.jsonl"], str(tiny_model), tmp_path / "c", jobs=1)
    )
    assert result.computed == len(utterances) and result.failed == 0


def test_a_datasets_own_splits_become_ours(tmp_path):
    """Its test rows never land in train.jsonl; re-splitting is asked for, never implied."""
    from voxadapt.errors import ConfigError
    from voxadapt.stages.prepare import PrepareConfig, prepare

    dataset = embedded_dataset()
    source = tmp_path / "saved"
    splits = {"train": dataset.select([0, 3, 4]), "test": dataset.select([5])}
    datasets.DatasetDict(splits).save_to_disk(source)

    result = prepare(PrepareConfig(source, "hf", tmp_path / "out", jobs=1, min_duration_s=0.5))
    train = read_manifest(result.manifests["train"])
    test = read_manifest(result.manifests["test"])
    assert len(test) == 1 and test[0].metadata["split"] == "test"
    assert all(u.metadata["split"] == "train" for u in train)
    with pytest.raises(ConfigError, match=r"brings its own splits.*--resplit"):
        prepare(PrepareConfig(source, "hf", tmp_path / "o2", jobs=1, valid_size=1))
    resplit = prepare(
        PrepareConfig(source, "hf", tmp_path / "o3", jobs=1, min_duration_s=0.5, resplit=True)
    )
    assert set(resplit.manifests) == {"train"}  # no sizes asked: everything trains
