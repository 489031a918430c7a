"""The prepare stage: SOURCE -> checks -> filters -> splits -> manifests, rejections, stats."""

from __future__ import annotations

import functools
import logging
import math
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from voxadapt.audio import AudioError, AudioInfo, probe_many
from voxadapt.config import Config, option, save_config
from voxadapt.errors import NothingKeptError, SourceError
from voxadapt.manifest import Utterance, language_problem
from voxadapt.outputs import OutputClaim, claim_outputs
from voxadapt.prepare_outputs import (
    HIGH_REJECTED_SHARE,
    REPORT_OUTPUTS,
    SPLIT_OUTPUT_SUFFIXES,
    OutputOptions,
    StatsInputs,
    check_rejected_share,
    compute_stats,
    nothing_to_train,
    publish,
    write_outputs,
)
from voxadapt.sources import FORMATS, PARSERS, SourceItem, SourceRejection
from voxadapt.splits import (
    SPLIT_BY,
    SPLITS,
    source_splits,
    speaker_from_path,
    speaker_rule_problems,
    split_utterances,
)
from voxadapt.staging import make_staging_dir
from voxadapt.text import (
    TEXT_MODES,
    TextOptions,
    TranscriptError,
    normalize_transcript,
    transcript_variants,
)

log = logging.getLogger(__name__)

# Longer raw transcripts are rejected before normalization (25 s of speech is ~300
# characters; markup may double that): a 100k-character label is a broken file, not speech.
MAX_RAW_TEXT_CHARS = 5000
# A segment may end this far past its recording (rounded times); it is clamped to the end.
MAX_SEGMENT_OVERSHOOT_S = 0.5
EMIT_FORMATS = ("nemo", "lhotse")


