"""The prepare stage: SOURCE -> checks -> filters -> splits -> manifests, rejections, stats."""

from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voxadapt.audio import AudioError, AudioInfo, probe_many
from voxadapt.config import save_config
from voxadapt.errors import NothingKeptError, SourceError
from voxadapt.manifest import Utterance, atomic_write, write_jsonl
from voxadapt.sources import FORMATS, PARSERS, SourceItem, SourceRejection
from voxadapt.text import TEXT_MODES, TextOptions, TranscriptError, normalize_transcript

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
SPLIT_BY = ("speaker", "utterance")
METADATA_BREAKDOWNS = ("role", "gender", "age", "region", "language")


@dataclass
class PrepareConfig:
    """Options of `voxadapt prepare` (the YAML keys of `--config`)."""

    source: Path  # SCP/JSONL file or AI-Hub/Kaldi folder
    source_format: str  # one of sources.FORMATS
    out_dir: Path  # where manifests, rejected.jsonl, stats.json and durations.png go
    text_mode: str = "spelling"  # dual transcription: "spelling" (철자) or "phonetic" (발음)
    drop_fillers: bool = False  # drop filler words (음/ 아/) instead of keeping the word
    strip_punctuation: bool = False  # remove . , ? ! from training text
    min_duration_s: float = 3.0  # shorter clips are rejected as too_short
    max_duration_s: float = 25.0  # longer clips are rejected as too_long
    valid_size: float | None = None  # < 1: fraction of utterances; >= 1: count
    test_size: float | None = None  # < 1: fraction of utterances; >= 1: count
    split_by: str = "speaker"  # "speaker": no speaker in two splits; or "utterance"
    seed: int = 0  # split shuffling seed
    jobs: int | None = None  # parallel audio probes; None = all cores
    language: str = "ko"  # language for items whose source does not say
    full_decode: bool = False  # decode every file (default: only where the header can't be trusted)
    duration_tolerance_s: float = 1.0  # label FileLength vs audio; larger gaps -> duration_mismatch

    def problems(self) -> list[str]:
        """Every invalid or conflicting option, for one error message."""
        found = []
        if self.source_format not in FORMATS:
            found.append(f"format must be one of {', '.join(FORMATS)}, not {self.source_format!r}")
        if self.text_mode not in TEXT_MODES:
            found.append(f"text_mode must be one of {', '.join(TEXT_MODES)}")
        if self.split_by not in SPLIT_BY:
            found.append(f"split_by must be one of {', '.join(SPLIT_BY)}")
        if self.min_duration_s < 0 or self.max_duration_s <= self.min_duration_s:
            found.append("need 0 <= min_duration_s < max_duration_s")
        for name in ("valid_size", "test_size"):
            size = getattr(self, name)
            if size is not None and (size < 0 or (size >= 1 and not float(size).is_integer())):
                found.append(f"{name} must be a fraction in [0, 1) or a whole count, not {size}")
        if self.jobs is not None and self.jobs < 1:
            found.append("jobs must be >= 1")
        if self.duration_tolerance_s < 0:
            found.append("duration_tolerance_s must be >= 0")
        return found

    @property
    def text_options(self) -> TextOptions:
        return TextOptions(self.text_mode, self.drop_fillers, self.strip_punctuation)


@dataclass
class PrepareResult:
    """What prepare produced: paths and counts (the full numbers are in stats.json)."""

    out_dir: Path
    manifests: dict[str, Path]
    rejected_path: Path
    stats_path: Path
    plot_path: Path | None
    stats: dict[str, Any] = field(repr=False)


def _rejection_record(rejection: SourceRejection) -> dict[str, Any]:
    return {
        "reason": rejection.reason,
        "detail": rejection.detail,
        "file": rejection.origin.file,
        "line": rejection.origin.line,
        "id": rejection.id,
        "audio": str(rejection.audio) if rejection.audio else None,
        "raw_text": rejection.raw_text,
    }


def _reject_item(item: SourceItem, reason: str, detail: str) -> SourceRejection:
    return SourceRejection(item.origin, reason, detail, item.raw_text, item.audio, item.id)


def _split_target(size: float | None, total: int) -> int:
    if not size:
        return 0
    return round(size * total) if size < 1 else int(size)


