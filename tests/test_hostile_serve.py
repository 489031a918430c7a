"""`voxadapt serve` and the container loader against hostile clients and forged files: each
test is a failure found by attacking them. Field parsing, refusals and the loader are tested
without a model; the one server test binds 127.0.0.1 and every load is bounded."""

import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from starlette.datastructures import FormData
from starlette.requests import Request

from voxadapt.audio import AudioError, load_audio, probe_audio, read_blocks
from voxadapt.decoding import AudioItem, DecodeOptions, Transcript
from voxadapt.errors import ConfigError
from voxadapt.families import VOXTRAL
from voxadapt.serving import engine as engine_module
from voxadapt.serving.engine import BatchingEngine, EngineResult, EngineStopped, Job
from voxadapt.serving.fields import FieldError, parse_fields
from voxadapt.stages.serve import ServeConfig

from conftest import access_lines, fit_duration

pytest.importorskip("fastapi")
av = pytest.importorskip("av")

from voxadapt.serving.app import ServerSettings, _response, build_app  # noqa: E402


def settings(**changes) -> ServerSettings:
    base = dict(
        served_model="ko-med",
        options=DecodeOptions(bias_weight=5.0),
        max_batch=1,
        max_wait_ms=0,
        max_queue=4,
        max_upload_bytes=1 << 20,
        max_audio_s=60,
        api_key=None,
        bias_terms=[],
        family=VOXTRAL,
    )
    return ServerSettings(**{**base, **changes})


def fields(*pairs: tuple[str, str]):
    return parse_fields(FormData([("model", "ko-med"), *pairs]), settings())


def refused(*pairs: tuple[str, str]) -> FieldError:
    with pytest.raises(FieldError) as caught:
        fields(*pairs)
    return caught.value


# ------------------------------------------------------------------------- fields


@pytest.mark.parametrize("nested", ["[" * 100_000, '{"a":' * 50_000])
def test_deeply_nested_chunking_json_is_a_400_not_a_crash(nested):
    assert refused(("chunking_strategy", nested)).param == "chunking_strategy"


def test_hotwords_have_the_limits_of_keywords():
    many = ",".join(f"t{i}" for i in range(101))
    assert refused(("hotwords", many)).param == "hotwords"
    assert refused(("hotwords", "가" * 10_000)).param == "hotwords"
    # the limit holds for both together, whichever field comes last
    half = [("keywords[]", f"k{i}") for i in range(60)]
    assert refused(("hotwords", ",".join(f"h{i}" for i in range(60))), *half).param == "keywords"
    assert (
        len(fields(("hotwords", "a,,b, "), ("keywords[]", ""), ("keywords[]", "c")).bias_terms) == 3
    )


@pytest.mark.parametrize(
    "given, told",
    [
        ("AUTO", "auto"),
        ("Auto", "auto"),
        ("KO", "ko"),
        ("ko-KR", "ko"),
        ("ko_KR", "ko"),
        (" en ", "en"),
    ],
)
def test_language_as_clients_write_it(given, told):
    assert fields(("language", given)).language == told


def test_a_scalar_field_given_twice_is_refused_by_name():
    assert refused(("stream", "false"), ("stream", "true")).param == "stream"
    assert refused(
        ("chunking_strategy[type]", "server_vad"), ("chunking_strategy[type]", "x")
    ).param == ("chunking_strategy[type]")
    twice = FormData([("model", "ko-med"), ("model", "other")])
    with pytest.raises(FieldError, match="given twice"):
        parse_fields(twice, settings())
    assert fields(("include[]", "logprobs"), ("include[]", "logprobs")).logprobs  # lists repeat


# ---------------------------------------------------------------------- responses


def test_a_language_the_model_names_in_its_own_words_is_no_header():
    transcript = Transcript("안녕하세요", "한국어", 3, False, None)
    result = EngineResult(
        transcript, [{"start": 0.0, "end": 1.0, "text": "안녕하세요"}], [transcript]
    )
    request = fields(("language", "auto"))
    response = _response(result, 1.0, request, None)  # UnicodeEncodeError (a 500) before
    assert "content-language" not in response.headers
    transcript.language = "ko"
    assert _response(result, 1.0, request, None).headers["content-language"] == "ko"


# ---------------------------------------------------------------------- refusals


def test_refusals_before_the_app_carry_cors_headers():
    """A browser page reads a 401/411/413 only with CORS headers; the Guard answers those
    before the app (and its CORS middleware) sees the request."""
    from starlette.testclient import TestClient

    def never_loads():
        raise RuntimeError("no model in this test")

    app = build_app(
        settings(api_key="secret", cors_origins=("https://emr.example.org",)), never_loads
    )
    origin = {"Origin": "https://emr.example.org"}
    with TestClient(app) as client:
        url = "/v1/audio/transcriptions"
        answer = client.post(url, headers=origin, files={"file": ("a.wav", b"x")})
        assert answer.status_code == 401
        assert answer.headers["access-control-allow-origin"] == "https://emr.example.org"
        assert answer.json()["error"]["code"] == "invalid_api_key"
        evil = client.get("/v1/models", headers={"Origin": "https://evil.example"})
        assert evil.status_code == 401 and "access-control-allow-origin" not in evil.headers
        preflight = client.options(url, headers={**origin, "Access-Control-Request-Method": "POST"})
        assert preflight.status_code == 200
        keyed = {**origin, "Authorization": "Bearer secret"}
        assert client.get("/v1/models/ko-med", headers=keyed).status_code == 200
        assert app.state.voxadapt.settings.api_key == "secret"  # tools still reach the app


