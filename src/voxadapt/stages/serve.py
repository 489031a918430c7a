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
import re
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path

from voxadapt.adapters import base_model_of, check_base_model, is_peft_adapter, read_adapter_info
from voxadapt.config import option
from voxadapt.decoding import DecodeOptions, ModelChoice, Transcriber
from voxadapt.errors import ConfigError, ModelError
from voxadapt.families import family_of

log = logging.getLogger(__name__)

# The output guard has nothing to claim here: uploads are private temporary files, deleted
# when their request ends (tests/test_architecture.py reads this declaration).
WRITES_NO_FILES = True
INSTALL = 'pip install "voxadapt[serve]"'


@dataclass
class ServeDecodeOptions(DecodeOptions):
    """How requests are decoded: `DecodeOptions` less what a server sets itself. Batches
    are the engine's (--max-batch); features are computed in the server's process (forked
    workers can deadlock a threaded server); a request names its language, not a manifest."""

    batch_size: int = option(16, help="set by --max-batch", cli=False)
    language: str = option(
        "ko",
        help="the language of a request that names none: an ISO 639-1 code or 'auto' (the "
        "model detects it)",
        group="decoding",
        shared=True,
    )
    num_workers: int = option(0, help="0: features are computed in the server", cli=False)

    def problems(self) -> list[str]:
        found = super().problems()
        if self.batch_size != 16:  # a YAML `decode:` section written for another stage
            found.append("batch_size does not apply to serve: --max-batch sets the batch")
        if self.num_workers != 0:
            found.append("num_workers does not apply to serve: features are computed in it")
        return found


