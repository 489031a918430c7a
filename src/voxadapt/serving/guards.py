"""The ASGI layer in front of the app of `voxadapt serve` (`Guard`): the head's size, Host
names, the API key and the declared upload size are checked before the body is read, and
every answer, refusals included, is counted and logged without a file name or a transcript.
What comes before it, the connections, is `serving.connections`.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from voxadapt.serving.responses import ApiError

access_log = logging.getLogger("voxadapt.access")

# Request line and headers together; browsers send 1-8 KiB, nginx's default buffers hold 32.
MAX_HEAD_BYTES = 64 * 1024


def with_cors(app: Any, settings: Any) -> Any:
    """`app` answering browsers from `--cors-origin` (as it is without any)."""
    if not settings.cors_origins:
        return app
    from starlette.middleware.cors import CORSMiddleware

    return CORSMiddleware(
        app,
        allow_origins=list(settings.cors_origins),
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type"],
        expose_headers=["Retry-After", "X-Voxadapt-Unused-Fields"],
        max_age=600,
    )


class Guard:
    """The ASGI layer in front of the app: head size, Host, API key and size checks before
    the body is read, the access log (method, path, status, duration, audio seconds: never a
    file name or a transcript) and the request metrics, for every answer, refusals
    included. A plain ASGI wrapper (not Starlette's BaseHTTPMiddleware), so the app still
    sees a client that disconnects while its request waits.

    `state` is the app's `ServerState` (settings, request counter and latency histogram).
    """

    def __init__(self, app: Any, state: Any) -> None:
        self.app, self.serving = app, state  # not `state`: that is the app's
        self.answering = with_cors(app, state.settings)  # refusals get the same CORS headers

    def __getattr__(self, name: str) -> Any:  # app.state and friends, for tests and tools
        return getattr(self.app, name)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.answering(scope, receive, send)
            return
        started, status = time.perf_counter(), [500]
        scope.setdefault("state", {})["audio_s"] = 0.0

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        request = Request(scope)
        settings = self.serving.settings
        try:
            check_head_size(scope)
            check_host(request, settings.allowed_hosts)
            check_auth(request, settings.api_key)
            check_length(request, settings.max_upload_bytes)
        except ApiError as exc:  # with CORS headers: a browser page can read why
            response = JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)
            await with_cors(response, settings)(scope, receive, sending)
        else:
            await self.answering(scope, receive, sending)
        finally:
            seconds = time.perf_counter() - started
            if route_path(scope) == "/v1/audio/transcriptions":
                self.serving.requests.labels(status=str(status[0])).inc()
                self.serving.latency.observe(seconds)
            access_log.info(
                "%s %s %d %.3f s audio=%.1f s",
                loggable(scope["method"]),
                loggable(scope["path"]),
                status[0],
                seconds,
                scope["state"].get("audio_s", 0.0),
            )


def route_path(scope: dict) -> str:
    """The request's path inside the app: behind a proxy at a sub-path (`--root-path /asr`)
    uvicorn's path holds the prefix; routes are matched without it."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and (path == root or path.startswith(root + "/")):
        return path[len(root) :] or "/"
    return path


def head_bytes(scope: dict) -> int:
    """The size of a request's head as sent: its target and its header lines."""
    target = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
    return target + sum(len(name) + len(value) + 4 for name, value in scope["headers"])


def check_head_size(scope: dict) -> None:
    """A head that arrived whole in one read passed h11's buffer limit: measured here."""
    if head_bytes(scope) > MAX_HEAD_BYTES:
        raise ApiError(
            431,
            f"the request's headers are larger than {MAX_HEAD_BYTES // 1024} KiB",
            code="request_header_fields_too_large",
            headers={"Connection": "close"},
        )


# Open without a key: the health probe, and the page itself (a browser cannot send a header
# when it loads a page; the key is typed on the page and sent with each API request).
# CORS preflights carry no credentials by design; the request that follows is checked.
_OPEN_PATHS = {("GET", "/health"), ("HEAD", "/health"), ("GET", "/"), ("HEAD", "/")}


def check_auth(request: Any, api_key: str | None) -> None:
    """Every API endpoint needs `Authorization: Bearer <key>` when a key is set (the scheme
    is case-insensitive, as HTTP says; the key is compared as UTF-8 bytes)."""
    path = route_path(request.scope)
    if api_key is None or (request.method, path) in _OPEN_PATHS or request.method == "OPTIONS":
        return
    # the header as sent: Starlette decodes header bytes as Latin-1
    scheme, _, given = request.headers.get("authorization", "").encode("latin-1").partition(b" ")
    valid = scheme.lower() == b"bearer"
    if not hmac.compare_digest(given.strip(), api_key.encode()) or not valid:  # constant time
        raise ApiError(401, "missing or wrong API key", code="invalid_api_key")


# Host names a key-less server on a loopback address answers to: a web page elsewhere that
# makes its own name resolve to 127.0.0.1 (DNS rebinding) gets a 421, not the API.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")


def check_host(request: Any, allowed: tuple[str, ...] | None) -> None:
    """A 421 for a Host header outside `allowed` (None: any is answered)."""
    if allowed is None:
        return
    header = request.headers.get("host", "").lower()
    # the name without its port: "[::1]:8000" -> "[::1]", "localhost:8000" -> "localhost"
    host = header.rsplit("]", 1)[0] + "]" if header.startswith("[") else header.split(":")[0]
    if host not in allowed:
        raise ApiError(
            421,
            "this server answers only to its own host names (see --allowed-host)",
            code="misdirected_request",
        )


def loggable(text: str) -> str:
    """A request path as one log line: control characters escaped (no forged lines)."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)[:300]


def too_large(limit: int) -> str:
    """The 413 message for an upload over `limit` bytes."""
    return f"the upload is larger than the server's limit of {limit / 2**20:g} MB"


def check_length(request: Any, limit: int) -> None:
    """A POST declares its length (411 otherwise), and no more than the upload limit plus
    room for the form's other fields (413)."""
    length = request.headers.get("content-length")
    if request.method == "POST" and length is None:  # a streamed body could grow unbounded
        raise ApiError(411, "a Content-Length header is required", code="length_required")
    if length is not None and length.isdigit() and int(length) > limit + 64 * 1024:
        raise ApiError(413, too_large(limit), code="file_too_large")
