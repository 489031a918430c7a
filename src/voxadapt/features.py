"""Exact log-mel features of each model family, stored compactly, and the sharded feature store.

Two layouts, declared by the family (`FeatureSpec.layout`):

- `chunked` (Voxtral): every clip is zero-padded to a multiple of 30 s and the model takes
  (chunks, mels, 3000) with no mask.
- `masked` (Qwen3-ASR): the log-mel of the clip itself (clips under `min_samples` zero-padded
  to it first, as the processor does, without a mask), its time axis zero-padded to a
  multiple of `frame_multiple` frames, with `input_features_mask` marking the clip's frames.
  Features are those of the processor for the clip alone, so they do not depend on what else
  is in a batch.

The chunked layout in detail:

Voxtral pads every clip with zeros to a multiple of 30 s (480000 samples at 16 kHz) and takes
Whisper's log-mel of the padded signal: 128 mels x 3000 frames per chunk. A frame whose STFT
window holds only padding has zero power, so its log-mel is log10(1e-10) = -10, then clamped to
(global max - 8): every such frame has the same value. We therefore run the STFT only over
the frames that touch real audio, store those frames and the single pad value, and rebuild
the padded tensor on load. A 5 s clip stores 503 frames instead of 3000.

Frames are stored with one of two codecs:
- `compact` (default): values quantized to steps of 1.95e-3 (error <= 9.75e-4, inside the 1e-3
  tolerance against the processor), predicted from their mel and time neighbours (spectra are
  smooth in both), residuals zigzag-mapped, split into low/high byte planes and
  zlib-compressed (run-length strategy): ~0.41x of fp16.
- `fp16`: 2 bytes per value (error <= 4.9e-4), the fastest to write.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxadapt.audio import AudioError, load_audio
from voxadapt.errors import VoxadaptError
from voxadapt.manifest import Utterance, atomic_write

if TYPE_CHECKING:
    import numpy as np
    import torch

log = logging.getLogger(__name__)

# Bump when the stored representation or its computation changes: old shards stop matching.
FEATURE_FORMAT_VERSION = 3  # 3: a CRC-32 per entry
SHARD_GLOB = "shard-*.safetensors"
CODECS = ("compact", "fp16")
QUANT_STEP = 1.95e-3  # compact codec: max error QUANT_STEP / 2 = 9.75e-4 (tolerance 1e-3)
# zlib with run-length matching only: on these residuals smaller and ~1.6x faster than
# level 1's default strategy (level 6 is 2% smaller still, at 4x the time)
_ZLIB_LEVEL = 6


CHUNKED = "chunked"  # Voxtral: 30 s chunks, no mask
MASKED = "masked"  # Qwen3-ASR: the clip's own frames + input_features_mask
LAYOUTS = (CHUNKED, MASKED)


class CacheMismatchError(VoxadaptError):
    """A feature cache was built with another feature extractor than the model's."""


@dataclass(frozen=True)
class FeatureSpec:
    """The parameters of a model's log-mel front end (from the processor's feature extractor)."""

    sampling_rate: int  # Hz; audio is resampled to this
    n_fft: int  # STFT window, samples
    hop_length: int  # samples between frames
    n_mels: int
    chunk_samples: int  # 30 s of audio (chunked layout: the padding unit)
    mel_filters: np.ndarray  # (n_fft // 2 + 1, n_mels)
    layout: str = CHUNKED  # CHUNKED or MASKED (see the module docstring)
    min_samples: int = 0  # masked: shorter clips are zero-padded to this (Qwen3-ASR: 0.5 s)
    frame_multiple: int = 0  # masked: the time axis is padded to a multiple of this

    @classmethod
    def from_feature_extractor(
        cls, extractor: Any, *, layout: str = CHUNKED, min_samples: int = 0, frame_multiple: int = 0
    ) -> FeatureSpec:
        import numpy as np

        if float(getattr(extractor, "dither", 0.0) or 0.0) != 0.0:
            raise VoxadaptError(
                "feature extractors with dither are not deterministic; set dither=0"
            )
        return cls(
            sampling_rate=int(extractor.sampling_rate),
            n_fft=int(extractor.n_fft),
            hop_length=int(extractor.hop_length),
            n_mels=int(extractor.feature_size),
            chunk_samples=int(extractor.n_samples),
            mel_filters=np.asarray(extractor.mel_filters, dtype=np.float32),
            layout=layout,
            min_samples=min_samples,
            frame_multiple=frame_multiple,
        )

    @classmethod
    def from_model(cls, model: str | Path) -> FeatureSpec:
        """Read the spec from a model's processor (hub id or local folder), as its family
        declares it."""
        from voxadapt.families import family_of

        return family_of(model).feature_spec_of(model)

    @property
    def chunk_frames(self) -> int:
        return self.chunk_samples // self.hop_length

    @property
    def fingerprint(self) -> str:
        """Changes whenever any parameter (or the mel filterbank) changes."""
        import numpy as np

        digest = hashlib.sha256()
        digest.update(
            json.dumps(
                [
                    FEATURE_FORMAT_VERSION,
                    self.sampling_rate,
                    self.n_fft,
                    self.hop_length,
                    self.n_mels,
                    self.chunk_samples,
                    # the chunked layout's fingerprint is unchanged from before layouts existed
                    *(
                        [self.layout, self.min_samples, self.frame_multiple]
                        if self.layout != CHUNKED
                        else []
                    ),
                ]
            ).encode()
        )
        digest.update(np.ascontiguousarray(self.mel_filters, dtype=np.float32).tobytes())
        return digest.hexdigest()[:16]


