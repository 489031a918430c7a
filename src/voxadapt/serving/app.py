"""The HTTP API of `voxadapt serve`: OpenAI's `POST /v1/audio/transcriptions` and friends.

Field names and response shapes follow OpenAI's API (as vLLM, speaches and whisper.cpp's
server do), so the official `openai` client works unchanged; `hotwords` is named as vLLM
names it, `bias_weight` is ours. Medical audio is handled safely by default: an upload lives
in a private temporary file removed when its request ends, transcripts and file names never
reach the logs, and every limit answers in OpenAI's error shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import html
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# This module is imported only once `voxadapt serve` has checked that the `serve` extra is
# installed; FastAPI resolves the handlers' annotations from these module-level names.
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.exceptions import HTTPException as StarletteHTTPException

from voxadapt.audio import AudioError, probe_audio
from voxadapt.data import AUTO_LANGUAGE
from voxadapt.decoding import AudioItem, DecodeOptions, Transcriber
from voxadapt.families import ModelFamily
from voxadapt.serving.engine import BatchingEngine, EngineStopped, Job, QueueFull
from voxadapt.serving.fields import FieldError, RequestFields, parse_fields
from voxadapt.serving.guards import Guard, too_large
from voxadapt.serving.page import PAGE
from voxadapt.serving.responses import (
    ApiError,
    event,
    logprobs,
    reported_language,
    usage,
    verbose_segments,
)
from voxadapt.subtitles import cue_file
from voxadapt.text import read_term_lines

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_SAFE_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}")
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*")


@dataclass
class ServerSettings:
    """What the app needs from `ServeConfig`, resolved."""

    served_model: str  # the id clients pass as `model` (the first, with several adapters)
    options: DecodeOptions
    max_batch: int
    max_wait_ms: float
    max_queue: int
    max_upload_bytes: int
    max_audio_s: float
    api_key: str | None
    bias_terms: list[list[str]]  # the server's --bias-terms, as variant sets
    default_language: str = "ko"
    family: ModelFamily | None = None  # the served model's: which languages it can be told
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call the API
    # served id -> the adapter's name inside the model (None: the base or the only adapter)
    models: dict[str, str | None] = field(default_factory=dict)
    words: bool = False  # an aligner is loaded: word timestamps can be asked for
    allowed_hosts: tuple[str, ...] | None = None  # Host header names answered (None: any)
    redactor: Any = None  # `--redact`: every response de-identified (voxadapt.redact)

    def __post_init__(self) -> None:
        self.models = self.models or {self.served_model: None}


class ServerState:
    """The model (loaded in the background), the engine, the metrics and the uploads."""

    def __init__(
        self,
        settings: ServerSettings,
        load: Callable[[], Transcriber],
        load_aligner: Callable[[], Any] | None = None,
    ) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.settings = settings
        self.engine: BatchingEngine | None = None
        self.load_error: str | None = None
        self.on_load_error: Callable[[], None] | None = None  # `serve` stops the server
        self.deadline: float | None = None  # stopping: in-flight work ends then (monotonic s)
        self.uploads = Path(tempfile.mkdtemp(prefix="voxadapt-serve-"))  # 0700: private
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "voxadapt_requests",
            "transcription requests by status",
            ["status"],
            registry=self.registry,
        )
        self.audio_seconds = Counter(
            "voxadapt_audio_seconds", "seconds of audio transcribed", registry=self.registry
        )
        self.queue_depth = Gauge(
            "voxadapt_queue_depth", "requests waiting for a batch", registry=self.registry
        )
        self.queue_depth.set_function(lambda: self.engine.depth() if self.engine else 0)
        self.batch_size = Histogram(
            "voxadapt_batch_size",
            "segments decoded together",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.latency = Histogram(
            "voxadapt_request_latency_seconds",
            "time from upload to response",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=self.registry,
        )
        self._loader = threading.Thread(target=self._load, args=(load, load_aligner), daemon=True)
        self._loader.start()

    def _load(
        self, load: Callable[[], Transcriber], load_aligner: Callable[[], Any] | None
    ) -> None:
        try:
            transcriber = load()
            aligner = load_aligner() if load_aligner is not None else None
            s = self.settings
            self.engine = BatchingEngine(
                transcriber,
                s.options,
                max_batch=s.max_batch,
                max_wait_ms=s.max_wait_ms,
                max_queue=s.max_queue,
                on_batch=self.batch_size.observe,
                select_adapter=transcriber.use_adapter if len(s.models) > 1 else None,
                aligner=aligner,
            )
            log.info("model loaded: serving %s", s.served_model)
        except Exception as exc:  # reported by /health and every request
            self.load_error = " ".join(str(exc).split()) or type(exc).__name__
            log.error("the model could not be loaded: %s", self.load_error)
            if self.on_load_error is not None:
                self.on_load_error()

    def stop_within(self, seconds: float) -> None:
        """The server is stopping: requests still in flight `seconds` from now are answered
        503 and their decoding cancelled (an earlier deadline stands)."""
        deadline = time.monotonic() + seconds
        if self.deadline is None or deadline < self.deadline:
            self.deadline = deadline

    def out_of_time(self) -> bool:
        """The server is stopping and its grace period is over."""
        return self.deadline is not None and time.monotonic() >= self.deadline

    def close(self, timeout_s: float) -> None:
        """Stop the engine (its jobs are finished or cancelled by now) and remove the
        uploads folder."""
        if self.engine is not None and not self.engine.close(timeout_s):
            log.warning("decoding did not stop within %.0f s of the shutdown", timeout_s)
        shutil.rmtree(self.uploads, ignore_errors=True)


def build_app(
    settings: ServerSettings,
    load: Callable[[], Transcriber],
    grace_s: float = 30.0,
    load_aligner: Callable[[], Any] | None = None,
):
    """The FastAPI app; `load` builds the Transcriber and `load_aligner` the word aligner
    (called once, in the background)."""
    state = ServerState(settings, load, load_aligner)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):
        yield
        # by now in-flight work is done or cancelled: the engine stops within a step
        await asyncio.to_thread(state.close, grace_s + 10)

    app = FastAPI(title="voxadapt", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.voxadapt = state

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error = ApiError(exc.status_code, str(exc.detail), code=_code_of(exc.status_code))
        return JSONResponse(error.body(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(ApiError(400, "the request is malformed").body(), status_code=400)

    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health() -> JSONResponse:
        if state.load_error:
            return JSONResponse({"status": "error", "detail": state.load_error}, status_code=503)
        if state.engine is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ok", "model": settings.served_model})

    def model_card(name: str) -> dict[str, Any]:
        return {
            "id": name,
            "object": "model",
            "created": int(state_started),
            "owned_by": "voxadapt",
        }

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card(name) for name in settings.models]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str) -> dict[str, Any]:
        if name not in settings.models:
            raise _unknown_model(name, settings)
        return model_card(name)

    @app.get("/metrics")
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return render_page(settings)

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request) -> Response:
        return await _transcribe(request, state)

    state_started = time.time()
    return Guard(app, state)


def render_page(settings: ServerSettings) -> str:
    """The page, with what it needs to know about this server as JSON (HTML-safe)."""
    config = {
        "model": settings.served_model,
        "models": list(settings.models),
        "words": settings.words,
    }
    # "<" escaped: no value can close the page's <script> element or open a comment in it
    blob = json.dumps(config, ensure_ascii=False).replace("<", "\\u003c")
    # one pass, so a model id that contains a placeholder is never substituted again
    values = {"{{CONFIG}}": blob, "{{MODEL}}": html.escape(settings.served_model)}
    return re.sub(r"\{\{(?:CONFIG|MODEL)\}\}", lambda found: values[found.group()], PAGE)


def _code_of(status: int) -> str | None:
    return {404: "not_found", 405: "method_not_allowed"}.get(status)


async def _form(request: Any) -> Any:
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise ApiError(400, "the body must be multipart/form-data (file, model, ...)")
    try:
        return await request.form(max_files=1, max_fields=256, max_part_size=1 << 20)
    except Exception as exc:  # malformed multipart, too many parts
        raise ApiError(400, f"the request is not a valid multipart form: {exc}") from None


async def _transcribe(request: Any, state: ServerState) -> Any:
    settings = state.settings
    form = await _form(request)
    try:
        fields = parse_fields(form, settings)
    except FieldError as exc:
        raise ApiError(exc.status, exc.message, param=exc.param, code=exc.code) from None
    if settings.redactor is not None and fields.logprobs:  # tokens would spell identifiers
        raise ApiError(
            400, "include[]=logprobs is not available on a server that redacts", param="include"
        )
    engine = _engine(state)
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise ApiError(400, "the field `file` (an audio file) is required", param="file")
    path = await _save_upload(upload, state.uploads, settings.max_upload_bytes)
    streaming = False
    try:
        info = await asyncio.to_thread(_probe, path, settings.max_audio_s)
        request.state.audio_s = info.duration
        language = None if fields.language == AUTO_LANGUAGE else fields.language
        item = AudioItem("request", str(path), info.duration, language=language)
        job = Job(
            item,
            fields.bias_terms,
            fields.bias_weight,
            adapter=fields.adapter,
            context=fields.context,
            vad=fields.vad,
            words=fields.words,
            logprobs=fields.logprobs or fields.response_format == "verbose_json",
        )
        deltas: asyncio.Queue | None = None
        if fields.stream:
            deltas = asyncio.Queue()
            loop = asyncio.get_running_loop()
            if settings.redactor is None:  # redacted text is sent whole (see _stream)
                job.on_delta = lambda text: loop.call_soon_threadsafe(deltas.put_nowait, text)
        future = await asyncio.to_thread(_submit, engine, job)
        if deltas is not None:
            streaming = True  # the stream owns the upload from here
            stream = _stream(state, job, future, deltas, path, info.duration, fields)
            return _ClosingStream(stream, media_type="text/event-stream", headers=_NO_CACHE)
        result = await _wait(request, state, job, future)
    finally:
        if not streaming:
            path.unlink(missing_ok=True)  # nothing of a request is kept
    _check_result(result)
    result = _redacted(result, settings.redactor)
    state.audio_seconds.inc(info.duration)
    return _response(result, info.duration, fields, engine.transcriber.prompts)


def _redacted(result: Any, redactor: Any) -> Any:
    """`result` de-identified as `voxadapt redact` does a transcript row: its text, its
    segments and its words (a failed result is passed on as it is)."""
    if redactor is None or isinstance(result.transcript, AudioError):
        return result
    row: dict[str, Any] = {"text": result.transcript.text, "segments": result.segments}
    if result.words is not None:
        row["words"] = result.words
    clean, _ = redactor.redact_row(row)
    pieces = [
        dataclasses.replace(piece, token_ids=[], token_logprobs=[]) for piece in result.pieces
    ]
    for piece, segment in zip(pieces, clean["segments"]):
        piece.text = segment["text"]
    return dataclasses.replace(
        result,
        transcript=dataclasses.replace(
            result.transcript, text=clean["text"], token_ids=[], token_logprobs=[]
        ),
        segments=clean["segments"],
        pieces=pieces,
        words=clean.get("words"),
    )


_NO_CACHE = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}  # nginx: do not buffer


class _ClosingStream(StreamingResponse):
    """A stream whose generator is closed when the response ends, however it ends: a client
    that leaves while an event is being sent cancels the response with the generator paused
    at a `yield`, and its `finally` (which cancels the job and removes the upload) would
    wait for the garbage collector, the job decoding on meanwhile."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()  # type: ignore[attr-defined]


