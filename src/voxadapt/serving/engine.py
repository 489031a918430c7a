"""The serving engine: one loaded model, a bounded queue of requests, and dynamic batching.

Requests arrive as audio files (long ones already cut into speech segments the way
`transcribe` cuts them). One worker thread takes the oldest request, gathers more that share
its bias terms until `max_batch` segments or `max_wait_ms` have passed, and decodes them
together through the decoding engine (`decoding.Transcriber`), so throughput grows with
concurrency. A request's result is its segments stitched in order, exactly as `transcribe`
stitches them. A crash while decoding a batch fails the requests of that batch only.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from voxadapt.audio import AudioError
from voxadapt.decoding import (
    AudioItem,
    DecodeOptions,
    TermBias,
    Transcriber,
    Transcript,
    split_long_form,
    stitch,
)

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The queue holds `max_queue` requests already: the client should retry later."""


class EngineStopped(Exception):
    """The engine is shutting down and takes no new requests."""


@dataclass
class Job:
    """One request: the audio to decode and where its result goes."""

    item: AudioItem  # the whole recording (its language is the request's)
    bias_terms: tuple[tuple[str, ...], ...]  # the server's terms plus the request's hotwords
    bias_weight: float
    units: list[AudioItem] = field(default_factory=list)  # what is decoded: segments or item
    parts: list[tuple[AudioItem, float, float]] | None = None  # long-form segments
    results: dict[int, Transcript | AudioError] = field(default_factory=dict)
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def bias_key(self) -> tuple:
        return (self.bias_terms, self.bias_weight) if self.bias_terms else ()


@dataclass
class EngineResult:
    """A finished request: its transcript and, for every recording, its segments."""

    transcript: Transcript | AudioError
    segments: list[dict[str, Any]]


class BatchingEngine:
    """Decodes submitted jobs on one worker thread, batching across requests."""

    def __init__(
        self,
        transcriber: Transcriber,
        options: DecodeOptions,
        *,
        max_batch: int,
        max_wait_ms: float,
        max_queue: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        # Every item carries its request's language ("manifest" reads it per item), so
        # requests in different languages still share a batch.
        # Features are computed in this process (num_workers=0): forking DataLoader workers
        # from a threaded server can deadlock a child on a lock another thread held.
        self.options = replace(options, language="manifest", batch_size=max_batch, num_workers=0)
        self.transcriber = transcriber
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._queue: queue.Queue[Job] = queue.Queue()
        self._waiting: list[Job] = []  # taken from the queue, not yet in a batch
        self._stopping = threading.Event()
        self._biases: dict[tuple, TermBias] = {}
        self._thread = threading.Thread(target=self._run, name="voxadapt-engine", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ requests

    def depth(self) -> int:
        """Requests waiting for a batch."""
        return self._queue.qsize() + len(self._waiting)

    def submit(self, job: Job) -> concurrent.futures.Future:
        """Queue `job` (its long recording cut into segments first); QueueFull when full."""
        if self._stopping.is_set():
            raise EngineStopped("the server is shutting down")
        if self.depth() >= self.max_queue:
            raise QueueFull(f"{self.depth()} requests are waiting")
        units, parts = split_long_form([job.item], self.options)
        job.parts = parts.get(id(job.item))
        job.units = units
        if job.parts is not None and not job.parts:  # no speech at all
            job.future.set_result(EngineResult(Transcript("", None, 0, False, None), []))
            return job.future
        self._queue.put(job)
        return job.future

    def close(self, timeout_s: float = 30.0) -> None:
        """Finish the jobs already queued, then stop the worker."""
        self._stopping.set()
        self._queue.put(_STOP)
        self._thread.join(timeout_s)

    # -------------------------------------------------------------------- worker

    def _run(self) -> None:
        while True:
            job = self._next(timeout=None)
            if job is _STOP:
                self._fail_waiting()
                return
            batch = self._gather(job)
            try:
                self._decode(batch)
            except Exception as exc:  # one bad batch fails its requests, not the server
                log.error("decoding a batch of %d requests failed: %s", len(batch), exc)
                for member in batch:
                    if not member.future.done():
                        member.future.set_exception(exc)

    def _next(self, timeout: float | None) -> Any:
        """The next live job (set aside ones first), the stop mark, or None after
        `timeout` seconds (None: wait as long as it takes). A job whose client went away is
        dropped here, so it never reaches a batch."""
        while True:
            if self._waiting:
                job = self._waiting.pop(0)
            else:
                try:
                    job = self._queue.get(timeout=timeout)
                except queue.Empty:
                    return None
            if job is _STOP or not job.cancelled.is_set():
                return job
            job.future.cancel()

    def _gather(self, first: Job) -> list[Job]:
        """`first` and the queued jobs with the same bias, up to max_batch units, waiting
        at most max_wait for more to arrive; the others keep their place in line."""
        batch, units = [first], len(first.units)
        deadline = time.monotonic() + self.max_wait_s
        set_aside: list[Any] = []
        while units < self.max_batch:
            left = deadline - time.monotonic()
            job = self._next(timeout=left) if left > 0 else None
            if job is None:
                break
            if job is _STOP or units + len(job.units) > self.max_batch:
                set_aside.append(job)
                break
            if job.bias_key != first.bias_key:
                set_aside.append(job)
                continue
            batch.append(job)
            units += len(job.units)
        self._waiting[:0] = set_aside
        return batch

    def _decode(self, batch: list[Job]) -> None:
        items = [unit for job in batch for unit in job.units]
        owner = {id(unit): job for job in batch for unit in job.units}
        if self.on_batch:
            self.on_batch(len(items))
        bias = self._bias(batch[0])
        for done in self.transcriber.transcribe(items, self.options, bias=bias):
            for unit, result in done:
                job = owner[id(unit)]
                job.results[id(unit)] = result
                if len(job.results) == len(job.units) and not job.future.done():
                    job.future.set_result(self._finish(job))

    def _bias(self, job: Job) -> TermBias | None:
        if not job.bias_key:
            return None
        if job.bias_key not in self._biases:
            if len(self._biases) > 64:  # per-request hotwords: keep the cache bounded
                self._biases.clear()
            self._biases[job.bias_key] = TermBias.from_terms(
                job.bias_terms, self.transcriber.prompts, job.bias_weight
            )
        return self._biases[job.bias_key]

    @staticmethod
    def _finish(job: Job) -> EngineResult:
        if job.parts is None:
            result = job.results[id(job.item)]
            if isinstance(result, AudioError):
                return EngineResult(result, [])
            duration = round(job.item.duration, 3)
            return EngineResult(result, [{"start": 0.0, "end": duration, "text": result.text}])
        transcript, segments = stitch(job.parts, job.results)
        return EngineResult(transcript, segments or [])

    def _fail_waiting(self) -> None:
        for job in self._waiting:
            if not job.future.done():
                job.future.set_exception(EngineStopped("the server is shutting down"))


_STOP: Any = object()