@dataclass
class CompactFeatures:
    """Log-mel frames that touch real audio, plus the value of every padding frame."""

    frames: np.ndarray  # (n_mels, n_real_frames) float32, or float16 from an fp16 cache
    pad_value: float
    # chunked: 30 s chunks the padded audio spans; masked: encoder chunks of frame_multiple
    n_chunks: int

    @property
    def n_frames(self) -> int:
        """Stored frames: the frames that touch real audio (masked: the mask's length)."""
        return int(self.frames.shape[1])

    def expand(self, spec: FeatureSpec) -> torch.Tensor:
        """The processor's tensor: chunked (n_chunks, n_mels, chunk_frames); masked
        (1, n_mels, n_chunks * frame_multiple). float32."""
        import numpy as np
        import torch

        unit = spec.chunk_frames if spec.layout == CHUNKED else spec.frame_multiple
        total = self.n_chunks * unit
        full = torch.full((spec.n_mels, total), float(self.pad_value), dtype=torch.float32)
        full[:, : self.frames.shape[1]] = torch.from_numpy(self.frames.astype(np.float32))
        if spec.layout == MASKED:
            return full.unsqueeze(0)
        return full.reshape(spec.n_mels, self.n_chunks, spec.chunk_frames).transpose(0, 1)


def audio_inputs(features: Sequence[CompactFeatures], spec: FeatureSpec) -> dict[str, torch.Tensor]:
    """The model's audio inputs for a batch, in batch order: chunked, every clip's 30 s
    chunks stacked (Voxtral fills [AUDIO] positions row-major from them); masked,
    `input_features` (batch, n_mels, frames) zero-padded to the longest clip and
    `input_features_mask` (batch, frames)."""
    import torch

    if spec.layout == CHUNKED:
        return {"input_features": torch.cat([f.expand(spec) for f in features])}
    width = max(f.n_chunks for f in features) * spec.frame_multiple
    input_features = torch.zeros((len(features), spec.n_mels, width), dtype=torch.float32)
    mask = torch.zeros((len(features), width), dtype=torch.long)
    for row, item in enumerate(features):
        expanded = item.expand(spec)[0]
        input_features[row, :, : expanded.shape[1]] = expanded
        mask[row, : item.n_frames] = 1
    return {"input_features": input_features, "input_features_mask": mask}


def n_chunks_for(n_samples: int, spec: FeatureSpec) -> int:
    """Number of 30 s chunks Voxtral uses for `n_samples` of 16 kHz audio (each = 375 tokens);
    masked layout: encoder chunks of `frame_multiple` frames."""
    if spec.layout == MASKED:
        frames = max(n_samples, spec.min_samples) // spec.hop_length
        return max(1, math.ceil(frames / spec.frame_multiple))
    return max(1, math.ceil(n_samples / spec.chunk_samples))


