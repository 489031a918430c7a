"""Audio probing, validation and loading: one loader for every stage.

soundfile (libsndfile) reads WAV, FLAC, OGG, MP3 and the other formats the model processor
itself reads. PyAV (the `av` wheel bundles FFmpeg's demuxers and decoders; no system ffmpeg)
reads the phone and browser containers libsndfile cannot: M4A/AAC, MP4, WebM and Matroska
(Opus, Vorbis), 3GP/AMR, WMA. soxr resamples both.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxadapt.progress import progress

if TYPE_CHECKING:
    import numpy as np

# Integer PCM cannot hold NaN/inf and its length is exact from the header, so a header
# probe suffices. Float subtypes may hold NaN/inf; compressed formats (MP3, OGG) only
# estimate their length: those are decoded to validate them.
_HEADER_TRUSTED_FORMATS = {"WAV", "WAVEX", "FLAC", "AIFF", "W64", "RF64", "CAF"}
_FLOAT_SUBTYPES = {"FLOAT", "DOUBLE"}
_DECODE_BLOCK_FRAMES = 1 << 16

# Read with libsndfile first, as the model processor reads them (a file it cannot open, such
# as AAC in a .caf or a misnamed .wav, is then tried with PyAV).
SOUNDFILE_AUDIO_SUFFIXES = frozenset(
    {".wav", ".flac", ".mp3", ".ogg", ".opus", ".oga", ".aiff", ".aif", ".w64", ".caf"}
)
# Phone and browser containers libsndfile cannot open: read with PyAV straight away.
CONTAINER_AUDIO_SUFFIXES = frozenset(
    {".m4a", ".m4b", ".aac", ".mp4", ".mov", ".3gp", ".webm", ".mkv", ".mka", ".wma", ".amr"}
)
# What a folder of recordings is searched for.
AUDIO_SUFFIXES = SOUNDFILE_AUDIO_SUFFIXES | CONTAINER_AUDIO_SUFFIXES
# FFmpeg demuxers whose duration comes from the container's index (MP4's sample table and
# edit list, Matroska's Duration element, ASF's file header). For raw streams (ADTS AAC, AMR)
# FFmpeg only estimates it from the bit rate, so those are decoded to count their samples.
_INDEXED_DEMUXERS = {"mov": "MP4", "matroska": "MATROSKA", "asf": "ASF"}
# how far decoding may run past the stated length (codec priming, millisecond timestamps)
_STATED_SLACK_S = 1.0


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
    format: str  # container: soundfile's name ("WAV", "FLAC") or PyAV's ("MP4", "WEBM")
    subtype: str  # soundfile's sample format ("PCM_16") or the codec ("AAC", "OPUS")
    decoded: bool  # True if the samples were read to validate the file

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate


def probe_audio(path: Path, *, full_decode: bool = False) -> AudioInfo:
    """Read the header of `path` and decode it only where the header cannot be trusted.

    Raises AudioError with reason ``missing_audio``, ``unreadable_audio``, ``empty_audio``,
    ``non_finite_samples``, ``no_audio_stream`` (a video or data file without sound) or
    ``unsupported_audio_format`` (a codec this FFmpeg build cannot decode).
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError("missing_audio", f"audio file not found: {path}")
    if path.suffix.lower() in CONTAINER_AUDIO_SUFFIXES:
        return _probe_container(path, full_decode)
    try:
        info = sf.info(str(path))
    except Exception as exc:  # libsndfile raises LibsndfileError/RuntimeError with its own text
        return _or_soundfile_error(lambda: _probe_container(path, full_decode), path, exc)
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
    import numpy as np
    import soundfile as sf

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

    Containers libsndfile cannot open (M4A, MP4, WebM...) are decoded with PyAV to float32
    at the file's rate, then resampled and averaged the same way. The processor cannot read
    them through soundfile (it needs torchcodec), and a lossy codec has no file format of
    its own to re-encode into, so no re-encoding step follows: the decoded waveform is the
    reference, and features computed from it match whatever reads the same decoder output.
    """
    import numpy as np
    import soundfile as sf
    import soxr

    path = Path(path)
    if path.suffix.lower() in CONTAINER_AUDIO_SUFFIXES:
        return _load_container(path, sample_rate, speed, offset, duration)
    try:
        handle = sf.SoundFile(str(path))
    except Exception as exc:
        return _or_soundfile_error(
            lambda: _load_container(path, sample_rate, speed, offset, duration), path, exc
        )
    try:
        with handle:
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


def read_blocks(
    path: Path, block_s: float, *, offset: float | None = None, duration: float | None = None
) -> Iterator[tuple[np.ndarray, int]]:
    """`path` (or its span `offset`..`offset + duration`, seconds) as (block, rate) pairs.

    Each block is float32 (frames, channels) of about `block_s` seconds at the file's own
    rate `rate`, so memory does not grow with the recording's length. Raises AudioError
    (while iterating) if the file cannot be read.
    """
    import soundfile as sf

    path = Path(path)
    if path.suffix.lower() in CONTAINER_AUDIO_SUFFIXES:
        yield from _container_blocks(path, block_s, offset, duration)
        return
    try:
        handle = sf.SoundFile(str(path))
    except Exception as exc:
        blocks = _container_blocks(path, block_s, offset, duration)
        yield from _blocks_or_soundfile_error(blocks, path, exc)
        return
    with handle:
        rate = handle.samplerate
        try:
            if offset is not None:
                handle.seek(min(round(offset * rate), handle.frames))
            left = round(duration * rate) if duration is not None else handle.frames
            while left > 0:
                block = handle.read(
                    min(round(block_s * rate), left), dtype="float32", always_2d=True
                )
                if len(block) == 0:
                    break
                left -= len(block)
                yield block, rate
        except (RuntimeError, ValueError, OSError) as exc:  # LibsndfileError is a RuntimeError
            raise AudioError("unreadable_audio", f"{path}: {exc}") from None


def _or_soundfile_error(read_with_pyav: Any, path: Path, soundfile_error: Exception) -> Any:
    """`read_with_pyav()` for a file libsndfile could not open; if FFmpeg cannot read it
    either, libsndfile's own message (a WAV that is broken is best described by it)."""
    try:
        return read_with_pyav()
    except AudioError as exc:
        if exc.reason != "unreadable_audio":  # e.g. a misnamed video without sound
            raise
    raise AudioError("unreadable_audio", f"{path}: {soundfile_error}") from None


