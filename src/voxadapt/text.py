"""Korean transcript normalization for training text (KsponSpeech / AI-Hub conventions).

AI-Hub transcription rules (also used by KsponSpeech) mark up the transcript:

- ``(철자)/(발음)`` dual transcription: written form, then the pronunciation,
  e.g. ``(70%)/(칠십 퍼센트)``; some files write ``(A) / (B)`` or ``(A)(B)``.
- ``b/ l/ o/ n/``: breath, laughter, other speaker, noise; ``u/``: unintelligible.
- ``아/ 음/ 어/``: a filler word, marked by a trailing slash.
- ``word+``: a repeated word; ``*``: a word the transcriber was unsure of.

The ESPnet ``ksponspeech`` recipe and lhotse's recipe strip the same marks; we keep the
written form by default because a medical transcript should read ``70%``, not ``칠십 퍼센트``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

TEXT_MODES = ("spelling", "phonetic")

# (A)/(B), (A) / (B) and (A)(B); inner parts hold no parentheses.
_DUAL = re.compile(r"\(([^()]*)\)\s*/?\s*\(([^()]*)\)")
# Event tags: b/ l/ o/ n/ u/, not when part of a Latin word or unit such as "km/h".
_EVENT_TAG = re.compile(r"(?<![A-Za-z])[blonu]/(?!/)")
# Filler: Hangul word with a trailing slash (아/ 음/ 어/ 그/ ...).
_FILLER = re.compile(r"([\uac00-\ud7a3]+)/(?=\s|$|[.,?!])")
_REPEAT = re.compile(r"(?<=\S)\+")
_UNSURE = re.compile(r"\*")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,?!])")
_WHITESPACE = re.compile(r"\s+")
# Punctuation removed by --strip-punctuation; % stays because "70%" is content, not prosody.
# A . or , between digits is part of a number ("38.5", "5,000") and stays.
_PUNCTUATION = re.compile(r"(?<!\d)[.,]|[.,](?!\d)|[?!…~\"'“”‘’·:;]")
_BRACKETS = {"(": ")", "[": "]", "{": "}"}


class TranscriptError(ValueError):
    """A transcript that cannot be used; `reason` is the machine-readable rejection reason."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason


@dataclass(frozen=True)
class TextOptions:
    """How training text is derived from a raw AI-Hub/KsponSpeech transcript."""

    text_mode: str = "spelling"  # "spelling" keeps (철자), "phonetic" keeps (발음)
    drop_fillers: bool = False  # drop filler words (음/ 아/) instead of keeping them
    strip_punctuation: bool = False  # remove . , ? ! and similar from training text


def brackets_balanced(text: str) -> bool:
    """True if (), [] and {} nest properly."""
    closing = set(_BRACKETS.values())
    stack: list[str] = []
    for char in text:
        if char in _BRACKETS:
            stack.append(_BRACKETS[char])
        elif char in closing and (not stack or stack.pop() != char):
            return False
    return not stack


def normalize_transcript(raw_text: str, options: TextOptions | None = None) -> str:
    """Turn an annotated transcript into training text.

    Raises TranscriptError with reason ``unbalanced_brackets`` or ``empty_text``.
    """
    options = options or TextOptions()
    if options.text_mode not in TEXT_MODES:
        raise ValueError(f"text_mode must be one of {TEXT_MODES}, got {options.text_mode!r}")
    text = unicodedata.normalize("NFC", raw_text)
    if not brackets_balanced(text):
        raise TranscriptError("unbalanced_brackets", f"unbalanced brackets in {raw_text!r}")
    keep = 1 if options.text_mode == "spelling" else 2
    # No spaces added: particles attach to the form, "(3시)/(세 시)에" -> "3시에".
    text = _DUAL.sub(lambda match: match.group(keep), text)
    # Parentheses left after the dual forms are annotation, not speech: keep their content.
    text = text.replace("(", "").replace(")", "")
    text = _EVENT_TAG.sub(" ", text)
    text = _FILLER.sub(lambda match: "" if options.drop_fillers else match.group(1), text)
    text = _REPEAT.sub("", text)
    text = _UNSURE.sub("", text)
    if options.strip_punctuation:
        text = _PUNCTUATION.sub(" ", text)
    text = _WHITESPACE.sub(" ", text).strip()
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    if not text or _PUNCTUATION.sub("", text).strip() == "":
        raise TranscriptError(
            "empty_text", f"transcript is empty after normalization: {raw_text!r}"
        )
    return text


def decode_line(data: bytes) -> tuple[str, str]:
    """Decode one line of a transcript file: UTF-8 (BOM allowed), else CP949 (KsponSpeech).

    Returns (text, encoding). Raises UnicodeDecodeError if neither applies.
    """
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("cp949"), "cp949"


# Scoring normalization: applied identically to reference and hypothesis before CER/WER.
SCORING_NORMALIZATION_VERSION = "ko-score-1"
# Punctuation removed for scoring; % and the decimal point inside numbers carry meaning.
_SCORING_PUNCTUATION = re.compile(r"(?<!\d)[.,]|[.,](?!\d)|[^\w\s%.,]")


def normalize_for_scoring(text: str) -> str:
    """NFKC, drop punctuation (keep % and 38.5), lowercase Latin, collapse whitespace."""
    text = unicodedata.normalize("NFKC", text)
    text = _SCORING_PUNCTUATION.sub(" ", text)
    text = text.replace("_", " ").lower()
    return _WHITESPACE.sub(" ", text).strip()
