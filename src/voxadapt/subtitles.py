"""Subtitles: SRT and WebVTT cue files of transcripts, and collision-free file names for them.

A transcript's cues are its long-form segments with their real times, or one cue for a short
clip. `transcribe` writes them as files; `serve` returns them as responses.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_UNSAFE_NAME = re.compile(r"[^\w.\-]+")


def srt_time(seconds: float) -> str:
    """`HH:MM:SS,mmm` (SRT; WebVTT writes `.` before the milliseconds)."""
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d},{millis:03d}"


def srt_names(ids: Sequence[str]) -> list[str]:
    """One distinct, filesystem-safe .srt name per id, collision-free by construction.

    An absolute path gives its file stem (`/calls/u0.wav` -> `u0.srt`), a relative id its
    whole path (`s1/u0.wav` -> `s1_u0.srt`); a name already taken (same stem, or ids that
    differ only in case or suffix) gets `~2`, `~3`, ... so no cue file overwrites another.
    """
    names, taken = [], set()
    for ident in ids:
        path = Path(ident)
        base = path.stem if path.is_absolute() else str(path)[: len(str(path)) - len(path.suffix)]
        stem = _UNSAFE_NAME.sub("_", base).strip("._") or "clip"
        name, count = f"{stem}.srt", 1
        while name.casefold() in taken:
            count += 1
            name = f"{stem}~{count}.srt"
        taken.add(name.casefold())
        names.append(name)
    return names


def cue_name(srt_name: str, fmt: str) -> str:
    """The file name of a cue file in `fmt` for a name from `srt_names`."""
    return srt_name.removesuffix(".srt") + f".{fmt}"


def cues(row: dict[str, Any]) -> list[tuple[float, float, str]]:
    """(start, end, text) cues of a transcript row: one per long-form segment, else one."""
    if row.get("segments"):
        return [(s["start"], s["end"], s["text"]) for s in row["segments"] if s["text"]]
    return [(0.0, float(row.get("duration") or 0), row["text"])]


def cue_file(row: dict[str, Any], fmt: str) -> str:
    """SRT or WebVTT text of a row's cues."""
    if fmt == "vtt":  # WebVTT: a header, '.' before the milliseconds, no cue numbers needed
        blocks = [
            f"{srt_time(a).replace(',', '.')} --> {srt_time(b).replace(',', '.')}\n{text}"
            for a, b, text in cues(row)
        ]
        return "WEBVTT\n\n" + "".join(block + "\n\n" for block in blocks)
    blocks = [
        f"{n}\n{srt_time(a)} --> {srt_time(b)}\n{text}"
        for n, (a, b, text) in enumerate(cues(row), start=1)
    ]
    return "\n".join(block + "\n" for block in blocks)
