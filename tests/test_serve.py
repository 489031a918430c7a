"""voxadapt serve on the tiny model: the official `openai` client, curl-style raw requests,
limits, auth, concurrency, graceful shutdown and the page in headless Chromium. Every server
binds 127.0.0.1 and every load is bounded."""

import concurrent.futures
import io
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voxadapt.decoding import DecodeOptions
from voxadapt.stages.serve import ServeConfig, build_server, uvicorn_config
from voxadapt.stages.transcribe import TranscribeConfig, transcribe

from conftest import CLIPS, access_lines

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

FAST = DecodeOptions(max_new_tokens=6, num_workers=0)
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Running:
    """A server in this process (a thread), stopped when the test module ends."""

    def __init__(self, config: ServeConfig, app=None) -> None:
        self.app = app or build_server(config)[0]
        self.url = f"http://127.0.0.1:{config.port}"
        self.server = uvicorn.Server(uvicorn_config(self.app, config))  # as `serve` runs it
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        self.state = self.app.state.voxadapt

    def wait_ready(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.1)
        raise TimeoutError("the server did not become ready")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)

    def client(self, key: str = "none") -> "openai.OpenAI":
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=120)


def config(tiny_model, **changes) -> ServeConfig:
    base = dict(
        model=str(tiny_model),
        quantization="none",
        port=free_port(),
        served_model_name="ko-med",
        decode=FAST,
        max_wait_ms=50,
    )
    base.update(changes)
    return ServeConfig(**base)


@pytest.fixture(scope="module")
def server(tiny_model):
    running = Running(config(tiny_model))
    running.wait_ready()
    yield running
    running.stop()


def transcribed(tiny_model, path: Path, **decode) -> dict:
    options = DecodeOptions(**{**FAST.__dict__, **decode})
    result = transcribe(
        TranscribeConfig(inputs=[path], model=str(tiny_model), quantization="none", decode=options)
    )
    return result.rows[0]


