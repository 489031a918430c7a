import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from voxadapt.audio import load_audio
from voxadapt.features import (
    QUANT_STEP,
    CacheMismatchError,
    FeatureSpec,
    FeatureStore,
    compute_features,
    features_for_file,
    utterance_key,
    write_shard,
)
from voxadapt.manifest import Utterance, read_manifest, write_jsonl
from voxadapt.stages.cache import CacheConfig, build_cache

from conftest import CLIPS, fit_duration, write_wav


@pytest.fixture(scope="module")
def clip_variants(tmp_path_factory, speech):
    """Real speech as the processor will meet it: 16/44.1/48 kHz, stereo, float, 40 s."""
    samples, rate = speech
    root = tmp_path_factory.mktemp("variants")
    return {
        "16k": CLIPS[1],
        "48k": write_wav(root / "48k.wav", samples, rate, target_rate=48000),
        "stereo48k": write_wav(root / "st.wav", samples, rate, target_rate=48000, channels=2),
        "float22k": write_wav(root / "f.wav", samples, rate, target_rate=22050, subtype="FLOAT"),
        "flac44k": write_wav(root / "a.flac", samples, rate, target_rate=44100),
        "40s": write_wav(root / "long.wav", fit_duration(samples, rate, 40.0), rate),
        "30s_exact": write_wav(root / "exact.wav", fit_duration(samples, rate, 30.0), rate),
    }


def test_padding_frames_are_one_constant(speech, processor):
    """The claim the compact cache rests on, checked on the processor's own output."""
    samples, rate = speech
    # end on sound, not on silence, so the boundary frames really differ from padding
    noise = np.random.default_rng(0).normal(0, 0.05, 1234).astype(np.float32)
    samples = np.concatenate([samples, noise])
    full = processor.feature_extractor(
        samples, sampling_rate=rate, padding="max_length", return_tensors="np"
    )["input_features"][0]
    real_frames = int(np.ceil((len(samples) + 200) / 160))
    tail = full[:, real_frames:]
    assert tail.shape[1] > 2000
    assert np.all(tail == tail[0, 0])
    # the last frame whose window reaches the audio is not padding
    assert np.any(full[:, real_frames - 1] != tail[0, 0])


@pytest.mark.parametrize(
    "name", ["16k", "48k", "stereo48k", "float22k", "flac44k", "40s", "30s_exact"]
)
def test_features_equal_the_processor(name, clip_variants, processor, spec):
    path = clip_variants[name]
    reference = processor.apply_transcription_request(
        audio=str(path), model_id="voxtral", language="ko"
    )["input_features"]
    compact = features_for_file(path, spec)
    ours = compact.expand(spec)
    assert ours.shape == reference.shape
    assert float((ours - reference).abs().max()) <= 1e-3
    expected_chunks = 2 if name == "40s" else 1
    assert compact.n_chunks == expected_chunks
    if name not in ("40s", "30s_exact"):
        assert compact.frames.shape[1] < 1000  # a few seconds, not 3000 frames


def test_compute_features_rejects_empty(spec):
    from voxadapt.audio import AudioError

    with pytest.raises(AudioError):
        compute_features(np.zeros(0, dtype=np.float32), spec)


def _manifest(tmp_path, paths):
    utterances = []
    for i, path in enumerate(paths):
        info = sf.info(path)
        utterances.append(
            Utterance(
                f"u{i:03d}",
                str(path),
                "열이 나요",
                "열이 나요",
                info.frames / info.samplerate,
                info.samplerate,
                info.channels,
            )
        )
    manifest = tmp_path / "m.jsonl"
    write_jsonl(manifest, utterances)
    return manifest


def _all_features(cache_dir, manifest, spec):
    store = FeatureStore(cache_dir, spec)
    return {u.id: store.get(utterance_key(u, spec)) for u in read_manifest(manifest)}


