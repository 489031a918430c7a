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


def clip_stem(ident: str) -> str:
    """The filesystem-safe file stem of an id: an absolute path gives its file stem
    (`/calls/u0.wav` -> `u0`), a relative id its whole path (`s1/u0.wav` -> `s1_u0`)."""
    path = Path(ident)
    base = path.stem if path.is_absolute() else str(path)[: len(str(path)) - len(path.suffix)]
    return _UNSAFE_NAME.sub("_", base).strip("._") or "clip"


def unique_stems(stems: Sequence[str], reserved: Iterable[str] = ()) -> list[str]:
    """`stems` made distinct: one already taken (compared without case, as case-insensitive
    file systems do, or one of `reserved`) gets `~2`, `~3`, ..."""
    unique, taken = [], {stem.casefold() for stem in reserved}
    for stem in stems:
        name, count = stem, 1
        while name.casefold() in taken:
            count += 1
            name = f"{stem}~{count}"
        taken.add(name.casefold())
        unique.append(name)
    return unique


def clip_stems(ids: Sequence[str], reserved: Iterable[str] = ()) -> list[str]:
    """One distinct, filesystem-safe file stem per id (`clip_stem`), collision-free by
    construction: a stem already taken (same stem, ids that differ only in case or suffix,
    or one of `reserved`) gets `~2`, `~3`, ... so no file overwrites another."""
    return unique_stems([clip_stem(ident) for ident in ids], reserved)


# Grapheme clusters (what a reader counts as one character), after Unicode's UAX #29 for
# the cases transcripts meet. Marks, variation selectors, emoji skin tones, tag characters
# (subdivision flags) and the zero-width joiner extend the character before them; a ZWJ
# between pictographs joins them (👨‍👩‍👧 is one); regional indicators pair into flags; Hangul
# jamo join into syllables.
_ZWJ = "\u200d"
_EXTENDERS = ((0xFE00, 0xFE0F), (0x1F3FB, 0x1F3FF), (0xE0020, 0xE007F), (0xE0100, 0xE01EF))
_REGIONAL = (0x1F1E6, 0x1F1FF)
_HANGUL_L = ((0x1100, 0x115F), (0xA960, 0xA97F))  # leading consonants
_HANGUL_V = ((0x1160, 0x11A7), (0xD7B0, 0xD7C6))  # vowels
_HANGUL_T = ((0x11A8, 0x11FF), (0xD7CB, 0xD7FB))  # final consonants
_SYLLABLES = (0xAC00, 0xD7A3)
# Nothing on screen by themselves: spaces, controls, format characters (joiners, bidi
# marks), marks without a base, and the Hangul fillers, which are letters drawn blank.
_BLANK_CATEGORIES = {"Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Mn", "Mc", "Me"}
_BLANK_LETTERS = {"\u115f", "\u1160", "\u3164", "\uffa0"}


def _in(code: int, *ranges: tuple[int, int]) -> bool:
    return any(low <= code <= high for low, high in ranges)


def _pictographic(char: str) -> bool:
    """An emoji-like pictograph (an approximation of Extended_Pictographic)."""
    code = ord(char)
    return unicodedata.category(char) == "So" or _in(code, (0x1F000, 0x1FAFF))


def _hangul_joins(last: int, code: int) -> bool:
    """UAX #29 GB6-GB8: L x (L | V | LV | LVT); (LV | V) x (V | T); (LVT | T) x T."""
    if _in(last, *_HANGUL_L):
        return _in(code, *_HANGUL_L, *_HANGUL_V, _SYLLABLES)
    lv = _in(last, _SYLLABLES) and (last - _SYLLABLES[0]) % 28 == 0
    if lv or _in(last, *_HANGUL_V):
        return _in(code, *_HANGUL_V, *_HANGUL_T)
    if _in(last, _SYLLABLES, *_HANGUL_T):
        return _in(code, *_HANGUL_T)
    return False


def _joins(cluster: str, char: str) -> bool:
    """Whether `char` continues the grapheme cluster `cluster`."""
    code = ord(char)
    if char == _ZWJ or unicodedata.category(char) in ("Mn", "Mc", "Me") or _in(code, *_EXTENDERS):
        return True
    if cluster[-1] == _ZWJ:  # GB11: a pictograph (with its extenders), ZWJ, a pictograph
        return _pictographic(cluster[0]) and _pictographic(char)
    if _in(ord(cluster[-1]), _REGIONAL) and _in(code, _REGIONAL):  # a flag: two of them
        return sum(_in(ord(c), _REGIONAL) for c in cluster) % 2 == 1
    return _hangul_joins(ord(cluster[-1]), code)


