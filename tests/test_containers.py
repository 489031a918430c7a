"""Phone and browser audio (M4A/AAC, WebM/Opus, MP4/AAC) through PyAV, in the one loader:
probe, load, segments, broken files, and prepare, transcribe and serve end to end.

The fixtures are encoded here with PyAV itself from the bundled Korean clip."""

import json
import pickle
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from voxadapt.audio import AudioError, load_audio, probe_audio, read_blocks
from voxadapt.manifest import read_manifest
from voxadapt.sources.audio_store import UnstorableAudio, lossless_form
from voxadapt.stages.prepare import PrepareConfig, prepare
from voxadapt.vad import speech_segments_of_file

from conftest import write_wav

# container format, codec, sample rate (Hz), channels, AudioInfo.format, AudioInfo.subtype
RECORDINGS = {
    "phone.m4a": ("mp4", "aac", 16000, 1, "MP4", "AAC"),  # an iPhone voice memo
    "browser.webm": ("webm", "libopus", 48000, 1, "WEBM", "OPUS"),  # MediaRecorder in Chrome
    "video.mp4": ("mp4", "aac", 44100, 2, "MP4", "AAC"),  # a phone video's sound track
}
# AAC codes 1024-sample frames with priming and padding; Opus pre-skips 312 samples
CODEC_SLACK_S = 0.05


def encode(path: Path, samples: np.ndarray, rate: int, fmt: str, codec: str, channels: int):
    """Encode mono 16 kHz `samples` at `rate` with PyAV; stereo gets channel gains 0.5 and
    0.75 (their mean is 0.625)."""
    import soxr

    layout = "stereo" if channels == 2 else "mono"
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        gains = [1.0] if channels == 1 else [0.5, 0.75]
        planes = np.stack([samples * gain for gain in gains])
        planes = soxr.resample(planes.T, 16000, rate).T if rate != 16000 else planes
        planes = np.ascontiguousarray(planes, dtype=np.float32)
        for start in range(0, planes.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(planes[:, start : start + 1024]), "fltp", layout
            )
            frame.rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def encode_video_only(path: Path) -> None:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for _ in range(10):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory, speech) -> Path:
    samples, rate = speech
    assert rate == 16000
    folder = tmp_path_factory.mktemp("phone")
    for name, (fmt, codec, out_rate, channels, _, _) in RECORDINGS.items():
        encode(folder / name, samples, out_rate, fmt, codec, channels)
    return folder