def test_cache_is_compact_exact_and_incremental(tmp_path, tiny_model, spec, speech, processor):
    samples, rate = speech
    paths = [
        write_wav(
            tmp_path / "a" / f"{i}.wav",
            fit_duration(samples, rate, 3 + 0.5 * i),
            rate,
            target_rate=48000,
        )
        for i in range(6)
    ]
    manifest = _manifest(tmp_path, paths)
    first = build_cache(
        CacheConfig([manifest], str(tiny_model), tmp_path / "cache", jobs=2, shard_size=2)
    )
    assert (first.computed, first.reused, first.failed) == (6, 0, 0)
    # The seed stores fp32 padded to 30 s; we store only frames that touch audio (+ header),
    # compressed to well under fp16's 2 bytes x 128 mels x 100 frames/s.
    seed_bytes_per_clip = 128 * 3000 * 4
    frames = sum(int(np.ceil((sf.info(p).duration * 16000 + 200) / 160)) for p in paths)
    assert first.bytes_on_disk < frames * 128 * 2 * 0.6
    assert first.bytes_per_utterance < seed_bytes_per_clip / 10
    features = _all_features(tmp_path / "cache", manifest, spec)
    for utterance in read_manifest(manifest):
        direct = compute_features(load_audio(utterance.audio, 16000), spec)
        cached = features[utterance.id]
        assert cached.frames.shape == direct.frames.shape
        assert np.abs(cached.frames - direct.frames).max() <= QUANT_STEP / 2 + 1e-6
        assert cached.pad_value == pytest.approx(direct.pad_value)
        # what training reads equals the processor's input within the 1e-3 tolerance
        reference = processor.apply_transcription_request(
            audio=utterance.audio, model_id="voxtral", language="ko"
        )["input_features"]
        assert float((cached.expand(spec) - reference).abs().max()) <= 1e-3
    again = build_cache(
        CacheConfig([manifest], str(tiny_model), tmp_path / "cache", jobs=2, shard_size=2)
    )
    assert (again.computed, again.reused) == (0, 6)
    # a changed audio file (new mtime) is recomputed, nothing else
    os.utime(paths[3], ns=(time.time_ns(), time.time_ns() + 10**9))
    changed = build_cache(CacheConfig([manifest], str(tiny_model), tmp_path / "cache", jobs=1))
    assert (changed.computed, changed.reused) == (1, 5)


def test_cache_for_another_processor_is_refused(tmp_path, tiny_model, spec, speech):
    samples, rate = speech
    manifest = _manifest(tmp_path, [write_wav(tmp_path / "a.wav", samples, rate)])
    build_cache(CacheConfig([manifest], str(tiny_model), tmp_path / "cache", jobs=1))
    other = FeatureSpec(**{**spec.__dict__, "mel_filters": spec.mel_filters * 1.01})
    assert other.fingerprint != spec.fingerprint
    with pytest.raises(CacheMismatchError, match="another processor"):
        FeatureStore(tmp_path / "cache", other)


@pytest.mark.slow
def test_killed_cache_run_resumes_to_identical_result(tmp_path, tiny_model, spec, speech):
    samples, rate = speech
    paths = [
        write_wav(
            tmp_path / "a" / f"{i}.wav",
            fit_duration(samples, rate, 3 + i % 5),
            rate,
            target_rate=44100,
            channels=1 + i % 2,
        )
        for i in range(24)
    ]
    manifest = _manifest(tmp_path, paths)
    reference = build_cache(
        CacheConfig([manifest], str(tiny_model), tmp_path / "ref", jobs=1, shard_size=1)
    )
    assert reference.computed == 24

    killed = tmp_path / "killed"
    command = [
        sys.executable,
        "-m",
        "voxadapt.cli",
        "cache",
        str(manifest),
        "--model",
        str(tiny_model),
        "--out",
        str(killed),
        "--jobs",
        "1",
        "--shard-size",
        "1",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list(killed.glob("shard-*.safetensors"))) < 3:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len(list(killed.glob("shard-*.safetensors")))
    assert 3 <= done < 24, "the kill should land mid-run"

    resumed = build_cache(CacheConfig([manifest], str(tiny_model), killed, jobs=2, shard_size=1))
    assert resumed.reused == done and resumed.computed == 24 - done
    assert not list(killed.glob(".*.tmp")) and not list(killed.glob(".voxadapt-staging-*"))
    expected = _all_features(tmp_path / "ref", manifest, spec)
    actual = _all_features(killed, manifest, spec)
    assert expected.keys() == actual.keys()
    for key in expected:
        assert np.array_equal(expected[key].frames, actual[key].frames)
        assert expected[key].pad_value == actual[key].pad_value
        assert torch.equal(expected[key].expand(spec), actual[key].expand(spec))