def _blocks_or_soundfile_error(
    blocks: Iterator[tuple[np.ndarray, int]], path: Path, soundfile_error: Exception
) -> Iterator[tuple[np.ndarray, int]]:
    """`_or_soundfile_error` for PyAV's `blocks`: FFmpeg opens the file at the first one."""
    first = _or_soundfile_error(lambda: next(blocks, None), path, soundfile_error)
    if first is not None:
        yield first
        yield from blocks


# ---- containers libsndfile cannot read, through PyAV (FFmpeg) ----------------------------


@contextmanager
def _open_container(path: Path, data: bytes | None = None) -> Iterator[tuple[Any, Any]]:
    """(container, its first audio stream) of `path` (or of `data`, named `path` in messages);
    AudioError if FFmpeg cannot open it, it holds no audio stream or this FFmpeg build has no
    decoder for the stream's codec."""
    import av  # FFmpeg's libraries load only when a container is read

    try:
        source = str(path) if data is None else io.BytesIO(data)
        container = av.open(source, metadata_errors="ignore")
    except av.error.EOFError:  # a header and no packets: a recording stopped at once
        raise AudioError("empty_audio", f"{path}: the file ends before any audio") from None
    except Exception as exc:  # av.error.InvalidDataError, FileNotFoundError, ...
        empty = data == b"" or (data is None and path.is_file() and path.stat().st_size == 0)
        detail = f"{path}: empty file (0 bytes)" if empty else _ffmpeg_detail(path, exc)
        raise AudioError("unreadable_audio", detail) from None
    with container:
        if not container.streams:  # FFmpeg drops an MP4 track without samples
            raise AudioError("empty_audio", f"{path}: no audio samples (no tracks)")
        if not container.streams.audio:
            kinds = ", ".join(sorted({stream.type for stream in container.streams}))
            raise AudioError("no_audio_stream", f"{path}: no audio stream (holds {kinds})")
        stream = container.streams.audio[0]
        if stream.codec_context is None or stream.codec_context.codec is None:
            raise AudioError(
                "unsupported_audio_format",
                f"{path}: FFmpeg has no decoder for its {stream.codec_context} audio",
            )
        yield container, stream


