"""What `prepare` writes: the split manifests (and their NeMo/Lhotse twins), rejected.jsonl,
stats.json and the duration plot, built in a staging folder and published together; plus
the labels of the bundled sample's deliberate rejections, and the verdict on a run that
rejects too much."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxadapt.errors import NothingKeptError
from voxadapt.manifest import Utterance, atomic_write, write_jsonl
from voxadapt.outputs import written_by
from voxadapt.samples import DELIBERATE_NOTE, DELIBERATE_REJECTS, is_bundled_sample
from voxadapt.sources import SourceRejection
from voxadapt.splits import SPLITS, stratum_of
from voxadapt.units import percent

log = logging.getLogger(__name__)

METADATA_BREAKDOWNS = ("role", "gender", "age", "region", "language")
# What a run may write in --out: per split, and the report of the run.
SPLIT_OUTPUT_SUFFIXES = (
    ".jsonl",
    ".nemo.json",
    ".lhotse_recordings.jsonl.gz",
    ".lhotse_supervisions.jsonl.gz",
)
# A run that rejects more than this share of its input warns loudly (--max-rejected fails).
HIGH_REJECTED_SHARE = 0.10
REPORT_OUTPUTS = ("rejected.jsonl", "stats.json", "durations.png", "prepare_config.yaml")


@dataclass
class StatsInputs:
    """What stats.json says about the run besides its utterances."""

    source: Path
    source_format: str
    stratify: str | None  # the metadata field whose counts each split shows
    input_items: int
    probe: dict[str, Any]  # the audio probe's files, seconds and speed


def deliberate_rejections(source: Path, rejections: Sequence[SourceRejection]) -> dict[str, Any]:
    """The rejections SOURCE makes on purpose: those of the bundled sample (recognized by its
    content, see `voxadapt.samples`) at the lines and for the reasons it declares; for
    stats.json's `deliberate_rejections` (empty for any other source)."""
    if not any(r.origin.line in DELIBERATE_REJECTS for r in rejections):
        return {}
    if not is_bundled_sample(source):
        return {}
    lines = sorted(
        r.origin.line
        for r in rejections
        if r.origin.line is not None and DELIBERATE_REJECTS.get(r.origin.line) == r.reason
    )
    return {"count": len(lines), "lines": lines, "note": DELIBERATE_NOTE} if lines else {}


def rejection_record(rejection: SourceRejection) -> dict[str, Any]:
    """One rejected.jsonl line: why, where it came from, and what it held."""
    return {
        "reason": rejection.reason,
        "detail": rejection.detail,
        "file": rejection.origin.file,
        "line": rejection.origin.line,
        "id": rejection.id,
        "audio": str(rejection.audio) if rejection.audio else None,
        "raw_text": rejection.raw_text,
    }


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