@pytest.mark.parametrize("codec", ["compact", "fp16"])
def test_codecs_round_trip_within_tolerance(codec, tmp_path, spec, speech):
    samples, rate = speech
    features = compute_features(fit_duration(samples, rate, 7.3), spec)
    write_shard(tmp_path, spec, [("k", features)], codec)
    stored = FeatureStore(tmp_path, spec).get("k")
    bound = QUANT_STEP / 2 if codec == "compact" else 4.9e-4
    assert np.abs(stored.frames.astype(np.float32) - features.frames).max() <= bound + 1e-6
    assert torch.allclose(stored.expand(spec), features.expand(spec), atol=bound + 1e-6)


def test_compact_codec_is_smaller_than_fp16(tmp_path, spec, speech):
    samples, rate = speech
    features = compute_features(fit_duration(samples, rate, 12.0), spec)
    compact = write_shard(tmp_path / "c", spec, [("k", features)], "compact")
    fp16 = write_shard(tmp_path / "f", spec, [("k", features)], "fp16")
    assert compact.stat().st_size < 0.6 * fp16.stat().st_size


@pytest.mark.parametrize("speed", [0.9, 1.1])
def test_speed_perturbed_entries_equal_the_processor_on_sped_audio(
    speed, processor, spec, tiny_model, sample_manifest, tmp_path
):
    """A cache entry at factor f equals the processor's features of the clip sped up by f
    (soxr HQ resampling to 16000 / f Hz, taken as 16 kHz: what `sox ... speed f` does)."""
    import soxr

    from voxadapt.stages.cache import CacheConfig, build_cache

    result = build_cache(
        CacheConfig([sample_manifest], str(tiny_model), tmp_path / "c", jobs=1, speed=[1.0, speed])
    )
    utterances = read_manifest(sample_manifest)
    assert result.computed == 2 * len(utterances) and result.speeds == (1.0, speed)
    store = FeatureStore(tmp_path / "c", spec)
    utterance = utterances[0]
    samples, rate = sf.read(utterance.audio, dtype="float32")
    sped = tmp_path / "sped.wav"
    sf.write(sped, soxr.resample(samples, rate, rate / speed, quality="HQ"), 16000, subtype="FLOAT")
    reference = processor.apply_transcription_request(
        audio=str(sped), model_id="voxtral", language="ko"
    )["input_features"]
    cached = store.get(utterance_key(utterance, spec, speed))
    assert float((cached.expand(spec) - reference).abs().max()) <= 1e-3
    plain = store.get(utterance_key(utterance, spec))
    assert abs(cached.frames.shape[1] - plain.frames.shape[1] / speed) <= 2  # 1/f as long
    again = build_cache(
        CacheConfig([sample_manifest], str(tiny_model), tmp_path / "c", jobs=1, speed=[1.0, speed])
    )
    assert again.computed == 0 and again.reused == 2 * len(utterances)


def test_speed_factors_parse_from_a_comma_list(tmp_path):
    from voxadapt.config import build_config
    from voxadapt.errors import ConfigError
    from voxadapt.stages.cache import CacheConfig

    config = build_config(
        CacheConfig,
        manifests=[str(tmp_path)],
        model="m",
        out_dir=str(tmp_path),
        speed=["0.9,1.0,1.1"],
    )
    assert config.speed == [0.9, 1.0, 1.1]
    with pytest.raises(ConfigError, match="speed factors"):
        build_config(
            CacheConfig,
            manifests=[str(tmp_path)],
            model="m",
            out_dir=str(tmp_path),
            speed=["0.9,0.9"],
        )