def _ffmpeg_detail(path: Path, exc: Exception) -> str:
    """One line: the path and FFmpeg's message without its errno and repeated file name."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return f"{path}: {' '.join(str(text).split())}"


def _decoded_frames(container: Any, stream: Any, path: Path) -> Iterator[tuple[np.ndarray, int]]:
    """Every decoded frame of `stream` as float32 (channels, frames) and its rate."""
    import av

    # sample format only (rate and layout stay): integer samples scale exactly to float
    converter = av.AudioResampler(format="fltp")
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets, None)
            frames = (
                converter.resample(None)
                if packet is None
                else [
                    converted
                    for frame in packet.decode()
                    for converted in converter.resample(frame)
                ]
            )
        except Exception as exc:  # a corrupt or truncated packet, a decoder that fails
            raise AudioError("unreadable_audio", _ffmpeg_detail(path, exc)) from None
        for frame in frames:
            yield frame.to_ndarray(), int(frame.sample_rate)
        if packet is None:
            return


def _demuxer(container: Any) -> str:
    """FFmpeg's demuxer: "mov" (MP4, M4A, 3GP), "matroska" (also WebM), "asf", "aac"..."""
    return container.format.name.split(",")[0]


def _stated_frames(container: Any, stream: Any, rate: int) -> int | None:
    """The length the container's index states, in frames at `rate`; None where it has no
    index (raw AAC/AMR streams, whose duration FFmpeg only estimates) or states nothing."""
    if _demuxer(container) not in _INDEXED_DEMUXERS:
        return None
    if stream.duration and stream.time_base:  # MP4: the sample table less the edit list
        return round(stream.duration * stream.time_base * rate)
    # Matroska/WebM: the Duration element (microseconds), the longest track's: a video
    # track may outlast the sound
    if container.duration and len(container.streams) == 1:
        return round(container.duration * rate / 1_000_000)
    return None  # a browser's live-written WebM has no duration


def _trim_frames(container: Any, stream: Any, rate: int) -> int | None:
    """Where decoding stops: an MP4 edit list cuts the encoder's padding off the last frame
    (AAC decodes in 1024-sample frames); other containers end where the decoder does."""
    if _demuxer(container) == "mov" and stream.duration and stream.time_base:
        return round(stream.duration * stream.time_base * rate)
    return None


def _container_format(container: Any, path: Path) -> str:
    demuxer = _demuxer(container)
    if demuxer == "matroska" and path.suffix.lower() == ".webm":
        return "WEBM"
    return _INDEXED_DEMUXERS.get(demuxer, demuxer.upper())


def _container_blocks(
    path: Path, block_s: float, offset: float | None, duration: float | None
) -> Iterator[tuple[np.ndarray, int]]:
    """`read_blocks` for a container: decoded from the start, samples counted exactly.

    Seeking would land on packet boundaries with millisecond timestamps (WebM) and leave
    the decoder without its pre-roll, so the segment would not be the samples a full
    decode gives; decoding (not keeping) what comes before the offset costs time instead.
    """
    import numpy as np

    with _open_container(path) as (container, stream):
        position, rate, start, stop = 0, 0, 0, None
        pending: list[np.ndarray] = []
        pending_frames = 0
        stated: int | None = None
        for planes, frame_rate in _decoded_frames(container, stream, path):
            if not rate:
                rate = frame_rate
                start = round(offset * rate) if offset is not None else 0
                ends = [_trim_frames(container, stream, rate)]
                ends.append(start + round(duration * rate) if duration is not None else None)
                stop = min((limit for limit in ends if limit is not None), default=None)
                stated = _stated_frames(container, stream, rate)
            elif frame_rate != rate:
                raise AudioError(
                    "unreadable_audio",
                    f"{path}: the sample rate changes mid-stream ({rate} -> {frame_rate} Hz)",
                )
            if pending and planes.shape[0] != pending[0].shape[1]:
                raise AudioError("unreadable_audio", f"{path}: channel count changes mid-stream")
            begin, end = position, position + planes.shape[1]
            position = end
            # the probe's length is the container's: what a server checked against its
            # limit is all that is decoded (a forged Duration of 1 s over hours of sound)
            if stated is not None and position > stated + rate * _STATED_SLACK_S:
                raise AudioError(
                    "unreadable_audio",
                    f"{path}: holds more audio than its container states ({stated / rate:.1f} s)",
                )
            last = end if stop is None else min(end, stop)
            keep = planes[:, max(start - begin, 0) : max(last - begin, 0)]
            if keep.shape[1] > 0:
                pending.append(keep.T)
                pending_frames += keep.shape[1]
            if pending_frames >= block_s * rate:
                yield np.concatenate(pending), rate
                pending, pending_frames = [], 0
            if stop is not None and position >= stop:
                break
        if pending:
            yield np.concatenate(pending), rate