@dataclass
class PrepareConfig(Config):
    """Options of `voxadapt prepare` (the YAML keys of `--config`)."""

    source: Path = option(
        help="input file or folder", positional=True, metavar="SOURCE", position=1
    )
    source_format: str = option(
        help="input format", choices=FORMATS, positional=True, metavar="FORMAT", position=0
    )
    out_dir: Path = option(help="output folder (created if missing)", flag="--out", metavar="DIR")
    text_mode: str = option(
        "spelling",
        help="dual transcription (철자)/(발음): keep the spelling or the pronunciation",
        choices=TEXT_MODES,
        group="transcripts",
    )
    drop_fillers: bool = option(
        False,
        help="drop filler words such as 음/ 아/ (default: keep the word)",
        group="transcripts",
    )
    strip_punctuation: bool = option(
        False, help="remove . , ? ! from training text", group="transcripts"
    )
    language: str = option(
        "ko", help="language for items whose source has none", group="transcripts"
    )
    max_chars_per_s: float = option(
        25.0,
        help="reject transcripts with more characters per second of audio (plus 20) than "
        "speech can have (implausible_text_rate)",
        group="transcripts",
    )
    min_duration_s: float = option(
        3.0,
        help="reject clips shorter than S seconds",
        flag="--min-duration",
        metavar="S",
        group="audio",
    )
    max_duration_s: float = option(
        25.0,
        help="reject clips longer than S seconds",
        flag="--max-duration",
        metavar="S",
        group="audio",
    )
    duration_tolerance_s: float = option(
        1.0,
        help="reject when a label's duration differs from the audio's by more than S seconds",
        flag="--duration-tolerance",
        metavar="S",
        group="audio",
    )
    full_decode: bool = option(
        False,
        help="decode every file to validate it (default: only float and compressed "
        "files, whose headers cannot prove the samples are finite)",
        group="audio",
    )
    jobs: int | None = option(
        None, help="parallel audio probes (default: all cores)", metavar="N", group="audio"
    )
    valid_size: float | None = option(
        None,
        help="validation split: fraction (0.05) or count (500); with --split-by speaker the "
        "split takes whole speakers, so it lands near the target, not on it",
        metavar="X",
        group="splits",
    )
    test_size: float | None = option(
        None,
        help="test split: fraction (0.05) or count (500), in whole speakers like --valid-size",
        metavar="X",
        group="splits",
    )
    split_by: str = option(
        "speaker",
        help="speaker: no speaker in two splits; utterance: random",
        choices=SPLIT_BY,
        group="splits",
    )
    seed: int = option(0, help="split seed", group="splits")
    stratify: str | None = option(
        None,
        help="keep the shares of this metadata field's values (role, gender, region...) in "
        "every split (speakers stay whole); the split table shows its counts per split",
        metavar="FIELD",
        group="splits",
    )
    resplit: bool = option(
        False,
        help="ignore the splits the source brings (a Hugging Face dataset's train/validation/"
        "test) and split anew by --valid-size/--test-size",
        group="splits",
    )
    emit: list[str] = option(
        help="also write each split in other toolkits' formats: nemo (SPLIT.nemo.json: "
        "audio_filepath, duration, text, offset, lang, speaker, id), lhotse "
        "(SPLIT.lhotse_recordings.jsonl.gz + SPLIT.lhotse_supervisions.jsonl.gz)",
        default_factory=list,
        metavar="FORMAT[,FORMAT...]",
        group="outputs",
    )
    max_rejected: float | None = option(
        None,
        help="fail (exit 1, outputs untouched, the report in OUT/failed-run/) when more than "
        f"this fraction of the input items is rejected (default: warn above "
        f"{HIGH_REJECTED_SHARE:.0%})",
        metavar="FRACTION",
        group="outputs",
    )
    audio_column: str | None = option(
        None,
        help="hf: the audio column (default: audio, speech, file, path, ...)",
        group="hugging face datasets",
    )
    text_column: str | None = option(
        None,
        help="hf: the transcript column (default: text, sentence, transcript, ...)",
        group="hugging face datasets",
    )
    speaker_column: str | None = option(
        None,
        help="hf: the speaker column (default: speaker_id, speaker, client_id, ...)",
        group="hugging face datasets",
    )
    speaker_from: str | None = option(
        None,
        help="speaker of items whose source names none (scp, jsonl, kaldi without utt2spk): "
        "parent (the audio's folder), grandparent, or regex:PATTERN with a named group "
        "(?P<speaker>...) matched against the audio path",
        group="splits",
    )

    def problems(self) -> list[str]:
        """Every invalid or conflicting option, for one error message."""
        found = super().problems()
        if not (math.isfinite(self.min_duration_s) and math.isfinite(self.max_duration_s)):
            found.append("min_duration_s and max_duration_s must be finite numbers")
        elif not 0 <= self.min_duration_s < self.max_duration_s:
            found.append("need 0 <= min_duration_s < max_duration_s")
        fractions = 0.0
        for name in ("valid_size", "test_size"):
            size = getattr(self, name)
            if size is not None and (
                not math.isfinite(size) or size < 0 or (size >= 1 and not float(size).is_integer())
            ):
                found.append(f"{name} must be a fraction in [0, 1) or a whole count, not {size}")
            elif size is not None and size < 1:
                fractions += size
        if fractions >= 1:
            found.append("valid_size + test_size take every utterance: nothing left to train on")
        if self.jobs is not None and self.jobs < 1:
            found.append("jobs must be >= 1")
        if self.max_rejected is not None and not 0 <= self.max_rejected <= 1:
            found.append("max_rejected must be a fraction in [0, 1]")
        if self.stratify is not None and not self.stratify.strip():
            found.append("stratify needs a metadata field name")
        if not (math.isfinite(self.duration_tolerance_s) and self.duration_tolerance_s >= 0):
            found.append("duration_tolerance_s must be >= 0")
        if not self.max_chars_per_s > 0:
            found.append("max_chars_per_s must be > 0")
        problem = language_problem(self.language)
        if problem:
            found.append(problem)
        found.extend(speaker_rule_problems(self.speaker_from))
        unknown = sorted(set(self.emit) - set(EMIT_FORMATS))
        if unknown:
            found.append(f"emit: {', '.join(unknown)} not one of {', '.join(EMIT_FORMATS)}")
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
    emitted: list[Path] = field(default_factory=list)  # --emit files (NeMo, Lhotse)


def _reject_item(item: SourceItem, reason: str, detail: str) -> SourceRejection:
    return SourceRejection(item.origin, reason, detail, item.raw_text, item.audio, item.id)


def _id_from_path(audio: Path, root: Path, ambiguous_stems: set[str]) -> str:
    if audio.stem not in ambiguous_stems:
        return audio.stem
    try:
        relative = audio.absolute().relative_to(root.absolute())
    except ValueError:
        relative = Path(*audio.parts[-3:])
    return "_".join(relative.with_suffix("").parts)


def _assign_speakers(items: list[SourceItem], rule: str | None, *, splitting: bool) -> None:
    """Speakers from paths for items whose source gave none; a warning when that still
    leaves every utterance its own speaker and a speaker-disjoint split was asked for
    (splits then cannot keep speakers apart)."""
    if rule is not None:
        for item in items:
            if item.speaker is None:
                item.speaker = speaker_from_path(item.audio, rule)
    speakers = {item.speaker for item in items if item.speaker}
    if not splitting:
        return
    if len(items) > 1 and (not speakers or len(speakers) == len(items)):
        log.warning(
            "every utterance is its own speaker: the same speaker can land in train and test "
            "(use --speaker-from parent|grandparent|regex:... if the paths name speakers)"
        )


