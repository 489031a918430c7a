"""Long-form transcription: VAD segments with real timestamps, batched, stitched in order."""

import itertools
import json
import logging
import re

import numpy as np
import pytest
import soundfile as sf

from voxadapt.decoding import DecodeOptions
from voxadapt.stages.transcribe import TranscribeConfig, transcribe
from voxadapt.vad import VadOptions, speech_segments

from conftest import CLIPS, fit_duration

FAST = DecodeOptions(max_new_tokens=4, num_workers=0)
TIMESTAMP = r"\d{2}:\d{2}:\d{2}\.\d{3}"


@pytest.fixture(scope="module")
def consultation(tmp_path_factory):
    """The bundled clips three times over with known silences (1.2-2.6 s): 12 utterances."""
    path = tmp_path_factory.mktemp("consult") / "consult.wav"
    parts, starts, position = [], [], 0.0
    for index, clip in enumerate(CLIPS * 3):
        samples, rate = sf.read(clip, dtype="float32")
        pause = 1.2 + 0.2 * (index % 8)
        parts += [np.zeros(int(pause * rate), dtype=np.float32), samples]
        position += pause
        starts.append(position)
        position += len(samples) / rate
    parts.append(np.zeros(rate, dtype=np.float32))
    sf.write(path, np.concatenate(parts), rate)
    return path, starts


def test_one_segment_per_utterance_starting_where_speech_starts(consultation):
    path, starts = consultation
    samples, _ = sf.read(path, dtype="float32")
    segments = speech_segments(samples)
    assert len(segments) == len(starts)
    for (start, end), truth in zip(segments, starts):
        assert abs(start - truth) <= 0.5 and end - start <= 30.0
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(segments))  # in order, disjoint


def test_long_speech_without_pauses_is_split_at_its_quietest_point(speech):
    samples, rate = speech
    continuous = fit_duration(samples, rate, 70.0)  # espeak's own pauses are < 1 s
    segments = speech_segments(continuous, VadOptions(max_segment_s=30.0))
    assert len(segments) >= 3 and all(end - start <= 30.0 for start, end in segments)
    assert segments[0][0] < 1.0 and segments[-1][1] > 68.0  # nothing lost at either end


def test_cues_never_overlap_where_continuous_speech_is_cut(speech):
    samples, rate = speech
    continuous = fit_duration(samples, rate, 70.0)
    segments = speech_segments(continuous, VadOptions(max_segment_s=30.0))
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(segments)), segments


def test_a_noise_floor_before_speech_is_not_speech(speech):
    samples, rate = speech
    noise = np.random.default_rng(0).normal(0, 1, int(1.5 * rate)).astype(np.float32)
    noise *= 10 ** (-60 / 20) / np.sqrt(np.mean(noise**2))  # -60 dBFS
    floor = np.concatenate([noise, samples + np.resize(noise, len(samples))])
    (start, _), *_ = speech_segments(floor)
    assert start >= 1.3  # speech begins at 1.5 s (0.1 s padding, one 30 ms frame)


def test_a_pause_just_over_a_second_ends_a_segment(speech):
    """WebRTC's hangover flags a quiet room after speech as more speech; the energy gate
    measures the pause the README promises (1 s ends a segment)."""
    samples, rate = speech
    room = np.random.default_rng(0).normal(0, 1, int(1.04 * rate)).astype(np.float32)
    room *= 10 ** (-60 / 20) / np.sqrt(np.mean(room**2))  # a quiet room at -60 dBFS
    segments = speech_segments(np.concatenate([samples, room, samples]))
    assert len(segments) == 2


def test_reading_a_file_in_blocks_gives_the_same_segments_in_flat_memory(consultation, tmp_path):
    import tracemalloc

    from voxadapt.vad import speech_segments_of_file

    path, _ = consultation
    samples, rate = sf.read(path, dtype="float32")
    # pytest.approx refuses nested structures (pytest 9): compare the (start, end) pairs as arrays.
    np.testing.assert_allclose(
        np.asarray(speech_segments_of_file(path)), np.asarray(speech_segments(samples)), atol=0.031
    )
    long = tmp_path / "long.wav"
    sf.write(long, np.tile(samples, 10), rate)  # ~8 minutes
    peaks = []
    for source in (path, long):
        tracemalloc.start()
        speech_segments_of_file(source)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 2 * peaks[0] + 2e6  # ten times the audio, not ten times the memory


