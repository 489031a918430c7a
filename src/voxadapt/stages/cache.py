"""The cache stage: featurize every utterance of some manifests into a sharded feature store.

Safe to kill at any moment: shards appear atomically, and a re-run computes only what is
missing, changed (audio file or feature extractor), or corrupt (every entry's CRC-32 is
checked on a re-run unless `verify` is off).
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxadapt.audio import AudioError
from voxadapt.augment import speed_factor_problems
from voxadapt.config import Config, option
from voxadapt.features import (
    CODECS,
    FEATURE_FORMAT_VERSION,
    SHARD_GLOB,
    FeatureSpec,
    FeatureStore,
    features_for_file,
    utterance_key,
    write_shard,
)
from voxadapt.manifest import Utterance, atomic_write, read_manifest
from voxadapt.outputs import claim_outputs
from voxadapt.progress import progress

log = logging.getLogger(__name__)


@dataclass
class CacheConfig(Config):
    """Options of `voxadapt cache`."""

    manifests: list[Path] = option(
        help="JSONL manifests from `voxadapt prepare`", positional=True, metavar="MANIFEST"
    )
    model: str = option(
        help="hub id or folder whose processor (feature extractor) to use", model_reference=True
    )
    out_dir: Path = option(help="cache folder (created if missing)", flag="--out", metavar="DIR")
    jobs: int | None = option(None, help="worker processes (default: all cores)")
    shard_size: int = option(256, help="utterances per shard file")
    codec: str = option(
        "compact",
        help="compact: quantized (error <= 9.75e-4) + zlib, ~0.41x the size of fp16; "
        "fp16: error <= 4.9e-4, fastest to write",
        choices=CODECS,
    )
    verify: bool = option(
        True, help="check every cached entry's checksum and recompute corrupt ones"
    )
    speed: list[float] = option(
        help="speed-perturbation factors, one cache entry per clip and factor (Kaldi-style: "
        "0.9,1.0,1.1 triples the data; `train --speed-perturb` draws one per clip per epoch)",
        default_factory=lambda: [1.0],
        metavar="F[,F...]",
    )

    def problems(self) -> list[str]:
        found = super().problems()
        if not self.manifests:
            found.append("give at least one manifest")
        if self.shard_size < 1:
            found.append("shard_size must be >= 1")
        if self.jobs is not None and self.jobs < 1:
            found.append("jobs must be >= 1")
        found += speed_factor_problems(self.speed, "--speed")
        return found


@dataclass
class CacheResult:
    """What `build_cache` did."""

    out_dir: Path
    utterances: int  # in the manifest(s)
    computed: int  # newly featurized in this run
    reused: int  # already in the cache
    failed: int  # utterances with unreadable audio, listed in cache_errors.jsonl
    bytes_on_disk: int  # all current shards
    seconds: float
    corrupt_shards: int = 0  # found and removed (their clips were recomputed)
    speeds: tuple[float, ...] = (1.0,)  # speed-perturbation factors cached per clip

    @property
    def bytes_per_utterance(self) -> float:
        """Bytes per cache entry (an utterance at one speed factor)."""
        return self.bytes_on_disk / max(1, self.computed + self.reused)


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # one process per core; no oversubscription
    # The CLI turns SIGTERM into KeyboardInterrupt; in a worker that would leave it stuck
    # joining its queue to a dead parent. Workers just stop: the main process reports.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform == "linux":  # die with the parent: a SIGKILLed run leaves no orphans
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL))


def _featurize_shard(
    root: str, spec: FeatureSpec, jobs: list[tuple[str, str, str, float, Any]], codec: str
) -> tuple[int, list[dict[str, Any]]]:
    """Worker: featurize (key, id, audio, speed, segment) items, write one shard; return
    (count, errors)."""
    keyed, errors = [], []
    for key, utt_id, audio, speed, segment in jobs:
        offset, duration = segment or (None, None)
        try:
            features = features_for_file(audio, spec, speed, offset=offset, duration=duration)
            keyed.append((key, features))
        except AudioError as exc:
            errors.append(
                {
                    "id": utt_id,
                    "audio": audio,
                    "speed": speed,
                    "reason": exc.reason,
                    "detail": str(exc),
                }
            )
    if keyed:
        write_shard(Path(root), spec, keyed, codec)
    return len(keyed), errors


def _open_store(out_dir: Path, spec: FeatureSpec, verify: bool) -> tuple[FeatureStore, int]:
    """The existing store, with corrupt shards removed (their clips will be recomputed)."""
    store = FeatureStore(out_dir, spec, require_match=False)
    if store.stale_shards:
        log.warning(
            "%d shards in %s were built for another feature extractor and are ignored",
            len(store.stale_shards),
            out_dir,
        )
    corrupt = store.verify() if verify else list(store.corrupt_shards)
    for shard in corrupt:
        log.warning("cache shard %s is corrupt: removing it and recomputing its clips", shard.name)
        shard.unlink(missing_ok=True)
    if corrupt:
        store = FeatureStore(out_dir, spec, require_match=False)
    return store, len(corrupt)


def _plan(
    utterances: list[Utterance], store: FeatureStore, spec: FeatureSpec, speeds: list[float]
) -> tuple[list[tuple[str, str, str, float, Any]], list[dict[str, Any]], int]:
    """(work to do as (key, id, audio, speed), per-utterance errors, entries already cached)."""
    todo: list[tuple[str, str, str, float, Any]] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    for utterance, speed in ((u, s) for u in utterances for s in speeds):
        try:
            key = utterance_key(utterance, spec, speed)
        except OSError as exc:
            if speed != speeds[0]:
                continue  # the missing file is reported once
            errors.append(
                {
                    "id": utterance.id,
                    "audio": utterance.audio,
                    "reason": "missing_audio",
                    "detail": str(exc),
                }
            )
            continue
        if key not in store and key not in seen:
            todo.append((key, utterance.id, utterance.audio, speed, utterance.segment))
        seen.add(key)
    # Long clips first so the slowest shards start early; shards then hold similar lengths.
    durations = {u.id: u.duration for u in utterances}
    todo.sort(key=lambda item: -durations.get(item[1], 0.0) / item[3])
    return todo, errors, len(seen) - len(todo)


def _run_shards(
    out_dir: Path, spec: FeatureSpec, batches: list, codec: str, jobs: int, total: int
) -> tuple[int, list[dict[str, str]]]:
    """Featurize and write every batch as a shard, in this process or `jobs` workers."""
    computed, errors = 0, []
    with progress(total, "cache features", "utt") as bar:
        if jobs == 1:  # in this process, with its own torch thread settings
            results = (_featurize_shard(str(out_dir), spec, b, codec) for b in batches)
            for count, batch_errors in results:
                computed += count
                errors.extend(batch_errors)
                bar.update(count + len(batch_errors))
            return computed, errors
        pool = ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker)
        try:
            futures = [pool.submit(_featurize_shard, str(out_dir), spec, b, codec) for b in batches]
            for future in futures:
                count, batch_errors = future.result()
                computed += count
                errors.extend(batch_errors)
                bar.update(count + len(batch_errors))
        except BaseException:  # Ctrl-C/SIGTERM: drop queued shards; running ones finish whole
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
    return computed, errors


def _write_cache_info(
    out_dir: Path, spec: FeatureSpec, config: CacheConfig, errors: list[dict[str, str]]
) -> None:
    with atomic_write(out_dir / "cache_errors.jsonl") as handle:
        for error in errors:
            handle.write(json.dumps(error, ensure_ascii=False) + "\n")
    with atomic_write(out_dir / "feature_spec.json") as handle:
        json.dump(
            {
                "fingerprint": spec.fingerprint,
                "model": str(config.model),
                "sampling_rate": spec.sampling_rate,
                "n_fft": spec.n_fft,
                "hop_length": spec.hop_length,
                "n_mels": spec.n_mels,
                "chunk_samples": spec.chunk_samples,
                "layout": spec.layout,  # chunked (Voxtral) or masked (Qwen3-ASR)
                "format_version": FEATURE_FORMAT_VERSION,
                "codec": config.codec,
            },
            handle,
            indent=2,
        )


def build_cache(config: CacheConfig) -> CacheResult:
    """Featurize every utterance of `config.manifests` not yet (or not intact) in the cache."""
    claim = claim_outputs("cache", config.out_dir, inputs=config.manifests, owns_folder=True)
    with claim:
        return _build_cache(config, claim.folder)


def _build_cache(config: CacheConfig, out_dir: Path) -> CacheResult:
    started = time.perf_counter()
    utterances: list[Utterance] = []
    for manifest in config.manifests:
        utterances.extend(read_manifest(manifest))
    spec = FeatureSpec.from_model(config.model)
    out_dir.mkdir(parents=True, exist_ok=True)
    for leftover in out_dir.glob(".shard-*.tmp"):  # from a killed run
        leftover.unlink(missing_ok=True)
    store, n_corrupt = _open_store(out_dir, spec, config.verify)
    todo, errors, reused = _plan(utterances, store, spec, config.speed)
    if reused:
        log.info(
            "%d of %d cache entries already there; computing %d",
            reused,
            reused + len(todo),
            len(todo),
        )
    jobs = max(1, config.jobs or os.cpu_count() or 1)
    shard_size = config.shard_size
    if jobs > 1:  # enough shards to keep every worker busy, even for small manifests
        shard_size = max(1, min(shard_size, math.ceil(len(todo) / (jobs * 4))))
    batches = [todo[i : i + shard_size] for i in range(0, len(todo), shard_size)]
    jobs = min(jobs, len(batches) or 1)
    computed, shard_errors = _run_shards(out_dir, spec, batches, config.codec, jobs, len(todo))
    errors.extend(shard_errors)
    _write_cache_info(out_dir, spec, config, errors)
    stale = set(store.stale_shards)
    current = [p for p in out_dir.glob(SHARD_GLOB) if p not in stale]
    return CacheResult(
        out_dir=out_dir,
        utterances=len(utterances),
        computed=computed,
        reused=reused,
        failed=len({error["id"] for error in errors}),  # utterances, whatever the speeds
        bytes_on_disk=sum(p.stat().st_size for p in current),
        seconds=time.perf_counter() - started,
        corrupt_shards=n_corrupt,
        speeds=tuple(config.speed),
    )
