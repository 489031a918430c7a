"""Korean transcript normalization for training text (KsponSpeech / AI-Hub conventions).

AI-Hub transcription rules (also used by KsponSpeech) mark up the transcript:

- ``(철자)/(발음)`` dual transcription: written form, then the pronunciation,
  e.g. ``(70%)/(칠십 퍼센트)``; some files write ``(A) / (B)`` or ``(A)(B)``.
- ``b/ l/ o/ n/``: breath, laughter, other speaker, noise; ``u/``: unintelligible.
- ``아/ 음/ 어/``: a filler word, marked by a trailing slash (sometimes glued to the next
  word: ``음/그래서``).
- ``word+`` or ``+word``: a repeated or mistyped word; ``*``: a word the transcriber was
  unsure of.

Control and format characters (zero-width spaces and joiners, bidi controls, BOM) are not
speech and are removed too.

The ESPnet ``ksponspeech`` recipe and lhotse's recipe strip the same marks; we keep the
written form by default because a medical transcript should read ``70%``, not ``칠십 퍼센트``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

TEXT_MODES = ("spelling", "phonetic")

# (A)/(B), (A) / (B) and (A)(B); inner parts hold no parentheses. Each optional part
# starts with a different character, so a failed match never backtracks over long runs.
_DUAL = re.compile(r"\(([^()]*)\)\s*(?:/\s*)?\(([^()]*)\)")
# Annotation characters dropped outright once dual forms are resolved: parentheses, `*`.
_DELETED = str.maketrans("", "", "()*")
# `+` marks a repeated or mistyped word ("머리+ 머리가", "그 +그러니까"); only a plus
# between digits ("1+1") is content.
_REPEAT = re.compile(r"(?<!\d)\+|\+(?!\d)")
# Event tags: b/ l/ o/ n/ u/, not when part of a Latin word or unit such as "km/h", "on/off".
_EVENT_TAG = re.compile(r"(?<![A-Za-z])[blonu]/(?!/)")
_HANGUL = "\uac00-\ud7a3"
# Fillers the transcribers also glue to the next word ("음/그래서"); any other word glued
# to a slash stays, because "의사/간호사" means "or".
_FILLER_WORDS = ("아", "어", "음", "으", "응", "흠", "에", "엄", "그", "뭐")
# Filler: a Hangul word with a trailing slash before a space, the end or punctuation
# (아/ 음/ 어/), or a filler word glued to the next word. The lookbehind lets a match start
# only where a word starts: without it a long Hangul run with no slash is rescanned from
# every position, which takes quadratic time.
_FILLER = re.compile(
    rf"(?<![{_HANGUL}])(?:([{_HANGUL}]+)/(?=\s|$|[.,?!])|({'|'.join(_FILLER_WORDS)})/)"
)
# Dropping a filler can leave the slash of the word before it at a word end
# ("의사/간호사음/" -> "의사/ "), where it would read as a filler mark of its own.
_DANGLING_SLASH = re.compile(rf"(?<=[{_HANGUL}])/(?=\s|$|[.,?!])")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,?!])")
_WHITESPACE = re.compile(r"\s+")
# Punctuation left at the start once markup is gone (". 그래서 뭐?" after a dropped filler);
# a "." before a digit is a decimal point (".5").
_LEADING_PUNCTUATION = re.compile(r"^(?:[\s,?!…]|\.(?!\d))+")
# Punctuation removed by --strip-punctuation; % stays because "70%" is content, not prosody.
# A . or , between digits is part of a number ("38.5", "5,000") and stays.
_PUNCTUATION = re.compile(r"(?<!\d)[.,]|[.,](?!\d)|[?!…~\"'“”‘’·:;]")
_BRACKETS = {"(": ")", "[": "]", "{": "}"}
# Unicode categories never spoken: controls (Cc), format characters (Cf: zero-width
# space/joiners, bidi controls, BOM) and lone surrogates (Cs, which UTF-8 cannot encode).
_INVISIBLE_CATEGORIES = ("Cc", "Cf", "Cs")


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

    The result holds no markup (parentheses, `*`, repetition `+`, event tags, filler
    slashes), no control or format characters, and is NFC; normalizing it again returns it
    unchanged. Runs in time linear in the length of `raw_text`.

    Raises TranscriptError with reason ``unbalanced_brackets`` or ``empty_text``.
    """
    options = options or TextOptions()
    if options.text_mode not in TEXT_MODES:
        raise ValueError(f"text_mode must be one of {TEXT_MODES}, got {options.text_mode!r}")
    text = _WHITESPACE.sub(" ", _drop_invisible(raw_text))
    text = unicodedata.normalize("NFC", text)
    if not brackets_balanced(text):
        raise TranscriptError("unbalanced_brackets", f"unbalanced brackets in {_excerpt(raw_text)}")
    text = _tidy(_remove_markup(text, options))
    if not text or _PUNCTUATION.sub("", text).strip() == "":
        raise TranscriptError(
            "empty_text", f"transcript is empty after normalization: {_excerpt(raw_text)}"
        )
    return text


