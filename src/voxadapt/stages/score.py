"""The score stage: score any system's hypotheses against a manifest, without a model.

Hypotheses come from `evaluate`/`transcribe`, a vendor API, Whisper, last month's model: a
predictions.jsonl, any JSONL with `id` and `text`/`hypothesis`, or a Kaldi `text` file. The
rows, metrics.json and report.html are those `evaluate` writes (one scoring path).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxadapt.config import Config, option, save_config
from voxadapt.errors import ConfigError
from voxadapt.manifest import Utterance, atomic_write
from voxadapt.outputs import claim_outputs
from voxadapt.scoring.rows import (
    disagreeing_references,
    read_hypotheses,
    read_references,
    scored_row,
    write_scored,
)
from voxadapt.scoring.terms import load_terms
from voxadapt.text import SCORING_POLICIES, repetition_loop

log = logging.getLogger(__name__)

OUTPUTS = ("predictions.jsonl", "metrics.json", "report.html", "score_config.yaml")


@dataclass
class ScoreConfig(Config):
    """Options of `voxadapt score`."""

    manifest: Path = option(
        help="JSONL with references (from `voxadapt prepare`)",
        positional=True,
        metavar="MANIFEST",
    )
    hypotheses: Path = option(
        help="predictions.jsonl, JSONL with id + text/hypothesis, or a Kaldi text file",
        positional=True,
        metavar="HYPOTHESES",
    )
    out_dir: Path = option(help="output folder", flag="--out", metavar="DIR")
    terms: Path | None = option(
        None, help="medical terms (variants as CT|씨티) for term recall", metavar="FILE"
    )
    compare: Path | None = option(
        None,
        help="another system's hypotheses (same formats): paired bootstrap of the CER difference",
        metavar="HYPOTHESES",
    )
    bootstrap: int = option(1000, help="bootstrap resamples for 95% CIs (0 = off)")
    seed: int = option(0, help="bootstrap seed")
    report: bool = option(True, help="write report.html")
    normalize: str = option(
        "default",
        help="scoring normalization: default, or numbers (digits read as Korean, so 3개 = "
        "세 개 and 38.5도 = 삼십팔 점 오 도; recorded in metrics.json)",
        choices=tuple(SCORING_POLICIES),
        metavar="POLICY",
    )
    use_manifest_references: bool = option(
        False,
        help="score predictions whose own `reference` texts differ from the manifest's "
        "(predictions of another version of the test set) against the manifest, with a "
        "warning (default: refuse them)",
    )

    def problems(self) -> list[str]:
        found = super().problems()
        for name in ("manifest", "hypotheses", "terms", "compare"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                found.append(f"{name} file {path} does not exist")
        if self.bootstrap < 0:
            found.append("bootstrap must be >= 0")
        return found


@dataclass
class ScoreResult:
    metrics: dict[str, Any]
    predictions: Path
    metrics_path: Path
    report: Path | None
    missing: list[str]  # manifest ids without a hypothesis (scored as empty output)
    unknown: list[str]  # hypothesis ids not in the manifest (not scored)


def score_hypotheses(
    utterances: list[Utterance],
    hypotheses: dict[str, str | None],
    truncated: Collection[str] = (),
    policy: str = "default",
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Scored rows for every manifest utterance (a missing or failed hypothesis counts as
    empty output), plus the missing ids and the ids the manifest does not know. Each row is
    flagged as `evaluate` flags it: a repetition loop found in the text (the same detector),
    and `truncated` where the hypotheses file said so."""
    wanted = {u.id for u in utterances}
    missing = [u.id for u in utterances if hypotheses.get(u.id) is None]
    unknown = sorted(set(hypotheses) - wanted)
    rows = []
    for u in utterances:
        text = hypotheses.get(u.id) or ""
        flags = {
            "missing_hypothesis": hypotheses.get(u.id) is None,
            "repetition_loop": repetition_loop(text),
            "truncated": u.id in truncated,
        }
        rows.append(scored_row(u, text, policy=policy, **flags))
    return rows, missing, unknown


