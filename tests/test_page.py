"""The page of `voxadapt serve` (GET /) in real headless Chromium, on the tiny model: a result
never outlives the recording that produced it, the API key typed on the page, microphone
recording, a reverse proxy at a sub-path, a phone-width screen. Every server and the proxy
bind 127.0.0.1 and stop when their test ends."""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_serve import Running, config, post

from voxadapt.serving.page import PAGE
from voxadapt.stages.serve import ServeConfig, build_server

from conftest import CLIPS

uvicorn = pytest.importorskip("uvicorn")

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_MS = 120_000
URL = "/v1/audio/transcriptions"
HTML = "text/html; charset=utf-8"


# ------------------------------------------------------------------ fixtures and helpers
@pytest.fixture(scope="module")
def server(tiny_model):
    running = Running(config(tiny_model))
    running.wait_ready()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser():
    """One Chromium for the module; its fake microphone plays a committed clip."""
    if not CHROMIUM.exists():
        pytest.skip(f"needs Chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={CLIPS[0]}",
            ],
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def open_page(browser):
    """open_page(url, **context options) -> a page; its context closes with the test."""
    contexts = []

    def opened(url: str, **options):
        context = browser.new_context(**options)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
        return page

    yield opened
    for context in contexts:
        context.close()


def expected_text(url: str, clip: Path, headers: dict | None = None) -> str:
    status, _, body = post(f"{url}{URL}", {"model": "ko-med"}, clip, headers)
    assert status == 200, body
    return json.loads(body)["text"]


def transcribe(page, clip: Path) -> None:
    """Pick `clip`, press Transcribe and wait for the result."""
    page.set_input_files("#file", str(clip))
    page.click("#send")
    page.wait_for_selector("#segments:not([hidden])")


def assert_no_result(page) -> None:
    assert page.inner_text("#transcript") == ""
    assert page.locator("#segments tbody tr").count() == 0
    assert page.is_hidden("#segments") and page.is_hidden("#downloads")


def saved(page, button: str, folder: Path) -> tuple[str, str]:
    """(the suggested file name, the text) of the download `button` starts."""
    with page.expect_download() as download:
        page.click(button)
    path = folder / download.value.suggested_filename
    download.value.save_as(path)
    return download.value.suggested_filename, path.read_text(encoding="utf-8")


def no_sideways_scroll(page) -> bool:
    return page.evaluate(
        "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )


def port_of(running: Running) -> int:
    return int(running.url.rsplit(":", 1)[1])


class RunningAt(Running):
    """Running, with uvicorn told the sub-path a proxy serves it under, as `serve` does."""

    def __init__(self, config: ServeConfig) -> None:
        self.app = build_server(config)[0]
        self.url = f"http://127.0.0.1:{config.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                host="127.0.0.1",
                port=config.port,
                log_level="warning",
                root_path=config.root_path,
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        self.state = self.app.state.voxadapt


# Hop-by-hop headers (RFC 9110 7.6.1) are the proxy's own, never forwarded.
_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding"}
_HOP |= {"upgrade", "content-length"}


class PrefixProxy(http.server.BaseHTTPRequestHandler):
    """nginx's `location /asr/ { proxy_pass http://upstream/; }` in miniature: /asr/* goes to
    the upstream without the prefix, anything else is a 404. One request per connection, a
    bounded body and socket timeouts, so nothing waits forever."""

    timeout = 30  # s, on the client's socket
    upstream_port = 0
    prefix = "/asr"
    max_body = 20 * 2**20

    def forward(self) -> None:
        path = self.path
        if not (path == self.prefix or path.startswith(self.prefix + "/")):
            self.send_error(404, "not under the proxied prefix")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > self.max_body:
            self.send_error(413)
            return
        body = self.rfile.read(length) if length else None
        if body:
            self.bodies.append(body)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        upstream = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=120)
        try:
            upstream.request(self.command, path[len(self.prefix) :] or "/", body, headers)
            answer = upstream.getresponse()
            data = answer.read()
        finally:
            upstream.close()
        self.send_response(answer.status, answer.reason)
        for name, value in answer.getheaders():
            if name.lower() not in _HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_HEAD = forward

    def log_message(self, *args) -> None:  # quiet: pytest shows failures, not traffic
        pass