# Private-use characters stand for dual spans while the rest of a transcript is normalized.
_SPAN_MARK = 0xF0000  # plane 15 private use: never in real transcripts (removed first)
_SPAN_MARKS = re.compile("([\U000f0000-\U000ffffd])")


def transcript_variants(
    raw_text: str, options: TextOptions | None = None
) -> list[str | list[str]] | None:
    """The training text as pieces for multi-reference scoring: fixed text, and for every
    dual-transcription span `(A)/(B)` its [spelling, pronunciation] pair, markup removed as
    in `normalize_transcript`. None if the transcript has no dual span.

    Joining the pieces with each span's form gives every reference the label allows
    (`scoring.references.rebuild`).
    """
    options = options or TextOptions()
    text = _WHITESPACE.sub(" ", _drop_invisible(raw_text))
    text = _SPAN_MARKS.sub("", unicodedata.normalize("NFC", text))
    spans: list[tuple[str, str]] = []

    def mark(match: re.Match[str]) -> str:
        spans.append((match.group(1), match.group(2)))
        return chr(_SPAN_MARK + len(spans) - 1)

    template = _DUAL.sub(mark, text)
    if not spans or not brackets_balanced(text):
        return None
    pieces: list[str | list[str]] = []
    for part in _SPAN_MARKS.split(_tidy(_remove_markup(template, options))):
        if len(part) == 1 and _SPAN_MARKS.fullmatch(part):
            forms = spans[ord(part) - _SPAN_MARK]
            pieces.append([_tidy(_remove_markup(form, options)) for form in forms])
        elif part:
            pieces.append(part)
    return pieces


def _drop_invisible(text: str) -> str:
    """Remove control, format and surrogate characters; whitespace controls become spaces."""
    # Looking only at the distinct characters keeps this one C-speed pass over the text.
    table = {
        ord(char): " " if char.isspace() else None
        for char in set(text)
        if unicodedata.category(char) in _INVISIBLE_CATEGORIES
    }
    return text.translate(table) if table else text


def _remove_markup(text: str, options: TextOptions) -> str:
    """Resolve dual forms and strip the transcribers' marks (see the module docstring)."""
    keep = 1 if options.text_mode == "spelling" else 2
    # No spaces added: particles attach to the form, "(3시)/(세 시)에" -> "3시에".
    text = _DUAL.sub(lambda match: match.group(keep), text)
    # Parentheses left after the dual forms are annotation, not speech: keep their content.
    text = _REPEAT.sub("", text.translate(_DELETED))
    # Deleting marks can join a jamo to its vowel ("ᄀ(ᅡ)" -> "가"); compose before the tags
    # below look at the text, so that normalizing the result again finds nothing new.
    text = unicodedata.normalize("NFC", text)
    if options.strip_punctuation:
        # Before the tags: "음/…" becomes "음/ ", a filler, here and not in a second pass.
        text = _PUNCTUATION.sub(" ", text)
    text = _EVENT_TAG.sub(" ", text)
    # Replaced by a space, not deleted: "음/그래서" -> "음 그래서", never "음그래서".
    text = _FILLER.sub(
        lambda match: " " if options.drop_fillers else f"{match.group(1) or match.group(2)} ",
        text,
    )
    return _DANGLING_SLASH.sub("", text)


def _tidy(text: str) -> str:
    """Collapse whitespace, attach punctuation to the word before it, drop leading marks."""
    text = _WHITESPACE.sub(" ", text).strip()
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    return _LEADING_PUNCTUATION.sub("", text)