# ------------------------------------------------------------------------- adapters


@pytest.mark.parametrize("spec", ["a=", "="])
def test_an_adapter_spec_without_a_folder_is_refused(spec):
    # "a=" was the folder "." (the working directory), served as adapter "a"
    with pytest.raises(ConfigError, match="NAME=DIR"):
        ServeConfig(adapter=[spec])


# --------------------------------------------------------------------------- engine


class _NoModel:
    prompts = None


def test_a_job_submitted_while_the_server_stops_is_refused_not_lost(monkeypatch):
    """A long recording is segmented between submit's stop check and its queueing; a stop
    in between put the job behind the stop mark, where no worker took it (a hung client)."""
    segmenting, release = threading.Event(), threading.Event()

    def slow_split(items, options, vad=None):
        segmenting.set()
        release.wait(30)
        return list(items), {}

    monkeypatch.setattr(engine_module, "split_long_form", slow_split)
    engine = BatchingEngine(
        _NoModel(), DecodeOptions(num_workers=0), max_batch=1, max_wait_ms=0, max_queue=2
    )
    job = Job(AudioItem("late", "late.wav", 1.0), (), 0.0)
    outcome = []

    def submit() -> None:
        try:
            outcome.append(engine.submit(job))
        except EngineStopped as exc:
            outcome.append(exc)

    thread = threading.Thread(target=submit)
    thread.start()
    assert segmenting.wait(30)
    engine.close(10)
    release.set()
    thread.join(30)
    assert isinstance(outcome[0], EngineStopped) or outcome[0].done()
    assert engine.depth() == 0


# ------------------------------------------------------------------------ containers


def _encode_webm(path: Path, samples: np.ndarray, video_s: float = 0.0) -> None:
    """Opus at 48 kHz in WebM from mono 16 kHz `samples`, with a black video track of
    `video_s` seconds when that is not 0."""
    import soxr

    planes = soxr.resample(samples, 16000, 48000).astype(np.float32)[None]
    with av.open(str(path), "w", format="webm") as container:
        video = None
        if video_s:
            video = container.add_stream("libvpx", rate=10)
            video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        audio = container.add_stream("libopus", rate=48000, layout="mono")
        for start in range(0, planes.shape[1], 960):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(planes[:, start : start + 960]), "fltp", "mono"
            )
            frame.rate, frame.pts = 48000, start
            for packet in audio.encode(frame):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)
        for index in range(round(video_s * 10)):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            frame.pts = index
            for packet in video.encode(frame):
                container.mux(packet)
        if video is not None:
            for packet in video.encode():
                container.mux(packet)


def _forge_duration(path: Path, seconds: float) -> None:
    """Overwrite the Matroska Duration element (ID 0x4489, a float in milliseconds)."""
    data = bytearray(path.read_bytes())
    at = data.find(b"\x44\x89")
    size = data[at + 2] & 0x7F
    form = ">d" if size == 8 else ">f"
    data[at + 3 : at + 3 + size] = struct.pack(form, seconds * 1000)
    path.write_bytes(data)


def test_a_forged_short_duration_does_not_let_hours_through(tmp_path, speech):
    samples, rate = speech
    path = tmp_path / "forged.webm"
    _encode_webm(path, fit_duration(samples, rate, 20.0))
    _forge_duration(path, 1.0)
    assert probe_audio(path).duration == pytest.approx(1.0)  # what a server checks its limit on
    with pytest.raises(AudioError, match="more audio than its container states") as caught:
        load_audio(path)  # decoded all 20 s (hours, for a forged file) before
    assert caught.value.reason == "unreadable_audio"
    with pytest.raises(AudioError, match="more audio"):
        sum(len(block) for block, _ in read_blocks(path, 5.0))


def test_a_video_track_longer_than_the_sound_is_not_its_length(tmp_path, speech):
    samples, rate = speech
    path = tmp_path / "clip.webm"
    _encode_webm(path, samples[:rate], video_s=10.0)
    info = probe_audio(path)  # 10 s (the video's) before
    assert info.duration == pytest.approx(1.0, abs=0.05)
    assert len(load_audio(path)) == pytest.approx(16000, abs=800)


# ------------------------------------------------------------------------- a server


