"""Audio probing, validation and loading (soundfile for I/O, soxr for resampling)."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from voxadapt.progress import progress

# Integer PCM cannot hold NaN/inf and its length is exact from the header, so a header
# probe suffices. Float subtypes may hold NaN/inf; compressed formats (MP3, OGG) only
# estimate their length: those are decoded to validate them.
_HEADER_TRUSTED_FORMATS = {"WAV", "WAVEX", "FLAC", "AIFF", "W64", "RF64", "CAF"}
_FLOAT_SUBTYPES = {"FLOAT", "DOUBLE"}
_DECODE_BLOCK_FRAMES = 1 << 16


class AudioError(Exception):
    """An audio file that cannot be used; `reason` is the machine-readable rejection reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple:  # keep `reason` when sent back from a worker process
        return (type(self), (self.reason, str(self)))


@dataclass(frozen=True)
class AudioInfo:
    """What we know about an audio file after probing it."""

    sample_rate: int  # Hz
    channels: int
    frames: int  # samples per channel
    format: str  # soundfile container, e.g. "WAV"
    subtype: str  # soundfile sample format, e.g. "PCM_16"
    decoded: bool  # True if the samples were read to validate the file

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate


# Audio formats libsndfile cannot decode (AAC/ALAC in MP4 containers, WebM/Opus in Matroska,
# WMA, AMR): phone and browser recordings often come as these. They are listed with this
# reason, never skipped in silence.
UNSUPPORTED_AUDIO_SUFFIXES = frozenset(
    {".m4a", ".aac", ".mp4", ".m4b", ".webm", ".mkv", ".wma", ".amr", ".3gp", ".caf"}
)


def unsupported_audio_detail(path: Path) -> str:
    """Why `path` is not read, and how to make it readable."""
    return (
        f"{Path(path).suffix} audio is not supported; convert it first, e.g. "
        f"ffmpeg -i {Path(path).name} {Path(path).with_suffix('.wav').name}"
    )


def probe_audio(path: Path, *, full_decode: bool = False) -> AudioInfo:
    """Read the header of `path` and decode it only where the header cannot be trusted.

    Raises AudioError with reason ``missing_audio``, ``unreadable_audio``, ``empty_audio``
    or ``non_finite_samples``.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError("missing_audio", f"audio file not found: {path}")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # libsndfile raises LibsndfileError/RuntimeError with its own text
        raise AudioError("unreadable_audio", f"{path}: {exc}") from None
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioError("unreadable_audio", f"{path}: invalid header")
    frames = int(info.frames)
    needs_decode = (
        full_decode
        or info.format not in _HEADER_TRUSTED_FORMATS
        or info.subtype in _FLOAT_SUBTYPES
        or frames <= 0
    )
    if needs_decode:
        frames = _validate_samples(path)
    if frames <= 0:
        raise AudioError("empty_audio", f"{path}: no audio samples")
    return AudioInfo(
        sample_rate=int(info.samplerate),
        channels=int(info.channels),
        frames=frames,
        format=info.format,
        subtype=info.subtype,
        decoded=needs_decode,
    )


def _validate_samples(path: Path) -> int:
    """Decode the whole file in blocks; return the true frame count, reject NaN/inf."""
    frames = 0
    try:
        for block in sf.blocks(str(path), blocksize=_DECODE_BLOCK_FRAMES, dtype="float32"):
            if not np.isfinite(block).all():
                raise AudioError("non_finite_samples", f"{path}: contains NaN or infinite samples")
            frames += len(block)
    except AudioError:
        raise
    except Exception as exc:
        raise AudioError("unreadable_audio", f"{path}: {exc}") from None
    return frames


def _probe_chunk(paths: list[Path], full_decode: bool) -> list[AudioInfo | AudioError]:
    results: list[AudioInfo | AudioError] = []
    for path in paths:
        try:
            results.append(probe_audio(path, full_decode=full_decode))
        except AudioError as exc:
            results.append(exc)
    return results


def probe_many(
    paths: Sequence[Path], *, jobs: int | None = None, full_decode: bool = False
) -> list[AudioInfo | AudioError]:
    """Probe many files in `jobs` worker processes (default: all cores); order is kept.

    A header probe is mostly Python overhead, so threads would serialize on the GIL;
    processes each take chunks of files, which also overlaps I/O latency on network disks.
    """
    jobs = jobs or os.cpu_count() or 1
    paths = list(paths)
    results: list[AudioInfo | AudioError] = []
    with progress(len(paths), "probe audio", "file") as bar:
        if jobs == 1 or len(paths) < 64:
            for path in paths:
                results.extend(_probe_chunk([path], full_decode))
                bar.update()
            return results
        chunk = max(16, min(512, len(paths) // (jobs * 8)))
        chunks = [paths[i : i + chunk] for i in range(0, len(paths), chunk)]
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for part in pool.map(_probe_chunk, chunks, [full_decode] * len(chunks)):
                results.extend(part)
                bar.update(len(part))
    return results


def load_audio(
    path: Path,
    sample_rate: int = 16000,
    *,
    speed: float = 1.0,
    offset: float | None = None,
    duration: float | None = None,
) -> np.ndarray:
    """Load `path` as mono float32 at `sample_rate`, exactly as Voxtral's processor sees it.

    `speed` != 1 is Kaldi-style speed perturbation (tempo and pitch together, like sox's
    `speed`): the audio is resampled to `sample_rate / speed` with the same soxr HQ
    resampler and then taken as `sample_rate`, so 1.1 gives a clip 1/1.1 as long.
    `offset`/`duration` (seconds) cut a segment out of a longer recording first, exactly as
    if the segment had been saved to a file of its own.

    The processor (transformers' `load_audio_as`) resamples with soxr HQ, averages channels,
    and re-encodes the result in the file's own format with its default sample format
    (16-bit PCM for WAV/FLAC) before featurizing. We do the same steps in the same order,
    so cached training features equal the features the stock inference path computes.
    """
    try:
        with sf.SoundFile(str(path)) as handle:
            file_rate, file_format, subtype = handle.samplerate, handle.format, handle.subtype
            frames = -1
            if offset is not None:
                handle.seek(min(round(offset * file_rate), handle.frames))
                frames = round((duration or 0.0) * file_rate) if duration is not None else -1
            samples = handle.read(frames, dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError("unreadable_audio", f"{path}: {exc}") from None
    if samples.shape[0] == 0:
        raise AudioError("empty_audio", f"{path}: no audio samples")
    changed = False
    target_rate = sample_rate / speed
    if file_rate != target_rate:
        samples = soxr.resample(samples, file_rate, target_rate, quality="HQ")
        changed = True
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    changed = changed or samples.shape[1] > 1 or subtype != sf.default_subtype(file_format)
    if changed:
        buffer = io.BytesIO()
        sf.write(buffer, mono, sample_rate, format=file_format)
        buffer.seek(0)
        mono, _ = sf.read(buffer, dtype="float32")
    return np.ascontiguousarray(mono, dtype=np.float32)