def _excerpt(raw_text: str, limit: int = 80) -> str:
    """`raw_text` for an error message, cut to `limit` characters."""
    return repr(raw_text if len(raw_text) <= limit else raw_text[:limit] + "…")


def read_term_lines(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, spellings) of each term in a terms file: one term per line, the
    spellings of one spoken term separated by `|` (`CT|씨티|시티`), `#` comments, blank lines
    skipped. The format of --terms and --bias-terms. ConfigError if the file is unreadable."""
    from voxadapt.errors import ConfigError
    from voxadapt.manifest import iter_lines

    try:
        lines = [(number, data.decode("utf-8")) for number, data in iter_lines(path)]
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"terms file {path} is unreadable or not UTF-8 ({exc})") from None
    terms = []
    for number, line in lines:
        spellings = term_spellings(line.split("#", 1)[0])
        if spellings:
            terms.append((number, spellings))
    return terms


def term_spellings(term: str) -> list[str]:
    """The spellings of one spoken term, `|`-separated (`CT|씨티|시티`), blanks dropped: a
    terms-file line or one of a request's comma-separated hotwords."""
    return [part.strip() for part in term.split("|") if part.strip()]


def decode_line(data: bytes) -> tuple[str, str]:
    """Decode one line of a transcript file: UTF-8 (BOM allowed), else CP949 (KsponSpeech).

    Returns (text, encoding). Raises UnicodeDecodeError if neither applies.
    """
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("cp949"), "cp949"


# Scoring normalization: applied identically to reference and hypothesis before CER/WER.
# ko-score-2: invisible format characters are removed, no longer word breaks.
SCORING_NORMALIZATION_VERSION = "ko-score-2"
# Named scoring policies (`--normalize`) and the version each writes into scored rows and
# metrics.json. `numbers` also reads digits as Korean speech (voxadapt.numbers) on both sides.
SCORING_POLICIES = {
    "default": SCORING_NORMALIZATION_VERSION,
    "numbers": f"{SCORING_NORMALIZATION_VERSION}+numbers-1",
}
# Punctuation removed for scoring; % and the decimal point inside numbers carry meaning.
_SCORING_PUNCTUATION = re.compile(r"(?<!\d)[.,]|[.,](?!\d)|[^\w\s%.,]")


def scoring_version(policy: str = "default") -> str:
    """The version string a scoring policy records (ValueError for an unknown policy)."""
    if policy not in SCORING_POLICIES:
        raise ValueError(f"scoring policy must be one of {', '.join(SCORING_POLICIES)}")
    return SCORING_POLICIES[policy]


def normalize_for_scoring(text: str, policy: str = "default") -> str:
    """Drop invisible characters (as training text does), NFKC, drop punctuation (keep %
    and 38.5), lowercase Latin, collapse whitespace. Policy `numbers` first reads digits,
    unit symbols and telephone numbers as Korean (`voxadapt.numbers.read_numbers`).

    A zero-width space, joiner, soft hyphen or BOM inside a word is removed, not turned into
    a word break: "혈\u200b압" scores as "혈압"."""
    scoring_version(policy)
    text = unicodedata.normalize("NFKC", _drop_invisible(text))
    if policy == "numbers":
        from voxadapt.numbers import read_numbers

        text = read_numbers(text)
    text = _SCORING_PUNCTUATION.sub(" ", text)
    text = text.replace("_", " ").lower()
    return _WHITESPACE.sub(" ", text).strip()


# Runaway repetition in a transcript: a unit of 1-3 characters 5+ times over 8+ characters,
# or a 4-60 character phrase 3+ times (on space-free text; digit runs are numbers).
_SHORT_LOOP = re.compile(r"(.{1,3}?)\1{4,}")
_PHRASE_LOOP = re.compile(r"(.{4,60}?)\1{2,}")
_LOOP_MIN_CHARS = 8


def repetition_loop(text: str) -> str | None:
    """The repeated unit if `text` contains a runaway repetition loop, else None."""
    compact = "".join(text.split())
    for match in _SHORT_LOOP.finditer(compact):
        if len(match.group(0)) >= _LOOP_MIN_CHARS and not match.group(1).isdigit():
            return match.group(1)
    for match in _PHRASE_LOOP.finditer(compact):
        if not match.group(1).isdigit():
            return match.group(1)
    return None