def split_utterances(
    utterances: list[Utterance],
    *,
    valid_size: float | None,
    test_size: float | None,
    split_by: str = "speaker",
    seed: int = 0,
) -> dict[str, list[Utterance]]:
    """Assign utterances to train/valid/test, keeping each speaker in one split.

    Groups (speakers, or single utterances) are shuffled with `seed`; test, then valid, take
    groups while that brings them closer to their target size. Utterances without a speaker
    form groups of one. Output order follows input order.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for index, utterance in enumerate(utterances):
        if split_by == "speaker" and utterance.speaker:
            groups[f"spk:{utterance.speaker}"].append(index)
        else:
            groups[f"utt:{index}"].append(index)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    total = len(utterances)
    assignment: dict[int, str] = {}
    remaining = keys
    for split, size in (("test", test_size), ("valid", valid_size)):
        target, taken, left = _split_target(size, total), 0, []
        for key in remaining:
            n = len(groups[key])
            if target and abs(taken + n - target) < abs(taken - target):
                taken += n
                for index in groups[key]:
                    assignment[index] = split
            else:
                left.append(key)
        remaining = left
        if size and taken == 0:
            log.warning("%s split is empty: no speaker group fits a target of %d", split, target)
    result: dict[str, list[Utterance]] = {split: [] for split in SPLITS}
    for index, utterance in enumerate(utterances):
        result[assignment.get(index, "train")].append(utterance)
    return result


def _distribution(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    array = np.asarray(values, dtype=np.float64)
    return {
        "min": float(array.min()),
        "p05": float(np.percentile(array, 5)),
        "median": float(np.median(array)),
        "mean": float(array.mean()),
        "p95": float(np.percentile(array, 95)),
        "max": float(array.max()),
    }


def _compute_stats(
    config: PrepareConfig,
    splits: dict[str, list[Utterance]],
    rejections: list[SourceRejection],
    input_items: int,
    probe: dict[str, Any],
) -> dict[str, Any]:
    kept = [u for split in SPLITS for u in splits[split]]
    reasons = Counter(r.reason for r in rejections)
    speakers = Counter(u.speaker for u in kept if u.speaker)
    stats: dict[str, Any] = {
        "source": str(Path(config.source).absolute()),
        "format": config.source_format,
        "input_items": input_items,
        "kept": len(kept),
        "rejected": len(rejections),
        "rejected_by_reason": dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        "hours": sum(u.duration for u in kept) / 3600,
        "splits": {
            split: {
                "utterances": len(items),
                "hours": sum(u.duration for u in items) / 3600,
                "speakers": len({u.speaker for u in items if u.speaker}),
            }
            for split, items in splits.items()
            if items or split == "train"
        },
        "duration_s": _distribution([u.duration for u in kept]),
        "text_chars": _distribution([len(u.text) for u in kept]),
        "sample_rates": dict(Counter(str(u.sample_rate) for u in kept)),
        "channels": dict(Counter(str(u.channels) for u in kept)),
        "speakers": {
            "count": len(speakers),
            "without_speaker": sum(1 for u in kept if not u.speaker),
            "utterances_per_speaker": _distribution(list(speakers.values())),
            "by_speaker": dict(sorted(speakers.items())),
        },
        "probe": probe,
    }
    for key in METADATA_BREAKDOWNS:
        values = Counter(
            str(u.language if key == "language" else u.metadata.get(key))
            for u in kept
            if (u.language if key == "language" else u.metadata.get(key)) is not None
        )
        if values:
            stats[f"by_{key}"] = dict(sorted(values.items()))
    return stats


def _id_from_path(audio: Path, root: Path, ambiguous_stems: set[str]) -> str:
    if audio.stem not in ambiguous_stems:
        return audio.stem
    try:
        relative = audio.absolute().relative_to(root.absolute())
    except ValueError:
        relative = Path(*audio.parts[-3:])
    return "_".join(relative.with_suffix("").parts)


def prepare(config: PrepareConfig) -> PrepareResult:
    """Run the prepare stage; see `PrepareConfig` for the options.

    Every input item ends up in exactly one of the split manifests or rejected.jsonl.
    Raises SourceError if SOURCE is unusable and NothingKeptError if nothing survives.
    """
    from voxadapt.report import plot_durations  # matplotlib import is slow; only here

    parser, wants_dir = PARSERS[config.source_format]
    source = Path(config.source)
    if not source.exists():
        raise SourceError(f"SOURCE not found: {source}")
    if wants_dir and not source.is_dir():
        raise SourceError(f"{config.source_format} SOURCE must be a folder: {source}")
    if not wants_dir and not source.is_file():
        raise SourceError(f"{config.source_format} SOURCE must be a file: {source}")
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    rejections: list[SourceRejection] = []
    items: list[SourceItem] = []
    for record in parser(source):
        (rejections if isinstance(record, SourceRejection) else items).append(record)
    input_items = len(items) + len(rejections)
    log.info(
        "read %d input items from %s (%d rejected while parsing)",
        input_items,
        source,
        len(rejections),
    )

    # Text first: it is cheap, and a bad transcript need not cost an audio probe.
    texts: dict[int, str] = {}
    unique: list[SourceItem] = []
    seen_audio: dict[Path, SourceItem] = {}
    for item in items:
        try:
            texts[id(item)] = normalize_transcript(item.raw_text, config.text_options)
        except TranscriptError as exc:
            rejections.append(_reject_item(item, exc.reason, str(exc)))
            continue
        first = seen_audio.get(item.audio)
        if first is not None:
            rejections.append(
                _reject_item(item, "duplicate", f"audio already used by {first.origin}")
            )
            continue
        seen_audio[item.audio] = item
        unique.append(item)

    started = time.perf_counter()
    probes = probe_many(
        [item.audio for item in unique], jobs=config.jobs, full_decode=config.full_decode
    )
    elapsed = time.perf_counter() - started
    probe_stats = {
        "files": len(unique),
        "seconds": round(elapsed, 3),
        "files_per_second": round(len(unique) / elapsed, 1) if elapsed > 0 else None,
        "jobs": config.jobs or "all",
        "decoded": sum(1 for p in probes if isinstance(p, AudioInfo) and p.decoded),
    }

    # Ids default to the file stem; stems that name several files (spk1/u0.wav, spk2/u0.wav)
    # use the path below SOURCE instead, so ids stay readable and stable.
    stem_counts = Counter(item.audio.stem for item in unique if item.id is None)
    ambiguous_stems = {stem for stem, n in stem_counts.items() if n > 1}
    source_root = source if source.is_dir() else source.parent
    kept: list[Utterance] = []
    probed_durations: list[float] = []
    used_ids: Counter[str] = Counter()
    for item, probe in zip(unique, probes, strict=False):
        if isinstance(probe, AudioError):
            rejections.append(_reject_item(item, probe.reason, str(probe)))
            continue
        duration = probe.duration
        probed_durations.append(duration)
        if duration < config.min_duration_s:
            rejections.append(
                _reject_item(item, "too_short", f"{duration:.2f} s < {config.min_duration_s} s")
            )
            continue
        if duration > config.max_duration_s:
            rejections.append(
                _reject_item(item, "too_long", f"{duration:.2f} s > {config.max_duration_s} s")
            )
            continue
        if (
            item.label_duration is not None
            and abs(item.label_duration - duration) > config.duration_tolerance_s
        ):
            rejections.append(
                _reject_item(
                    item,
                    "duration_mismatch",
                    f"label says {item.label_duration:.2f} s, audio is {duration:.2f} s",
                )
            )
            continue
        base_id = item.id or _id_from_path(item.audio, source_root, ambiguous_stems)
        used_ids[base_id] += 1
        utt_id = base_id if used_ids[base_id] == 1 else f"{base_id}-{used_ids[base_id]}"
        metadata = dict(item.metadata)
        if item.label_duration is not None:
            metadata["label_duration"] = item.label_duration
        kept.append(
            Utterance(
                id=utt_id,
                audio=str(item.audio),
                text=texts[id(item)],
                raw_text=item.raw_text,
                duration=round(duration, 4),
                sample_rate=probe.sample_rate,
                channels=probe.channels,
                speaker=item.speaker,
                language=item.language or config.language,
                metadata=metadata,
            )
        )
    renamed = sum(n - 1 for n in used_ids.values() if n > 1)
    if renamed:
        log.warning("%d utterances shared an id with another file; suffixed -2, -3, ...", renamed)

    splits = split_utterances(
        kept,
        valid_size=config.valid_size,
        test_size=config.test_size,
        split_by=config.split_by,
        seed=config.seed,
    )
    if len(kept) + len(rejections) != input_items:  # an internal bug, never user error
        raise RuntimeError(
            f"lost items: {input_items} in, {len(kept)} kept + {len(rejections)} rejected"
        )

    manifests: dict[str, Path] = {}
    for split in SPLITS:
        path = out_dir / f"{split}.jsonl"
        requested = split == "train" or getattr(config, f"{split}_size")
        if requested:
            write_jsonl(path, splits[split])
            manifests[split] = path
        elif path.exists():
            log.info("removing stale %s from an earlier run", path)
            path.unlink()
    rejected_path = out_dir / "rejected.jsonl"
    write_jsonl(rejected_path, (_rejection_record(r) for r in rejections))
    stats = _compute_stats(config, splits, rejections, input_items, probe_stats)
    plot_path: Path | None = out_dir / "durations.png"
    stats["duration_histogram"] = plot_durations(
        probed_durations,
        [u.duration for u in kept],
        plot_path,
        min_duration_s=config.min_duration_s,
        max_duration_s=config.max_duration_s,
    )
    stats_path = out_dir / "stats.json"
    with atomic_write(stats_path) as handle:
        json.dump(stats, handle, ensure_ascii=False, indent=2)
    save_config(config, out_dir / "prepare_config.yaml")

    if not kept:
        summary = ", ".join(f"{reason}: {n}" for reason, n in stats["rejected_by_reason"].items())
        raise NothingKeptError(
            f"all {input_items} input items were rejected ({summary or 'no input items'}); "
            f"see {rejected_path}"
        )
    return PrepareResult(out_dir, manifests, rejected_path, stats_path, plot_path, stats)