def compute_stats(
    run: StatsInputs,
    splits: dict[str, list[Utterance]],
    rejections: list[SourceRejection],
) -> dict[str, Any]:
    """stats.json: counts, hours, splits, rejections by reason, distributions, speakers and
    metadata breakdowns."""
    kept = [u for split in SPLITS for u in splits[split]]
    reasons = Counter(r.reason for r in rejections)
    speakers = Counter(u.speaker for u in kept if u.speaker)
    stats: dict[str, Any] = {
        "source": str(Path(run.source).absolute()),
        "format": run.source_format,
        "input_items": run.input_items,
        "kept": len(kept),
        "rejected": len(rejections),
        "rejected_by_reason": dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        "deliberate_rejections": deliberate_rejections(run.source, rejections),
        "hours": sum(u.duration for u in kept) / 3600,
        "splits": {
            split: {
                "utterances": len(items),
                "hours": sum(u.duration for u in items) / 3600,
                "speakers": len({u.speaker for u in items if u.speaker}),
                **(
                    {f"by_{run.stratify}": _value_counts(items, run.stratify)}
                    if run.stratify
                    else {}
                ),
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
        "probe": run.probe,
        "metadata_fields": sorted({key for u in kept for key in u.metadata}),
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


def _value_counts(utterances: list[Utterance], field: str) -> dict[str, int]:
    values = Counter(stratum_of(u, field) or "(none)" for u in utterances)
    return dict(sorted(values.items()))


@dataclass
class OutputOptions:
    """The options that shape prepare's output files."""

    splits_written: list[str]  # the splits that get a manifest, even an empty one
    emit: list[str]  # other toolkits' formats (nemo, lhotse)
    min_duration_s: float  # the duration bounds, drawn on the histogram
    max_duration_s: float


def write_outputs(
    staging: Path,
    options: OutputOptions,
    splits: dict[str, list[Utterance]],
    rejections: list[SourceRejection],
    stats: dict[str, Any],
    probed_durations: list[float],
) -> list[str]:
    """Write every output file but the config into `staging`; return their names."""
    from voxadapt.plots import plot_durations  # matplotlib import is slow; only here

    names = [f"{split}.jsonl" for split in options.splits_written]
    for name in names:
        write_jsonl(staging / name, splits[name.removesuffix(".jsonl")])
    for name in list(names):
        split = name.removesuffix(".jsonl")
        if "nemo" in options.emit:
            write_jsonl(staging / f"{split}.nemo.json", map(nemo_record, splits[split]))
            names.append(f"{split}.nemo.json")
        if "lhotse" in options.emit and splits[split]:
            from voxadapt.sources.lhotse import write_lhotse

            pair = [f"{split}.lhotse_{kind}.jsonl.gz" for kind in ("recordings", "supervisions")]
            write_lhotse(splits[split], staging / pair[0], staging / pair[1])
            names += pair
    write_jsonl(staging / "rejected.jsonl", (rejection_record(r) for r in rejections))
    kept = [u for split in SPLITS for u in splits[split]]
    stats["duration_histogram"] = plot_durations(
        probed_durations,
        [u.duration for u in kept],
        staging / "durations.png",
        min_duration_s=options.min_duration_s,
        max_duration_s=options.max_duration_s,
    )
    with atomic_write(staging / "stats.json") as handle:
        json.dump(stats, handle, ensure_ascii=False, indent=2)
    return [*names, *REPORT_OUTPUTS]


def nemo_record(utterance: Utterance) -> dict[str, Any]:
    """A NeMo ASR manifest line (NeMo reads audio_filepath, duration, text, offset; lang,
    speaker and id ride along, and `prepare nemo` reads them back)."""
    record: dict[str, Any] = {
        "audio_filepath": utterance.audio,
        "duration": utterance.duration,
        "text": utterance.text,
        "lang": utterance.language,
        "id": utterance.id,
    }
    if utterance.offset is not None:
        record["offset"] = utterance.offset
    if utterance.speaker:
        record["speaker"] = utterance.speaker
    return record


def publish(staging: Path, out_dir: Path, names: list[str]) -> None:
    """Move the finished outputs into `out_dir` (renames only: no write can fail midway)
    and remove split files an earlier run made that this one did not."""
    for name in names:
        os.replace(staging / name, out_dir / name)
    for split in SPLITS:
        for path in (out_dir / f"{split}{suffix}" for suffix in SPLIT_OUTPUT_SUFFIXES):
            if path.name not in names and path.exists():
                if not written_by(out_dir, path.name, "prepare"):  # never what it cannot
                    log.warning("keeping %s: prepare did not write it as it is", path)
                    continue  # show it wrote
                log.info("removing stale %s from an earlier run", path)
                path.unlink()


def check_rejected_share(
    stats: dict[str, Any],
    *,
    max_rejected: float | None,
    duration_bounds_s: tuple[float, float],
    out_dir: Path,
) -> str | None:
    """Warn loudly when many input items were rejected (the bundled sample's deliberate
    rejections aside); the message when --max-rejected makes that a failure."""
    deliberate = stats["deliberate_rejections"].get("count", 0)
    if deliberate:  # the bundled sample's, there to show rejections: no alarm
        log.info("%d rejected on purpose (%s)", deliberate, stats["deliberate_rejections"]["note"])
    rejected = stats["rejected"] - deliberate
    if not stats["input_items"] or not rejected:
        return None
    share = rejected / stats["input_items"]
    reasons = ", ".join(
        f"{reason} {n}" for reason, n in list(stats["rejected_by_reason"].items())[:3]
    )
    message = (
        f"{rejected} of {stats['input_items']} input items ({percent(share)}) were "
        f"rejected ({reasons})"
    )
    if max_rejected is not None and share > max_rejected:
        return message
    if share > HIGH_REJECTED_SHARE:
        hint = ""
        if {"too_short", "too_long"} & set(stats["rejected_by_reason"]):
            low, high = duration_bounds_s
            hint = f"; the duration bounds are {low:g}-{high:g} s (--min-duration, --max-duration)"
        log.warning(
            "%s: see %s%s; --max-rejected FRACTION fails the run instead",
            ("MOST INPUT WAS REJECTED: " if share >= 0.5 else "") + message,
            Path(out_dir) / "rejected.jsonl",
            hint,
        )
    return None


def nothing_to_train(
    kept: list[Utterance], stats: dict[str, Any], input_items: int, failed: Path
) -> NothingKeptError:
    """The error of a run that leaves nothing to train on, naming why and where its report
    went."""
    where = f"see {failed / 'rejected.jsonl'}; earlier outputs in {failed.parent} are untouched"
    if kept:
        return NothingKeptError(
            f"the train split is empty: all {len(kept)} kept utterances went to valid/test; "
            f"lower --valid-size/--test-size ({where})"
        )
    summary = ", ".join(f"{reason}: {n}" for reason, n in stats["rejected_by_reason"].items())
    return NothingKeptError(
        f"all {input_items} input items were rejected ({summary or 'no input items'}); {where}"
    )
