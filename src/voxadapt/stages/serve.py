"""The serve stage: an OpenAI-compatible transcription server for one machine.

`POST /v1/audio/transcriptions` (OpenAI's fields and response shapes, plus `hotwords` and
`bias_weight`), `GET /v1/models`, `GET /health`, `GET /metrics` (Prometheus) and `GET /`
(a page to try it). The model loads once, in the background (/health answers 503 until it
is ready); requests are decoded in dynamic batches by the same engine as `transcribe`, with
the same long-form segmentation, so served text and segments equal `transcribe`'s.

The server writes no files: an upload lives in a private temporary file removed when its
request ends, and nothing of a request reaches the logs but its method, path, status,
duration and seconds of audio.
"""

from __future__ import annotations

import logging
import math
import signal
import socket
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from voxadapt.config import option
from voxadapt.decoding import DecodeOptions, ModelChoice
from voxadapt.errors import ConfigError
from voxadapt.families import family_of
from voxadapt.model import base_model_of

log = logging.getLogger(__name__)

# The output guard has nothing to claim here: uploads are private temporary files, deleted
# when their request ends (tests/test_architecture.py reads this declaration).
WRITES_NO_FILES = True
INSTALL = 'pip install "voxadapt[serve]"'


@dataclass
class ServeConfig(ModelChoice):
    """Options of `voxadapt serve`."""

    host: str = option(
        "127.0.0.1",
        help="address to listen on (0.0.0.0: every interface; put TLS in front)",
        group="server",
    )
    port: int = option(8000, help="TCP port", group="server")
    served_model_name: str | None = option(
        None,
        help="the id clients pass as `model` (default: the adapter's folder, else --model)",
        group="server",
    )
    api_key_file: Path | None = option(
        None,
        help="file holding the API key; every endpoint but /health then needs "
        "`Authorization: Bearer KEY`",
        metavar="FILE",
        group="server",
    )
    max_batch: int = option(8, help="segments decoded together at most", group="server")
    max_wait_ms: float = option(
        30.0, help="how long a request waits for others to share its batch", group="server"
    )
    max_queue: int = option(
        64, help="requests waiting at most; more get 503 with Retry-After", group="server"
    )
    max_upload_mb: float = option(100.0, help="largest upload (413 above)", group="server")
    max_audio_s: float = option(3600.0, help="longest audio in seconds (413 above)", group="server")
    grace_s: float = option(
        30.0,
        help="on SIGTERM, seconds to finish the requests in flight before exiting",
        group="server",
    )
    decode: DecodeOptions = option(help="decoding options", default_factory=DecodeOptions)

    def problems(self) -> list[str]:
        found = super().problems()
        if not 0 < self.port < 65536:
            found.append("port must be in 1..65535")
        for name in ("max_batch", "max_queue"):
            if getattr(self, name) < 1:
                found.append(f"{name} must be >= 1")
        for name in ("max_wait_ms", "grace_s"):
            if getattr(self, name) < 0:
                found.append(f"{name} must be >= 0")
        for name in ("max_upload_mb", "max_audio_s"):
            if not getattr(self, name) > 0:
                found.append(f"{name} must be > 0")
        if self.api_key_file is not None and not Path(self.api_key_file).is_file():
            found.append(f"api_key_file {self.api_key_file} is not a file")
        return found


@dataclass
class ServeResult:
    url: str
    served_model: str
    requests: int = 0
    extra: dict = field(default_factory=dict)


def _require_extra() -> None:
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import python_multipart  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"voxadapt serve needs the serve extra ({exc.name}): {INSTALL}") from None


def _api_key(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        key = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--api-key-file {path} is unreadable ({exc})") from None
    if not key or any(char.isspace() for char in key):
        raise ConfigError(f"--api-key-file {path} must hold one key without spaces")
    return key


def _check_port(host: str, port: int) -> None:
    """A port in use is a one-line error before the model loads, not after."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror})") from None


def build_server(config: ServeConfig):
    """(FastAPI app, served model id): everything validated, the model loading behind it."""
    from voxadapt.serving.app import ServerSettings, build_app, read_bias_terms

    _require_extra()
    config = replace(config, model=base_model_of(config.model, config.adapter))
    config.check_adapter_base()
    served = config.served_model_name or (
        Path(config.adapter).name if config.adapter else str(config.model)
    )
    settings = ServerSettings(
        served_model=served,
        options=config.decode,
        max_batch=config.max_batch,
        max_wait_ms=config.max_wait_ms,
        max_queue=config.max_queue,
        max_upload_bytes=int(config.max_upload_mb * 2**20),
        max_audio_s=config.max_audio_s,
        api_key=_api_key(config.api_key_file),
        bias_terms=read_bias_terms(config.decode.bias_terms),
        family=family_of(config.model),
    )
    return build_app(settings, config.load_transcriber, config.grace_s), served


def serve(config: ServeConfig) -> ServeResult:
    """Run the server until SIGTERM or Ctrl-C; requests in flight finish first."""
    import uvicorn

    _check_port(config.host, config.port)  # before anything loads or is created
    app, served = build_server(config)
    url = f"http://{config.host}:{config.port}"
    log.info("serving %s at %s (the model loads in the background; GET /health)", served, url)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            access_log=False,  # our own access log: no file names, no transcripts
            log_level="warning",
            timeout_graceful_shutdown=max(1, math.ceil(config.grace_s)),
            lifespan="on",
        )
    )
    # uvicorn handles SIGTERM (stop accepting, finish the requests in flight) and then
    # re-raises it to the previous handler: a quiet one makes that a clean exit 0.
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: None) if in_main else None
    try:
        server.run()
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    return ServeResult(url, served)
