"""The scoring path shared by `evaluate` (decode, then score) and `score` (score any system's
hypotheses): references from a manifest, hypotheses from a file, scored rows, and the
metrics.json + report.html they produce."""

from __future__ import annotations

import json
import logging
import unicodedata
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from voxadapt.errors import ConfigError, ManifestError, VoxadaptError
from voxadapt.manifest import Utterance, atomic_write, iter_jsonl, iter_lines, read_manifest
from voxadapt.scoring.metrics import compute_metrics
from voxadapt.scoring.rates import score_row

log = logging.getLogger(__name__)

# Manifest fields not carried into a scored row (the reference is carried as `reference`;
# text_variants stays so that rescoring can rebuild the multi-reference choice).
_TEXT_FIELDS = ("text", "raw_text")
# Fields a scored row takes from the manifest and the scoring; the rest are decode flags.
_SCORED_FIELDS = frozenset(
    {"reference", "hypothesis_normalized", "reference_normalized", "scores", "scoring"}
    | {"multi_reference", "text_variants"}
)
# How `transcribe --format txt` marks an input that failed (`id<TAB>[error: reason]`).
FAILED_MARK = "[error: "


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


def scored_row(
    utterance: Utterance, hypothesis: str, *, policy: str = "default", **extra: Any
) -> dict[str, Any]:
    """One predictions.jsonl line: the record's metadata, reference, hypothesis, normalized
    forms and edit counts (single and multi-reference, under scoring `policy`), plus `extra`
    (decoding flags)."""
    record = utterance.to_dict()
    for name in _TEXT_FIELDS:
        record.pop(name, None)
    return {
        **record,
        "reference": utterance.text,
        "hypothesis": hypothesis,
        **score_row(utterance.text, hypothesis, variants=utterance.text_variants, policy=policy),
        **extra,
    }