def multipart(fields: dict, file: Path | bytes | None) -> tuple[bytes, str]:
    """A multipart/form-data body as curl -F builds it, and its Content-Type."""
    boundary = "voxadaptboundary"
    body = io.BytesIO()
    for name, value in fields.items():
        for item in value if isinstance(value, list) else [value]:
            head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            body.write(head.encode())
            body.write(f"{item}\r\n".encode() if isinstance(item, str) else item)
    if file is not None:
        data = file.read_bytes() if isinstance(file, Path) else file
        body.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n".encode()
        )
        body.write(data + b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    return body.getvalue(), f"multipart/form-data; boundary={boundary}"


def post(url: str, fields: dict, file: Path | bytes | None, headers: dict | None = None):
    """A raw multipart POST, as curl -F sends it: (status, headers, body bytes)."""
    body, content_type = multipart(fields, file)
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": content_type, **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            headers = {k.lower(): v for k, v in response.headers.items()}
            return response.status, headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


# ------------------------------------------------------------------- the openai client


def test_every_response_format_through_the_openai_client(server, tiny_model):
    client = server.client()
    clip = CLIPS[0]
    expected = transcribed(tiny_model, clip)
    with clip.open("rb") as audio:
        plain = client.audio.transcriptions.create(model="ko-med", file=audio)
    assert plain.text == expected["text"]
    with clip.open("rb") as audio:
        text = client.audio.transcriptions.create(
            model="ko-med", file=audio, response_format="text"
        )
    assert text == expected["text"]
    with clip.open("rb") as audio:
        verbose = client.audio.transcriptions.create(
            model="ko-med",
            file=audio,
            response_format="verbose_json",
            timestamp_granularities=["segment"],
            language="ko",
        )
    assert (verbose.text, verbose.language) == (expected["text"], "ko")
    assert verbose.duration == pytest.approx(expected["duration"], abs=1e-3)
    assert [(s.id, s.start, s.text) for s in verbose.segments] == [(0, 0.0, expected["text"])]
    for fmt, marker in (("srt", "00:00:00,000 --> "), ("vtt", "WEBVTT")):
        with clip.open("rb") as audio:
            cues = client.audio.transcriptions.create(
                model="ko-med", file=audio, response_format=fmt
            )
        assert marker in cues and expected["text"] in cues
    listed = client.models.list()
    assert [m.id for m in listed.data] == ["ko-med"]


def test_long_recordings_get_the_same_segments_as_transcribe(server, tiny_model, tmp_path):
    parts = []
    for clip in CLIPS * 3:
        samples, rate = sf.read(clip, dtype="float32")
        parts += [np.zeros(int(1.4 * rate), dtype=np.float32), samples]
    long = tmp_path / "consult.wav"
    sf.write(long, np.concatenate(parts), rate)
    expected = transcribed(tiny_model, long)
    with long.open("rb") as audio:
        verbose = server.client().audio.transcriptions.create(
            model="ko-med", file=audio, response_format="verbose_json"
        )
    assert len(verbose.segments) == len(expected["segments"]) > 1
    assert [(s.start, s.end, s.text) for s in verbose.segments] == [
        (s["start"], s["end"], s["text"]) for s in expected["segments"]
    ]
    assert verbose.text == expected["text"]


def test_concurrent_requests_equal_sequential_ones(server):
    client = server.client()

    def ask(clip):
        with clip.open("rb") as audio:
            return client.audio.transcriptions.create(model="ko-med", file=audio).text

    sequential = [ask(clip) for clip in CLIPS]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        concurrent_ = list(pool.map(ask, CLIPS * 2))
    assert concurrent_ == sequential * 2
    metrics = urllib.request.urlopen(f"{server.url}/metrics").read().decode()
    batches = [
        line for line in metrics.splitlines() if line.startswith("voxadapt_batch_size_count")
    ]
    sums = [line for line in metrics.splitlines() if line.startswith("voxadapt_batch_size_sum")]
    assert float(sums[0].split()[-1]) > float(batches[0].split()[-1])  # some batches held >1


def test_hotwords_with_weight_zero_change_nothing(server):
    status, _, body = post(
        f"{server.url}/v1/audio/transcriptions",
        {"model": "ko-med", "hotwords": "고혈압,CT|씨티", "bias_weight": "0"},
        CLIPS[1],
    )
    plain = post(f"{server.url}/v1/audio/transcriptions", {"model": "ko-med"}, CLIPS[1])
    assert status == plain[0] == 200
    assert json.loads(body)["text"] == json.loads(plain[2])["text"]
    status, _, body = post(
        f"{server.url}/v1/audio/transcriptions",
        {"model": "ko-med", "hotwords": "고혈압", "bias_weight": "100"},
        CLIPS[1],
    )
    assert status == 200 and "고혈압" in json.loads(body)["text"]  # the hotword reached it
    with CLIPS[1].open("rb") as audio:  # the openai client's way: extra_body
        unbiased = server.client().audio.transcriptions.create(
            model="ko-med", file=audio, extra_body={"hotwords": "고혈압,CT|씨티", "bias_weight": 0}
        )
    assert unbiased.text == json.loads(plain[2])["text"]


# ------------------------------------------------------------------------------ limits


def error_of(status_body):
    status, headers, body = status_body
    return status, json.loads(body)["error"], headers


@pytest.mark.parametrize(
    ("fields", "file", "status", "param"),
    [
        ({"model": "other"}, CLIPS[0], 404, "model"),
        ({"model": "ko-med", "temperature": "0.7"}, CLIPS[0], 400, "temperature"),
        (
            {"model": "ko-med", "timestamp_granularities[]": ["segment", "word"]},
            CLIPS[0],
            400,
            "timestamp_granularities",
        ),
        ({"model": "ko-med", "response_format": "xml"}, CLIPS[0], 400, "response_format"),
        ({"model": "ko-med", "language": "korean"}, CLIPS[0], 400, "language"),
        ({"model": "ko-med", "bias_weight": "1e39"}, CLIPS[0], 400, "bias_weight"),
        ({"model": "ko-med"}, b"RIFF not really audio", 400, "file"),
        ({"model": "ko-med"}, None, 400, "file"),
        ({}, CLIPS[0], 400, "model"),
    ],
)
def test_bad_requests_get_openai_shaped_errors(server, fields, file, status, param):
    got, error, _ = error_of(post(f"{server.url}/v1/audio/transcriptions", fields, file))
    assert (got, error["param"]) == (status, param)
    assert error["message"] and error["type"]


def test_the_openai_client_sees_404_for_another_model(server):
    with CLIPS[0].open("rb") as audio, pytest.raises(openai.NotFoundError):
        server.client().audio.transcriptions.create(model="whisper-1", file=audio)


def test_size_duration_and_queue_limits(tiny_model, tmp_path):
    limits = dict(max_upload_mb=0.25, max_audio_s=8.0, max_queue=1, max_batch=1)
    running = Running(config(tiny_model, **limits))
    try:
        running.wait_ready()
        url = f"{running.url}/v1/audio/transcriptions"
        big = np.zeros(16000 * 9, dtype=np.float32)  # 288 kB as 16-bit
        buffer = io.BytesIO()
        sf.write(buffer, big, 16000, format="WAV")
        status, error, _ = error_of(post(url, {"model": "ko-med"}, buffer.getvalue()))
        assert (status, error["code"]) == (413, "file_too_large")
        small = io.BytesIO()
        sf.write(small, np.zeros(8000 * 9, dtype=np.float32), 8000, format="WAV", subtype="PCM_U8")
        status, error, _ = error_of(post(url, {"model": "ko-med"}, small.getvalue()))
        assert (status, error["code"]) == (413, "audio_too_long")
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda _: post(url, {"model": "ko-med"}, CLIPS[3]), range(6)))
        statuses = sorted(a[0] for a in answers)
        assert 503 in statuses and 200 in statuses and set(statuses) <= {200, 503}
        busy = next(a for a in answers if a[0] == 503)
        assert busy[1].get("retry-after") == "1"
        assert not any(running.state.uploads.iterdir())  # nothing of any request remains
    finally:
        running.stop()