def test_silence_has_no_segments():
    assert speech_segments(np.zeros(16000 * 40, dtype=np.float32)) == []


@pytest.mark.slow
def test_long_form_cues_batches_and_stitching(consultation, tiny_model, tmp_path):
    path, starts = consultation
    common = dict(model=str(tiny_model), quantization="none", decode=FAST)
    result = transcribe(
        TranscribeConfig(inputs=[path], out=tmp_path / "vtt", format="vtt", **common)
    )
    [row] = result.rows
    assert [s["start"] for s in row["segments"]] == sorted(s["start"] for s in row["segments"])
    assert row["text"] == " ".join(s["text"] for s in row["segments"] if s["text"])
    vtt = (tmp_path / "vtt" / "consult.vtt").read_text()
    assert vtt.startswith("WEBVTT\n\n")
    cues = re.findall(rf"^({TIMESTAMP}) --> ({TIMESTAMP})\n(.+)$", vtt, flags=re.M)
    assert len(cues) == len(starts)
    for (begin, _, _), truth in zip(cues, starts):
        h, m, s = begin.split(":")
        assert abs(int(h) * 3600 + int(m) * 60 + float(s) - truth) <= 0.5
    srt = transcribe(TranscribeConfig(inputs=[path], out=tmp_path / "srt", format="srt", **common))
    assert (tmp_path / "srt" / "consult.srt").read_text().count(" --> ") == len(starts)
    assert srt.rows[0]["text"] == row["text"]
    one_pass = {**common, "decode": DecodeOptions(max_new_tokens=4, num_workers=0, vad=False)}
    single = transcribe(TranscribeConfig(inputs=[path], **one_pass)).rows[0]
    assert "segments" not in single and single["n_tokens"] <= 4  # one pass, as before


def test_short_clips_are_not_split(tiny_model):
    common = dict(inputs=[CLIPS[0]], model=str(tiny_model), quantization="none", decode=FAST)
    with_vad = transcribe(TranscribeConfig(**common)).rows[0]
    one_pass = {**common, "decode": DecodeOptions(max_new_tokens=4, num_workers=0, vad=False)}
    without = transcribe(TranscribeConfig(**one_pass)).rows[0]
    assert with_vad == without and "segments" not in with_vad


@pytest.mark.slow
def test_evaluate_scores_a_long_reference_through_long_form(
    consultation, tiny_model, tmp_path, caplog
):
    from voxadapt.manifest import Utterance, write_jsonl
    from voxadapt.stages.evaluate import EvaluateConfig, evaluate

    path, starts = consultation
    duration = sf.info(path).duration
    manifest = tmp_path / "long.jsonl"
    write_jsonl(
        manifest,
        [
            Utterance(
                "consult",
                str(path),
                "환자분 혈압을 재겠습니다",
                "환자분 혈압을 재겠습니다",
                duration,
                16000,
                1,
            )
        ],
    )
    caplog.set_level(logging.INFO, logger="voxadapt.progress")
    result = evaluate(
        EvaluateConfig(
            manifest=manifest,
            model=str(tiny_model),
            quantization="none",
            out_dir=tmp_path / "eval",
            decode=FAST,
            bootstrap=0,
            report=False,
        )
    )
    [row] = [json.loads(line) for line in result.predictions.read_text().splitlines()]
    assert len(row["segments"]) == len(starts)
    # progress counts the recording's seconds, its pauses included, not the speech decoded
    [final] = [r.message for r in caplog.records if r.message.startswith("evaluate:")][-1:]
    assert f"{duration:.1f}/{duration:.1f} s audio (100%)" in final
    transcribed = transcribe(
        TranscribeConfig(inputs=[path], model=str(tiny_model), quantization="none", decode=FAST)
    ).rows[0]
    assert row["hypothesis"] == transcribed["text"]  # one engine, one stitching
