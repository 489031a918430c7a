"""What `POST /v1/audio/transcriptions` answers, shaped as OpenAI's API shapes it.

Segments of `verbose_json` carry OpenAI's fields where they can be computed: `id`, `seek`
(the segment's start in 10 ms frames, as whisper counts it), `start`, `end`, `text`,
`tokens` (the ids generated for it), `temperature` (0: greedy), `avg_logprob` (the mean
log-probability of its tokens) and `compression_ratio` (whisper's: UTF-8 bytes over their
zlib-compressed size; high values flag repetition loops). `no_speech_prob` is left out: an
LLM decoder has no no-speech token to read it from (voice-activity detection decides what is
speech before decoding). `usage` counts tokens (`type: tokens`): the prompt's (audio
placeholders and text) and the generated ones, summed over a recording's segments.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from voxadapt.decoding import Transcript
from voxadapt.families import Prompts


def usage(transcript: Transcript) -> dict[str, Any]:
    """OpenAI's token usage of one transcription."""
    text_tokens = transcript.prompt_tokens - transcript.audio_tokens
    return {
        "type": "tokens",
        "input_tokens": transcript.prompt_tokens,
        "input_token_details": {
            "audio_tokens": transcript.audio_tokens,
            "text_tokens": text_tokens,
        },
        "output_tokens": transcript.n_tokens,
        "total_tokens": transcript.prompt_tokens + transcript.n_tokens,
    }


def logprobs(pieces: list[Transcript], prompts: Prompts) -> list[dict[str, Any]]:
    """Each transcript token with its log-probability and bytes (OpenAI's `logprobs`),
    segment after segment; a header the model writes before the text is left out."""
    rows = []
    for piece in pieces:
        start = prompts.text_start(piece.token_ids)
        for token_id, logprob in zip(piece.token_ids[start:], piece.token_logprobs[start:]):
            raw = prompts.token_bytes(token_id)
            rows.append(
                {
                    "token": raw.decode("utf-8", errors="replace"),
                    "logprob": round(logprob, 6),
                    "bytes": list(raw),
                }
            )
    return rows


def compression_ratio(text: str) -> float:
    """whisper's compression ratio of a text (0 for an empty one)."""
    raw = text.encode("utf-8")
    return round(len(raw) / len(zlib.compress(raw)), 4) if raw else 0.0


def verbose_segments(
    segments: list[dict[str, Any]], pieces: list[Transcript], prompts: Prompts
) -> list[dict[str, Any]]:
    """`verbose_json` segments with OpenAI's fields (see the module's docstring)."""
    shaped = []
    for index, (segment, piece) in enumerate(zip(segments, pieces)):
        start = prompts.text_start(piece.token_ids)
        logprobs_ = piece.token_logprobs[start:]
        shaped.append(
            {
                "id": index,
                "seek": round(segment["start"] * 100),
                "start": segment["start"],
                "end": segment["end"],
                "text": segment["text"],
                "tokens": piece.token_ids[start:],
                "temperature": 0.0,
                "avg_logprob": round(sum(logprobs_) / len(logprobs_), 6) if logprobs_ else 0.0,
                "compression_ratio": compression_ratio(segment["text"]),
            }
        )
    return shaped


def reported_language(
    requested: str, transcript: Transcript, pieces: list[Transcript]
) -> str | None:
    """The language used: the one the request forced, else what the model named (None if
    the family detects silently, as Voxtral does)."""
    if requested != "auto":
        return requested
    named = [p.language for p in pieces if p.language] or [transcript.language]
    return next((language for language in named if language), None)


def event(payload: dict[str, Any]) -> bytes:
    """One server-sent event."""
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


class ApiError(Exception):
    """An error answered in OpenAI's shape: `{"error": {message, type, param, code}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.kind, self.headers = kind, headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }
