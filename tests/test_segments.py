"""Segments of long recordings (Kaldi `segments`, NeMo offsets) through every stage, and the
NeMo manifest round trip."""

import json

import numpy as np
import pytest
import soundfile as sf

from voxadapt.decoding import DecodeOptions
from voxadapt.features import FeatureStore, features_for_file, utterance_key
from voxadapt.manifest import read_manifest
from voxadapt.stages.cache import CacheConfig, build_cache
from voxadapt.stages.evaluate import EvaluateConfig, evaluate
from voxadapt.stages.prepare import PrepareConfig, prepare

from conftest import CLIPS

TEXTS = [
    "환자분 오늘 아침에 혈압약은 드셨어요",
    "가슴 통증이 언제부터 시작되었나요",
    "체온이 올라서 해열제를 투여했습니다",
    "내일 오전에 복부 초음파 검사가 있습니다",
]


@pytest.fixture(scope="module")
def kaldi_dir(tmp_path_factory):
    """One long 48 kHz recording: the four sample clips with 1.5 s of silence between them,
    and a Kaldi dir whose segments point at each clip."""
    import soxr

    root = tmp_path_factory.mktemp("kaldi")
    parts, segments, position = [], [], 0.0
    silence = np.zeros(int(1.5 * 16000), dtype=np.float32)
    for index, clip in enumerate(CLIPS):
        samples, rate = sf.read(clip, dtype="float32")
        parts += [silence, samples]
        position += len(silence) / rate
        segments.append((f"seg{index}", position, position + len(samples) / rate))
        position += len(samples) / rate
    recording = soxr.resample(np.concatenate([*parts, silence]), 16000, 48000)
    sf.write(root / "consult.wav", recording, 48000, subtype="PCM_16")
    (root / "wav.scp").write_text("consult consult.wav\n", encoding="utf-8")
    (root / "segments").write_text(
        "".join(f"{s} consult {a:.3f} {b:.3f}\n" for s, a, b in segments), encoding="utf-8"
    )
    (root / "text").write_text(
        "".join(f"seg{i} {t}\n" for i, t in enumerate(TEXTS)), encoding="utf-8"
    )
    (root / "utt2spk").write_text(
        "".join(f"seg{i} {'doctor' if i % 2 == 0 else 'patient'}\n" for i in range(4)),
        encoding="utf-8",
    )
    return root


def test_segment_features_equal_the_processor_on_the_cut_out_audio(
    kaldi_dir, processor, spec, tmp_path
):
    samples, rate = sf.read(kaldi_dir / "consult.wav", dtype="float32")
    offset, duration = 5.2, 3.4
    cut = tmp_path / "cut.wav"
    start = round(offset * rate)
    sf.write(cut, samples[start : start + round(duration * rate)], rate, subtype="PCM_16")
    reference = processor.apply_transcription_request(
        audio=str(cut), model_id="voxtral", language="ko"
    )["input_features"]
    ours = features_for_file(kaldi_dir / "consult.wav", spec, offset=offset, duration=duration)
    assert float((ours.expand(spec) - reference).abs().max()) <= 1e-3


@pytest.mark.slow
def test_segments_through_prepare_cache_and_evaluate(kaldi_dir, tiny_model, spec, tmp_path):
    prepared = prepare(
        PrepareConfig(kaldi_dir, "kaldi", tmp_path / "data", min_duration_s=1, emit=["nemo"])
    )
    utterances = read_manifest(prepared.manifests["train"])
    assert [u.id for u in utterances] == ["seg0", "seg1", "seg2", "seg3"]
    assert all(u.offset is not None and 1 < u.duration < 10 for u in utterances)
    assert prepared.stats["probe"]["files"] == 1  # the recording is probed once
    cache = build_cache(
        CacheConfig([prepared.manifests["train"]], str(tiny_model), tmp_path / "cache", jobs=1)
    )
    assert cache.computed == 4
    store = FeatureStore(tmp_path / "cache", spec)
    for utterance, clip in zip(utterances, CLIPS):
        cached = store.get(utterance_key(utterance, spec)).frames
        whole = features_for_file(clip, spec).frames  # the same words, from their own file
        assert abs(cached.shape[1] - whole.shape[1]) <= 3
    decode = DecodeOptions(max_new_tokens=4, num_workers=0)
    for name, cache_dir in (("audio", None), ("cache", tmp_path / "cache")):
        result = evaluate(
            EvaluateConfig(
                manifest=prepared.manifests["train"],
                model=str(tiny_model),
                quantization="none",
                out_dir=tmp_path / f"eval-{name}",
                cache=cache_dir,
                decode=decode,
                bootstrap=0,
                report=False,
            )
        )
        assert result.metrics["utterances"] == 4 and result.metrics["failed"] == 0
    from voxadapt.stages.transcribe import TranscribeConfig, transcribe

    transcribed = transcribe(
        TranscribeConfig(
            inputs=[prepared.manifests["train"]],
            model=str(tiny_model),
            quantization="none",
            out=tmp_path / "t.jsonl",
            decode=decode,
        )
    )
    assert [r["offset"] for r in transcribed.rows] == [u.offset for u in utterances]
    # batched transcription decodes each segment's own span: the texts evaluate produced
    predictions = (tmp_path / "eval-audio" / "predictions.jsonl").read_text().splitlines()
    hypotheses = {row["id"]: row["hypothesis"] for row in map(json.loads, predictions)}
    assert {r["id"]: r["text"] for r in transcribed.rows} == hypotheses


