"""The fields of `POST /v1/audio/transcriptions`: every one OpenAI's API (or vLLM's) defines is
honoured or refused with a 400 naming it; none is accepted and ignored.

What each means here:
- `model`: the served id (`GET /v1/models`); with several adapters it picks the adapter.
- `language`: an ISO 639-1 code the model's family can be told, or `auto` (the model
  detects it; the response reports what it found where the family says). Omitted: the
  server's `--language` (ko by default; start it with `--language auto` to detect).
- `prompt`: the family's context prompt (Qwen3-ASR's system prompt: topic, terms, names).
  Voxtral's transcription request takes none: a non-empty prompt is a 400 there, because a
  client that sends one expects it to change the transcript (use `keywords[]`/`hotwords`).
- `keywords[]` (OpenAI) and `hotwords` (vLLM, comma-separated): terms favoured while decoding,
  like the server's `--bias-terms`, with `bias_weight` (ours) as the bonus.
- `include[]=logprobs`: token log-probabilities (json and verbose_json, and the stream's
  done event).
- `chunking_strategy`: `auto` (our voice-activity segmentation of long recordings, the
  default) or `{"type": "server_vad", "prefix_padding_ms", "silence_duration_ms",
  "threshold"}`, mapped onto it: padding kept around speech, the pause that ends a segment,
  and WebRTC's aggressiveness (threshold 0..1 -> 0..3). It applies to recordings longer than
  the server's `--long-form-threshold`; shorter ones are one segment.
- `stream=true`: server-sent events (json and text only).
- `timestamp_granularities[]`: `segment`; `word` when the server has an aligner.
- `temperature`: 0 (greedy decoding) only.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from voxadapt.data import AUTO_LANGUAGE
from voxadapt.decoding import MAX_BIAS_WEIGHT
from voxadapt.manifest import language_problem
from voxadapt.text import term_spellings
from voxadapt.vad import VadOptions

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
STREAM_FORMATS = ("json", "text")
LOGPROB_FORMATS = ("json", "verbose_json")
WORD_FORMATS = ("verbose_json", "srt", "vtt")
MAX_PROMPT_CHARS = 2000
# keywords[] and hotwords together: each term is a bias of its own, cached by the engine
# (serving.engine.MAX_BIAS_CACHE_CHARS), so a request's share is bounded in characters too
MAX_KEYWORDS = 100
MAX_TERM_CHARS = 100  # "CT|씨티|컴퓨터 단층촬영": spellings of a term, together
MAX_TERMS_CHARS = 4000
# field -> the names it may arrive under (the official client writes lists as `name[]`)
_LIST_FIELDS = {
    "timestamp_granularities": ("timestamp_granularities[]", "timestamp_granularities"),
    "include": ("include[]", "include"),
    "keywords": ("keywords[]", "keywords"),
}
_LIST_NAMES = {name for names in _LIST_FIELDS.values() for name in names}
_FIELDS = {
    "file",
    "model",
    "language",
    "prompt",
    "response_format",
    "temperature",
    "stream",
    "chunking_strategy",
    "hotwords",
    "bias_weight",
    *_LIST_NAMES,
}
_CHUNKING_KEY = re.compile(r"chunking_strategy\[(\w+)\]")
_REGION_TAG = re.compile(r"([a-z]{2})[-_][a-z0-9]{2,8}")  # ko-KR, ko_KR, zh-hant
_SERVER_VAD_KEYS = {"type", "prefix_padding_ms", "silence_duration_ms", "threshold"}


class FieldError(Exception):
    """A field the request cannot have as it is (answered as a 400 naming it)."""

    def __init__(self, message: str, param: str, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.status, self.code = message, param, status, code


@dataclass
class RequestFields:
    """One request's fields, checked."""

    model: str  # the served id
    adapter: str | None  # the adapter's name inside the model
    response_format: str
    language: str  # a code, or "auto"
    bias_terms: tuple[tuple[str, ...], ...]
    bias_weight: float
    context: str | None
    stream: bool
    logprobs: bool
    words: bool
    vad: VadOptions | None


def _text(form: Any, name: str, default: str | None = None) -> str | None:
    value = form.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise FieldError(f"{name} must be a text field", name)
    return value


def _texts(form: Any, field: str) -> list[str]:
    values = []
    for name in _LIST_FIELDS[field]:
        for value in form.getlist(name):
            if not isinstance(value, str):
                raise FieldError(f"{field} must be text fields", field)
            values.append(value)
    return values