def _read_source(config: PrepareConfig) -> tuple[list[SourceItem], list[SourceRejection]]:
    """Every input item of SOURCE, parsed into items or rejections."""
    parser, wants_dir = PARSERS[config.source_format]
    source = Path(config.source)
    if not source.exists():
        raise SourceError(f"SOURCE not found: {source}")
    if wants_dir and not source.is_dir():
        raise SourceError(f"{config.source_format} SOURCE must be a folder: {source}")
    if wants_dir is False and not source.is_file():
        raise SourceError(f"{config.source_format} SOURCE must be a file: {source}")
    if config.source_format == "hf":  # embedded audio is written once, content-addressed
        parser = functools.partial(
            parser,
            audio_dir=Path(config.out_dir).absolute() / "audio",
            audio_column=config.audio_column,
            text_column=config.text_column,
            speaker_column=config.speaker_column,
        )
    rejections: list[SourceRejection] = []
    items: list[SourceItem] = []
    for record in parser(source):
        (rejections if isinstance(record, SourceRejection) else items).append(record)
    splitting = bool(config.valid_size or config.test_size) and config.split_by == "speaker"
    _assign_speakers(items, config.speaker_from, splitting=splitting)
    log.info(
        "read %d input items from %s (%d rejected while parsing)",
        len(items) + len(rejections),
        source,
        len(rejections),
    )
    return items, rejections


def _check_texts(
    items: list[SourceItem], config: PrepareConfig, rejections: list[SourceRejection]
) -> tuple[list[SourceItem], dict[int, str]]:
    """Normalize transcripts and drop repeated audio files (by real path: `a.wav`,
    `x/../a.wav` and a symlink to it are one file). Text first: it is cheap, and a bad
    transcript need not cost an audio probe."""
    texts: dict[int, str] = {}
    unique: list[SourceItem] = []
    seen_audio: dict[tuple[str, float | None, float | None], SourceItem] = {}
    for item in items:
        if len(item.raw_text) > MAX_RAW_TEXT_CHARS:
            detail = f"{len(item.raw_text)} characters > {MAX_RAW_TEXT_CHARS}"
            rejections.append(_reject_item(item, "text_too_long", detail))
            continue
        try:
            texts[id(item)] = normalize_transcript(item.raw_text, config.text_options)
        except TranscriptError as exc:
            rejections.append(_reject_item(item, exc.reason, str(exc)))
            continue
        real = os.path.realpath(item.audio)
        if os.path.exists(real) and not os.path.isfile(real):  # a FIFO would hang the probe
            rejections.append(_reject_item(item, "not_a_file", f"{real} is not a regular file"))
            continue
        where = (real, item.offset, item.segment_duration)  # segments of one file are distinct
        first = seen_audio.get(where)
        if first is not None:
            rejections.append(
                _reject_item(item, "duplicate", f"audio already used by {first.origin}")
            )
            continue
        seen_audio[where] = item
        unique.append(item)
    return unique, texts


def _check_audio(
    item: SourceItem, probe: AudioInfo | AudioError, text: str, config: PrepareConfig
) -> tuple[str, str] | None:
    """(reason, detail) if the item's audio fails a check, else None."""
    if isinstance(probe, AudioError):
        return probe.reason, str(probe)
    if item.offset is not None and _segment_overshoot(item, probe) > MAX_SEGMENT_OVERSHOOT_S:
        return "segment_out_of_range", (
            f"segment {item.offset:.2f}+{item.segment_duration or 0:.2f} s ends after the "
            f"recording's {probe.duration:.2f} s"
        )
    duration = _duration_of(item, probe)
    if item.offset is not None and duration <= 0:
        return "segment_out_of_range", f"segment starts after the recording ends ({item.offset} s)"
    if duration < config.min_duration_s:
        return "too_short", f"{duration:.2f} s < {config.min_duration_s} s"
    if duration > config.max_duration_s:
        return "too_long", f"{duration:.2f} s > {config.max_duration_s} s"
    if (
        item.label_duration is not None
        and abs(item.label_duration - duration) > config.duration_tolerance_s
    ):
        return "duration_mismatch", (
            f"label says {item.label_duration:.2f} s, audio is {duration:.2f} s"
        )
    # Fast Korean speech is ~8 syllables/s; the slack of 20 covers short clips.
    if len(text) > config.max_chars_per_s * duration + 20:
        return "implausible_text_rate", (
            f"{len(text)} characters for {duration:.2f} s of audio "
            f"(> {config.max_chars_per_s:g}/s + 20)"
        )
    return None