def _submit(engine: BatchingEngine, job: Job) -> Any:
    try:
        return engine.submit(job)
    except QueueFull:
        raise ApiError(
            503,
            "the server is busy: too many requests are waiting",
            code="queue_full",
            kind="server_error",
            headers={"Retry-After": str(engine.retry_after_s())},
        ) from None
    except EngineStopped:
        raise _stopping() from None


def _check_result(result: Any) -> None:
    if isinstance(result.transcript, AudioError):
        raise ApiError(400, f"the audio cannot be read: {result.transcript.reason}", param="file")


async def _stream(
    state: ServerState,
    job: Job,
    future: Any,
    deltas: asyncio.Queue,
    path: Path,
    duration: float,
    fields: RequestFields,
) -> AsyncIterator[bytes]:
    """OpenAI's transcription stream: `transcript.text.delta` events as text is decoded,
    then one `transcript.text.done` holding the whole text (equal to the unstreamed
    answer's) and the usage; an error mid-way is an error event. A client that goes away
    cancels the job (its rows stop at the next generation step)."""
    finished = asyncio.wrap_future(future)
    try:
        while True:
            if state.out_of_time() and not finished.done():  # the grace period is over
                yield event(_stopping().body())
                return
            getting = asyncio.ensure_future(deltas.get())
            await asyncio.wait(
                {getting, finished}, timeout=0.25, return_when=asyncio.FIRST_COMPLETED
            )
            if getting.done():
                yield event({"type": "transcript.text.delta", "delta": getting.result()})
                continue
            getting.cancel()
            if not finished.done():
                continue
            while not deltas.empty():  # pieces sent just before the end
                yield event({"type": "transcript.text.delta", "delta": deltas.get_nowait()})
            try:
                result = _redacted(finished.result(), state.settings.redactor)
                _check_result(result)
            except ApiError as exc:
                yield event(exc.body())
                return
            except (Exception, asyncio.CancelledError) as exc:  # batch failed, server stopping
                yield event(ApiError(500, _failure(exc), kind="server_error").body())
                return
            state.audio_seconds.inc(duration)
            if state.settings.redactor is not None and result.transcript.text:
                # an identifier can span words still being decoded: redacted text is sent
                # once the transcript is complete
                yield event({"type": "transcript.text.delta", "delta": result.transcript.text})
            done_event = {
                "type": "transcript.text.done",
                "text": result.transcript.text,
                "usage": usage(result.transcript),
            }
            if fields.logprobs:
                done_event["logprobs"] = logprobs(result.pieces, _prompts(state))
            yield event(done_event)
            return
    finally:
        if not future.done():
            job.cancelled.set()
        path.unlink(missing_ok=True)