@contextlib.contextmanager
def proxy_to(upstream_port: int) -> Iterator[SimpleNamespace]:
    """A PrefixProxy on a free loopback port, stopped when the block ends; yields its `url`
    and the request `bodies` it forwarded, as they came over the wire."""
    bodies: list[bytes] = []
    handler = type("Proxy", (PrefixProxy,), {"upstream_port": upstream_port, "bodies": bodies})
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    proxy.daemon_threads = True
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{proxy.server_address[1]}", bodies=bodies)
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join(10)


def rendered(served: str, models: list[str], words: bool = False) -> str:
    """The page as a server with these models serves it."""
    from voxadapt.serving.app import render_page

    settings = SimpleNamespace(served_model=served, models=dict.fromkeys(models), words=words)
    return render_page(settings)


# ------------------------------------------------------------------ without a browser
def test_the_page_reads_its_config_and_no_model_id_can_break_out_of_it():
    served = 'ko</script><script>alert(1)</script><!--{{CONFIG}}"&'
    page = rendered(served, [served])
    blob = re.search(r'<script id="config" type="application/json">(.*?)</script>', page, re.S)
    found = json.loads(blob.group(1))
    assert found["model"] == served and found["models"] == [served]
    assert "<script>alert" not in page and "<!--" not in page
    # one substitution pass: the id's own "{{CONFIG}}" is shown, not replaced
    assert "<title>voxadapt: ko&lt;/script&gt;" in page and "{{CONFIG}}&quot;" in page


def test_the_page_is_self_contained_and_keeps_the_key_out_of_local_storage():
    assert "http://" not in PAGE and "https://" not in PAGE  # no external assets
    assert '"/v1' not in PAGE and "'/v1" not in PAGE  # relative URLs only
    assert "localStorage." not in PAGE


# ------------------------------------------------------------------ in Chromium
@pytest.mark.slow
def test_a_failed_request_clears_the_previous_result(server, open_page, tmp_path):
    page = open_page(server.url)
    transcribe(page, CLIPS[0])
    assert page.inner_text("#transcript") == expected_text(server.url, CLIPS[0])
    assert saved(page, "#srt", tmp_path)[0] == f"{CLIPS[0].stem}.srt"

    # the same recording again, with a language the server refuses: the old result goes
    page.fill("#language", "xx")
    page.click("#send")
    page.wait_for_selector("#status.error")
    assert "xx" in page.inner_text("#status")
    assert_no_result(page)

    page.fill("#language", "ko")
    transcribe(page, CLIPS[0])
    notes = tmp_path / "notes.txt"
    notes.write_text("not audio\n", encoding="utf-8")
    page.set_input_files("#file", str(notes))
    assert_no_result(page)  # a new file: the previous file's transcript is not its own
    page.click("#send")
    page.wait_for_selector("#status.error")
    assert page.inner_text("#status").startswith("Error:")
    assert_no_result(page)


@pytest.mark.slow
def test_the_page_transcribes_with_the_key_typed_into_it(tiny_model, open_page, tmp_path):
    key_file = tmp_path / "api-key"
    key_file.write_text("s3cret-key\n", encoding="utf-8")
    running = Running(config(tiny_model, api_key_file=key_file))
    try:
        running.wait_ready()
        page = open_page(running.url)  # the page itself needs no key
        page.set_input_files("#file", str(CLIPS[1]))
        page.click("#send")
        page.wait_for_selector("#status.error")
        assert "API key" in page.inner_text("#status")

        page.fill("#key", "s3cret-key")
        page.click("#send")
        page.wait_for_selector("#segments:not([hidden])")
        headers = {"Authorization": "Bearer s3cret-key"}
        assert page.inner_text("#transcript") == expected_text(running.url, CLIPS[1], headers)
        assert page.evaluate("localStorage.length") == 0
        page.reload()  # remembered for this tab only
        assert page.input_value("#key") == "s3cret-key"
    finally:
        running.stop()