def test_health_is_503_until_the_model_answers(tiny_model):
    from voxadapt.serving.app import ServerSettings, build_app

    gate = threading.Event()
    cfg = config(tiny_model)

    def load_when_allowed():
        gate.wait(120)
        return cfg.load_transcriber()

    settings = ServerSettings("ko-med", FAST, 4, 10.0, 8, 2**24, 600.0, None, [])
    running = Running(cfg, build_app(settings, load_when_allowed))
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{running.url}/health", timeout=5)
            except urllib.error.HTTPError as error:
                assert error.code == 503 and json.loads(error.read())["status"] == "loading"
                break
            except urllib.error.URLError:
                time.sleep(0.1)
        else:
            pytest.fail("the server never answered")
        status, headers, _ = post(
            f"{running.url}/v1/audio/transcriptions", {"model": "ko-med"}, CLIPS[0]
        )
        assert status == 503 and headers.get("retry-after")
        gate.set()
        running.wait_ready()
        assert (
            post(f"{running.url}/v1/audio/transcriptions", {"model": "ko-med"}, CLIPS[0])[0] == 200
        )
    finally:
        gate.set()
        running.stop()


def test_auth_and_nothing_of_a_request_in_the_logs(tiny_model, tmp_path, caplog):
    key = tmp_path / "key"
    key.write_text("s3cret-key\n")
    caplog.set_level(logging.INFO, logger="voxadapt.access")
    running = Running(config(tiny_model, api_key_file=key))
    try:
        running.wait_ready()  # /health needs no key
        url = f"{running.url}/v1/audio/transcriptions"
        assert post(url, {"model": "ko-med"}, CLIPS[0])[0] == 401
        assert post(url, {"model": "ko-med"}, CLIPS[0], {"Authorization": "Bearer nope"})[0] == 401
        for path in ("/v1/models", "/v1/models/ko-med", "/metrics"):
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(f"{running.url}{path}")
            assert info.value.code == 401
        # the page opens without the key (it is typed on the page and sent as a header)
        with urllib.request.urlopen(f"{running.url}/") as page:
            assert page.status == 200 and "s3cret" not in page.read().decode()
        with CLIPS[0].open("rb") as audio:
            text = (
                running.client("s3cret-key")
                .audio.transcriptions.create(model="ko-med", file=audio)
                .text
            )
        logged = "\n".join(access_lines(caplog, "POST /v1/audio/transcriptions 200"))
        assert "POST /v1/audio/transcriptions 200" in logged
        assert "POST /v1/audio/transcriptions 401" in logged
        assert CLIPS[0].name not in logged and (not text or text not in logged)
        assert not any(running.state.uploads.iterdir())
    finally:
        running.stop()


# --------------------------------------------------------------------- the whole stage


@pytest.mark.slow
def test_sigterm_finishes_the_requests_in_flight_and_exits_0(tiny_model, tmp_path):
    port = free_port()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "voxadapt.cli", "serve", "--model", str(tiny_model)),
            *("--quantization", "none", "--port", str(port), "--max-new-tokens", "30"),
            *("--served-model-name", "ko-med", "--grace-s", "60"),
        ],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if urllib.request.urlopen(f"{url}/health", timeout=5).status == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            pending = [
                pool.submit(post, f"{url}/v1/audio/transcriptions", {"model": "ko-med"}, clip)
                for clip in CLIPS[:2]
            ]
            time.sleep(0.5)  # the requests are in flight
            process.send_signal(signal.SIGTERM)
            answers = [future.result(timeout=120) for future in pending]
        assert [a[0] for a in answers] == [200, 200]
        assert process.wait(timeout=120) == 0, process.stderr.read()[-2000:]
        assert "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _closed_answer(connection: socket.socket) -> bytes:
    """Everything the server sent on `connection` until it closed it."""
    received = b""
    try:
        while chunk := connection.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