def test_nemo_manifests_round_trip(kaldi_dir, tmp_path):
    first = prepare(
        PrepareConfig(kaldi_dir, "kaldi", tmp_path / "a", min_duration_s=1, emit=["nemo"])
    )
    nemo = tmp_path / "a" / "train.nemo.json"
    lines = [json.loads(line) for line in nemo.read_text().splitlines()]
    assert {"audio_filepath", "duration", "text", "offset"} <= set(lines[0])
    second = prepare(PrepareConfig(nemo, "nemo", tmp_path / "b", min_duration_s=1))

    def fields(path):
        return [
            (u.id, u.audio, u.text, u.offset, u.duration, u.speaker, u.language)
            for u in read_manifest(path)
        ]

    assert fields(first.manifests["train"]) == fields(second.manifests["train"])


def test_segments_past_the_end_are_rejected(kaldi_dir, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("wav.scp", "text"):
        (bad / name).write_text((kaldi_dir / name).read_text(), encoding="utf-8")
    (bad / "wav.scp").write_text(f"consult {kaldi_dir / 'consult.wav'}\n", encoding="utf-8")
    length = sf.info(kaldi_dir / "consult.wav").duration
    (bad / "segments").write_text(
        f"seg0 consult 1.0 4.0\nseg1 consult 900 905\nseg2 consult {length - 3:.3f} -1\n"
        f"seg3 consult {length - 2:.3f} {length + 0.2:.3f}\n",  # Kaldi's -1; a small overshoot
        encoding="utf-8",
    )
    result = prepare(PrepareConfig(bad, "kaldi", tmp_path / "out", min_duration_s=1))
    assert result.stats["rejected_by_reason"] == {"segment_out_of_range": 1}
    kept = {u.id: u for u in read_manifest(result.manifests["train"])}
    assert kept["seg2"].duration == pytest.approx(3.0, abs=2e-3)
    assert kept["seg3"].duration == pytest.approx(2.0, abs=2e-3)  # clamped to the end


def test_lhotse_manifests_round_trip(kaldi_dir, samples, tmp_path):
    lhotse = pytest.importorskip("lhotse")  # the `lhotse` extra, installed by .ci/run
    first = prepare(
        PrepareConfig(kaldi_dir, "kaldi", tmp_path / "a", min_duration_s=1, emit=["lhotse"])
    )
    recordings = lhotse.load_manifest(tmp_path / "a" / "train.lhotse_recordings.jsonl.gz")
    supervisions = lhotse.load_manifest(tmp_path / "a" / "train.lhotse_supervisions.jsonl.gz")
    assert len(recordings) == 1 and len(supervisions) == 4  # four spans of one recording
    assert {s.speaker for s in supervisions} == {"doctor", "patient"}
    second = prepare(
        PrepareConfig(
            tmp_path / "a" / "train.lhotse_supervisions.jsonl.gz",
            "lhotse",
            tmp_path / "b",
            min_duration_s=1,
        )
    )

    def fields(path):
        return [
            (u.id, u.audio, u.text, u.offset, u.duration, u.speaker, u.language)
            for u in read_manifest(path)
        ]

    assert fields(first.manifests["train"]) == fields(second.manifests["train"])
    # whole-file utterances stay whole files; a CutSet reads the same
    whole = prepare(PrepareConfig(samples / "train.scp", "scp", tmp_path / "c", emit=["lhotse"]))
    cuts = lhotse.CutSet.from_manifests(
        recordings=lhotse.load_manifest(tmp_path / "c" / "train.lhotse_recordings.jsonl.gz"),
        supervisions=lhotse.load_manifest(tmp_path / "c" / "train.lhotse_supervisions.jsonl.gz"),
    )
    cuts.to_file(tmp_path / "cuts.jsonl.gz")
    again = prepare(PrepareConfig(tmp_path / "cuts.jsonl.gz", "lhotse", tmp_path / "d"))
    assert all(u.offset is None for u in read_manifest(again.manifests["train"]))
    assert fields(whole.manifests["train"]) == fields(again.manifests["train"])


def test_trimmed_and_windowed_cutsets_point_at_the_right_audio(kaldi_dir, tmp_path):
    """A supervision's start is relative to its cut: `trim_to_supervisions` (the icefall
    layout) and `cut_into_windows` give the same spans of the recording as the segments."""
    lhotse = pytest.importorskip("lhotse")
    prepare(PrepareConfig(kaldi_dir, "kaldi", tmp_path / "a", min_duration_s=1, emit=["lhotse"]))
    cuts = lhotse.CutSet.from_manifests(
        recordings=lhotse.load_manifest(tmp_path / "a" / "train.lhotse_recordings.jsonl.gz"),
        supervisions=lhotse.load_manifest(tmp_path / "a" / "train.lhotse_supervisions.jsonl.gz"),
    )
    expected = {u.id: u.offset for u in read_manifest(tmp_path / "a" / "train.jsonl")}
    trimmed = cuts.trim_to_supervisions(keep_overlapping=False)
    assert all(cut.start > 0 for cut in trimmed)  # cuts start inside the recording
    trimmed.to_file(tmp_path / "trimmed.jsonl.gz")
    read = read_manifest(
        prepare(PrepareConfig(tmp_path / "trimmed.jsonl.gz", "lhotse", tmp_path / "t")).manifests[
            "train"
        ]
    )
    assert {u.id: u.offset for u in read} == pytest.approx(expected, abs=1e-3)
    windows = cuts.cut_into_windows(duration=6.0)
    windows.to_file(tmp_path / "windows.jsonl.gz")
    result = prepare(PrepareConfig(tmp_path / "windows.jsonl.gz", "lhotse", tmp_path / "w"))
    by_id: dict[str, list[float]] = {}
    for utterance in read_manifest(result.manifests["train"]):
        by_id.setdefault(utterance.id.split("-")[0], []).append(utterance.offset)
    assert set(by_id) == set(expected)  # a span cut by a window edge appears in both
    for segment, offset in expected.items():  # every copy of a span points at its audio
        assert all(abs(o - offset) < 1e-3 for o in by_id[segment])


def test_a_per_channel_supervision_is_never_downmixed(tmp_path, speech):
    lhotse = pytest.importorskip("lhotse")
    samples, rate = speech
    stereo = np.stack([samples, np.zeros_like(samples)], axis=1)
    sf.write(tmp_path / "call.wav", stereo, rate)
    recording = lhotse.Recording.from_file(tmp_path / "call.wav", recording_id="call")
    duration = recording.duration
    supervisions = [
        lhotse.SupervisionSegment("doctor", "call", 0, duration, channel=0, text="안녕하세요"),
        lhotse.SupervisionSegment("both", "call", 0, duration, channel=[0, 1], text="안녕하세요"),
    ]
    lhotse.RecordingSet.from_recordings([recording]).to_file(tmp_path / "x_recordings.jsonl")
    lhotse.SupervisionSet.from_segments(supervisions).to_file(tmp_path / "x_supervisions.jsonl")
    result = prepare(
        PrepareConfig(
            tmp_path / "x_supervisions.jsonl", "lhotse", tmp_path / "o", min_duration_s=0.1
        )
    )
    assert [u.id for u in read_manifest(result.manifests["train"])] == ["both"]
    rejected = [json.loads(line) for line in result.rejected_path.read_text().splitlines()]
    assert [(r["id"], r["reason"]) for r in rejected] == [
        ("doctor", "channel_selection_unsupported")
    ]