def read_hypotheses(
    path: Path,
    utterances: list[Utterance] | None = None,
    what: str = "hypotheses",
    truncated: set[str] | None = None,
    references: dict[str, str] | None = None,
) -> dict[str, str | None]:
    """id -> hypothesis from a predictions.jsonl (`hypothesis`), any JSONL with `id` and
    `text` or `hypothesis`, or a Kaldi `text` file (`id transcript` per line). A row whose
    text is null (a failed decode) maps to None. Repeated ids are refused. `truncated`, when
    given, receives the ids whose JSONL row says the decoder's token cap cut them;
    `references` the `reference` text a JSONL row carries (a predictions.jsonl's own)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"hypotheses file not found: {path}")
    try:
        lines = [(number, data.decode("utf-8")) for number, data in iter_lines(path)]
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    first = lines[0][1] if lines else ""
    if first.lstrip().startswith("{"):
        pairs, rows = _jsonl_pairs(path, lines)
        if utterances is not None:
            check_same_audio(path, rows, {u.id: u for u in utterances}, what)
        if truncated is not None:
            truncated.update(row["id"] for row in rows if row.get("truncated") is True)
        if references is not None:
            references.update(
                (row["id"], row["reference"])
                for row in rows
                if isinstance(row.get("reference"), str)
            )
    else:
        pairs = _text_pairs(path, lines)
    hypotheses: dict[str, str | None] = {}
    for where, ident, text in pairs:
        if ident in hypotheses:
            raise ConfigError(f"{path}:{where}: id {ident!r} occurs twice")
        hypotheses[ident] = text
    if not hypotheses:
        raise ConfigError(f"{path} holds no hypotheses")
    return hypotheses


def _jsonl_pairs(
    path: Path, lines: list[tuple[int, str]]
) -> tuple[list[tuple[int, str, str | None]], list[dict[str, Any]]]:
    pairs, rows = [], []
    for number, line in lines:
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            raise ConfigError(f"{path}:{number}: not valid JSON") from None
        if not isinstance(row, dict) or "id" not in row:
            raise ConfigError(f"{path}:{number}: expected an object with an id")
        if not isinstance(row["id"], str):  # ids are exact strings: true is not "True"
            raise ConfigError(
                f"{path}:{number}: id must be a string, not {json.dumps(row['id'])[:40]}"
            )
        key = "hypothesis" if "hypothesis" in row else "text"
        text = row.get(key)
        if text is not None and not isinstance(text, str):
            raise ConfigError(f"{path}:{number}: {key} must be a string")
        if row.get("missing_hypothesis") is True:  # a score run's own output: still missing
            text = None
        pairs.append((number, row["id"], text))
        rows.append(row)
    return pairs, rows


def _text_pairs(path: Path, lines: list[tuple[int, str]]) -> list[tuple[int, str, str | None]]:
    """`id<TAB>text` lines (`transcribe --format txt`: the id may hold spaces) or Kaldi
    `id text` lines (the id ends at the first whitespace)."""
    pairs = []
    for number, line in lines:
        if line.lstrip().startswith(("{", "[")):
            raise ConfigError(
                f"{path}:{number}: a JSON line in a text hypotheses file: one format per file"
            )
        if "\t" in line:
            ident, text = line.split("\t", 1)
        else:
            ident, *rest = line.split(None, 1)  # any whitespace, as Kaldi reads it
            text = rest[0] if rest else ""
        pairs.append((number, ident, None if text.startswith(FAILED_MARK) else text.strip()))
    return pairs


def disagreeing_references(references: dict[str, str], utterances: list[Utterance]) -> list[str]:
    """Ids whose stored reference differs from the manifest's text, compared as stored
    but for surrounding whitespace and Unicode composition (a file saved on a Mac holds
    decomposed Hangul: the same text, NFD): rows that come from this manifest carry its text
    verbatim, so any other difference means predictions of another test set."""

    def same(text: str) -> str:
        return unicodedata.normalize("NFC", text.strip())

    return [
        u.id for u in utterances if u.id in references and same(references[u.id]) != same(u.text)
    ]


def rescore_against(
    rows: list[dict[str, Any]], utterances: list[Utterance], policy: str = "default"
) -> list[dict[str, Any]]:
    """`rows` (decoded earlier) of the utterances, in manifest order, scored against these
    utterances' references under scoring `policy`: the metrics always reflect the manifest
    as it is now."""
    by_id = {row["id"]: row for row in rows}
    scored = []
    for utterance in utterances:
        row = by_id.get(utterance.id)
        if row is not None:
            flags = {k: v for k, v in row.items() if k not in _SCORED_FIELDS}
            hypothesis = row.get("hypothesis") or ""
            scored.append({**flags, **scored_row(utterance, hypothesis, policy=policy)})
    return scored


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
    policy: str = "default",
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
            policy=policy,
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
        from voxadapt.report_html import write_report

        report_path = write_report(Path(out_dir) / "report.html", metrics, rows)
    return metrics, metrics_path, report_path


def read_compare(path: Path | None, utterances: list[Utterance]) -> list[dict[str, Any]] | None:
    """--compare: another run's predictions, checked to be predictions of these utterances
    (same ids, the same audio and the same reference texts); only shared ids are compared."""
    if path is None:
        return None
    try:
        rows = read_predictions(path)
    except (OSError, ValueError, ManifestError) as exc:
        raise ConfigError(f"--compare: {exc}") from None
    rows = [r for r in rows if "hypothesis" in r and "reference" in r]
    if not rows:
        raise ConfigError(
            f"--compare {path} holds no predictions (rows with reference and hypothesis): "
            "give another run's predictions.jsonl, not a manifest"
        )
    by_id = {u.id: u for u in utterances}
    rows = [r for r in rows if r["id"] in by_id]
    if not rows:
        raise ConfigError(f"--compare {path} shares no utterance id with the manifest")
    check_same_audio(path, rows, by_id, "--compare")
    differ = [r["id"] for r in rows if r["reference"] != by_id[r["id"]].text]
    if differ:
        raise ConfigError(
            f"--compare {path}: {len(differ)} shared utterances have other references "
            f"(e.g. {differ[0]!r}): predictions of another manifest cannot be compared"
        )
    if len(rows) < len(utterances):
        log.warning(
            "--compare %s has predictions for %d of %d utterances: the comparison covers "
            "only those (missing_in_other in metrics.json)",
            path,
            len(rows),
            len(utterances),
        )
    return rows


def check_same_audio(
    path: Path, rows: Iterable[dict[str, Any]], by_id: dict[str, Utterance], what: str
) -> None:
    """Refuse rows that name other audio than the manifest for the same id (predictions of
    another manifest that happens to use the same ids)."""
    for row in rows:
        utterance = by_id.get(row.get("id"))
        if utterance is None or not isinstance(row.get("audio"), str):
            continue
        if row["audio"] != utterance.audio or row.get("offset") != utterance.offset:
            where = f"{row['audio']}" + (f" at {row['offset']} s" if row.get("offset") else "")
            raise ConfigError(
                f"{what} {path}: {utterance.id!r} was decoded from {where}, but the manifest "
                f"has {utterance.audio}: predictions of another manifest cannot be scored "
                "against this one"
            )


def read_predictions(path: Path, *, repair: bool = False) -> list[dict[str, Any]]:
    """Rows of a predictions.jsonl, first occurrence of each id.

    With `repair`, a torn last line (the process was killed mid-write) is cut off the file
    so appending can continue cleanly. Raises ManifestError naming the line
    for any line that is not a JSON object with a string id: nothing is skipped silently.
    """
    path = Path(path)
    if not path.exists():
        return []
    if repair:
        with path.open("r+b") as handle:
            data = handle.read()
            end = data.rfind(b"\n") + 1
            if end < len(data):
                log.warning("%s: dropping a torn last line from an interrupted run", path)
                handle.truncate(end)
    rows, seen = [], set()
    for number, record in iter_jsonl(path):
        ident = record.get("id")
        if not isinstance(ident, str):
            raise ManifestError(f"{path}:{number}: id must be a string, not {ident!r}")
        if ident not in seen:
            seen.add(ident)
            rows.append(record)
    return rows
