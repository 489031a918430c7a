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
import math
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from voxadapt.audio import AudioError
from voxadapt.biasing import TermBias
from voxadapt.decoding import (
    AudioItem,
    DecodeOptions,
    Transcriber,
    Transcript,
)
from voxadapt.longform import split_long_form, stitch
from voxadapt.vad import VadOptions

if TYPE_CHECKING:
    from voxadapt.alignment import Aligner

log = logging.getLogger(__name__)

# The bias cache: a request may bring 4000 characters of hotwords (serving.fields), so 64
# distinct ones fill it; a server's own --bias-terms are part of every entry.
MAX_BIAS_CACHE_CHARS = 256_000
MAX_BIASES = 64


class QueueFull(Exception):
    """The queue holds `max_queue` requests already: the client should retry later."""


class EngineStopped(Exception):
    """The engine is shutting down and takes no new requests."""


@dataclass
class Job:
    """One request: the audio to decode, how, and where its result goes."""

    item: AudioItem  # the whole recording (its language is the request's)
    bias_terms: tuple[tuple[str, ...], ...]  # the server's terms plus the request's hotwords
    bias_weight: float
    adapter: str | None = None  # the adapter that decodes it (None: the only one or none)
    context: str | None = None  # the family's context prompt (the request's `prompt`)
    vad: VadOptions | None = None  # how a long recording is cut (`chunking_strategy`)
    words: bool = False  # word timestamps wanted (the engine has an aligner)
    logprobs: bool = False  # token log-probabilities wanted (logprobs, avg_logprob)
    # streaming: called on the engine's thread with each new piece of text, in order;
    # the pieces joined equal the final transcript
    on_delta: Callable[[str], None] | None = None
    units: list[AudioItem] = field(default_factory=list)  # what is decoded: segments or item
    parts: list[tuple[AudioItem, float, float]] | None = None  # long-form segments
    results: dict[int, Transcript | AudioError] = field(default_factory=dict)
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    cancelled: threading.Event = field(default_factory=threading.Event)
    streamed: str = ""  # the text sent through on_delta so far
    next_part: int = 0  # long-form streaming: the first segment not yet sent

    @property
    def bias_key(self) -> tuple:
        return (self.bias_terms, self.bias_weight) if self.bias_terms else ()

    @property
    def batch_key(self) -> tuple:
        """Jobs share a batch only if they decode with the same adapter, context and bias."""
        return (self.adapter, self.context, self.bias_key)


