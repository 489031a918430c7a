"""Train/valid/test splits: speaker-disjoint by size, or the splits a dataset brings, and
speakers read from audio paths (so that splits can keep speakers apart)."""

from __future__ import annotations

import logging
import random
from collections import Counter, defaultdict
from pathlib import Path

import regex

from voxadapt.errors import ConfigError
from voxadapt.manifest import Utterance

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
SPLIT_BY = ("speaker", "utterance")
# A user pattern gets this long per path (the `regex` module enforces it; `re` cannot).
REGEX_TIMEOUT_S = 1.0
# A dataset's own split names (their first word) and the split each becomes.
SOURCE_SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "validation": "valid",
    "valid": "valid",
    "val": "valid",
    "dev": "valid",
    "test": "test",
    "eval": "test",
}


def _split_target(size: float | None, total: int) -> int:
    if not size:
        return 0
    return round(size * total) if size < 1 else int(size)


def _apportion(target: int, shares: dict[str, int]) -> dict[str, int]:
    """Split a whole target over strata in proportion to their sizes, summing to the target
    (largest remainders get the leftover units)."""
    total = sum(shares.values())
    exact = {key: target * share / total for key, share in shares.items()} if total else {}
    whole = {key: int(value) for key, value in exact.items()}
    leftover = target - sum(whole.values())
    for key in sorted(exact, key=lambda k: (whole[k] - exact[k], k))[: max(leftover, 0)]:
        whole[key] += 1
    return whole


def stratum_of(utterance: Utterance, field: str) -> str | None:
    """The value of a metadata field (or `language`) that --stratify balances."""
    value = utterance.language if field == "language" else utterance.metadata.get(field)
    return None if value is None else str(value)


def split_utterances(
    utterances: list[Utterance],
    *,
    valid_size: float | None,
    test_size: float | None,
    split_by: str = "speaker",
    seed: int = 0,
    stratify: str | None = None,
) -> dict[str, list[Utterance]]:
    """Assign utterances to train/valid/test, keeping each speaker in one split.

    Groups (speakers, or single utterances) are shuffled with `seed`; test, then valid, take
    groups while that brings them closer to their target size, so a split lands near its
    target in whole speakers. Utterances without a speaker form groups of one. With
    `stratify`, each value of that field (a speaker counts under its most frequent value) is
    split on its own with its share of the targets, so every split holds every value in
    proportion. Output order follows input order.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for index, utterance in enumerate(utterances):
        if split_by == "speaker" and utterance.speaker:
            groups[f"spk:{utterance.speaker}"].append(index)
        else:
            groups[f"utt:{index}"].append(index)
    strata: dict[str, list[str]] = defaultdict(list)
    for key in sorted(groups):
        values = [stratum_of(utterances[i], stratify) for i in groups[key]] if stratify else []
        named = [value for value in values if value is not None]
        strata[Counter(named).most_common(1)[0][0] if named else ""].append(key)
    if stratify and list(strata) == [""]:
        raise ConfigError(
            f"--stratify {stratify}: no kept utterance has that field (fields: "
            f"{', '.join(sorted({k for u in utterances for k in u.metadata})) or 'none'})"
        )
    total = len(utterances)
    shares = {stratum: sum(len(groups[key]) for key in keys) for stratum, keys in strata.items()}
    targets = {
        split: _apportion(_split_target(size, total), shares)
        for split, size in (("test", test_size), ("valid", valid_size))
    }
    assignment: dict[int, str] = {}
    taken_by_split: Counter[str] = Counter()
    for stratum, keys in sorted(strata.items()):
        random.Random(f"{seed}:{stratum}" if stratify else seed).shuffle(keys)
        remaining = keys
        for split in ("test", "valid"):
            target = targets[split][stratum]
            taken, left = 0, []
            for key in remaining:
                n = len(groups[key])
                if target and abs(taken + n - target) < abs(taken - target):
                    taken += n
                    for index in groups[key]:
                        assignment[index] = split
                else:
                    left.append(key)
            remaining = left
            taken_by_split[split] += taken
    for split, size in (("test", test_size), ("valid", valid_size)):
        target = _split_target(size, total)
        if size and taken_by_split[split] == 0:
            why = (
                f" (--stratify {stratify} splits each value on its own and none has enough "
                "speakers; stratify by a field with fewer values, or leave it out)"
                if stratify
                else ""
            )
            log.warning(
                "%s split is empty: no speaker group fits a target of %d%s", split, target, why
            )
        elif size and split_by == "speaker":
            log.info(
                "%s split: %d utterances (target %d; whole speakers)",
                split,
                taken_by_split[split],
                target,
            )
    result: dict[str, list[Utterance]] = {split: [] for split in SPLITS}
    for index, utterance in enumerate(utterances):
        result[assignment.get(index, "train")].append(utterance)
    if stratify:
        _warn_missing_values(
            result, stratify, strata, sizes={"test": test_size, "valid": valid_size}
        )
    return result


def _warn_missing_values(
    splits: dict[str, list[Utterance]],
    field: str,
    strata: dict[str, list[str]],
    sizes: dict[str, float | None],
) -> None:
    """Name the --stratify values a requested, non-empty split ended up without (a value
    whose few speakers cannot be shared out in whole speakers)."""
    for split, size in sizes.items():
        if not size or not splits[split]:
            continue
        present = {stratum_of(u, field) or "" for u in splits[split]}
        absent = sorted(value or "(none)" for value in strata if value not in present)
        if absent:
            log.warning(
                "--stratify %s: the %s split has no %s (too few speakers with %s)",
                field,
                split,
                ", ".join(absent),
                "that value" if len(absent) == 1 else "those values",
            )


def source_split(name: str) -> str | None:
    """Our split for a dataset's split name ('train', 'validation.clean', 'test-other'...)."""
    word = regex.match(r"[a-z]+", name.lower())
    return SOURCE_SPLIT_NAMES.get(word.group()) if word else None