def _prompts(state: ServerState) -> Any:
    assert state.engine is not None
    return state.engine.transcriber.prompts


def _failure(exc: BaseException) -> str:
    if isinstance(exc, EngineStopped):
        return "the server is shutting down"
    return f"decoding failed: {type(exc).__name__}"


def _unknown_model(name: str, settings: ServerSettings) -> ApiError:
    served = ", ".join(f"`{model}`" for model in settings.models)
    return ApiError(
        404,
        f"the model `{name[:80]}` does not exist; this server serves {served}",
        param="model",
        code="model_not_found",
    )


def _engine(state: ServerState) -> BatchingEngine:
    if state.load_error:
        raise ApiError(
            503, f"the model could not be loaded: {state.load_error}", kind="server_error"
        )
    if state.engine is None:
        raise ApiError(
            503, "the model is still loading", kind="server_error", headers={"Retry-After": "5"}
        )
    return state.engine


async def _save_upload(upload: Any, folder: Path, limit: int) -> Path:
    """The upload in a private file (0600 in a 0700 folder), at most `limit` bytes."""
    # only a plain extension of the client's name is kept (soundfile looks at it)
    suffix = Path(upload.filename or "").suffix
    suffix = suffix if _SAFE_SUFFIX.fullmatch(suffix) else ""
    fd, name = tempfile.mkstemp(dir=folder, suffix=suffix)
    path, size = Path(name), 0
    try:
        with os.fdopen(fd, "wb") as handle:
            while chunk := await upload.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, too_large(limit), param="file", code="file_too_large")
                handle.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    finally:
        await upload.close()
    if size == 0:
        path.unlink(missing_ok=True)
        raise ApiError(400, "the uploaded file is empty", param="file")
    return path


