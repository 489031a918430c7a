import numpy as np
import pytest
import soundfile as sf

from voxadapt.audio import AudioError, load_audio, probe_audio, probe_many

from conftest import fit_duration, write_wav


@pytest.mark.parametrize("rate", [16000, 22050, 44100, 48000])
def test_probe_records_the_file_rate(tmp_path, speech, rate):
    samples, source_rate = speech
    path = write_wav(tmp_path / "a.wav", samples, source_rate, target_rate=rate)
    info = probe_audio(path)
    assert info.sample_rate == rate
    assert info.channels == 1
    assert info.duration == pytest.approx(len(samples) / source_rate, abs=1e-3)
    assert not info.decoded  # PCM WAV: the header is enough


def test_stereo_is_probed_and_downmixed(tmp_path, speech):
    samples, rate = speech
    path = write_wav(tmp_path / "st.wav", samples, rate, target_rate=48000, channels=2)
    info = probe_audio(path)
    assert (info.channels, info.sample_rate) == (2, 48000)
    mono = load_audio(path, 16000)
    assert mono.ndim == 1
    assert abs(len(mono) - len(samples)) <= 2
    # channel gains were 0.5 and 0.75: the mean is 0.625 x the original
    reference = 0.625 * samples[: len(mono)]
    assert np.corrcoef(mono[: len(reference)], reference)[0, 1] > 0.99


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: None, "missing_audio"),
        (
            lambda p: p.write_bytes(b"RIFF\x00\x00garbage that is not a wave file"),
            "unreadable_audio",
        ),
        (lambda p: p.write_bytes(b""), "unreadable_audio"),
        (lambda p: sf.write(p, np.zeros(0, dtype=np.float32), 16000), "empty_audio"),
        (
            lambda p: sf.write(
                p, np.array([0.1, np.nan, 0.2] * 1000, dtype=np.float32), 16000, subtype="FLOAT"
            ),
            "non_finite_samples",
        ),
        (
            lambda p: sf.write(
                p, np.array([0.1, np.inf] * 1000, dtype=np.float64), 16000, subtype="DOUBLE"
            ),
            "non_finite_samples",
        ),
    ],
    ids=["missing", "corrupt", "zero-bytes", "zero-length", "nan", "inf"],
)
def test_bad_audio_reasons(tmp_path, make, reason):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError) as info:
        probe_audio(path)
    assert info.value.reason == reason


def test_float_wav_is_decoded_and_accepted_when_finite(tmp_path, speech):
    samples, rate = speech
    path = write_wav(tmp_path / "f.wav", samples, rate, subtype="FLOAT")
    info = probe_audio(path)
    assert info.decoded
    assert info.frames == len(samples)


def test_full_decode_catches_truncated_pcm(tmp_path, speech):
    samples, rate = speech
    path = write_wav(tmp_path / "t.wav", fit_duration(samples, rate, 4.0), rate)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # header still claims 4 s
    info = probe_audio(path, full_decode=True)
    assert info.decoded
    assert info.duration == pytest.approx(2.0, abs=0.05)


def test_probe_many_keeps_order_and_reports_errors(tmp_path, speech):
    samples, rate = speech
    paths = []
    for i in range(80):  # enough for worker processes (small lists are probed in-process)
        if i % 4 == 3:
            paths.append(tmp_path / f"missing{i}.wav")
        else:
            paths.append(
                write_wav(tmp_path / f"{i}.wav", fit_duration(samples, rate, 1 + i / 100), rate)
            )
    for jobs in (1, 4):
        results = probe_many(paths, jobs=jobs)
        for i, result in enumerate(results):
            if i % 4 == 3:
                assert isinstance(result, AudioError) and result.reason == "missing_audio"
            else:
                assert result.duration == pytest.approx(1 + i / 100, abs=1e-3)