@pytest.mark.slow
def test_concurrent_streams_and_answers_equal_sequential_ones(tiny_model):
    import concurrent.futures

    from test_serve import Running, config

    from conftest import CLIPS

    running = Running(
        config(tiny_model, decode=DecodeOptions(max_new_tokens=12, num_workers=0), max_batch=4)
    )
    try:
        running.wait_ready()
        client = running.client()

        def plain(clip: Path) -> str:
            with clip.open("rb") as audio:
                return client.audio.transcriptions.create(model="ko-med", file=audio).text

        def streamed(clip: Path) -> tuple[str, str]:
            with clip.open("rb") as audio:
                events = list(
                    client.audio.transcriptions.create(model="ko-med", file=audio, stream=True)
                )
            deltas = "".join(e.delta for e in events if e.type == "transcript.text.delta")
            return deltas, events[-1].text

        expected = [plain(clip) for clip in CLIPS]
        with concurrent.futures.ThreadPoolExecutor(2 * len(CLIPS)) as pool:
            texts = pool.map(plain, CLIPS)
            streams = pool.map(streamed, CLIPS)
            assert list(texts) == expected
            assert list(streams) == [(text, text) for text in expected]
        deadline = time.monotonic() + 30
        while any(running.state.uploads.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(running.state.uploads.iterdir())
        assert running.state.engine.depth() == 0
    finally:
        running.stop()


# ------------------------------------------------- issue 29: the server under attack


@pytest.fixture(scope="module")
def keyless(tiny_model):
    from test_serve import Running, config

    running = Running(
        config(tiny_model, decode=DecodeOptions(language="en", max_new_tokens=4, num_workers=0))
    )
    running.wait_ready()
    yield running
    running.stop()


def raw(url: str, method: str = "GET", headers: dict | None = None, body: bytes | None = None):
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_a_keyless_loopback_server_answers_only_to_its_own_names(keyless):
    """DNS rebinding: a page on evil.example that resolves its name to 127.0.0.1 sends
    `Host: evil.example`; the server refuses it and answers its loopback names."""
    assert raw(f"{keyless.url}/health", headers={"Host": "evil.example:8000"})[0] == 421
    assert raw(f"{keyless.url}/v1/models", headers={"Host": "evil.example"})[0] == 421
    port = keyless.url.rsplit(":", 1)[1]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "LOCALHOST"):
        assert raw(f"{keyless.url}/health", headers={"Host": host})[0] == 200


def test_correct_clients_are_not_refused(keyless):
    from test_serve import multipart

    assert raw(f"{keyless.url}/health", method="HEAD")[0] == 200
    body, content_type = multipart({"model": "ko-med"}, CLIPS_0())
    status, headers, _ = raw(
        f"{keyless.url}/v1/audio/transcriptions",
        "POST",
        {"Content-Type": content_type.replace("multipart/form-data", "Multipart/Form-Data")},
        body,
    )
    # media types are case-insensitive; the server's --language en is the default
    assert status == 200 and headers["content-language"] == "en"


def test_a_forged_log_line_is_escaped(keyless, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="voxadapt.access")
    raw(f"{keyless.url}/x%0aGET%20/v1/models%20200")
    lines = access_lines(caplog, "\\x0a")
    assert any("\\x0a" in line for line in lines)
    assert not any(line.startswith("GET /v1/models 200") for line in lines)


@pytest.mark.parametrize(
    "written, sent",
    [
        ("s3cret\r\n", "Bearer s3cret"),  # CRLF from a Windows editor
        ("\ufeffs3cret\n", "Bearer s3cret"),  # a byte-order mark
        ("s3cret", "bearer s3cret"),  # the scheme is case-insensitive
        ("비밀키-7", "Bearer 비밀키-7"),  # a non-ASCII key, sent as UTF-8
    ],
)
def test_api_keys_as_people_write_and_send_them(tmp_path, written, sent):
    from voxadapt.serving.app import _check_auth
    from voxadapt.stages.serve import _api_key

    key_file = tmp_path / "key"
    key_file.write_bytes(written.encode("utf-8"))
    key = _api_key(key_file)

    def sending(header: bytes):
        scope = {"type": "http", "method": "GET", "path": "/v1/models", "headers": []}
        scope["headers"] = [(b"authorization", header)]
        return Request(scope)

    _check_auth(sending(sent.encode("utf-8")), key)  # no 401
    with pytest.raises(Exception, match="API key"):
        _check_auth(sending(b"Bearer wrong"), key)


def test_opening_the_server_beyond_this_machine_needs_a_key(tmp_path):
    with pytest.raises(ConfigError, match="without an API key"):
        ServeConfig(host="0.0.0.0")
    assert ServeConfig(host="0.0.0.0", insecure=True).insecure
    key = tmp_path / "key"
    key.write_text("k")
    ServeConfig(host="0.0.0.0", api_key_file=key)
    with pytest.raises(ConfigError, match="manifest"):
        ServeConfig(decode=DecodeOptions(language="manifest"))


@pytest.mark.slow
def test_a_model_that_cannot_load_ends_the_server_with_one_line(tiny_model, tmp_path):
    import os
    import shutil
    import socket
    import subprocess
    import sys

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    for weights in broken.glob("*.safetensors"):
        weights.write_bytes(b"not weights")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "voxadapt.cli",
            "serve",
            "--model",
            str(broken),
            "--port",
            str(port),
            "--quantization",
            "none",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "the model could not be loaded" in result.stderr


def CLIPS_0() -> Path:
    from conftest import CLIPS

    return CLIPS[0]