def _probe(path: Path, max_audio_s: float) -> Any:
    try:
        info = probe_audio(path)
    except AudioError as exc:
        path.unlink(missing_ok=True)
        raise ApiError(
            400, f"the file is not audio this server reads ({exc.reason})", param="file"
        ) from None
    if info.duration > max_audio_s:
        path.unlink(missing_ok=True)
        raise ApiError(
            413,
            f"the audio is {info.duration:.0f} s long; this server takes at most "
            f"{max_audio_s:.0f} s",
            param="file",
            code="audio_too_long",
        )
    return info


async def _wait(request: Any, state: ServerState, job: Job, future: Any) -> Any:
    """The engine's result; a client that disconnects takes its job out of the queue, and
    so does a shutdown whose grace period ends first (503)."""
    waiting = asyncio.wrap_future(future)
    try:
        while True:
            done, _ = await asyncio.wait({waiting}, timeout=0.25)
            if done:
                try:
                    return waiting.result()
                except EngineStopped:
                    raise _stopping() from None
                except asyncio.CancelledError:
                    raise ApiError(499, "the client closed the request") from None
                except Exception as exc:  # this request's batch failed; the server goes on
                    raise ApiError(500, _failure(exc), kind="server_error") from None
            if state.out_of_time():
                raise _stopping()
            if await request.is_disconnected():
                raise ApiError(499, "the client closed the request")
    finally:  # answered without a result, or the task cancelled: the rows stop decoding
        if not future.done():
            job.cancelled.set()