@dataclass
class EngineResult:
    """A finished request: its transcript and, for every recording, its segments (with the
    transcript of each in `pieces`, in the same order)."""

    transcript: Transcript | AudioError
    segments: list[dict[str, Any]]
    pieces: list[Transcript] = field(default_factory=list)
    words: list[dict[str, Any]] | None = None  # [{"word", "start", "end"}] when asked for
    words_error: str | None = None  # why the words could not be timed


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
        select_adapter: Callable[[str | None], None] | None = None,
        aligner: Aligner | None = None,
        max_bias_chars: int = MAX_BIAS_CACHE_CHARS,
    ) -> None:
        # Every item carries its request's language ("manifest" reads it per item), so
        # requests in different languages still share a batch.
        # Features are computed in this process (num_workers=0): forking DataLoader workers
        # from a threaded server can deadlock a child on a lock another thread held.
        # (a plain DecodeOptions: serve's own refuses a batch size or workers set by hand)
        given = {name.name: getattr(options, name.name) for name in fields(DecodeOptions)}
        self.options = DecodeOptions(
            **{**given, "language": "manifest", "batch_size": max_batch, "num_workers": 0}
        )
        self.transcriber = transcriber
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.max_queue = max_queue
        self.on_batch = on_batch
        self.select_adapter = select_adapter
        self.aligner = aligner
        self._queue: queue.Queue[Job] = queue.Queue()
        self._waiting: list[Job] = []  # taken from the queue, not yet in a batch
        # jobs submitted and not yet in a batch: counted under a lock, so concurrent
        # submissions never take the depth past max_queue
        self._lock = threading.Lock()
        self._pending = 0
        self._seconds_per_job = 0.0  # recent decoding time per request (moving average)
        self.stopped_rows = 0  # clips stopped mid-generation because their client left
        self._stopping = threading.Event()
        # per-request hotwords make a bias each: the most recently used are kept, at most
        # max_bias_chars characters of terms in all (the newest is kept whatever its size)
        self._biases: OrderedDict[tuple, TermBias] = OrderedDict()
        self.max_bias_chars = max_bias_chars
        self.bias_chars = 0  # characters of the cached biases' spellings
        self._thread = threading.Thread(target=self._run, name="voxadapt-engine", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ requests

    def depth(self) -> int:
        """Requests waiting for a batch (never more than max_queue)."""
        return self._pending

    def retry_after_s(self) -> int:
        """When a refused client should try again: the queue's length at the recent pace
        (one batch of max_batch requests at a time), 1 s at least, 10 min at most."""
        if self._seconds_per_job <= 0:
            return 1
        batches = math.ceil(max(self.depth(), 1) / self.max_batch)
        return max(1, min(600, math.ceil(batches * self._seconds_per_job * self.max_batch)))

    def submit(self, job: Job) -> concurrent.futures.Future:
        """Queue `job` (its long recording cut into segments first); QueueFull when full."""
        if self._stopping.is_set():
            raise EngineStopped("the server is shutting down")
        with self._lock:  # claim a place before the (slow) segmentation
            if self._pending >= self.max_queue:
                raise QueueFull(f"{self._pending} requests are waiting")
            self._pending += 1
        try:
            options = self.options if job.vad is None else replace(self.options, vad=True)
            units, parts = split_long_form([job.item], options, vad=job.vad)
        except BaseException:
            self._taken()
            raise
        job.parts = parts.get(id(job.item))
        job.units = units
        if job.parts is not None and not job.parts:  # no speech at all
            self._taken()
            job.future.set_result(EngineResult(Transcript("", None, 0, False, None), []))
            return job.future
        with self._lock:  # never behind the stop mark, where no worker would take it
            if self._stopping.is_set():
                self._pending -= 1
                raise EngineStopped("the server is shutting down")
            self._queue.put(job)
        return job.future

    def _taken(self, count: int = 1) -> None:
        with self._lock:
            self._pending -= count

    def close(self, timeout_s: float = 30.0) -> bool:
        """Finish the jobs already queued (cancelled ones are dropped), then stop the worker;
        whether it stopped within `timeout_s`."""
        with self._lock:
            if not self._stopping.is_set():
                self._stopping.set()
                self._queue.put(_STOP)
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

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
            self._taken()
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
            if job.batch_key != first.batch_key:
                set_aside.append(job)
                continue
            batch.append(job)
            units += len(job.units)
        self._waiting[:0] = set_aside
        self._taken(len(batch))
        return batch

    def _decode(self, batch: list[Job]) -> None:
        started = time.monotonic()
        items = [unit for job in batch for unit in job.units]
        owner = {id(unit): job for job in batch for unit in job.units}
        if self.on_batch:
            self.on_batch(len(items))
        if self.select_adapter is not None:
            self.select_adapter(batch[0].adapter)
        options = replace(self.options, context=batch[0].context)
        bias = self.bias(batch[0])

        stopped: set[int] = set()

        def watch(decoding: Sequence[AudioItem], rows: list[list[int]]) -> list[bool]:
            flags = []
            for unit, ids in zip(decoding, rows):
                job = owner[id(unit)]
                if job.cancelled.is_set():  # the client went away: stop its rows
                    if id(unit) not in stopped:
                        stopped.add(id(unit))
                        self.stopped_rows += 1
                elif job.on_delta is not None and job.parts is None:
                    self._stream_tokens(job, ids)
                flags.append(job.cancelled.is_set())
            return flags

        timed: list[tuple[Job, EngineResult]] = []  # finished, waiting for word times
        scored = any(job.logprobs for job in batch)
        decoding = self.transcriber.transcribe(
            items, options, bias=bias, watch=watch, logprobs=scored
        )
        for done in decoding:
            for unit, result in done:
                job = owner[id(unit)]
                job.results[id(unit)] = result
                if job.on_delta is not None:
                    self._stream_result(job)
                if len(job.results) == len(job.units) and not job.future.done():
                    finished = self._finish(job)
                    if job.words and self.aligner is not None and finished.pieces:
                        timed.append((job, finished))
                    else:
                        job.future.set_result(finished)
        if timed:
            self._time_words(timed)
        seconds = (time.monotonic() - started) / len(batch)
        self._seconds_per_job = (
            seconds if not self._seconds_per_job else (0.7 * self._seconds_per_job + 0.3 * seconds)
        )

    def _time_words(self, timed: list[tuple[Job, EngineResult]]) -> None:
        """Word times of the batch's finished requests, aligned together (each segment of a
        long recording on its own); a request whose alignment fails keeps its transcript
        and says why in `words_error`."""
        from voxadapt.alignment import add_words

        rows = []
        for job, finished in timed:
            row: dict[str, Any] = {"text": finished.transcript.text}  # type: ignore[union-attr]
            if job.parts is not None:
                row["segments"] = [dict(segment) for segment in finished.segments]
            rows.append(row)
        languages = [job.item.language or _named(finished) for job, finished in timed]
        assert self.aligner is not None
        add_words(self.aligner, rows, [job.item for job, _ in timed], languages)
        for (job, finished), row in zip(timed, rows):
            finished.words = row.get("words")
            finished.words_error = row.get("words_error")
            job.future.set_result(finished)

    # ----------------------------------------------------------------- streaming

    def _stream_tokens(self, job: Job, ids: list[int]) -> None:
        """Send what is certain of a clip still being decoded: the text up to its last
        space (the last word and the last token, maybe part of a character, can change)."""
        prompts = self.transcriber.prompts
        if any(token in prompts.stop_ids for token in ids):
            return  # finished: the rest comes with its result
        text = prompts.partial_text(ids[:-1])
        if not text:
            return
        cut = max(text.rfind(" "), text.rfind("\n"))
        self._send(job, text[:cut] if cut > 0 else "")

    def _stream_result(self, job: Job) -> None:
        """Send the rest of a finished clip, or of a long recording's segments in order."""
        if job.parts is None:
            result = job.results.get(id(job.item))
            if isinstance(result, Transcript):
                self._send(job, result.text)
            return
        while job.next_part < len(job.parts):
            result = job.results.get(id(job.parts[job.next_part][0]))
            if not isinstance(result, Transcript):
                return  # not decoded yet, or an error (the request fails as a whole)
            job.next_part += 1
            if result.text:
                self._send(job, f"{job.streamed} {result.text}" if job.streamed else result.text)

    @staticmethod
    def _send(job: Job, text: str) -> None:
        if job.on_delta is None or len(text) <= len(job.streamed):
            return
        if not text.startswith(job.streamed):  # cleaning changed earlier text: wait
            log.warning("a streamed transcript changed after it was sent; the rest is held")
            return
        delta, job.streamed = text[len(job.streamed) :], text
        job.on_delta(delta)

    def bias(self, job: Job) -> TermBias | None:
        """The job's bias, from the cache (most recently used first) or built and cached."""
        key = job.bias_key
        if not key:
            return None
        if key in self._biases:
            self._biases.move_to_end(key)
            return self._biases[key]
        bias = TermBias.from_terms(job.bias_terms, self.transcriber.prompts, job.bias_weight)
        self._biases[key] = bias
        self.bias_chars += bias_chars(key)
        while len(self._biases) > 1 and (
            self.bias_chars > self.max_bias_chars or len(self._biases) > MAX_BIASES
        ):
            oldest, _ = self._biases.popitem(last=False)
            self.bias_chars -= bias_chars(oldest)
        return bias

    @staticmethod
    def _finish(job: Job) -> EngineResult:
        if job.parts is None:
            result = job.results[id(job.item)]
            if isinstance(result, AudioError):
                return EngineResult(result, [])
            duration = round(job.item.duration, 3)
            segment = {"start": 0.0, "end": duration, "text": result.text}
            return EngineResult(result, [segment], [result])
        transcript, segments = stitch(job.parts, job.results)
        if segments is None:
            return EngineResult(transcript, [])
        pieces = [job.results[id(part)] for part, _, _ in job.parts]
        return EngineResult(transcript, segments, pieces)  # type: ignore[arg-type]

    def _fail_waiting(self) -> None:
        for job in self._waiting:
            if not job.future.done():
                job.future.set_exception(EngineStopped("the server is shutting down"))


def bias_chars(key: tuple) -> int:
    """The size of a cached bias: the characters of its terms' spellings (its token trie
    grows with them)."""
    terms = key[0] if key else ()
    return sum(len(spelling) for spellings in terms for spelling in spellings)


def _named(finished: EngineResult) -> str | None:
    """The language the model named for a transcript it detected the language of."""
    return next((piece.language for piece in finished.pieces if piece.language), None)


_STOP: Any = object()
