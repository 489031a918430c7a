"""The bundled sample: `train.scp`, Korean clinical sentences spoken by espeak-ng in `clips/`
(annotated transcripts: a dual transcription, fillers), for `voxadapt demo` and the tour.

Two of its lines are rejected on purpose, to show what `prepare` does with bad input: line 5
names a clip that does not exist and line 6 repeats line 1's clip. `prepare` labels these two
rejections deliberate (summary, stats.json) instead of warning about them, when SOURCE is
this file's content (`is_bundled_sample`), wherever it was copied: an edited copy is the
user's own file, and its rejections are real.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

# The deliberate rejections of train.scp: line (1-based) -> the reason prepare records.
DELIBERATE_REJECTS = {5: "missing_audio", 6: "duplicate"}
DELIBERATE_NOTE = "the bundled sample includes a duplicate and a missing file to show rejections"
# SHA-256 of train.scp with LF line endings: the sample's marker (tests/test_prepare.py checks
# it against the file, so an edit of the sample that forgets it fails there, not silently).
TRAIN_SCP_SHA256 = "50d9f6cb0fe8eff5d788f2cb28d3efe0c133c01be7e8b8debfbf9e940456b443"
# Larger files cannot be the sample: they are not read to be fingerprinted.
_MAX_SAMPLE_BYTES = 64 * 1024


def fingerprint(path: Path) -> str | None:
    """SHA-256 of a small regular file's content (CRLF read as LF), None for anything else."""
    path = Path(path)
    try:
        if not path.is_file() or path.stat().st_size > _MAX_SAMPLE_BYTES:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    return hashlib.sha256(data.replace(b"\r\n", b"\n")).hexdigest()


def is_bundled_sample(source: Path) -> bool:
    """Whether `source` holds the bundled train.scp, unedited (by content, not by path)."""
    return fingerprint(source) == TRAIN_SCP_SHA256