def _stopping() -> ApiError:
    return ApiError(503, "the server is shutting down", kind="server_error")


def _response(result: Any, duration: float, fields: RequestFields, prompts: Any) -> Any:
    transcript = result.transcript
    text = transcript.text
    language = reported_language(fields.language, transcript, result.pieces)
    # what a model names may be any text ("한국어"): a header holds only a language tag
    tagged = language and _LANGUAGE_TAG.fullmatch(language)
    headers = {"Content-Language": language} if tagged else {}
    fmt = fields.response_format
    if fmt == "text":
        return PlainTextResponse(text, headers=headers)
    if fmt in ("srt", "vtt"):
        row: dict[str, Any] = {"text": text, "duration": duration, "segments": result.segments}
        if fields.words and result.words is not None:
            row["words"] = result.words
        media = "text/vtt" if fmt == "vtt" else "application/x-subrip"
        return PlainTextResponse(cue_file(row, fmt), media_type=media, headers=headers)
    body: dict[str, Any] = {"text": text}
    if fmt == "verbose_json":
        body = {
            "task": "transcribe",
            "language": language,
            "duration": round(duration, 3),
            "text": text,
            "segments": verbose_segments(result.segments, result.pieces, prompts),
        }
        if fields.words:
            body["words"] = result.words or []
            if result.words_error:  # the transcript stands; its words could not be timed
                body["words_error"] = result.words_error
    if fields.logprobs:
        body["logprobs"] = logprobs(result.pieces, prompts)
    body["usage"] = usage(transcript)
    return JSONResponse(body, headers=headers)


def read_bias_terms(path: Path | None) -> list[list[str]]:
    """The server's --bias-terms as variant sets (the terms-file reader of every stage)."""
    return [spellings for _, spellings in read_term_lines(path)] if path else []