@dataclass
class ServeConfig(ModelChoice):
    """Options of `voxadapt serve`."""

    adapter: list[str] = option(  # type: ignore[assignment]  # several, unlike other stages
        help="adapter from `voxadapt train`, as [NAME=]DIR (NAME: the id clients pass as "
        "`model`, default the folder's name); repeat to serve several LoRA adapters of one "
        "base from one copy of it",
        default_factory=list,
        metavar="[NAME=]DIR",
        repeatable=True,
        group="model",
    )

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
    root_path: str = option(
        "",
        help="the sub-path a reverse proxy serves this server under, e.g. /asr (see "
        "docs/deployment.md on nginx/Caddy with TLS)",
        metavar="PATH",
        group="server",
    )
    cors_origin: list[str] = option(
        default_factory=list,
        help="a browser origin allowed to call the API from its own pages, e.g. "
        "https://emr.example.org (repeatable; none by default)",
        metavar="ORIGIN",
        repeatable=True,
        group="server",
    )
    allowed_host: list[str] = option(
        default_factory=list,
        help="a Host name the server answers to besides its loopback names, e.g. "
        "asr.example.org (repeatable). Without an API key a server answers only to these "
        "(DNS rebinding); with one, to any",
        metavar="NAME",
        repeatable=True,
        group="server",
    )
    insecure: bool = option(
        False,
        help="listen on a non-loopback --host without --api-key-file (anyone who reaches the "
        "port can transcribe)",
        group="server",
    )
    redact: bool = option(
        False,
        help="de-identify every response (text, segments, words, streams) as `voxadapt "
        "redact` does, before it leaves the server (needs the redact extra)",
        group="server",
    )
    max_batch: int = option(
        8,
        help="the decoding batch: segments decoded together at most, from one request (a "
        "long recording's) or several",
        group="server",
    )
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
        help="on SIGTERM or Ctrl-C, seconds for the requests in flight to finish; then "
        "they are cancelled (503) and the server exits",
        group="server",
    )
    header_timeout_s: float = option(
        10.0,
        help="seconds a client has to send a request's headers (408 and closed after)",
        group="server",
    )
    body_timeout_s: float = option(
        30.0,
        help="seconds an upload may stall between two of its pieces (closed after)",
        group="server",
    )
    # a plain DecodeOptions is taken too (the Python API): the engine sets what serve's omits
    decode: ServeDecodeOptions = option(help="decoding options", default_factory=ServeDecodeOptions)

    def __post_init__(self) -> None:
        if isinstance(self.adapter, (str, Path)):  # one adapter, as other stages take it
            self.adapter = [str(self.adapter)]
        super().__post_init__()

    def adapters(self) -> dict[str, Path]:
        """The adapters to serve by the id clients pass as `model`, in the order given."""
        named: dict[str, Path] = {}
        for spec in self.adapter:
            name, sep, folder = str(spec).partition("=")
            if sep and "/" not in name and not (name and folder):  # "a=" would serve "."
                raise ConfigError(f"--adapter {spec!r}: give NAME=DIR, both parts, or DIR")
            if not sep or "/" in name:  # a plain folder (which may hold '=')
                name, folder = Path(spec).name, spec
            if len(self.adapter) == 1 and self.served_model_name:
                name = self.served_model_name
            if name in named:
                raise ConfigError(
                    f"two adapters would be served as {name!r}: name them, e.g. "
                    f"--adapter ko-med={folder}"
                )
            named[name] = Path(folder)
        return named

    def check_adapter_base(self) -> None:
        """Every adapter was trained on the base being served, with one quantization, and
        several are all LoRA (ModelError/ConfigError otherwise), before anything loads."""
        adapters = self.adapters()
        infos = {name: read_adapter_info(folder) for name, folder in adapters.items()}
        for info in infos.values():
            check_base_model(str(self.model), info, force=self.force)
        if len(infos) > 1:
            full = [name for name, info in infos.items() if not is_peft_adapter(info)]
            if full:
                raise ConfigError(
                    f"adapter {full[0]!r} replaces the projector's weights (a full-projector "
                    "adapter), so it cannot share a base with others: serve it alone"
                )
            trained = {str(info.get("quantization", "nf4")) for info in infos.values()}
            if len(trained) > 1 and self.quantization is None:
                raise ConfigError(
                    f"the adapters were trained on {' and '.join(sorted(trained))} bases; "
                    "they share one copy of the base: choose it with --quantization"
                )
        problems = self.decode.family_problems(family_of(self.model))
        if problems:
            raise ConfigError("; ".join(problems), problems)

    def load_transcriber(self) -> Transcriber:
        """The base with every adapter loaded (the first as PEFT's `default`, the others
        under internal names `adapter1`, ...; `adapter_names` maps served ids to them)."""
        folders = list(self.adapters().values())
        transcriber = Transcriber.load(
            self.model,
            folders[0] if folders else None,
            quantization=self.quantization,
            device=self.device,
            dtype=self.dtype,
        )
        for index, folder in enumerate(folders[1:], 1):
            transcriber.add_adapter(f"adapter{index}", folder)
        return transcriber

    def adapter_names(self) -> dict[str, str | None]:
        """Served model id -> the adapter's name inside the model (None: the base alone)."""
        names = list(self.adapters())
        if not names:
            return {self.served_model_name or str(self.model): None}
        return {name: ("default" if i == 0 else f"adapter{i}") for i, name in enumerate(names)}

    def problems(self) -> list[str]:
        found = super().problems()
        try:
            adapters = self.adapters()
        except ConfigError as exc:
            found.append(str(exc))
        else:
            if len(adapters) > 1 and self.served_model_name:
                found.append(
                    "served_model_name names the only adapter; with several, name each: "
                    "--adapter NAME=DIR"
                )
            for folder in adapters.values():
                if not folder.is_dir():
                    found.append(f"adapter {folder}: folder not found")
        if not 0 < self.port < 65536:
            found.append("port must be in 1..65535")
        for name in ("max_batch", "max_queue"):
            if getattr(self, name) < 1:
                found.append(f"{name} must be >= 1")
        for name in ("max_wait_ms", "grace_s"):
            if getattr(self, name) < 0:
                found.append(f"{name} must be >= 0")
        for name in ("max_upload_mb", "max_audio_s", "header_timeout_s", "body_timeout_s"):
            if not getattr(self, name) > 0:
                found.append(f"{name} must be > 0")
        root = self.root_path
        if root and (not root.startswith("/") or root.endswith("/") or "//" in root):
            found.append("root_path must start with / and not end with / (e.g. /asr)")
        for origin in self.cors_origin:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                found.append(
                    f"cors_origin {origin!r} must be a scheme and host (https://host[:port]) or *"
                )
        if self.decode.language == "manifest":
            found.append("language manifest: a request has no manifest; give a code or auto")
        if not _loopback(self.host) and self.api_key_file is None and not self.insecure:
            found.append(
                f"host {self.host} opens the server beyond this machine without an API key: "
                "add --api-key-file (or --insecure)"
            )
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


