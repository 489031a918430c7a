"""Transcripts for people: SRT and WebVTT cue files, plain-text transcripts, and
collision-free file names for them.

A transcript's cues are its long-form segments with their real times, or one cue for a short
clip. Cue text may be wrapped to a line width and a cue split to a line count, as whisper's
`--max_line_width` / `--max_line_count` do. `transcribe` writes these as files; `serve`
returns them as responses.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

_UNSAFE_NAME = re.compile(r"[^\w.\-]+")
Cue = tuple[float, float, str]  # start_s, end_s, text


def srt_time(seconds: float) -> str:
    """`HH:MM:SS,mmm` (SRT; WebVTT writes `.` before the milliseconds)."""
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d},{millis:03d}"


def clip_stems(ids: Sequence[str], reserved: Iterable[str] = ()) -> list[str]:
    """One distinct, filesystem-safe file stem per id, collision-free by construction.

    An absolute path gives its file stem (`/calls/u0.wav` -> `u0`), a relative id its whole
    path (`s1/u0.wav` -> `s1_u0`); a stem already taken (same stem, ids that differ only in
    case or suffix, or one of `reserved`) gets `~2`, `~3`, ... so no file overwrites another.
    """
    stems, taken = [], {stem.casefold() for stem in reserved}
    for ident in ids:
        path = Path(ident)
        base = path.stem if path.is_absolute() else str(path)[: len(str(path)) - len(path.suffix)]
        stem = _UNSAFE_NAME.sub("_", base).strip("._") or "clip"
        name, count = stem, 1
        while name.casefold() in taken:
            count += 1
            name = f"{stem}~{count}"
        taken.add(name.casefold())
        stems.append(name)
    return stems


def _continues(char: str) -> bool:
    """Whether `char` belongs to the character before it on screen: a combining mark, or
    the vowel or final consonant of a decomposed (NFD) Hangul syllable."""
    code = ord(char)
    return (
        unicodedata.category(char) in ("Mn", "Mc", "Me")
        or 0x1160 <= code <= 0x11FF  # conjoining jamo: vowels and final consonants
        or 0xD7B0 <= code <= 0xD7FF  # Hangul Jamo Extended-B: the same, archaic
    )


def _characters(text: str) -> list[str]:
    """`text` as the characters a reader counts (a base character with its marks)."""
    characters: list[str] = []
    for char in text:
        if characters and _continues(char):
            characters[-1] += char
        else:
            characters.append(char)
    return characters


def text_width(text: str) -> int:
    """Characters as a reader counts them: a Hangul syllable is one, also decomposed."""
    return sum(1 for char in text if not _continues(char))


def wrap_lines(text: str, max_line_width: int) -> list[str]:
    """`text` in lines of at most `max_line_width` characters, broken at spaces (Korean puts
    them between eojeol); a word longer than a line is cut between characters."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        if line and text_width(line) + 1 + text_width(word) <= max_line_width:
            line += " " + word
            continue
        if line:
            lines.append(line)
        characters = _characters(word)
        while len(characters) > max_line_width:
            lines.append("".join(characters[:max_line_width]))
            characters = characters[max_line_width:]
        line = "".join(characters)
    if line:
        lines.append(line)
    return lines


def layout_cue(
    cue: Cue,
    max_line_width: int | None = None,
    max_line_count: int | None = None,
    words: Sequence[dict[str, Any]] | None = None,
) -> list[Cue]:
    """One cue wrapped to `max_line_width` characters a line and, when it needs more than
    `max_line_count` lines, split into consecutive cues. With `words` (the cue's words with
    times, from `--aligner`) a cue after the first starts when its first word starts;
    without them the cues divide the time in proportion to their characters (spaces not
    counted). Without a width the cue is returned as it is: the line count applies to the
    lines the width makes, as in whisper."""
    start, end, text = cue
    if max_line_width is None:
        return [cue]
    lines = wrap_lines(text, max_line_width)
    if not lines:
        return [cue]
    per_cue = max_line_count or len(lines)
    groups = [lines[i : i + per_cue] for i in range(0, len(lines), per_cue)]
    weights = [sum(len(_characters(line.replace(" ", ""))) for line in group) for group in groups]
    word_times = _character_times(text, words)
    total, done = sum(weights), 0
    laid_out, begin = [], start
    for number, (group, weight) in enumerate(zip(groups, weights), start=1):
        done += weight
        # The last cue ends exactly at the segment's end; shared bounds never overlap.
        if number == len(groups):
            finish = end
        elif word_times is not None and done < len(word_times):  # at its first word's start
            finish = min(max(word_times[done], begin), end)
        else:
            finish = start + (end - start) * done / total
        laid_out.append((begin, finish, "\n".join(group)))
        begin = finish
    return laid_out