def _segment_overshoot(item: SourceItem, probe: AudioInfo) -> float:
    """Seconds a segment claims past the end of its recording (0 if it fits)."""
    if item.offset is None or item.segment_duration is None:
        return 0.0
    return max(0.0, item.offset + item.segment_duration - probe.duration)


def _duration_of(item: SourceItem, probe: AudioInfo) -> float:
    """The utterance's duration: its segment's (to the end of the recording when the source
    said so, and clamped there if it claims a little more, as Kaldi's extract-segments
    does), or the whole file's."""
    if item.offset is None:
        return probe.duration
    end = probe.duration if item.segment_duration is None else item.offset + item.segment_duration
    return min(end, probe.duration) - item.offset


def _unique_ids(base_ids: list[str]) -> list[str]:
    """Ids unique by construction: a repeated id gets -2, -3... skipping any suffixed id
    that another item already has (`dupid` twice beside an existing `dupid-2`)."""
    taken = set(base_ids)
    assigned: set[str] = set()
    result = []
    for base in base_ids:
        ident, n = base, 1
        while ident in assigned or (n > 1 and ident in taken):
            n += 1
            ident = f"{base}-{n}"
        assigned.add(ident)
        result.append(ident)
    return result


def _build_utterances(
    unique: list[SourceItem],
    texts: dict[int, str],
    config: PrepareConfig,
    rejections: list[SourceRejection],
) -> tuple[list[Utterance], list[float], dict[str, Any]]:
    """Probe the audio, filter, and build the kept records; also the probed durations
    (for the histogram) and the probe's statistics."""
    started = time.perf_counter()
    files = list(dict.fromkeys(item.audio for item in unique))  # a recording probed once
    probed = dict(zip(files, probe_many(files, jobs=config.jobs, full_decode=config.full_decode)))
    probes = [probed[item.audio] for item in unique]
    elapsed = time.perf_counter() - started
    probe_stats = {
        "files": len(files),
        "seconds": round(elapsed, 3),
        "files_per_second": round(len(files) / elapsed, 1) if elapsed > 0 else None,
        "jobs": config.jobs or "all",
        "decoded": sum(1 for p in probed.values() if isinstance(p, AudioInfo) and p.decoded),
    }
    passed: list[tuple[SourceItem, AudioInfo]] = []
    probed_durations = [
        _duration_of(item, p) for item, p in zip(unique, probes) if isinstance(p, AudioInfo)
    ]
    for item, probe in zip(unique, probes, strict=True):
        problem = _check_audio(item, probe, texts[id(item)], config)
        if problem:
            rejections.append(_reject_item(item, *problem))
        else:
            passed.append((item, probe))  # type: ignore[arg-type]
    # Ids default to the file stem; stems that name several files (spk1/u0.wav, spk2/u0.wav)
    # use the path below SOURCE instead, so ids stay readable and stable.
    source = Path(config.source)
    root = source if source.is_dir() else source.parent
    stems = Counter(item.audio.stem for item, _ in passed if item.id is None)
    ambiguous = {stem for stem, n in stems.items() if n > 1}
    base_ids = [item.id or _id_from_path(item.audio, root, ambiguous) for item, _ in passed]
    ids = _unique_ids(base_ids)
    renamed = sum(a != b for a, b in zip(ids, base_ids))
    if renamed:
        log.warning("%d utterances shared an id with another file; suffixed -2, -3, ...", renamed)
    kept = [
        Utterance(
            id=utt_id,
            audio=str(item.audio),
            text=texts[id(item)],
            raw_text=item.raw_text,
            duration=round(_duration_of(item, probe), 4),
            sample_rate=probe.sample_rate,
            channels=probe.channels,
            speaker=item.speaker,
            language=item.language or config.language,
            label_duration=item.label_duration,
            text_variants=transcript_variants(item.raw_text, config.text_options),
            offset=item.offset,
            metadata=dict(item.metadata),
        )
        for utt_id, (item, probe) in zip(ids, passed)
    ]
    return kept, probed_durations, probe_stats