def _redactor(wanted: bool):
    """The de-identification engine, loaded before the server starts (a missing extra is
    one line now, not a failure per request)."""
    if not wanted:
        return None
    from voxadapt.redact import Redactor

    return Redactor.load()


def _loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def _allowed_hosts(config: ServeConfig) -> tuple[str, ...] | None:
    """The Host names a server answers to: any with an API key, else its loopback names,
    its --host and --allowed-host."""
    if config.api_key_file is not None or not _loopback(config.host):  # --insecure: any
        return None
    from voxadapt.serving.guards import LOOPBACK_HOSTS

    host = f"[{config.host}]" if ":" in config.host else config.host
    names = {*LOOPBACK_HOSTS, host, *config.allowed_host}
    return tuple(sorted(name.lower() for name in names if name not in ("0.0.0.0", "[::]")))


def _api_key(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        # utf-8-sig: a key saved by Notepad starts with a byte-order mark
        key = Path(path).read_text(encoding="utf-8-sig").strip()
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
    folders = list(config.adapters().values())
    config = replace(config, model=base_model_of(config.model, folders[0] if folders else None))
    config.check_adapter_base()
    models = config.adapter_names()
    served = next(iter(models))
    settings = ServerSettings(
        served_model=served,
        models=models,
        options=config.decode,
        max_batch=config.max_batch,
        max_wait_ms=config.max_wait_ms,
        max_queue=config.max_queue,
        max_upload_bytes=int(config.max_upload_mb * 2**20),
        max_audio_s=config.max_audio_s,
        api_key=_api_key(config.api_key_file),
        bias_terms=read_bias_terms(config.decode.bias_terms),
        family=family_of(config.model),
        cors_origins=tuple(config.cors_origin),
        words=config.aligner is not None,
        default_language=config.decode.language,
        redactor=_redactor(config.redact),
        allowed_hosts=_allowed_hosts(config),
    )
    load_aligner = config.load_aligner if config.aligner is not None else None
    return build_app(settings, config.load_transcriber, config.grace_s, load_aligner), served


def uvicorn_config(app, config: ServeConfig):
    """uvicorn's configuration of the server: its address, limits and grace period."""
    from voxadapt.serving.connections import server_config

    return server_config(
        app,
        host=config.host,
        port=config.port,
        grace_s=config.grace_s,
        header_timeout_s=config.header_timeout_s,
        body_timeout_s=config.body_timeout_s,
        root_path=config.root_path,
    )


def serve(config: ServeConfig) -> ServeResult:
    """Run the server until SIGTERM (exit 0) or Ctrl-C (KeyboardInterrupt, exit 130); the
    requests in flight get --grace-s to finish, and the uploads folder is removed."""
    from voxadapt.serving.connections import StoppingServer

    _check_port(config.host, config.port)  # before anything loads or is created
    app, served = build_server(config)
    url = f"http://{config.host}:{config.port}"
    log.info("serving %s at %s (the model loads in the background; GET /health)", served, url)
    state = app.serving
    server = StoppingServer(uvicorn_config(app, config), state, config.grace_s)
    # a model that cannot load ends the server with its reason (not 503 forever)
    state.on_load_error = lambda: setattr(server, "should_exit", True)
    try:
        if state.load_error is None:
            server.run()
    finally:  # also when uvicorn did not get to its own shutdown
        state.close(config.grace_s + 30)
    if state.load_error is not None:
        raise ModelError(f"the model could not be loaded: {state.load_error}")
    if server.interrupted():
        raise KeyboardInterrupt  # the CLI's "interrupted", exit 130
    return ServeResult(url, served)