def compute_features(audio: np.ndarray, spec: FeatureSpec) -> CompactFeatures:
    """Log-mel of `audio` (mono, spec.sampling_rate) as the family's processor computes it:
    chunked, as if zero-padded to 30 s chunks; masked, of the clip alone."""
    import numpy as np
    import torch

    n_samples = len(audio)
    if n_samples == 0:
        raise AudioError("empty_audio", "no audio samples")
    if spec.layout == MASKED:
        return _masked_features(audio, spec)
    n_chunks = n_chunks_for(n_samples, spec)
    padded_len = n_chunks * spec.chunk_samples
    total_frames = padded_len // spec.hop_length
    half_window = spec.n_fft // 2
    # Frame t (centered STFT) sees samples [t*hop - n_fft/2, t*hop + n_fft/2): frames from
    # ceil((n + n_fft/2) / hop) on see only padding.
    real_frames = min(total_frames, math.ceil((n_samples + half_window) / spec.hop_length))
    # Enough signal that no kept frame reaches the segment's end (where torch.stft reflects),
    # unless the segment is the whole padded signal, exactly as the processor computes it.
    segment_len = min(padded_len, real_frames * spec.hop_length + spec.n_fft)
    segment = torch.zeros(segment_len, dtype=torch.float32)
    segment[:n_samples] = torch.from_numpy(np.asarray(audio, dtype=np.float32))
    window = torch.hann_window(spec.n_fft)
    stft = torch.stft(segment, spec.n_fft, spec.hop_length, window=window, return_complex=True)
    magnitudes = (stft[..., :real_frames].abs() ** 2).contiguous()
    mel = torch.from_numpy(spec.mel_filters).T @ magnitudes
    log_spec = torch.clamp(mel, min=1e-10).log10()
    floor = log_spec.max() - 8.0
    if real_frames < total_frames:  # padding frames (-10) take part in the max and the floor
        floor = torch.maximum(floor, torch.tensor(-10.0 - 8.0))
    log_spec = (torch.maximum(log_spec, floor) + 4.0) / 4.0
    pad_value = (max(-10.0, float(floor)) + 4.0) / 4.0
    return CompactFeatures(log_spec.numpy(), pad_value, n_chunks)


def _masked_features(audio: np.ndarray, spec: FeatureSpec) -> CompactFeatures:
    """Qwen3-ASR's log-mel of one clip: clips under `min_samples` zero-padded to it (the
    processor pads them without a mask, as the original library does), a centered STFT whose
    last frame is dropped (n // hop frames), per-clip floor (max - 8), (x + 4) / 4. The
    frames past the clip, up to the next multiple of `frame_multiple`, are zeros (pad_value)."""
    import numpy as np
    import torch

    samples = np.asarray(audio, dtype=np.float32)
    if len(samples) < spec.min_samples:
        samples = np.pad(samples, (0, spec.min_samples - len(samples)))
    waveform = torch.from_numpy(samples)
    window = torch.hann_window(spec.n_fft)
    stft = torch.stft(waveform, spec.n_fft, spec.hop_length, window=window, return_complex=True)
    magnitudes = stft[..., :-1].abs() ** 2
    mel = torch.from_numpy(spec.mel_filters).T @ magnitudes
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = (torch.maximum(log_spec, log_spec.max() - 8.0) + 4.0) / 4.0
    frames = log_spec.numpy()
    n_chunks = max(1, math.ceil(frames.shape[1] / spec.frame_multiple))
    return CompactFeatures(frames, 0.0, n_chunks)