def source_splits(
    kept: list[Utterance], *, resplit: bool, sizes_given: bool
) -> dict[str, list[Utterance]] | None:
    """The splits the source brought (Hugging Face DatasetDict splits, train-*/test-*
    shards), unless --resplit: a dataset's test rows never land in train.jsonl."""
    declared = {str(u.metadata["split"]) for u in kept if u.metadata.get("split") is not None}
    if not declared or resplit:
        return None
    unknown = sorted(name for name in declared if source_split(name) is None)
    if unknown or sizes_given:
        why = (
            f"splits {', '.join(unknown)} are not train/validation/test"
            if unknown
            else "--valid-size/--test-size would split it anew"
        )
        raise ConfigError(
            f"SOURCE brings its own splits ({', '.join(sorted(declared))}) and {why}: pass "
            "--resplit to ignore them and split by --valid-size/--test-size"
        )
    result: dict[str, list[Utterance]] = {split: [] for split in SPLITS}
    for utterance in kept:
        result[source_split(str(utterance.metadata.get("split", "train")))].append(utterance)
    log.info(
        "using the source's own splits: %s",
        ", ".join(f"{split} {len(result[split])}" for split in SPLITS),
    )
    return result


def speaker_rule_problems(rule: str | None) -> list[str]:
    if rule is None or rule in ("parent", "grandparent"):
        return []
    if not rule.startswith("regex:"):
        return [f"speaker_from must be parent, grandparent or regex:PATTERN, not {rule!r}"]
    try:
        pattern = regex.compile(rule.removeprefix("regex:"))
    except regex.error as exc:
        return [f"speaker_from: invalid regular expression ({exc})"]
    if "speaker" not in pattern.groupindex:
        return ["speaker_from: the regular expression needs a named group (?P<speaker>...)"]
    return []


def speaker_from_path(audio: Path, rule: str) -> str | None:
    """The speaker an audio path names under `rule` (parent, grandparent, regex:...)."""
    if rule == "parent":
        return audio.parent.name or None
    if rule == "grandparent":
        return audio.parent.parent.name or None
    try:
        match = regex.search(rule.removeprefix("regex:"), str(audio), timeout=REGEX_TIMEOUT_S)
    except TimeoutError:
        raise ConfigError(
            f"--speaker-from {rule}: matching {audio} took over {REGEX_TIMEOUT_S} s "
            "(catastrophic backtracking?); simplify the pattern"
        ) from None
    return match.group("speaker") if match and match.group("speaker") else None