def _blank(text: str) -> bool:
    """Whether `text` shows nothing: only spaces, joiners, marks without a base..."""
    return all(
        char in _BLANK_LETTERS or unicodedata.category(char) in _BLANK_CATEGORIES for char in text
    )


def graphemes(text: str) -> list[str]:
    """`text` as the characters a reader counts: grapheme clusters, never split (a base
    with its marks, an emoji ZWJ sequence, a flag, a syllable of decomposed jamo). A blank
    cluster that is not a space (a joiner or mark without a base) rides on the cluster
    before it, or after a space or at the start, on the one after it; only where neither
    is visible (between spaces, alone) is it a cluster of its own."""
    clusters: list[str] = []
    for char in text:
        if clusters and not clusters[-1].isspace() and _joins(clusters[-1], char):
            clusters[-1] += char
        else:
            clusters.append(char)
    merged: list[str] = []
    stray = ""  # blank clusters after a space or at the start, waiting for a visible one
    for cluster in clusters:
        if cluster.isspace():
            merged += [stray, cluster] if stray else [cluster]  # none to ride on: alone
            stray = ""
        elif _blank(cluster) and merged and not merged[-1].isspace():
            merged[-1] += cluster
        elif _blank(cluster):
            stray += cluster
        else:
            merged.append(stray + cluster)
            stray = ""
    if stray:
        merged.append(stray)
    return merged


def text_width(text: str) -> int:
    """Characters as a reader counts them (grapheme clusters, spaces included): a Hangul
    syllable is one, also decomposed, and so is an emoji ZWJ sequence or a flag; joiners
    and marks without a base count nothing."""
    return sum(1 for cluster in graphemes(text) if cluster.isspace() or not _blank(cluster))


def _words(text: str) -> list[str]:
    """The space-separated words of `text`, a blank one (a stray joiner or mark) joined to
    the word before it (the first: to the one after it), so that no word shows nothing."""
    words: list[str] = []
    stray = ""
    for word in text.split():
        if not _blank(word):
            words.append(stray + word)
            stray = ""
        elif words:
            words[-1] += word
        else:
            stray += word
    return words


def wrap_lines(text: str, max_line_width: int) -> list[str]:
    """`text` in lines of at most `max_line_width` characters, broken at spaces (Korean puts
    them between eojeol); a word longer than a line is cut between grapheme clusters, never
    inside one. No line shows nothing: a stray joiner or mark stays with a word, and text
    that shows nothing has no lines."""
    lines: list[str] = []
    line = ""
    for word in _words(text):
        if line and text_width(line) + 1 + text_width(word) <= max_line_width:
            line += " " + word
            continue
        if line:
            lines.append(line)
        characters = graphemes(word)
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
    lines the width makes, as in whisper. A cue that shows nothing (spaces, a stray joiner)
    gives none."""
    start, end, text = cue
    if _blank(text):  # nothing to show: no cue
        return []
    if max_line_width is None:
        return [cue]
    lines = wrap_lines(text, max_line_width)
    per_cue = max_line_count or len(lines)
    groups = [lines[i : i + per_cue] for i in range(0, len(lines), per_cue)]
    weights = [sum(text_width(word) for line in group for word in line.split()) for group in groups]
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
        count = text_width(token)
        times += [begin + (finish - begin) * i / count for i in range(count)]
    return times


def cues(
    row: dict[str, Any], *, max_line_width: int | None = None, max_line_count: int | None = None
) -> list[Cue]:
    """(start, end, text) cues of a transcript row: one per long-form segment, else one;
    laid out to the line width and count when given (see `layout_cue`), split at word times
    where the row has `words` (`--aligner`). Text that shows nothing (silence, a stray
    joiner) has no cue: a recording without speech has none, as in verbose_json."""
    if row.get("segments") is not None:  # long-form, even with no speech segment at all
        found = [
            ((s["start"], s["end"], _cue_text(s["text"])), s.get("words")) for s in row["segments"]
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
    each segment is one cue on one line. No cues (silence) is a valid file: the header alone
    (WebVTT) or nothing (SRT)."""
    laid_out = cues(row, max_line_width=max_line_width, max_line_count=max_line_count)
    if fmt == "vtt" and not laid_out:
        return "WEBVTT\n"
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
    texts = (
        [s["text"] for s in row["segments"]] if row.get("segments") is not None else [row["text"]]
    )
    lines = [" ".join(text.split()) for text in texts if text and not _blank(text)]
    return "".join(line + "\n" for line in lines)
