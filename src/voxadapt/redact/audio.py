"""Recordings with their identifiers silenced, where transcript rows have word times."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from voxadapt.redact.engine import TEXT_FIELDS

log = logging.getLogger(__name__)


def silenced(samples: np.ndarray, rate: int, spans_s: list[tuple[float, float]], margin_s: float):
    """A copy of `samples` with each (start, end) seconds span, widened by `margin_s` on both
    sides, set to zero."""
    out = samples.copy()
    for start, end in spans_s:
        low = max(0, int(np.floor((start - margin_s) * rate)))
        high = min(len(out), int(np.ceil((end + margin_s) * rate)))
        out[low:high] = 0
    return out


def silence_recordings(
    rows: list[tuple[dict[str, Any], list[dict[str, Any]]]], folder: Path, margin_s: float
) -> tuple[list[str], list[str]]:
    """Write `folder/<id>.wav` for every row (as read, with its redaction records) that has a
    recording (`audio`) and word times; returns the file names written and the ids of rows
    whose recording could not be redacted (no word times, or an identifier the words do not
    cover), which are listed rather than skipped silently."""
    import soundfile as sf

    from voxadapt.audio import AudioError, load_audio
    from voxadapt.subtitles import clip_stems

    with_audio = [(row, records) for row, records in rows if isinstance(row.get("audio"), str)]
    stems = clip_stems([str(row.get("id") or row["audio"]) for row, _ in with_audio])
    written, untimed = [], []
    folder.mkdir(parents=True, exist_ok=True)
    for (row, records), stem in zip(with_audio, stems):
        ident = str(row.get("id") or row["audio"])
        main = next((f for f in TEXT_FIELDS[:2] if isinstance(row.get(f), str)), None)
        spoken = [r for r in records if r["field"] == main]
        if not row.get("words") or any("start_s" not in r for r in spoken):
            untimed.append(ident)
            log.warning("%s: no word times for its identifiers: recording not redacted", ident)
            continue
        try:
            rate = sf.info(row["audio"]).samplerate
        except (RuntimeError, OSError):
            rate = 16000  # a container soundfile cannot read: decoded at 16 kHz
        offset = row.get("offset")
        try:
            samples = load_audio(
                Path(row["audio"]),
                rate,
                offset=offset,
                duration=row.get("duration") if offset is not None else None,
            )
        except (AudioError, OSError) as exc:
            untimed.append(ident)
            log.warning("%s: cannot read %s (%s): recording not redacted", ident, row["audio"], exc)
            continue
        spans = [(r["start_s"], r["end_s"]) for r in spoken]
        name = f"{stem}.wav"
        sf.write(folder / name, silenced(samples, rate, spans, margin_s), rate, subtype="PCM_16")
        written.append(name)
    return written, untimed