def encode_frames(frames: np.ndarray) -> tuple[bytes, float]:
    """The compact codec: (zlib blob, offset) of quantized frames, neighbour-predicted."""
    import numpy as np

    offset = float(frames.min())
    quantized = np.rint((frames.astype(np.float64) - offset) / QUANT_STEP).astype(np.int32)
    # Planar "gradient" prediction q[m-1,t] + q[m,t-1] - q[m-1,t-1]: differences along mel,
    # then along time. Decoding is two cumulative sums, no per-value loop.
    residual = np.diff(np.diff(quantized, axis=0, prepend=0), axis=1, prepend=0)
    zigzag = ((residual << 1) ^ (residual >> 31)).astype(np.uint16)  # small |r| -> small
    planes = np.concatenate(
        [(zigzag & 0xFF).astype(np.uint8).ravel(), (zigzag >> 8).astype(np.uint8).ravel()]
    )
    compressor = zlib.compressobj(_ZLIB_LEVEL, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    return compressor.compress(planes.tobytes()) + compressor.flush(), offset


def decode_frames(blob: bytes, offset: float, n_mels: int, n_frames: int) -> np.ndarray:
    """Inverse of `encode_frames`: float32 frames within QUANT_STEP / 2 of the originals."""
    import numpy as np

    planes = np.frombuffer(zlib.decompress(blob), dtype=np.uint8)
    count = n_mels * n_frames
    zigzag = (planes[:count].astype(np.int32) | (planes[count:].astype(np.int32) << 8)).reshape(
        n_mels, n_frames
    )
    residual = (zigzag >> 1) ^ -(zigzag & 1)
    quantized = np.cumsum(np.cumsum(residual, axis=1), axis=0)
    return (offset + quantized * QUANT_STEP).astype(np.float32)


def features_for_file(
    path: Path | str,
    spec: FeatureSpec,
    speed: float = 1.0,
    *,
    offset: float | None = None,
    duration: float | None = None,
) -> CompactFeatures:
    """Load, downmix, resample (soxr) and featurize one audio file (or the segment at
    `offset` seconds of `duration`), optionally sped up or slowed down by `speed`."""
    samples = load_audio(
        Path(path), spec.sampling_rate, speed=speed, offset=offset, duration=duration
    )
    return compute_features(samples, spec)


def cache_key(
    utterance_id: str,
    audio: str,
    spec: FeatureSpec,
    speed: float = 1.0,
    segment: tuple[float, float] | None = None,
) -> str:
    """Cache key: utterance id + audio file identity (path, size, mtime) + feature spec,
    and the speed-perturbation factor when it is not 1.

    Raises OSError if the audio file cannot be stat'ed.
    """
    stat = os.stat(audio)
    identity = f"{utterance_id}\0{audio}\0{stat.st_size}\0{stat.st_mtime_ns}"
    if speed != 1.0:
        identity += f"\0speed={speed!r}"
    if segment is not None:  # (offset, duration) in seconds within the file
        identity += f"\0segment={segment[0]!r},{segment[1]!r}"
    digest = hashlib.sha256(f"{identity}\0{spec.fingerprint}".encode()).hexdigest()
    return digest[:32]


def utterance_key(utterance: Utterance, spec: FeatureSpec, speed: float = 1.0) -> str:
    """The cache key of a manifest record (see `cache_key`)."""
    return cache_key(utterance.id, utterance.audio, spec, speed, utterance.segment)


def utterance_features(
    utterance: Utterance, spec: FeatureSpec, speed: float = 1.0
) -> CompactFeatures:
    """Features of a manifest record: its file, or its segment of a longer recording."""
    offset, duration = utterance.segment or (None, None)
    return features_for_file(utterance.audio, spec, speed, offset=offset, duration=duration)


class CacheEntryError(VoxadaptError):
    """A cache shard or entry is unreadable or fails its checksum."""


@dataclass
class _Entry:
    shard: Path
    codec: str
    offset: int  # fp16: first frame in `frames`; compact: first byte in `blobs`
    length: int  # fp16: frames; compact: bytes
    pad_value: float
    n_chunks: int
    crc32: int  # of the stored bytes: corruption is detected on every read
    n_frames: int = 0  # compact only
    value_offset: float = 0.0  # compact only: the quantizer's zero


def _read_shard_header(shard: Path) -> dict[str, str]:
    """A shard's metadata; CacheEntryError naming the shard if the header is corrupt."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(shard), framework="numpy") as handle:
            return handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CacheEntryError(f"cache shard {shard} is unreadable ({exc})") from None


class FeatureStore:
    """Read access to a feature cache folder of safetensors shards.

    Each shard holds one tensor (`blobs`: uint8 compact-codec bytes, or `frames`: fp16
    (n_mels, total frames)) and, in its header metadata, the spec fingerprint, the codec and
    per-utterance entries (key, offset, length, pad value, chunks, CRC-32[, frames, value
    offset]). Only headers are read when the store opens; shards are memory-mapped on access.
    Shards with a corrupt header are listed in `corrupt_shards` and their clips are missing.
    """

    def __init__(self, root: Path, spec: FeatureSpec, *, require_match: bool = True) -> None:
        self.root = Path(root)
        self.spec = spec
        self.entries: dict[str, _Entry] = {}
        self.stale_shards: list[Path] = []
        self.corrupt_shards: list[Path] = []
        self._handles: dict[Path, Any] = {}
        if not self.root.is_dir():
            raise VoxadaptError(f"feature cache not found: {self.root}")
        for shard in sorted(self.root.glob(SHARD_GLOB)):
            try:
                metadata = _read_shard_header(shard)
                if metadata.get("fingerprint") != spec.fingerprint:
                    self.stale_shards.append(shard)
                    continue
                entries = json.loads(metadata["entries"])
                for fields in entries:
                    self.entries[fields["key"]] = _Entry(
                        shard, metadata["codec"], **{k: v for k, v in fields.items() if k != "key"}
                    )
            except (CacheEntryError, KeyError, TypeError, ValueError) as exc:
                log.warning("ignoring cache shard %s: %s", shard.name, exc)
                self.corrupt_shards.append(shard)
        if require_match and self.stale_shards and not self.entries:
            raise CacheMismatchError(
                f"the feature cache {self.root} was built for another processor "
                f"(fingerprint != {spec.fingerprint}); rebuild it with `voxadapt cache` "
                "for this model"
            )

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def _stored_bytes(self, entry: _Entry) -> np.ndarray:
        import numpy as np
        from safetensors import safe_open

        handle = self._handles.get(entry.shard)
        if handle is None:
            handle = safe_open(str(entry.shard), framework="numpy")
            self._handles[entry.shard] = handle
        end = entry.offset + entry.length
        if entry.codec == "compact":
            return np.asarray(handle.get_slice("blobs")[entry.offset : end])
        return np.ascontiguousarray(handle.get_slice("frames")[:, entry.offset : end])

    def get(self, key: str) -> CompactFeatures:
        """The features of `key`; CacheEntryError (naming the shard) if they are corrupt."""
        import numpy as np
        from safetensors import SafetensorError

        entry = self.entries[key]
        try:
            stored = self._stored_bytes(entry)
            if zlib.crc32(stored.tobytes()) != entry.crc32:
                raise ValueError("checksum mismatch")
            if entry.codec == "compact":
                frames = decode_frames(
                    stored.tobytes(), entry.value_offset, self.spec.n_mels, entry.n_frames
                )
            else:
                frames = stored
            if not np.isfinite(frames).all() or not math.isfinite(entry.pad_value):
                raise ValueError("non-finite values")
        except (SafetensorError, OSError, ValueError, zlib.error) as exc:
            raise CacheEntryError(
                f"cache entry {key} in {entry.shard} is corrupt ({exc}); "
                f"re-run `voxadapt cache` to recompute it"
            ) from None
        return CompactFeatures(frames, entry.pad_value, entry.n_chunks)

    def verify(self) -> list[Path]:
        """Shards with a corrupt header or any corrupt entry (checksums of every entry)."""
        bad = set(self.corrupt_shards)
        for key, entry in self.entries.items():
            if entry.shard in bad:
                continue
            try:
                self.get(key)
            except CacheEntryError:
                bad.add(entry.shard)
        return sorted(bad)

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers reopen their own handles
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state


def write_shard(
    root: Path,
    spec: FeatureSpec,
    keyed: Sequence[tuple[str, CompactFeatures]],
    codec: str = "compact",
) -> Path:
    """Atomically write one shard; the name is unique, so concurrent writers never collide."""
    import numpy as np
    from safetensors.numpy import save

    entries: list[dict[str, Any]] = []
    offset = 0
    if codec == "compact":
        blobs = []
        for key, features in keyed:
            blob, value_offset = encode_frames(features.frames)
            entries.append(
                {
                    "key": key,
                    "offset": offset,
                    "length": len(blob),
                    "pad_value": features.pad_value,
                    "n_chunks": features.n_chunks,
                    "crc32": zlib.crc32(blob),
                    "n_frames": features.frames.shape[1],
                    "value_offset": value_offset,
                }
            )
            blobs.append(blob)
            offset += len(blob)
        tensors = {"blobs": np.frombuffer(b"".join(blobs), dtype=np.uint8).copy()}
    elif codec == "fp16":
        for key, features in keyed:
            length = features.frames.shape[1]
            stored = np.ascontiguousarray(features.frames, dtype=np.float16)
            entries.append(
                {
                    "key": key,
                    "offset": offset,
                    "length": length,
                    "pad_value": features.pad_value,
                    "n_chunks": features.n_chunks,
                    "crc32": zlib.crc32(stored.tobytes()),
                }
            )
            offset += length
        frames = (
            np.concatenate([f.frames for _, f in keyed], axis=1)
            if keyed
            else np.zeros((spec.n_mels, 0), dtype=np.float16)
        )
        tensors = {"frames": np.ascontiguousarray(frames, dtype=np.float16)}
    else:
        raise VoxadaptError(f"unknown feature codec {codec!r}; use one of {', '.join(CODECS)}")
    path = Path(root) / f"shard-{uuid.uuid4().hex[:16]}.safetensors"
    metadata = {
        "fingerprint": spec.fingerprint,
        "entries": json.dumps(entries),
        "format_version": str(FEATURE_FORMAT_VERSION),
        "codec": codec,
    }
    with atomic_write(path, "wb") as handle:
        handle.write(save(tensors, metadata=metadata))
    return path