def _character_times(text: str, words: Sequence[dict[str, Any]] | None) -> list[float] | None:
    """When each character of `text` (spaces left out, as `wrap_lines` counts them) is
    spoken: its word's start, or within a word cut across lines, in proportion between the
    word's start and end. None without words, or words that are not this text's."""
    if not words:
        return None
    timed: list[tuple[str, float, float]] = []
    for word in words:  # a word may hold several tokens (punctuation joined to a word)
        timed += [(token, word["start"], word["end"]) for token in _cue_text(word["word"]).split()]
    if [token for token, _, _ in timed] != text.split():
        return None
    times: list[float] = []
    for token, begin, finish in timed:
        count = len(_characters(token))
        times += [begin + (finish - begin) * i / count for i in range(count)]
    return times


def cues(
    row: dict[str, Any], *, max_line_width: int | None = None, max_line_count: int | None = None
) -> list[Cue]:
    """(start, end, text) cues of a transcript row: one per long-form segment, else one;
    laid out to the line width and count when given (see `layout_cue`), split at word times
    where the row has `words` (`--aligner`)."""
    if row.get("segments"):
        found = [
            ((s["start"], s["end"], _cue_text(s["text"])), s.get("words"))
            for s in row["segments"]
            if s["text"] and s["text"].strip()
        ]
    else:
        found = [((0.0, float(row.get("duration") or 0), _cue_text(row["text"])), row.get("words"))]
    return [
        part
        for cue, words in found
        for part in layout_cue(cue, max_line_width, max_line_count, words)
    ]


# Line breaks, with the spaces around them: inside a cue, a blank line ends it early (players
# and ffmpeg then drop the cues after it), so a transcript's breaks become single spaces.
_LINE_BREAKS = re.compile(r"[ \t]*[\r\n\v\f\x85\u2028\u2029]+[ \t]*")


def _cue_text(text: str | None) -> str:
    """A transcript as cue text: on one line, and without `-->`, which WebVTT reserves for
    cue timings; other spacing is kept as transcribed."""
    if not text:
        return text or ""
    return _LINE_BREAKS.sub(" ", text).strip(" \t").replace("-->", "->")


def vtt_escape(text: str) -> str:
    """Cue text as WebVTT needs it: `&` and `<` start entities and tags there, so a
    transcript's own are written as `&amp;` and `&lt;` (SRT has no escapes)."""
    return text.replace("&", "&amp;").replace("<", "&lt;")


def cue_file(
    row: dict[str, Any],
    fmt: str,
    *,
    max_line_width: int | None = None,
    max_line_count: int | None = None,
) -> str:
    """SRT or WebVTT text of a row's cues (`fmt`: srt or vtt); without a line width or count
    each segment is one cue on one line."""
    laid_out = cues(row, max_line_width=max_line_width, max_line_count=max_line_count)
    if fmt == "vtt":  # WebVTT: a header, '.' before the milliseconds, no cue numbers needed
        blocks = [
            f"{srt_time(a).replace(',', '.')} --> {srt_time(b).replace(',', '.')}\n"
            f"{vtt_escape(text)}"
            for a, b, text in laid_out
        ]
        return "WEBVTT\n\n" + "".join(block + "\n\n" for block in blocks)
    blocks = [
        f"{n}\n{srt_time(a)} --> {srt_time(b)}\n{text}"
        for n, (a, b, text) in enumerate(laid_out, start=1)
    ]
    return "\n".join(block + "\n" for block in blocks)


def transcript_text(row: dict[str, Any]) -> str:
    """The transcript alone, as whisper's txt output: one line per long-form segment (else
    one line), no times; line breaks inside a text become spaces."""
    texts = [s["text"] for s in row["segments"]] if row.get("segments") else [row["text"]]
    lines = [" ".join(text.split()) for text in texts if text and text.strip()]
    return "".join(line + "\n" for line in lines)