def parse_fields(form: Any, settings: Any) -> RequestFields:
    """The request's fields (FieldError naming the first bad one); `settings` is the
    server's `ServerSettings`."""
    unknown = sorted(
        {key for key in form if key not in _FIELDS and not _CHUNKING_KEY.fullmatch(key)}
    )
    if unknown:
        raise FieldError(
            f"unknown field {unknown[0][:40]!r}: this server does not take it", unknown[0][:40]
        )
    # a scalar field twice (stream=false&stream=true): neither may be silently dropped
    repeated = sorted(
        {key for key in form if key not in _LIST_NAMES and len(form.getlist(key)) > 1}
    )
    if repeated:
        raise FieldError(f"the field {repeated[0][:40]!r} is given twice", repeated[0][:40])
    model = _text(form, "model")
    if not model:
        raise FieldError("the field `model` is required", "model")
    if model not in settings.models:
        served = ", ".join(f"`{name}`" for name in settings.models)
        raise FieldError(
            f"the model `{model[:80]}` does not exist; this server serves {served}",
            "model",
            status=404,
            code="model_not_found",
        )
    response_format = _text(form, "response_format", "json")
    if response_format not in RESPONSE_FORMATS:
        raise FieldError(
            f"response_format must be one of {', '.join(RESPONSE_FORMATS)}", "response_format"
        )
    _check_temperature(_text(form, "temperature", "0"))
    stream = _boolean(_text(form, "stream", "false"), "stream")
    if stream and response_format not in STREAM_FORMATS:
        raise FieldError(
            f"stream: response_format {response_format} cannot be streamed; use "
            f"{' or '.join(STREAM_FORMATS)}",
            "stream",
        )
    bias_weight = _bias_weight(_text(form, "bias_weight"), settings.options.bias_weight)
    terms = [*settings.bias_terms, *_request_terms(form)]
    return RequestFields(
        model=model,
        adapter=settings.models[model],
        response_format=response_format,
        language=_language(_text(form, "language"), settings),
        bias_terms=tuple(tuple(t) for t in terms) if bias_weight > 0 else (),
        bias_weight=bias_weight,
        context=_context(_text(form, "prompt"), settings),
        stream=stream,
        logprobs=_include(_texts(form, "include"), response_format),
        words=_granularities(_texts(form, "timestamp_granularities"), response_format, settings),
        vad=_chunking(form),
    )


def _check_temperature(value: str | None) -> None:
    try:
        temperature = float(value or "0")
    except ValueError:
        raise FieldError("temperature must be a number", "temperature") from None
    if temperature != 0:
        raise FieldError("this server decodes greedily: temperature must be 0", "temperature")


def _boolean(value: str | None, name: str) -> bool:
    lowered = (value or "").strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0", ""):
        return False
    raise FieldError(f"{name} must be true or false", name)


def _bias_weight(value: str | None, default: float) -> float:
    try:
        weight = default if value is None else float(value)
    except ValueError:
        raise FieldError("bias_weight must be a number", "bias_weight") from None
    if not (math.isfinite(weight) and 0 <= weight <= MAX_BIAS_WEIGHT):
        raise FieldError(f"bias_weight must be in [0, {MAX_BIAS_WEIGHT:g}]", "bias_weight")
    return weight


def _request_terms(form: Any) -> list[list[str]]:
    """`hotwords` (comma-separated) and `keywords[]` (one term per field) as variant sets;
    the limits hold for both together, whichever field the terms arrive in."""
    terms: list[str] = []
    hotwords = (_text(form, "hotwords") or "").split(",")
    for param, given in (("hotwords", hotwords), ("keywords", _texts(form, "keywords"))):
        given = [term for term in given if term.strip()]
        if len(terms) + len(given) > MAX_KEYWORDS:
            raise FieldError(
                f"{param}: at most {MAX_KEYWORDS} terms (keywords[] and hotwords together)", param
            )
        if any(len(term) > MAX_TERM_CHARS for term in given):
            raise FieldError(f"{param}: a term is longer than {MAX_TERM_CHARS} characters", param)
        if sum(map(len, terms)) + sum(map(len, given)) > MAX_TERMS_CHARS:
            raise FieldError(
                f"{param}: at most {MAX_TERMS_CHARS} characters of terms (keywords[] and "
                "hotwords together)",
                param,
            )
        terms += given
    return [spellings for term in terms if (spellings := term_spellings(term))]