@pytest.mark.slow
def test_a_recording_from_the_microphone_is_sent_as_webm(server, open_page):
    """Chromium's fake microphone plays a clip into MediaRecorder; the proxy in between shows
    the bytes the page sent (Chromium does not report a blob's bytes to Playwright)."""
    with proxy_to(port_of(server)) as proxy:
        page = open_page(f"{proxy.url}/asr/")
        page.click("#record")
        page.wait_for_function("document.querySelector('#recording').textContent.includes('2 s')")
        page.click("#record")
        page.wait_for_selector("audio#player:not([hidden])")
        assert page.inner_text("#record") == "Record"
        with page.expect_response(lambda answer: answer.url.endswith(URL)) as answered:
            page.click("#send")
        form = proxy.bodies[-1]
    sent = re.search(
        rb'filename="(recording-\d{8}-\d{6}\.webm)"\r\nContent-Type: audio/webm\r\n\r\n', form
    )
    assert sent, form[:400]
    assert form[sent.end() : sent.end() + 4] == b"\x1a\x45\xdf\xa3"  # EBML: WebM's magic
    assert answered.value.status == 200, answered.value.text()
    page.wait_for_selector("#segments:not([hidden])")
    assert page.inner_text("#transcript") == answered.value.json()["text"]
    assert page.inner_text("#status").startswith(sent.group(1).decode())


@pytest.mark.slow
def test_the_page_works_behind_a_proxy_at_a_sub_path(tiny_model, open_page):
    running = RunningAt(config(tiny_model, root_path="/asr"))
    try:
        running.wait_ready()
        expected = expected_text(running.url, CLIPS[2])
        with proxy_to(port_of(running)) as proxy:
            for url in (f"{proxy.url}/asr/", f"{proxy.url}/asr"):  # with and without the slash
                page = open_page(url)
                with page.expect_request(lambda sent: sent.method == "POST") as posted:
                    transcribe(page, CLIPS[2])
                assert posted.value.url == f"{proxy.url}/asr{URL}"
                assert page.inner_text("#transcript") == expected
    finally:
        running.stop()


LONG_TEXT = "환자는 " + "고혈압과 당뇨로 내원하였으며 " * 30 + "Pneumonoultramicroscopic" * 4


def long_answer(duration_s: float) -> dict:
    """A verbose_json answer with long Korean text, an unbroken term and word times."""
    words = LONG_TEXT.split(" ")
    step = duration_s / len(words)
    return {
        "task": "transcribe",
        "language": "ko",
        "duration": duration_s,
        "text": LONG_TEXT,
        "segments": [
            {"id": 0, "start": 0.0, "end": duration_s / 2, "text": "첫 줄\n둘째 줄 --> 끝"},
            {"id": 1, "start": duration_s / 2, "end": duration_s, "text": LONG_TEXT},
        ],
        "words": [
            {"word": word, "start": round(i * step, 3), "end": round((i + 1) * step, 3)}
            for i, word in enumerate(words)
        ],
    }


def answering(answer: dict):
    """A route handler that answers a transcription request with `answer`, as the server."""
    body = json.dumps(answer, ensure_ascii=False)
    return lambda route: route.fulfill(body=body, content_type="application/json")


@pytest.mark.slow
def test_at_380_px_the_page_does_not_scroll_sideways(server, open_page):
    page = open_page(server.url, viewport={"width": 380, "height": 800})
    assert no_sideways_scroll(page)
    transcribe(page, CLIPS[0])
    assert no_sideways_scroll(page)

    page.route(f"**{URL}", answering(long_answer(4.6)))
    page.set_input_files("#file", str(CLIPS[0]))
    page.click("#send")
    page.wait_for_selector("#transcript .word")
    assert page.inner_text("#transcript") == LONG_TEXT
    assert no_sideways_scroll(page)