def _write_outputs(
    staging: Path,
    config: PrepareConfig,
    splits: dict[str, list[Utterance]],
    rejections: list[SourceRejection],
    stats: dict[str, Any],
    probed_durations: list[float],
) -> list[str]:
    """Every output file and the resolved config, in `staging`; returns their names."""
    options = OutputOptions(
        splits_written=[
            split
            for split in SPLITS
            if split == "train" or getattr(config, f"{split}_size") or splits[split]
        ],
        emit=config.emit,
        min_duration_s=config.min_duration_s,
        max_duration_s=config.max_duration_s,
    )
    names = write_outputs(staging, options, splits, rejections, stats, probed_durations)
    # SOURCE absolute: the saved config runs again from any folder (--config)
    resolved = replace(config, source=Path(config.source).absolute())
    save_config(resolved, staging / "prepare_config.yaml")
    return names


def prepare(config: PrepareConfig) -> PrepareResult:
    """Run the prepare stage; see `PrepareConfig` for the options.

    Every input item ends up in exactly one of the split manifests or rejected.jsonl. The
    outputs appear together or not at all: they are built in a temporary folder inside
    --out and moved in at the end, so a failed run leaves an earlier run's outputs intact.
    Raises SourceError if SOURCE is unusable and NothingKeptError if nothing survives (the
    rejections then go to OUT/failed-run/).
    """
    with _claim(config) as claim:
        return _prepare(config, claim.folder)


def _claim(config: PrepareConfig) -> OutputClaim:
    """--out checked against SOURCE: a source folder is read whole, so --out may not lie
    inside it; a source file may not be replaced or lie inside --out."""
    source = Path(config.source)
    names = [f"{split}{suffix}" for split in SPLITS for suffix in SPLIT_OUTPUT_SUFFIXES]
    names += [*REPORT_OUTPUTS, "failed-run"]
    if config.source_format == "hf":
        names.append("audio")
    return claim_outputs(
        "prepare",
        config.out_dir,
        names=names,
        inputs=[source],
        trees=[source] if source.is_dir() else [],
    )


def _prepare(config: PrepareConfig, out_dir: Path) -> PrepareResult:
    items, rejections = _read_source(config)
    input_items = len(items) + len(rejections)
    unique, texts = _check_texts(items, config, rejections)
    kept, probed_durations, probe_stats = _build_utterances(unique, texts, config, rejections)
    if len(kept) + len(rejections) != input_items:  # an internal bug, never user error
        raise RuntimeError(
            f"lost items: {input_items} in, {len(kept)} kept + {len(rejections)} rejected"
        )
    sizes_given = bool(config.valid_size or config.test_size)
    splits = source_splits(kept, resplit=config.resplit, sizes_given=sizes_given)
    splits = splits or split_utterances(
        kept,
        valid_size=config.valid_size,
        test_size=config.test_size,
        split_by=config.split_by,
        seed=config.seed,
        stratify=config.stratify,
    )
    run = StatsInputs(
        config.source, config.source_format, config.stratify, input_items, probe_stats
    )
    stats = compute_stats(run, splits, rejections)
    failing = not kept or not splits["train"]  # reported by nothing_to_train instead
    too_many_rejected = None
    if not failing:
        too_many_rejected = check_rejected_share(
            stats,
            max_rejected=config.max_rejected,
            duration_bounds_s=(config.min_duration_s, config.max_duration_s),
            out_dir=Path(config.out_dir),
        )
    staging = make_staging_dir(out_dir, "prepare")  # a dead run's is swept by the claim
    try:
        names = _write_outputs(staging, config, splits, rejections, stats, probed_durations)
        failed = out_dir / "failed-run"
        shutil.rmtree(failed, ignore_errors=True)  # an earlier failure's report is stale now
        if not kept or not splits["train"] or too_many_rejected:
            for name in names:  # keep only the report of what went wrong
                if name not in ("rejected.jsonl", "stats.json"):
                    (staging / name).unlink()
            staging.rename(failed)
            if too_many_rejected and kept and splits["train"]:
                raise NothingKeptError(
                    f"{too_many_rejected} (--max-rejected {config.max_rejected:g}); see "
                    f"{failed / 'rejected.jsonl'}; earlier outputs in {out_dir} are untouched"
                )
            raise nothing_to_train(kept, stats, input_items, failed)
        publish(staging, out_dir, names)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    manifests = {n[:-6]: out_dir / n for n in names if n.endswith(".jsonl") and n[:-6] in SPLITS}
    emitted = [
        out_dir / name
        for name in names
        if name not in REPORT_OUTPUTS and out_dir / name not in manifests.values()
    ]
    return PrepareResult(
        out_dir,
        manifests,
        out_dir / "rejected.jsonl",
        out_dir / "stats.json",
        out_dir / "durations.png",
        stats,
        emitted,
    )
