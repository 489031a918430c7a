"""Word timestamps for any base: Qwen3's forced aligner run over finished transcripts.

The aligner (Qwen3ASRForTokenClassification, e.g. Qwen/Qwen3-ForcedAligner-0.6B-hf) reads a
segment's audio and its transcript, one word after another with two `<timestamp>` slots each,
and classifies every slot into one of 5000 classes of 80 ms: the word's start and end. It does
not transcribe, so it times Voxtral's transcripts as well as Qwen3-ASR's. One forward pass per
batch of segments, no generation.

What a word is: a transcript's whitespace-separated tokens (Korean eojeol) keep their
punctuation, so the words joined by spaces are the transcript with its whitespace normalized;
no word is lost or invented. The aligner is given each word cleaned as transformers' processor
cleans it (letters, digits, apostrophes; CJK ideographs one by one outside Korean). A token
with nothing left (a lone "-", "…", an emoji) joins the word before it (the first word: the one
after it) and takes that word's time.

Times are seconds from the start of the recording, clipped to the segment that was aligned
and to the audio there is, made monotonic (each word starts where the one before ended or
later, ends where it starts or later) and rounded to milliseconds.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxadapt.audio import AudioError, load_audio
from voxadapt.errors import ModelError, VoxadaptError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
# The aligner's window: its head has 5000 classes of 80 ms, so no time past 400 s can be
# expressed, and Qwen's model card supports up to 5 minutes of audio per call. Long-form
# segments are at most 30 s; a longer one (a short-form recording decoded in one pass) is
# refused for that recording rather than aligned wrongly.
MAX_SEGMENT_S = 300.0
ALIGNER_ARCHITECTURE = "Qwen3ASRForTokenClassification"
# ISO codes of the languages the aligner was trained on (transformers'
# processing_qwen3_asr.FORCED_ALIGNER_LANGUAGES, by code).
ALIGNER_LANGUAGES = ("zh", "en", "yue", "fr", "de", "it", "ja", "ko", "pt", "ru", "es")
_KOREAN = "ko"


class AlignmentError(VoxadaptError):
    """Words cannot be timed: not an aligner, an unsupported language, a segment too long."""


@dataclass(frozen=True)
class Word:
    """One word of a transcript with its time, in seconds from the start of the recording."""

    word: str
    start: float
    end: float

    def to_dict(self) -> dict[str, Any]:
        return {"word": self.word, "start": self.start, "end": self.end}


@dataclass(frozen=True)
class AlignmentRequest:
    """One stretch of a recording and its transcript, to be timed word by word."""

    audio: str | Path  # the audio file
    offset: float | None  # where the recording starts inside the file (None: at 0)
    start: float  # the segment, in seconds from the start of the recording
    end: float
    text: str  # its transcript
    language: str | None = None  # ISO code (None: no language-specific word splitting)


def language_problem(language: str | None) -> str | None:
    """Why the aligner cannot time words of `language` (an ISO code), or None."""
    if language is None or language in ALIGNER_LANGUAGES:
        return None
    return (
        f"the Qwen3 forced aligner times words of {', '.join(ALIGNER_LANGUAGES)}, not {language!r}"
    )


def _is_cjk_ideograph(char: str) -> bool:
    from transformers.models.qwen3_asr.processing_qwen3_asr import _is_cjk_char

    return _is_cjk_char(char)


def _is_kept(char: str) -> bool:
    from transformers.models.qwen3_asr.processing_qwen3_asr import _is_kept_char

    return _is_kept_char(char)


def aligner_units(token: str, language: str | None) -> list[str]:
    """What the aligner is given for one whitespace-separated token: its letters, digits and
    apostrophes; outside Korean each CJK ideograph is a unit of its own (transformers'
    default splitting); [] for a token of punctuation or symbols only.

    Korean: transformers splits with soynlp's `LTokenizer()`, which without trained scores
    returns every eojeol whole, then drops punctuation. We split on whitespace and clean the
    same way instead (no soynlp dependency; the same units). Qwen's own package scores
    LTokenizer with a dictionary and splits eojeol into stem and ending; transformers does
    not, and neither do we. Japanese is not split by nagisa: kana runs stay whole.
    """
    if language == _KOREAN:
        cleaned = "".join(char for char in token if _is_kept(char))
        return [cleaned] if cleaned else []
    units: list[str] = []
    run: list[str] = []
    for char in token:
        if _is_cjk_ideograph(char):
            if run:
                units.append("".join(run))
                run = []
            units.append(char)
        elif _is_kept(char):
            run.append(char)
    if run:
        units.append("".join(run))
    return units


def split_words(text: str, language: str | None) -> list[tuple[str, list[str]]]:
    """The transcript's words (whitespace-separated, punctuation kept) with the aligner units
    of each; a token without units is joined to the word before it (or, first, the next).
    Every word has units unless none has ([(text, [])]); an empty text gives []."""
    tokens = [(token, aligner_units(token, language)) for token in text.split()]
    words: list[tuple[str, list[str]]] = []
    pending: list[str] = []  # unit-less tokens before the first word with units
    for token, units in tokens:
        if units:
            words.append((" ".join([*pending, token]), units))
            pending = []
        elif words:
            previous, previous_units = words[-1]
            words[-1] = (f"{previous} {token}", previous_units)
        else:
            pending.append(token)
    if pending:  # nothing to align at all: one word for the whole text
        words.append((" ".join(pending), []))
    return words


def place_words(
    words: Sequence[tuple[str, list[str]]],
    unit_times: Sequence[tuple[float, float]],
    start: float,
    end: float,
) -> list[Word]:
    """Words with times from their units' (start, end) seconds relative to the segment:
    shifted to the recording, clipped to [start, end] (to the whole milliseconds inside),
    monotonic, rounded to ms. A word without units (a text with nothing to align) spans
    the segment."""
    # whole milliseconds inside the segment, so rounding never steps out of it
    start, end = math.ceil(start * 1000 - 1e-6) / 1000, math.floor(end * 1000 + 1e-6) / 1000
    end = max(end, start)
    placed: list[Word] = []
    cursor = start
    index = 0
    for text, units in words:
        if units:
            first, last = unit_times[index], unit_times[index + len(units) - 1]
            begin, finish = start + first[0], start + last[1]
            index += len(units)
        else:
            begin, finish = start, end
        begin = min(max(begin, cursor), end)
        finish = min(max(finish, begin), end)
        placed.append(Word(text, round(begin, 3), round(finish, 3)))
        cursor = finish
    return placed


def _check_aligner_config(config: Any, source: str) -> None:
    architectures = list(getattr(config, "architectures", None) or [])
    if ALIGNER_ARCHITECTURE in architectures:
        return
    what = ", ".join(architectures) or getattr(config, "model_type", None) or "unknown"
    raise AlignmentError(
        f"--aligner {source} is not a Qwen3 forced aligner ({what}): give "
        "Qwen/Qwen3-ForcedAligner-0.6B-hf or a folder of it"
    )


def check_aligner(model: str | Path) -> None:
    """AlignmentError (one line) if `model` is a folder that is missing or holds no forced
    aligner; a hub id is checked when it loads (no download just to check)."""
    from voxadapt.families import FamilyError, load_config
    from voxadapt.families.qwen3_asr_checkpoint import ALIGNER_HUB_ID, ORIGINAL_HUB_IDS

    text = str(model)
    if text == ORIGINAL_HUB_IDS[ALIGNER_HUB_ID]:  # Qwen's own layout, not read by transformers
        raise AlignmentError(
            f"--aligner {text} is the original release, which transformers does not load: "
            f"give {ALIGNER_HUB_ID}"
        )
    # as `families.load_config`: a path (not a hub id "namespace/name") must exist
    looks_like_path = text.startswith(("/", ".", "~")) or text.count("/") > 1 or "\\" in text
    if not Path(text).expanduser().exists():
        if looks_like_path:
            raise AlignmentError(f"--aligner: model folder not found: {text}")
        return
    try:
        config = load_config(text)
    except FamilyError as exc:
        raise AlignmentError(f"--aligner: {exc}") from None
    _check_aligner_config(config, text)


class Aligner:
    """A loaded forced aligner: `align` times the words of transcript segments, batched."""

    def __init__(self, model: Any, processor: Any, device: Any) -> None:
        self.model = model
        self.processor = processor
        self.device = device
        self.timestamp_token_id = int(model.config.timestamp_token_id)
        self.segment_ms = float(getattr(processor, "timestamp_segment_time", 80))
        # one forward pass at a time when several threads share the aligner (the server)
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls, model: str | Path, *, device: str | None = None, dtype: str | None = None
    ) -> Aligner:
        """Load the aligner at a hub id or folder (AlignmentError, one line, for anything
        else: a missing folder, a speech recognizer); dtype: bf16 | fp16 | fp32, None for
        the device's default."""
        import torch
        from transformers import AutoProcessor, Qwen3ASRForTokenClassification

        from voxadapt.families import FamilyError, load_config
        from voxadapt.model import attention_implementation, default_dtype, resolve_dtype

        check_aligner(model)
        try:  # a hub id's config (a folder's was read by `check_aligner`: cached, cheap)
            config = load_config(model)
        except FamilyError as exc:
            raise AlignmentError(f"--aligner: {exc}") from None
        _check_aligner_config(config, str(model))
        target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        torch_dtype = resolve_dtype(dtype) or default_dtype(target)
        try:
            processor = AutoProcessor.from_pretrained(str(model))
            network = Qwen3ASRForTokenClassification.from_pretrained(
                str(model), dtype=torch_dtype, attn_implementation=attention_implementation(target)
            )
        except (OSError, ValueError) as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"cannot load the aligner {model}: {detail[:300]}") from None
        network.to(target).eval()
        return cls(network, processor, target)

    def align(self, requests: Sequence[AlignmentRequest], batch_size: int = 8) -> list[list[Word]]:
        """The words of each request, with times (see the module docstring); raises the
        first request's error (AlignmentError, AudioError). Languages and lengths are
        checked before any audio is read."""
        results = self.align_each(requests, batch_size)
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results  # type: ignore[return-value]

    def align_each(
        self, requests: Sequence[AlignmentRequest], batch_size: int = 8
    ) -> list[list[Word] | AlignmentError | AudioError]:
        """As `align`, but a request that fails gets its error in its place (the others are
        aligned); an unsupported language is still refused for all before any work."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        for request in requests:
            problem = language_problem(request.language)
            if problem:
                raise AlignmentError(problem)
        results: list[Any] = [None] * len(requests)
        todo: list[tuple[int, list[tuple[str, list[str]]]]] = []
        for index, request in enumerate(requests):
            words = split_words(request.text, request.language)
            length = request.end - request.start
            if not words:
                results[index] = []
            elif length > MAX_SEGMENT_S:
                results[index] = AlignmentError(
                    f"a segment of {length:.0f} s: the aligner times at most "
                    f"{MAX_SEGMENT_S:.0f} s at once (long recordings: keep --vad on)"
                )
            elif not any(units for _, units in words):
                results[index] = place_words(words, [], request.start, request.end)
            else:
                todo.append((index, words))
        todo.sort(key=lambda entry: requests[entry[0]].end - requests[entry[0]].start)
        for begin in range(0, len(todo), batch_size):
            batch = todo[begin : begin + batch_size]
            done = self._align_batch([requests[i] for i, _ in batch], [w for _, w in batch])
            for (index, _), result in zip(batch, done):
                results[index] = result
        return results

    def _align_batch(
        self,
        requests: Sequence[AlignmentRequest],
        words: Sequence[list[tuple[str, list[str]]]],
    ) -> list[list[Word] | AudioError]:
        """One forward pass over the requests whose audio reads (the rest get their error)."""
        import torch

        results: list[Any] = [None] * len(requests)
        audios, ready = [], []
        for index, request in enumerate(requests):
            try:
                samples = load_audio(
                    Path(request.audio),
                    SAMPLE_RATE,
                    offset=(request.offset or 0.0) + request.start,
                    duration=request.end - request.start,
                )
            except AudioError as exc:
                results[index] = exc
                continue
            # times may not pass the audio there is (a segment past the end of the file)
            end = min(request.end, request.start + len(samples) / SAMPLE_RATE)
            if len(samples) == 0:
                results[index] = place_words(words[index], [], request.start, end)
                continue
            audios.append(samples)
            ready.append((index, end))
        if not ready:
            return results
        unit_lists = [[u for _, units in words[i] for u in units] for i, _ in ready]
        prompts = [self._prompt(units) for units in unit_lists]
        inputs = self.processor(text=prompts, audio=audios, return_tensors="pt", padding=True)
        inputs.pop("num_audio_tokens", None)
        inputs = inputs.to(self.device)
        inputs["input_features"] = inputs["input_features"].to(self.model.dtype)
        with self._lock, torch.inference_mode():
            logits = self.model(**inputs).logits.float()
        timed = self.processor.decode_forced_alignment(
            logits, inputs["input_ids"], unit_lists, self.timestamp_token_id, self.segment_ms
        )
        for (index, end), units in zip(ready, timed):
            times = [(u["start_time"], u["end_time"]) for u in units]
            results[index] = place_words(words[index], times, requests[index].start, end)
        return results

    def _prompt(self, units: Iterable[str]) -> str:
        """The aligner's input text: the audio placeholder, then each unit and its two
        `<timestamp>` slots (Qwen's `encode_timestamp`; the processor expands the audio)."""
        processor = self.processor
        audio = processor.audio_bos_token + processor.audio_token + processor.audio_eos_token
        return audio + "".join(f"{unit}<timestamp><timestamp>" for unit in units)


def flat_words(words_per_segment: Iterable[Sequence[Word]]) -> list[dict[str, Any]]:
    """A row's `words`: every segment's words in order, as {"word", "start", "end"}."""
    return [word.to_dict() for words in words_per_segment for word in words]


def recording_requests(
    recording: Any, text: str, segments: Sequence[dict[str, Any]] | None, language: str | None
) -> list[AlignmentRequest]:
    """The requests of one transcript: one per long-form segment (times relative to the
    recording), else one for the whole recording. `recording`: a decoding `AudioItem` (its
    `audio`, `offset` and `duration`)."""
    audio, offset = recording.audio, recording.offset
    if segments is None:
        return [AlignmentRequest(audio, offset, 0.0, float(recording.duration), text, language)]
    return [
        AlignmentRequest(audio, offset, float(s["start"]), float(s["end"]), s["text"], language)
        for s in segments
    ]


def add_words(
    aligner: Aligner,
    rows: Sequence[dict[str, Any]],
    recordings: Sequence[Any],
    languages: Sequence[str | None],
    batch_size: int = 8,
    *,
    text_field: str = "text",
) -> int:
    """Time the words of finished transcript rows in place, all their segments batched
    together: a row gets `words` (and each of its `segments` its own `words`), or, when its
    alignment fails, `words_error` with the reason (its transcript is kept). Rows without a
    transcript are left alone. `recordings`: each row's `AudioItem`; `languages`: each row's
    language code (None: unknown); `text_field`: the row's transcript (evaluate's rows:
    `hypothesis`). Returns the number of rows that failed."""
    requests: list[AlignmentRequest] = []
    owners: list[int] = []
    for number, (row, recording, language) in enumerate(
        zip(rows, recordings, languages, strict=True)
    ):
        if row.get(text_field) is None:
            continue
        problem = language_problem(language)
        if problem:  # --language manifest: a record in a language the aligner cannot time
            row["words_error"] = problem
            continue
        for request in recording_requests(
            recording, row[text_field], row.get("segments"), language
        ):
            requests.append(request)
            owners.append(number)
    results = aligner.align_each(requests, batch_size)
    by_row: dict[int, list[Any]] = {
        number: []
        for number, row in enumerate(rows)
        if row.get(text_field) is not None and "words_error" not in row
    }  # a long recording without speech has no segments, and no words
    for number, result in zip(owners, results):
        by_row.setdefault(number, []).append(result)
    failed = sum(1 for row in rows if "words_error" in row)
    for number, parts in by_row.items():
        row = rows[number]
        error = next((p for p in parts if isinstance(p, Exception)), None)
        if error is not None:
            failed += 1
            reason = error.detail if isinstance(error, AudioError) else str(error)
            row["words_error"] = reason
            log.warning("%s: no word timestamps: %s", row.get("id"), reason)
            continue
        row["words"] = flat_words(parts)
        for segment, words in zip(row.get("segments") or [], parts):
            segment["words"] = [word.to_dict() for word in words]
    return failed