def _load_container(
    path: Path, sample_rate: int, speed: float, offset: float | None, duration: float | None
) -> np.ndarray:
    import numpy as np
    import soxr

    blocks, rates = [], []
    for block, rate in _container_blocks(path, 30.0, offset, duration):
        blocks.append(block)
        rates.append(rate)
    if not blocks:
        raise AudioError("empty_audio", f"{path}: no audio samples")
    samples, file_rate = np.concatenate(blocks), rates[0]
    target_rate = sample_rate / speed
    if file_rate != target_rate:
        samples = soxr.resample(samples, file_rate, target_rate, quality="HQ")
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    return np.ascontiguousarray(mono, dtype=np.float32)


def _probe_container(path: Path, full_decode: bool) -> AudioInfo:
    """Probe a container: its index gives the length where it has one (the first frame is
    decoded to prove the codec and learn the true rate: HE-AAC doubles the header's);
    otherwise, or with `full_decode`, every sample is decoded, counted and checked."""
    import numpy as np

    with _open_container(path) as (container, stream):
        frames, rate, channels, decoded, trim = 0, 0, 0, True, None
        for planes, frame_rate in _decoded_frames(container, stream, path):
            if not rate:
                rate, channels = frame_rate, planes.shape[0]
                stated = None if full_decode else _stated_frames(container, stream, rate)
                if stated:
                    frames, decoded = stated, False
                    break
                trim = _trim_frames(container, stream, rate)
            if not np.isfinite(planes).all():
                raise AudioError("non_finite_samples", f"{path}: contains NaN or infinite samples")
            frames += planes.shape[1]
            if trim is not None and frames >= trim:
                frames = trim
                break
        if frames <= 0:
            raise AudioError("empty_audio", f"{path}: no audio samples")
        return AudioInfo(
            sample_rate=rate,
            channels=channels,
            frames=frames,
            format=_container_format(container, path),
            subtype=stream.codec_context.name.upper(),
            decoded=decoded,
        )


# Suffixes for audio bytes that only PyAV reads, stored byte for byte (Hugging Face datasets),
# so that `load_audio` sends the stored file straight to PyAV.
_STORED_CONTAINER_SUFFIXES = {
    "mov": ".m4a",
    "matroska": ".mka",
    "asf": ".wma",
    "aac": ".aac",
    "amr": ".amr",
}


def container_suffix(data: bytes) -> str:
    """The suffix to store audio bytes that only PyAV reads under (".m4a", ".mka", ...),
    after decoding them whole to prove them intact. Raises AudioError if they are not."""
    import numpy as np

    label = Path("audio bytes")
    with _open_container(label, data) as (container, stream):
        frames = 0
        for planes, _ in _decoded_frames(container, stream, label):
            if not np.isfinite(planes).all():
                raise AudioError("non_finite_samples", f"{label}: contain NaN or infinite samples")
            frames += planes.shape[1]
        demuxer = _demuxer(container)
    if frames == 0:
        raise AudioError("empty_audio", f"{label}: no audio samples")
    if demuxer not in _STORED_CONTAINER_SUFFIXES:
        raise AudioError("unsupported_audio_format", f"{label}: a {demuxer} stream, not stored")
    return _STORED_CONTAINER_SUFFIXES[demuxer]
