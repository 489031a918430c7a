"""The scoring path shared by `evaluate` (decode, then score) and `score` (score any system's
hypotheses): references from a manifest, hypotheses from a file, scored rows, and the
metrics.json + report.html they produce."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from voxadapt.errors import ConfigError, VoxadaptError
from voxadapt.manifest import Utterance, atomic_write, read_manifest
from voxadapt.scoring.metrics import compute_metrics
from voxadapt.scoring.rates import score_row

log = logging.getLogger(__name__)

# Manifest fields not carried into a scored row (the reference is carried as `reference`;
# text_variants stays so that rescoring can rebuild the multi-reference choice).
_TEXT_FIELDS = ("text", "raw_text")


def read_references(manifest: Path, limit: int | None = None) -> list[Utterance]:
    """The manifest's records (the first `limit`), refusing repeated ids: every row must be
    scored, and a repeated id could not be told apart."""
    utterances = read_manifest(manifest)
    if not utterances:
        raise VoxadaptError(f"the manifest {manifest} is empty")
    if limit:
        utterances = utterances[:limit]
    duplicates = [i for i, n in Counter(u.id for u in utterances).items() if n > 1]
    if duplicates:
        raise VoxadaptError(
            f"{manifest}: {len(duplicates)} ids occur more than once (e.g. "
            f"{duplicates[0]!r}); every row must have its own id to be scored"
        )
    return utterances


def metadata_fields(utterances: list[Utterance]) -> list[str]:
    """The fields results are broken down by: what the source provided, plus language."""
    return sorted({"language", *(k for u in utterances for k in u.metadata)})


def scored_row(utterance: Utterance, hypothesis: str, **extra: Any) -> dict[str, Any]:
    """One predictions.jsonl line: the record's metadata, reference, hypothesis, normalized
    forms and edit counts (single and multi-reference), plus `extra` (decoding flags)."""
    record = utterance.to_dict()
    for name in _TEXT_FIELDS:
        record.pop(name, None)
    return {
        **record,
        "reference": utterance.text,
        "hypothesis": hypothesis,
        **score_row(utterance.text, hypothesis, variants=utterance.text_variants),
        **extra,
    }


def read_hypotheses(path: Path) -> dict[str, str | None]:
    """id -> hypothesis from a predictions.jsonl (`hypothesis`), any JSONL with `id` and
    `text` or `hypothesis`, or a Kaldi `text` file (`id transcript` per line). A row whose
    text is null (a failed decode) maps to None. Repeated ids are refused."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"hypotheses file not found: {path}")
    try:
        lines = path.read_bytes().decode("utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    first = next((line for line in lines if line.strip()), "")
    pairs = (
        _jsonl_pairs(path, lines) if first.lstrip().startswith("{") else _kaldi_pairs(path, lines)
    )
    hypotheses: dict[str, str | None] = {}
    for where, ident, text in pairs:
        if ident in hypotheses:
            raise ConfigError(f"{path}:{where}: id {ident!r} occurs twice")
        hypotheses[ident] = text
    if not hypotheses:
        raise ConfigError(f"{path} holds no hypotheses")
    return hypotheses


def _jsonl_pairs(path: Path, lines: list[str]) -> list[tuple[int, str, str | None]]:
    pairs = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            raise ConfigError(f"{path}:{number}: not valid JSON") from None
        if not isinstance(row, dict) or not isinstance(row.get("id"), (str, int)):
            raise ConfigError(f"{path}:{number}: expected an object with an id")
        key = "hypothesis" if "hypothesis" in row else "text"
        text = row.get(key)
        if text is not None and not isinstance(text, str):
            raise ConfigError(f"{path}:{number}: {key} must be a string")
        if row.get("missing_hypothesis") is True:  # a score run's own output: still missing
            text = None
        pairs.append((number, str(row["id"]), text))
    return pairs


def _kaldi_pairs(path: Path, lines: list[str]) -> list[tuple[int, str, str | None]]:
    pairs = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if line.lstrip().startswith(("{", "[")):
            raise ConfigError(
                f"{path}:{number}: a JSON line in a Kaldi text file: one format per file"
            )
        ident, *text = line.split(None, 1)  # any whitespace, tabs included, as Kaldi reads it
        pairs.append((number, ident, text[0].strip() if text else ""))
    return pairs


def write_scored(
    out_dir: Path,
    rows: list[dict[str, Any]],
    utterances: list[Utterance],
    *,
    terms: Any = None,
    compare_rows: list[dict[str, Any]] | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    report: bool = True,
    extra: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], Path, Path | None]:
    """Compute the metrics of scored rows and write metrics.json (+ report.html)."""
    try:
        metrics = compute_metrics(
            rows,
            fields=metadata_fields(utterances),
            terms=terms,
            compare_rows=compare_rows,
            bootstrap=bootstrap,
            seed=seed,
        )
    except ValueError as exc:  # --compare shares nothing scoreable with these rows
        raise ConfigError(f"--compare: {exc}") from None
    if compare_rows is not None:
        wanted = {u.id for u in utterances}
        metrics["compare"]["missing_in_other"] = len(wanted - {r.get("id") for r in compare_rows})
    metrics.update(extra or {})
    metrics_path = Path(out_dir) / "metrics.json"
    with atomic_write(metrics_path) as handle:
        json.dump(metrics, handle, indent=2, ensure_ascii=False)
    report_path = None
    if report:
        from voxadapt.report import write_report

        report_path = write_report(Path(out_dir) / "report.html", metrics, rows)
    return metrics, metrics_path, report_path


def read_compare(
    path: Path | None, wanted: set[str], references: dict[str, str] | None = None
) -> list[dict[str, Any]] | None:
    """--compare: another run's predictions, checked to be predictions of these utterances
    (same ids and, given `references` (id -> text), the same reference texts)."""
    if path is None:
        return None
    try:
        rows = read_predictions(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--compare {path}: {exc}") from None
    rows = [r for r in rows if "hypothesis" in r and "reference" in r]
    if not rows:
        raise ConfigError(
            f"--compare {path} holds no predictions (rows with reference and hypothesis): "
            "give another run's predictions.jsonl, not a manifest"
        )
    shared = wanted & {r.get("id") for r in rows}
    if not shared:
        raise ConfigError(f"--compare {path} shares no utterance id with the manifest")
    if references is not None:
        differ = [
            r["id"] for r in rows if r["id"] in shared and r["reference"] != references[r["id"]]
        ]
        if differ:
            raise ConfigError(
                f"--compare {path}: {len(differ)} shared utterances have other references "
                f"(e.g. {differ[0]!r}): predictions of another manifest cannot be compared"
            )
    if len(shared) < len(wanted):
        log.warning(
            "--compare %s has predictions for %d of %d utterances: the comparison covers "
            "only those",
            path,
            len(shared),
            len(wanted),
        )
    return rows


def read_predictions(path: Path, *, repair: bool = False) -> list[dict[str, Any]]:
    """Rows of a predictions.jsonl, first occurrence of each id.

    With `repair`, a torn last line (the process was killed mid-write) is cut off the file
    so appending can continue cleanly. Raises ValueError for a file that is not UTF-8 JSONL.
    """
    import json

    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if repair and end < len(data):
        log.warning("%s: dropping a torn last line from an interrupted run", path)
        with path.open("r+b") as handle:
            handle.truncate(end)
    try:
        lines = data[:end].decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a UTF-8 JSONL file") from None
    rows, seen = [], set()
    for line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(row, dict) or row.get("id") in seen:
            continue
        seen.add(row.get("id"))
        rows.append(row)
    return rows