def _language(value: str | None, settings: Any) -> str:
    language = (value or settings.default_language).strip()
    if len(language) > 40:
        raise FieldError("language is too long", "language")
    # as browsers and clients write it (AUTO, KO, ko-KR): the code the model is told is
    # ISO 639-1, lower case, so "KO" and "ko" decode alike
    language = language.lower()
    if region := _REGION_TAG.fullmatch(language):
        language = region.group(1)
    if language == AUTO_LANGUAGE:
        return language
    family = settings.family
    problem = family.language_problem(language) if family else language_problem(language)
    if problem:
        raise FieldError(f"{problem} (or auto: the model detects it)", "language")
    return language


def _context(value: str | None, settings: Any) -> str | None:
    if not value or not value.strip():
        return None
    family = settings.family
    if family is None or not family.takes_context:
        title = family.title if family else "this model"
        raise FieldError(
            f"prompt: {title} has no context prompt (its transcription request takes none); "
            "use keywords[] or hotwords to favour terms",
            "prompt",
        )
    if len(value) > MAX_PROMPT_CHARS:
        raise FieldError(f"prompt: at most {MAX_PROMPT_CHARS} characters", "prompt")
    return value.strip()


def _include(values: list[str], response_format: str) -> bool:
    unknown = [v for v in values if v != "logprobs"]
    if unknown:
        raise FieldError(f"include: unknown value {unknown[0][:40]!r} (logprobs)", "include")
    if values and response_format not in LOGPROB_FORMATS:
        raise FieldError(
            f"include[]=logprobs needs response_format {' or '.join(LOGPROB_FORMATS)}", "include"
        )
    return bool(values)


def _granularities(values: list[str], response_format: str, settings: Any) -> bool:
    unknown = [g for g in values if g not in ("segment", "word")]
    if unknown:
        raise FieldError(
            f"unknown timestamp granularity {unknown[0][:40]!r}", "timestamp_granularities"
        )
    if "word" not in values:
        return False
    if not settings.words:
        raise FieldError(
            "word timestamps need a server started with --aligner (e.g. "
            "Qwen/Qwen3-ForcedAligner-0.6B-hf); use timestamp_granularities[]=segment",
            "timestamp_granularities",
        )
    if response_format not in WORD_FORMATS:
        raise FieldError(
            f"word timestamps need response_format {', '.join(WORD_FORMATS)}",
            "timestamp_granularities",
        )
    return True


def _chunking(form: Any) -> VadOptions | None:
    """`chunking_strategy` as VAD options (None: `auto`, the server's own)."""
    given = _text(form, "chunking_strategy")
    parts = {m.group(1): v for k, v in form.multi_items() if (m := _CHUNKING_KEY.fullmatch(k))}
    if given is None and not parts:
        return None
    if given is not None and parts:
        raise FieldError("chunking_strategy is given twice", "chunking_strategy")
    if given is not None and given.strip() == "auto":
        return None
    if given is not None:
        try:
            parts = json.loads(given)
        except (ValueError, RecursionError):  # RecursionError: nested thousands deep
            raise FieldError(
                'chunking_strategy must be "auto" or a server_vad object', "chunking_strategy"
            ) from None
    if not isinstance(parts, dict) or parts.get("type") != "server_vad":
        raise FieldError(
            'chunking_strategy must be "auto" or {"type": "server_vad", ...}', "chunking_strategy"
        )
    unknown = sorted(set(parts) - _SERVER_VAD_KEYS)
    if unknown:
        raise FieldError(
            f"chunking_strategy: unknown key {unknown[0][:40]!r} "
            f"({', '.join(sorted(_SERVER_VAD_KEYS))})",
            "chunking_strategy",
        )
    padding_ms = _number(parts, "prefix_padding_ms", 100, 0, 2000)
    silence_ms = _number(parts, "silence_duration_ms", 1000, 100, 10000)
    threshold = _number(parts, "threshold", 0.5, 0, 1)
    return VadOptions(
        min_pause_s=silence_ms / 1000,
        padding_s=padding_ms / 1000,
        aggressiveness=round(threshold * 3),
    )


def _number(parts: dict, key: str, default: float, low: float, high: float) -> float:
    value = parts.get(key, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not (math.isfinite(number) and low <= number <= high):
        raise FieldError(
            f"chunking_strategy: {key} must be a number in [{low:g}, {high:g}]", "chunking_strategy"
        )
    return number