def score(config: ScoreConfig) -> ScoreResult:
    """Score `config.hypotheses` (and `config.compare`) against `config.manifest`."""
    claim = claim_outputs(
        "score",
        config.out_dir,
        names=OUTPUTS,
        inputs=[config.manifest, config.hypotheses, config.compare, config.terms],
    )
    # every input is read and checked before --out is created
    utterances = read_references(config.manifest)
    truncated: set[str] = set()
    references: dict[str, str] = {}
    hypotheses = read_hypotheses(
        config.hypotheses, utterances, truncated=truncated, references=references
    )
    _check_references(config, config.hypotheses, references, utterances)
    other = None
    if config.compare is not None:
        references = {}
        other = read_hypotheses(config.compare, utterances, "--compare", references=references)
        _check_references(config, config.compare, references, utterances)
    terms = load_terms(config.terms, config.normalize) if config.terms else None
    if not set(hypotheses) & {u.id for u in utterances}:
        raise ConfigError(
            f"no hypothesis in {config.hypotheses} has an id of {config.manifest} (e.g. "
            f"{next(iter(hypotheses))!r} vs {utterances[0].id!r}): wrong file or manifest?"
        )
    with claim:
        return _score(config, claim.folder, utterances, (hypotheses, truncated), other, terms)


def _check_references(
    config: ScoreConfig, path: Path, references: dict[str, str], utterances: list[Utterance]
) -> None:
    """Refuse hypotheses whose rows carry other reference texts than the manifest under the
    same ids (predictions of another test set); with --use-manifest-references, warn and
    score them against the manifest."""
    differ = disagreeing_references(references, utterances)
    if not differ:
        return
    shared = sum(1 for u in utterances if u.id in references)
    what = f"{len(differ)} of {shared} ids in {path} carry another reference than {config.manifest}"
    example = f"e.g. {differ[0]!r}"
    if not config.use_manifest_references:
        raise ConfigError(
            f"{what} ({example}): predictions of another test set? Score them against "
            "this manifest anyway with --use-manifest-references"
        )
    log.warning(
        "%s (%s): scored against the manifest's references (--use-manifest-references)",
        what,
        example,
    )


def _score(
    config: ScoreConfig,
    out_dir: Path,
    utterances: list[Utterance],
    read: tuple[dict[str, str | None], set[str]],  # hypotheses, ids the file marks truncated
    other: dict[str, str | None] | None,
    terms: Any,
) -> ScoreResult:
    hypotheses, truncated = read
    rows, missing, unknown = score_hypotheses(utterances, hypotheses, truncated, config.normalize)
    if missing:
        log.warning(
            "%d of %d utterances have no hypothesis (e.g. %s): scored as empty output",
            len(missing),
            len(utterances),
            missing[0],
        )
    if unknown:
        log.warning(
            "%d hypotheses have ids the manifest does not know (e.g. %s): not scored",
            len(unknown),
            unknown[0],
        )
    compare_rows = None
    if other is not None:  # the other system's own hypotheses only: never empty stand-ins
        shared = [u for u in utterances if other.get(u.id) is not None]
        compare_rows = score_hypotheses(shared, other, policy=config.normalize)[0]
    predictions = out_dir / "predictions.jsonl"
    with atomic_write(predictions) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    extra = {
        "manifest": str(config.manifest),
        "hypotheses": str(config.hypotheses),
        "compare_hypotheses": str(config.compare) if config.compare else None,
        "missing_hypotheses": len(missing),
        "unknown_hypotheses": len(unknown),
        "unknown_hypothesis_ids": unknown[:20],
        "use_manifest_references": config.use_manifest_references,
    }
    metrics, metrics_path, report_path = write_scored(
        out_dir,
        rows,
        utterances,
        terms=terms,
        compare_rows=compare_rows,
        bootstrap=config.bootstrap,
        seed=config.seed,
        report=config.report,
        extra=extra,
        policy=config.normalize,
    )
    save_config(config, out_dir / "score_config.yaml")
    return ScoreResult(metrics, predictions, metrics_path, report_path, missing, unknown)
