"""A content-addressed, lossless store for audio that arrives as bytes (Hugging Face datasets).

Every stored file decodes to exactly the samples of the bytes it came from: integer PCM of up
to 24 bits is compressed to FLAC (sample-identical); FLAC is kept as it is; everything FLAC
cannot hold exactly (32-bit integers, float samples, which may peak above full scale or hold
NaN, and lossy codecs) is kept byte for byte under the extension of its format; so are the
phone and browser containers only PyAV reads (M4A, WebM), once decoded whole. Nothing is
clipped or requantized; audio that later fails the probe (NaN, silence) is rejected there with
its reason.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

from voxadapt.audio import AudioError, container_suffix
from voxadapt.errors import SourceError
from voxadapt.sources.base import display_path

# Subtypes FLAC holds sample for sample (libsndfile writes FLAC at 8, 16 or 24 bits).
_FLAC_EXACT = {"PCM_S8": "PCM_16", "PCM_U8": "PCM_16", "PCM_16": "PCM_16", "PCM_24": "PCM_24"}
# Container extensions for formats kept byte for byte.
_EXTENSIONS = {"WAV": ".wav", "WAVEX": ".wav", "FLAC": ".flac", "OGG": ".ogg", "MP3": ".mp3"}


class UnstorableAudio(Exception):
    """Bytes that are not audio voxadapt reads (a rejection reason, not a stage error)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class AudioStore:
    """Writes audio bytes once, named by the sha256 of the bytes as stored."""

    def __init__(self, audio_dir: Path) -> None:
        self.audio_dir = audio_dir.absolute()
        self.written = 0
        self.reused = 0

    def path_for(self, data: bytes) -> Path:
        """The file holding `data`, written if new; UnstorableAudio if it is not audio."""
        stored, extension = lossless_form(data)
        digest = hashlib.sha256(stored).hexdigest()
        target = self.audio_dir / digest[:2] / f"{digest}{extension}"
        if target.is_file():
            self.reused += 1
            return target
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            # Same-folder temp name + rename: a crash never leaves a half file under the
            # final name; the pid keeps two concurrent runs from sharing a temp file.
            partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
            try:
                partial.write_bytes(stored)
                os.replace(partial, target)
            finally:
                partial.unlink(missing_ok=True)
        except OSError as exc:
            raise SourceError(
                f"cannot write audio under {display_path(self.audio_dir)}: {exc.strerror or exc}"
            ) from None
        self.written += 1
        return target


def lossless_form(data: bytes) -> tuple[bytes, str]:
    """(bytes to store, extension): FLAC for integer PCM up to 24 bits, else `data` itself."""
    import soundfile as sf

    try:
        info = sf.info(io.BytesIO(data))
    except (RuntimeError, ValueError, TypeError) as exc:  # sf.LibsndfileError is a RuntimeError
        return data, _container_suffix(data, exc)
    try:
        if info.frames == 0:
            raise UnstorableAudio("unreadable_audio", "audio has no samples")
        if info.format == "FLAC" or info.subtype not in _FLAC_EXACT:
            # a full decode proves the frames intact before the bytes are kept
            sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
            extension = _EXTENSIONS.get(info.format, f".{info.format.lower()}")
            return data, extension
        # int32 holds every integer PCM up to 24 bits exactly (shifted; libsndfile undoes it)
        samples, rate = sf.read(io.BytesIO(data), dtype="int32", always_2d=True)
        buffer = io.BytesIO()
        sf.write(buffer, samples, rate, format="FLAC", subtype=_FLAC_EXACT[info.subtype])
    except (RuntimeError, ValueError, TypeError) as exc:  # sf.LibsndfileError is a RuntimeError
        raise UnstorableAudio(
            "unreadable_audio", f"audio bytes cannot be read as audio: {exc}"
        ) from None
    return buffer.getvalue(), ".flac"


def _container_suffix(data: bytes, soundfile_error: Exception) -> str:
    """The suffix for bytes only PyAV reads (M4A, WebM...), kept byte for byte."""
    try:
        return container_suffix(data)
    except AudioError as exc:
        if exc.reason != "unreadable_audio":  # e.g. a video without sound
            raise UnstorableAudio(exc.reason, exc.detail) from None
    raise UnstorableAudio(
        "unreadable_audio", f"audio bytes cannot be read as audio: {soundfile_error}"
    ) from None