@pytest.fixture(scope="module")
def broken(tmp_path_factory, recordings) -> dict[str, tuple[Path, str]]:
    """Files that are not usable audio, each with the reason it must be rejected with."""
    folder = tmp_path_factory.mktemp("broken")
    (folder / "notes.m4a").write_text("회진 메모: 이건 오디오가 아니에요\n", encoding="utf-8")
    data = (recordings / "phone.m4a").read_bytes()
    (folder / "cut.m4a").write_bytes(data[: len(data) // 2])  # the index (moov) is at the end
    (folder / "zero.webm").write_bytes(b"")
    encode_video_only(folder / "screen.mp4")
    for name, fmt, codec in (("silent.m4a", "mp4", "aac"), ("stopped.webm", "webm", "libopus")):
        with av.open(str(folder / name), "w", format=fmt) as container:  # a header, no audio
            container.add_stream(codec, rate=48000, layout="mono")
            container.start_encoding()
    return {
        "renamed text": (folder / "notes.m4a", "unreadable_audio"),
        "truncated": (folder / "cut.m4a", "unreadable_audio"),
        "zero bytes": (folder / "zero.webm", "unreadable_audio"),
        "video only": (folder / "screen.mp4", "no_audio_stream"),
        "no samples": (folder / "silent.m4a", "empty_audio"),
        "stopped at once": (folder / "stopped.webm", "empty_audio"),
    }


@pytest.mark.parametrize("name", RECORDINGS)
def test_probe_reads_the_length_the_container_states(recordings, speech, name):
    samples, rate = speech
    _, _, out_rate, channels, fmt, codec = RECORDINGS[name]
    info = probe_audio(recordings / name)
    assert (info.sample_rate, info.channels, info.format, info.subtype) == (
        out_rate,
        channels,
        fmt,
        codec,
    )
    assert not info.decoded  # the MP4 sample table / Matroska Duration says it
    assert info.duration == pytest.approx(len(samples) / rate, abs=CODEC_SLACK_S)
    full = probe_audio(recordings / name, full_decode=True)
    assert full.decoded
    assert full.duration == pytest.approx(len(samples) / rate, abs=CODEC_SLACK_S)


@pytest.mark.parametrize("name", RECORDINGS)
def test_load_gives_the_source_waveform(recordings, speech, name):
    samples, rate = speech
    channels = RECORDINGS[name][3]
    loaded = load_audio(recordings / name, 16000)
    assert loaded.dtype == np.float32 and loaded.ndim == 1
    assert abs(len(loaded) - len(samples)) <= CODEC_SLACK_S * rate
    n = min(len(loaded), len(samples))
    gain = 0.625 if channels == 2 else 1.0  # the mean of channel gains 0.5 and 0.75
    assert np.corrcoef(loaded[:n], gain * samples[:n])[0, 1] > 0.98
    assert np.sqrt(np.mean(loaded[:n] ** 2)) == pytest.approx(
        gain * np.sqrt(np.mean(samples[:n] ** 2)), rel=0.1
    )
    sped = load_audio(recordings / name, 16000, speed=1.1)
    assert len(sped) == pytest.approx(len(loaded) / 1.1, abs=2)


@pytest.mark.parametrize("name", RECORDINGS)
def test_a_segment_is_exactly_that_slice_of_the_whole(recordings, name):
    rate = RECORDINGS[name][2]  # at the file's own rate nothing is resampled
    whole = load_audio(recordings / name, rate)
    segment = load_audio(recordings / name, rate, offset=1.25, duration=2.0)
    start = round(1.25 * rate)
    np.testing.assert_array_equal(segment, whole[start : start + 2 * rate])
    tail = load_audio(recordings / name, rate, offset=4.0)
    np.testing.assert_array_equal(tail, whole[4 * rate :])
    blocks = list(read_blocks(recordings / name, 0.5, offset=1.25, duration=2.0))
    assert {block_rate for _, block_rate in blocks} == {rate}
    joined = np.concatenate([block for block, _ in blocks])
    np.testing.assert_array_equal(joined.mean(axis=1), segment)


def test_long_form_segments_a_browser_recording_like_its_wav(recordings, tmp_path):
    decoded = load_audio(recordings / "browser.webm", 16000)
    wav = write_wav(tmp_path / "same.wav", decoded, 16000, subtype="FLOAT")
    from_webm = speech_segments_of_file(recordings / "browser.webm")
    from_wav = speech_segments_of_file(wav)
    assert from_webm and len(from_webm) == len(from_wav)
    for (a, b), (c, d) in zip(from_webm, from_wav, strict=True):
        assert (a, b) == pytest.approx((c, d), abs=0.035)  # one 30 ms VAD frame


@pytest.mark.parametrize(
    "case",
    ["renamed text", "truncated", "zero bytes", "video only", "no samples", "stopped at once"],
)
def test_broken_containers_are_one_line_errors(broken, case):
    path, reason = broken[case]
    for read in (
        probe_audio,
        lambda p: probe_audio(p, full_decode=True),
        load_audio,
        lambda p: list(read_blocks(p, 1.0)),
    ):
        with pytest.raises(AudioError) as caught:
            read(path)
        error = caught.value
        assert error.reason == reason
        assert str(error).startswith(f"{path}: ") and "\n" not in str(error)
        sent = pickle.loads(pickle.dumps(error))  # from a probe or data-loader worker
        assert (sent.reason, str(sent)) == (reason, str(error))


def test_a_container_named_wav_is_read_and_a_broken_wav_keeps_its_message(recordings, tmp_path):
    misnamed = tmp_path / "memo.wav"  # what some phone apps do
    misnamed.write_bytes((recordings / "phone.m4a").read_bytes())
    assert probe_audio(misnamed).format == "MP4"
    np.testing.assert_array_equal(load_audio(misnamed), load_audio(recordings / "phone.m4a"))
    assert speech_segments_of_file(misnamed) == speech_segments_of_file(recordings / "phone.m4a")
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00garbage that is not a wave file")
    for read in (probe_audio, load_audio, lambda p: list(read_blocks(p, 1.0))):
        with pytest.raises(AudioError, match="Format not recognised") as caught:
            read(broken)
        assert caught.value.reason == "unreadable_audio"


def test_hugging_face_bytes_are_kept_as_they_came(recordings, broken):
    data = (recordings / "browser.webm").read_bytes()
    assert lossless_form(data) == (data, ".mka")
    data = (recordings / "phone.m4a").read_bytes()
    assert lossless_form(data) == (data, ".m4a")
    with pytest.raises(UnstorableAudio) as caught:
        lossless_form(broken["video only"][0].read_bytes())
    assert caught.value.reason == "no_audio_stream"
    with pytest.raises(UnstorableAudio) as caught:
        lossless_form(broken["renamed text"][0].read_bytes())
    assert caught.value.reason == "unreadable_audio"


def test_importing_the_loader_does_not_load_ffmpeg():
    code = "import sys, voxadapt.audio; assert 'av' not in sys.modules, 'av imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_prepare_keeps_phone_recordings_and_rejects_broken_ones(
    recordings, broken, speech, tmp_path
):
    samples, rate = speech
    lines = [f"{recordings / name}|배가 아파요 {i}" for i, name in enumerate(RECORDINGS)]
    lines += [f"{path}|고장난 파일" for path, _ in broken.values()]
    scp = tmp_path / "phone.scp"
    scp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = prepare(PrepareConfig(scp, "scp", tmp_path / "out", jobs=1, valid_size=0, test_size=0))
    kept = {Path(u.audio).name: u for u in read_manifest(result.manifests["train"])}
    assert set(kept) == set(RECORDINGS)
    for name, utterance in kept.items():
        assert utterance.sample_rate == RECORDINGS[name][2]
        assert utterance.duration == pytest.approx(len(samples) / rate, abs=CODEC_SLACK_S)
    rejected = result.rejected_path.read_text(encoding="utf-8").splitlines()
    reasons = sorted(json.loads(line)["reason"] for line in rejected)
    assert reasons == sorted(reason for _, reason in broken.values())


def transcribed_rows(tiny_model, inputs: list[Path]) -> list[dict]:
    from voxadapt.decoding import DecodeOptions
    from voxadapt.stages.transcribe import TranscribeConfig, transcribe

    options = DecodeOptions(max_new_tokens=6, num_workers=0)  # as test_serve's server decodes
    config = TranscribeConfig(
        inputs=inputs, model=str(tiny_model), quantization="none", decode=options
    )
    return transcribe(config).rows


@pytest.mark.slow
def test_transcribe_and_serve_read_phone_and_browser_audio(tiny_model, recordings, broken, speech):
    test_serve = pytest.importorskip("test_serve")  # the serve extra (uvicorn, openai)
    samples, rate = speech

    rows = {row["id"]: row for row in transcribed_rows(tiny_model, [recordings])}
    assert set(rows) == set(RECORDINGS)  # the folder listing finds them
    for name, row in rows.items():
        assert row.get("error") is None, row
        assert row["duration"] == pytest.approx(len(samples) / rate, abs=CODEC_SLACK_S), name
    failed = transcribed_rows(tiny_model, [broken["video only"][0], recordings / "phone.m4a"])
    assert [row.get("error") for row in failed] == ["no_audio_stream", None]

    running = test_serve.Running(test_serve.config(tiny_model))
    try:
        running.wait_ready()
        client = running.client()
        for name in ("phone.m4a", "video.mp4"):
            with (recordings / name).open("rb") as audio:
                reply = client.audio.transcriptions.create(model="ko-med", file=audio)
            assert reply.text == rows[name]["text"], name
        # test_serve's raw POST names every upload a.wav: the server finds the WebM anyway
        status, _, body = test_serve.post(
            f"{running.url}/v1/audio/transcriptions",
            {"model": "ko-med"},
            recordings / "browser.webm",
        )
        assert status == 200, body
        assert json.loads(body)["text"] == rows["browser.webm"]["text"]
        status, _, body = test_serve.post(
            f"{running.url}/v1/audio/transcriptions", {"model": "ko-med"}, broken["truncated"][0]
        )
        assert status == 400 and b"unreadable_audio" in body
    finally:
        running.stop()
