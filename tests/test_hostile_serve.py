"""`voxadapt serve` and the container loader against hostile clients and forged files: each
test is a failure found by attacking them. Field parsing, refusals and the loader are tested
without a model; the one server test binds 127.0.0.1 and every load is bounded."""

import contextlib
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
    from voxadapt.serving.guards import check_auth as _check_auth
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


# ---------------------------------------------- operations round: slow and large clients

HEADER_TIMEOUT_S = BODY_TIMEOUT_S = 1.0
MARGIN_S = 5.0  # a loaded CI machine; the bug held a connection ~77 s


@pytest.fixture(scope="module")
def limited():
    """The server's connections as `serve` runs them (short timeouts), in front of an app
    without a model: the limits act before any request reaches it."""
    import socket

    import uvicorn

    from voxadapt.serving.connections import server_config

    def never_loads():
        raise RuntimeError("no model in this test")

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = build_app(settings(), never_loads)
    server = uvicorn.Server(
        server_config(
            app,
            host="127.0.0.1",
            port=port,
            grace_s=1,
            header_timeout_s=HEADER_TIMEOUT_S,
            body_timeout_s=BODY_TIMEOUT_S,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(30)


def _connect(port: int):
    import socket

    connection = socket.create_connection(("127.0.0.1", port), timeout=10)
    return connection


def _answer(connection) -> bytes:
    """What the server sent before closing (b"" when it closed without a word)."""
    received = b""
    try:
        while chunk := connection.recv(65536):
            received += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return received


def _ended_within(connection, send_every_s: float, piece: bytes, limit_s: float) -> float:
    """Send `piece` every `send_every_s` until the server ends the connection; the seconds
    that took (at most `limit_s`: then the test fails)."""
    import select

    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        try:
            if piece:
                connection.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - started
        readable, _, _ = select.select([connection], [], [], send_every_s)
        if readable:
            return time.monotonic() - started
    raise AssertionError(f"the connection was still open after {limit_s} s")


@pytest.mark.parametrize("piece", [b"X-Slow: 1\r\n", b""], ids=["trickling", "silent"])
def test_a_client_that_trickles_its_headers_is_cut_off(limited, piece):
    """Slowloris: a header line every 0.2 s kept a connection open ~77 s; now the head must
    arrive whole within --header-timeout-s."""
    connection = _connect(limited)
    with connection:
        connection.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        took = _ended_within(connection, 0.2, piece, HEADER_TIMEOUT_S + MARGIN_S)
        assert took >= HEADER_TIMEOUT_S * 0.9
        assert _answer(connection).startswith(b"HTTP/1.1 408 ")


@pytest.mark.parametrize("size", [2_000_000, 100_000])
def test_a_huge_header_block_is_refused(limited, size):
    """2 MB of headers were read and parsed; a head over 64 KiB is now a 431 (from h11's
    bounded buffer, or from the Guard for a head that arrived in one read)."""
    pad = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(size // 1000))
    connection = _connect(limited)
    with connection:
        # refused while sending: closed is a refusal too
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n" + pad + b"\r\n")
        answer = _answer(connection)
    assert answer.startswith(b"HTTP/1.1 431 ") or answer == b""


def test_a_stalled_upload_is_closed(limited):
    """An upload that stops half-way held its connection (and its request) forever."""
    head = (
        b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n"
    )
    connection = _connect(limited)
    with connection:
        connection.sendall(head + b"--b\r\n")
        took = _ended_within(connection, 0.2, b"", BODY_TIMEOUT_S + MARGIN_S)
        assert took >= BODY_TIMEOUT_S * 0.9


def _status(connection) -> int:
    """The status of the next response on a kept-alive connection (its body read too)."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += connection.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += connection.recv(65536)
    return int(head.split()[1])


def test_clients_within_the_limits_are_answered(limited):
    """A normal request, one with 32 KiB of cookies, and one whose head comes in two parts
    quicker than the timeout, on one kept-alive connection."""
    cookie = b"Cookie: " + b"c" * 32_000 + b"\r\n"
    connection = _connect(limited)
    with connection:
        for head in (b"", cookie):
            connection.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n" + head + b"\r\n")
            assert _status(connection) == 200
        connection.sendall(b"GET /v1/models HTTP/1.1\r\n")
        time.sleep(HEADER_TIMEOUT_S / 3)
        connection.sendall(b"Host: 127.0.0.1\r\n\r\n")
        assert _status(connection) == 200


# ------------------------------------------------------ operations round: the bias cache


class _BytePrompts:
    """A tokenizer of one token per UTF-8 byte: what the bias trie is built from."""

    @staticmethod
    def text_tokens(text: str) -> list[int]:
        return list(text.encode())


class _BytesModel:
    prompts = _BytePrompts()


def test_distinct_large_hotwords_keep_the_bias_cache_within_its_bound():
    """Every distinct `hotwords` made a bias kept until 64 piled up (~1 GB per 5 requests of
    huge terms); the cache is now bounded by the characters of its terms."""
    engine = BatchingEngine(
        _BytesModel(),
        DecodeOptions(num_workers=0),
        max_batch=1,
        max_wait_ms=0,
        max_queue=2,
        max_bias_chars=20_000,
    )

    def request(index: int) -> Job:
        # the most a request may bring: 40 terms of 100 characters, distinct per request
        hotwords = ",".join(f"{index:03d}{term:02d}" + "가" * 95 for term in range(40))
        return Job(
            AudioItem(f"r{index}", "r.wav", 1.0), fields(("hotwords", hotwords)).bias_terms, 5.0
        )

    try:
        built = []
        for index in range(12):
            built.append(engine.bias(request(index)))
            assert 0 < engine.bias_chars <= engine.max_bias_chars
        assert engine.bias_chars == 5 * 4000  # the five most recent requests' terms
        assert engine.bias(request(11)) is built[11]  # a recent one is reused
        assert engine.bias(request(0)) is not built[0]  # the oldest went first
        assert engine.bias_chars == 5 * 4000
    finally:
        engine.close(10)


def test_hotwords_are_bounded_in_characters():
    assert refused(("hotwords", "가" * 101)).param == "hotwords"
    assert len(fields(("hotwords", ",".join(["가" * 100] * 40))).bias_terms) == 40  # 4000
    over = [("keywords[]", "나" * 100) for _ in range(40)]
    assert refused(("hotwords", "가" * 5), *over).param == "keywords"
    assert "4000 characters" in refused(("hotwords", "가" * 5), *over).message
