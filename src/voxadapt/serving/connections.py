"""The connections of `voxadapt serve`: uvicorn with the limits and the stop a server open to
slow or hostile clients needs.

- Slow clients (slowloris): a request head must arrive whole within `--header-timeout-s`
  (408, closed) and hold at most `MAX_HEAD_BYTES` (431, closed); an upload may not stall
  for longer than `--body-timeout-s` between two of its pieces (closed).
- Stopping (SIGTERM or SIGINT): no new connections; requests in flight have `--grace-s` to
  finish, then uploads still arriving are cut, decodes are cancelled and answered 503, and
  streams end with an error event; the app's shutdown removes the uploads folder. A second
  signal ends the grace period at once.
"""

from __future__ import annotations

import asyncio
import signal
from types import FrameType
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from voxadapt.serving.guards import MAX_HEAD_BYTES

# uvicorn's own deadline for tasks after the grace period: a safety net never reached when
# the app ends its work at the deadline (a task uvicorn cancels logs a traceback)
_GRACE_MARGIN_S = 10


class LimitedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol (h11) with clocks on what a client owes.

    - A request head (from the connection's start, or its first byte on a kept-alive
      connection) must be complete within `header_timeout_s`: else 408, closed.
    - A body must not stall: `body_timeout_s` at most between two pieces of an upload
      (while the app is reading it; not while the app is busy and reading is paused).
    - When the server stops, an upload still arriving has what is left of the grace period
      (`cut_upload`).
    - A head larger than the h11 buffer (`h11_max_incomplete_event_size`, set to
      MAX_HEAD_BYTES) is answered 431, closed; a complete head that arrived in one read is
      measured by `serving.guards.Guard`.
    """

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clock: asyncio.TimerHandle | None = None
        self._clock_for: str | None = None  # what the client owes: "head", "body" or "upload"

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_clock("head", self.header_timeout_s)  # a client that sends nothing

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        state = self.conn.their_state
        if self.transport.is_closing() or state not in (h11.IDLE, h11.SEND_BODY):
            self._stop_clock()
        elif state is h11.IDLE and self._clock_for != "head":  # a new head begins
            self._start_clock("head", self.header_timeout_s)
        elif state is h11.SEND_BODY and self._clock_for != "upload":
            self._start_clock("body", self.body_timeout_s)  # each piece restarts it

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
            self._start_clock("body", self.body_timeout_s)  # a refused upload still coming
        else:
            self._stop_clock()  # idle: uvicorn's keep-alive timeout closes it

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_clock()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """h11 refuses a head that outgrew its buffer as a protocol error: that is a 431."""
        if len(self.conn.trailing_data[0]) > (self.config.h11_max_incomplete_event_size or 0):
            self._refuse(431, "Request Header Fields Too Large", "the request head is too large")
            return
        super().send_400_response(msg)

    def cut_upload(self, seconds: float) -> None:
        """The server stops: an upload still arriving is cut `seconds` from now (the app
        then sees its client leave, and ends the request)."""
        receiving = self.cycle is not None and not self.cycle.response_started
        sooner = self._clock_for != "upload" or seconds <= 0
        if receiving and self.conn.their_state is h11.SEND_BODY and sooner:
            self._start_clock("upload", seconds)

    def _start_clock(self, owed: str, seconds: float) -> None:
        self._stop_clock()
        self._clock_for = owed
        self._clock = self.loop.call_later(seconds, self._timed_out)

    def _stop_clock(self) -> None:
        if self._clock is not None:
            self._clock.cancel()
        self._clock, self._clock_for = None, None

    def _timed_out(self) -> None:
        owed, self._clock, self._clock_for = self._clock_for, None, None
        if self.transport.is_closing():
            return
        if owed == "body" and self.flow.read_paused:  # the app is behind, not the client
            self._start_clock("body", self.body_timeout_s)
            return
        if owed == "head":
            self._refuse(408, "Request Timeout", "the request head took too long")
        else:  # the app is reading the body: it sees a client that left
            self.transport.close()

    def _refuse(self, status: int, reason: str, message: str) -> None:
        """A plain-text answer written as it is, and the connection closed (no request
        reached the app)."""
        body = message.encode()
        self.transport.write(
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
            + body
        )
        self.transport.close()


def limited_protocol(header_timeout_s: float, body_timeout_s: float) -> type[LimitedH11Protocol]:
    """The protocol class uvicorn instantiates per connection, with these timeouts."""
    return type(
        "LimitedH11Protocol",
        (LimitedH11Protocol,),
        {"header_timeout_s": header_timeout_s, "body_timeout_s": body_timeout_s},
    )


def server_config(
    app: Any,
    *,
    host: str,
    port: int,
    grace_s: float,
    header_timeout_s: float,
    body_timeout_s: float,
    root_path: str = "",
) -> uvicorn.Config:
    """uvicorn's configuration for `app`, with the limited protocol."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=limited_protocol(header_timeout_s, body_timeout_s),
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        access_log=False,  # the app's own access log: no file names, no transcripts
        log_level="warning",
        timeout_graceful_shutdown=int(grace_s) + _GRACE_MARGIN_S,
        lifespan="on",
        root_path=root_path,
    )


class StoppingServer(uvicorn.Server):
    """uvicorn's server, stopped by SIGTERM or SIGINT within `grace_s` (see the module's
    docstring); `signals` lists those received, for the exit code. `state` is the app's
    `ServerState`: its deadline ends the requests in flight."""

    def __init__(self, config: uvicorn.Config, state: Any, grace_s: float) -> None:
        super().__init__(config)
        self.state, self.grace_s = state, grace_s
        self.signals: list[int] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # not uvicorn's: it re-raises the signal once stopped (an exception in the stage)
        # and a second Ctrl-C abandons the requests in flight and the shutdown
        self.signals.append(sig)
        if self.should_exit:  # a second signal: the grace period ends now
            self.grace_s = 0
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._stop_within, 0)
        self.should_exit = True

    def interrupted(self) -> bool:
        """Stopped by Ctrl-C (SIGINT), not SIGTERM."""
        return signal.SIGINT in self.signals

    async def shutdown(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_within(self.grace_s)
        await super().shutdown(sockets)

    def _stop_within(self, seconds: float) -> None:
        self.state.stop_within(seconds)
        for connection in list(self.server_state.connections):
            if isinstance(connection, LimitedH11Protocol):
                connection.cut_upload(seconds)