@pytest.mark.slow
def test_words_seek_the_player_and_downloads_are_one_line_cues(server, open_page, tmp_path):
    """The answer is held back to see the timer count; then each word seeks the player and
    the downloads carry the name of the file that produced them."""
    page = open_page(server.url)
    held = []
    page.route(f"**{URL}", lambda route: held.append(route))
    page.set_input_files("#file", str(CLIPS[3]))
    page.click("#send")
    page.wait_for_function(
        "/^Transcribing ko_004\\.wav… 2 s$/.test(document.querySelector('#status').textContent)"
    )
    assert page.is_disabled("#send")
    answer = long_answer(5.1)
    held[0].fulfill(body=json.dumps(answer, ensure_ascii=False), content_type="application/json")
    page.wait_for_selector("#transcript .word")
    words = page.locator("#transcript .word")
    assert words.count() == len(answer["words"])
    page.wait_for_function("document.querySelector('#player').readyState >= 1")
    words.nth(20).click()
    seconds = page.evaluate("document.querySelector('#player').currentTime")
    assert abs(seconds - answer["words"][20]["start"]) < 0.3

    name, srt = saved(page, "#srt", tmp_path)
    assert name == "ko_004.srt"
    assert srt.startswith("1\n00:00:00,000 --> 00:00:02,550\n첫 줄 둘째 줄 -> 끝\n\n2\n")
    name, vtt = saved(page, "#vtt", tmp_path)
    assert name == "ko_004.vtt" and "\n첫 줄 둘째 줄 -> 끝\n\n" in vtt
    assert all(line.count("-->") <= 1 for line in vtt.splitlines())
    assert saved(page, "#txt", tmp_path) == ("ko_004.txt", LONG_TEXT + "\n")


@pytest.mark.slow
def test_several_models_offer_a_choice_and_words_are_asked_for(server, open_page):
    """A server with two adapters and an aligner (its page, as it renders it): the model
    chosen and `word` granularity go out with the request."""
    page_html = rendered("ko-med", ["ko-med", "ko-med-icu"], words=True)
    page = open_page("about:blank")
    page.route(f"{server.url}/", lambda route: route.fulfill(body=page_html, content_type=HTML))
    page.route(f"**{URL}", answering(long_answer(4.6)))
    page.goto(f"{server.url}/")
    assert page.is_visible("select#model")
    page.select_option("#model", "ko-med-icu")
    assert page.inner_text("#model-name") == "ko-med-icu"
    with page.expect_request(lambda sent: sent.method == "POST") as posted:
        page.set_input_files("#file", str(CLIPS[0]))
        page.click("#send")
    form = posted.value.post_data_buffer
    assert b'name="model"\r\n\r\nko-med-icu\r\n' in form
    granularities = re.findall(rb'name="timestamp_granularities\[\]"\r\n\r\n(\w+)', form)
    assert granularities == [b"segment", b"word"]
    page.wait_for_selector("#transcript .word")


@pytest.mark.slow
def test_an_answer_that_arrives_after_a_new_file_is_chosen_is_dropped(server, open_page):
    page = open_page(server.url)
    held = []
    page.route(f"**{URL}", lambda route: held.append(route))
    page.set_input_files("#file", str(CLIPS[0]))
    page.click("#send")
    page.wait_for_function("document.querySelector('#status').textContent.includes('…')")
    page.set_input_files("#file", str(CLIPS[1]))  # the request for CLIPS[0] is aborted
    assert page.inner_text("#status") == f"{CLIPS[1].name} is ready to transcribe."
    assert page.is_enabled("#send")
    with contextlib.suppress(Exception):  # the browser may already have dropped it
        held[0].fulfill(body=json.dumps(long_answer(4.6)), content_type="application/json")
    page.wait_for_timeout(500)
    assert_no_result(page)
    assert page.inner_text("#status") == f"{CLIPS[1].name} is ready to transcribe."