@pytest.mark.slow
@pytest.mark.parametrize(
    "stop, code", [(signal.SIGTERM, 0), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"]
)
def test_a_stop_with_an_upload_and_a_decode_in_flight_is_clean(tiny_model, tmp_path, stop, code):
    """Stopped with half an upload received and a decode running, the server printed
    tracebacks, aborted (exit -6, its decoding thread killed) or left its uploads folder.
    Now both end within --grace-s (the upload cut, the decode cancelled: 503), the folder
    goes, and the exit is SIGTERM's 0 or Ctrl-C's 130."""
    temp = tmp_path / "tmp"  # where the server makes its uploads folder
    temp.mkdir()
    port = free_port()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "voxadapt.cli", "serve", "--model", str(tiny_model)),
            *("--quantization", "none", "--port", str(port), "--served-model-name", "ko-med"),
            *("--max-new-tokens", "3000", "--min-new-tokens", "3000", "--grace-s", "2"),
        ],
        env={**ENV, "TMPDIR": str(temp)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).status:
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        uploads = next(temp.glob("voxadapt-serve-*"))
        body, content_type = multipart({"model": "ko-med"}, CLIPS[0])
        head = (
            f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        uploading = socket.create_connection(("127.0.0.1", port), timeout=60)
        uploading.sendall(head + body[: len(body) // 2])  # and no more: an upload in flight
        decoding = socket.create_connection(("127.0.0.1", port), timeout=60)
        decoding.sendall(head + body)
        deadline = time.monotonic() + 60
        while not any(uploads.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)  # the whole upload is saved: it is probed, then decoded
        time.sleep(0.5)
        process.send_signal(stop)
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == code, stderr[-2000:]
        assert "Traceback" not in stderr and "Exception" not in stderr, stderr[-2000:]
        assert not uploads.exists()
        with decoding, uploading:
            assert _closed_answer(decoding).startswith(b"HTTP/1.1 503 ")
            assert _closed_answer(uploading) == b""  # cut: its client sees the close
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_missing_extra_or_a_taken_port_is_one_line_before_the_model_loads(tiny_model):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                *(sys.executable, "-m", "voxadapt.cli", "serve", "--model", str(tiny_model)),
                *("--port", str(port), "--quantization", "none"),
            ],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_fields_shared_with_openai_and_vllm_mean_the_same(server):
    """Every request field of OpenAI's transcription API that a non-streaming client sends
    is accepted under the same name, and every response field we send has OpenAI's name."""
    from openai.types.audio import TranscriptionSegment, TranscriptionVerbose
    from openai.types.audio.transcription_create_params import TranscriptionCreateParamsBase

    shared = {"file", "model", "language", "prompt", "response_format", "temperature"}
    assert shared | {"timestamp_granularities"} <= set(
        TranscriptionCreateParamsBase.__annotations__
    )
    fields = {"model": "ko-med", "language": "ko", "prompt": "", "temperature": "0"}
    fields["response_format"] = "verbose_json"
    status, _, body = post(f"{server.url}/v1/audio/transcriptions", fields, CLIPS[0])
    assert status == 200
    verbose = json.loads(body)
    assert set(verbose) - {"task"} <= set(TranscriptionVerbose.model_fields)
    assert set(verbose["segments"][0]) <= set(TranscriptionSegment.model_fields)
    # Voxtral takes no context prompt: a real one is refused, never ignored
    status, _, body = post(
        f"{server.url}/v1/audio/transcriptions", {**fields, "prompt": "진료 기록"}, CLIPS[0]
    )
    assert status == 400 and json.loads(body)["error"]["param"] == "prompt"


def test_the_page_transcribes_a_clip_in_headless_chromium(server, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("needs headless Chromium (installed by .ci/run)")
    sync_api = pytest.importorskip("playwright.sync_api")
    expected = post(f"{server.url}/v1/audio/transcriptions", {"model": "ko-med"}, CLIPS[0])
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page()
            page.goto(server.url)
            page.set_input_files("#file", str(CLIPS[0]))
            page.click("#send")
            page.wait_for_selector("#segments:not([hidden])", timeout=120_000)
            assert page.inner_text("#transcript") == json.loads(expected[2])["text"]
            assert page.locator("#segments tbody tr").count() == 1
            with page.expect_download() as download:
                page.click("#srt")
            saved = tmp_path / "out.srt"
            download.value.save_as(saved)
            assert "00:00:00,000 -->" in saved.read_text()
        finally:
            browser.close()


def test_curl_as_the_readme_shows_it(server):
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("needs curl")
    result = subprocess.run(
        [
            *(curl, "-sS", f"{server.url}/v1/audio/transcriptions", "-F", "model=ko-med"),
            *("-F", f"file=@{CLIPS[2]}", "-F", "response_format=srt", "-F", "hotwords=고혈압"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and result.stdout.startswith("1\n00:00:00,000 --> 00:00:05")


def test_a_client_that_disconnects_leaves_the_queue(tiny_model, tmp_path):
    """With the engine busy on a long request, a queued request whose client hangs up is
    never decoded: the batches counted are the long request's and the next one's only."""
    parts = []
    for clip in CLIPS * 2:
        samples, rate = sf.read(clip, dtype="float32")
        parts += [np.zeros(int(1.4 * rate), dtype=np.float32), samples]
    long = tmp_path / "long.wav"
    sf.write(long, np.concatenate(parts), rate)
    running = Running(config(tiny_model, max_batch=1, decode=DecodeOptions(num_workers=0)))
    try:
        running.wait_ready()
        url = f"{running.url}/v1/audio/transcriptions"
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            busy = pool.submit(post, url, {"model": "ko-med"}, long)
            time.sleep(1.0)  # the long request is decoding, one segment per batch
            payload, content_type = multipart({"model": "ko-med"}, CLIPS[0])
            port = int(running.url.rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port)) as hanging_up:
                hanging_up.sendall(
                    b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\n"
                    + f"Content-Type: {content_type}\r\n".encode()
                    + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
                time.sleep(0.5)  # queued behind the long request; then the client hangs up
            assert busy.result(timeout=300)[0] == 200
        assert post(url, {"model": "ko-med"}, CLIPS[1])[0] == 200
        metrics = urllib.request.urlopen(f"{running.url}/metrics").read().decode()
        counts = {
            line.split()[0]: float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("voxadapt_batch_size_")
        }
        long_segments = len(transcribed(tiny_model, long, num_workers=0)["segments"])
        # decoded: the long request's segments and the next request's clip, not the one
        # whose client hung up
        assert counts["voxadapt_batch_size_sum"] == long_segments + 1
        assert counts["voxadapt_batch_size_count"] == 2
    finally:
        running.stop()


def test_odd_requests_get_openai_shaped_errors_and_are_counted(server):
    url = f"{server.url}/v1/audio/transcriptions"
    for path, method, status in (
        ("/v1/nope", "GET", 404),
        ("/v1/audio/transcriptions", "GET", 405),
    ):
        request = urllib.request.Request(f"{server.url}{path}", method=method)
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request)
        assert info.value.code == status and "error" in json.loads(info.value.read())
    body, content_type = multipart({"model": "ko-med"}, None)
    body = body.replace(b"--voxadaptboundary--\r\n", b"")
    named = body + (
        b'--voxadaptboundary\r\nContent-Disposition: form-data; name="file"; filename="a.\x00"'
        b"\r\n\r\n" + CLIPS[0].read_bytes() + b"\r\n--voxadaptboundary--\r\n"
    )
    request = urllib.request.Request(url, data=named, headers={"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=120) as response:  # a NUL in the file name
        assert response.status == 200
    json_body = urllib.request.Request(
        url, data=b'{"model": "ko-med"}', headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(json_body)
    assert (
        info.value.code == 400 and "multipart" in json.loads(info.value.read())["error"]["message"]
    )
    metrics = urllib.request.urlopen(f"{server.url}/metrics").read().decode()
    assert 'voxadapt_requests_total{status="400"}' in metrics


def test_a_lock_with_an_impossible_pid_is_taken_over(tmp_path):
    from voxadapt.outputs import LOCK, claim_outputs

    (tmp_path / LOCK).write_text(json.dumps({"pid": 2**70, "host": socket.gethostname()}))
    with claim_outputs("prepare", tmp_path, names=["train.jsonl"]):
        assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
