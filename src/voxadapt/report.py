"""Printed summaries: the plain-text tables of prepare, evaluate/score and compare (report.html
is `report_html`)."""

from __future__ import annotations

import re
from typing import Any

from voxadapt import units
from voxadapt.scoring.intervals import MIN_INTERVAL_SPEAKERS

# ------------------------------------------------------------------------------------ prepare


def _width(text: str) -> int:
    """Columns a string takes in a terminal: Hangul and other wide characters take two."""
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _numeric(text: str) -> bool:
    return bool(re.fullmatch(r"[-+]?[\d.,]+%?|n/a|", text.strip()))


def format_table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    """Plain-text table: numeric columns right-aligned, text left-aligned, Hangul counted
    as two columns so that columns line up in a terminal."""
    widths = [max(_width(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    right = [i > 0 and all(_numeric(str(row[i])) for row in rows) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        cells = []
        for i, (cell, width) in enumerate(zip(row, widths, strict=False)):
            pad = " " * (width - _width(str(cell)))
            cells.append(pad + str(cell) if right[i] else str(cell) + pad)
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def format_prepare_summary(stats: dict[str, Any]) -> str:
    """The table `voxadapt prepare` prints: splits, speakers, then rejections by reason (the
    bundled sample's deliberate ones said to be so)."""
    speakers = stats["speakers"]
    with_speakers = speakers["count"] > 0  # no column of zeros when the source names none
    header = ("split", "utterances", "hours", *(("speakers",) if with_speakers else ()))
    rows = [
        (split, str(s["utterances"]), f"{s['hours']:.2f}")
        + ((str(s["speakers"]),) if with_speakers else ())
        for split, s in stats["splits"].items()
    ]
    rows.append(
        ("total kept", str(stats["kept"]), f"{stats['hours']:.2f}")
        + ((str(speakers["count"]),) if with_speakers else ())
    )
    parts = [format_table(rows, header) + "\n" + speakers_line(speakers)]
    if stats["rejected_by_reason"]:
        reasons = [(reason, str(n)) for reason, n in stats["rejected_by_reason"].items()]
        reasons.append(("total rejected", str(stats["rejected"])))
        parts.append(format_table(reasons, ("rejected", "items")))
        deliberate = stats.get("deliberate_rejections") or {}
        if deliberate.get("count"):
            parts[-1] += f"\n{deliberate_line(deliberate, stats['rejected'])}"
    probe = stats.get("probe", {})
    if probe.get("files_per_second"):
        parts.append(
            f"probed {probe['files']} files in {probe['seconds']:.1f} s "
            f"({probe['files_per_second']:.0f} files/s, {probe['decoded']} decoded)"
        )
    return "\n\n".join(parts)


def speakers_line(speakers: dict[str, Any]) -> str:
    """What the split manifests know of speakers, in one sentence: speaker-disjoint splits
    and per-speaker intervals depend on it."""
    count, without = speakers["count"], speakers.get("without_speaker", 0)
    if not count:
        return "speakers: none given (every utterance is its own speaker)"
    if without:
        return (
            f"speakers: {count}, and {without} "
            f"{'utterance' if without == 1 else 'utterances'} without one (each its own speaker)"
        )
    return f"speakers: {count}"


def deliberate_line(deliberate: dict[str, Any], rejected: int) -> str:
    """ "2 rejected (deliberate: the bundled sample includes ...)", naming only those when the
    run rejected others too."""
    count = deliberate["count"]
    which = f"{count} rejected" if count == rejected else f"{count} of the {rejected} rejected"
    return f"{which} (deliberate: {deliberate['note']})"


# ----------------------------------------------------------------------- evaluation summary


_pct = units.percent  # a rate for people; 'n/a' when undefined (no reference characters)
# The rates metrics.json gives a bootstrap interval (`<key>_ci95`) when it has enough speakers.
_INTERVAL_RATES = ("cer", "cer_multi_reference", "wer", "wer_multi_reference")


def no_interval_reason(metrics: dict[str, Any], own: dict[str, Any] | None = None) -> str:
    """Why a rate of `metrics` (evaluate's or score's) has no 95% CI, for people ("fewer
    than 5 speakers: 2", "--bootstrap 0"): `own`'s reason where the rate records one (term
    recall counts the speakers of the utterances holding a term), else the run's."""
    bootstrap = metrics.get("bootstrap")
    if own and own.get("no_interval"):
        return f"{own['no_interval']}: {own.get('speakers')}"
    if not bootstrap:
        return "--bootstrap 0"
    if bootstrap.get("no_intervals"):
        return f"{bootstrap['no_intervals']}: {bootstrap.get('speakers')}"
    return "no defined rate"


def format_metrics_summary(metrics: dict[str, Any]) -> str:
    """The table `voxadapt evaluate` and `voxadapt score` print; a rate without an interval
    shows "—" and a line under the table says why (never a degenerate interval)."""
    rows = []
    for key, name in (
        ("cer", "CER (no spaces)"),
        ("cer_spaces", "CER (with spaces)"),
        ("cer_multi_reference", "CER, multi-reference"),
        ("wer", "WER (eojeol)"),
        ("wer_multi_reference", "WER, multi-reference"),
        ("swer", "sWER (space-normalized)"),
        ("ser", "sentence error rate"),
        ("macro_cer", "macro CER (mean per utt.)"),
        ("insertion_rate", "insertion rate"),
        ("repetition_loop_rate", "outputs with loops"),
        ("empty_output_rate", "empty outputs"),
    ):
        if key in metrics:
            interval = metrics.get(f"{key}_ci95")
            ci = ""  # only the headline rates are bootstrapped; "—": one that got no interval
            if key in _INTERVAL_RATES and metrics[key] is not None:
                ci = units.percent_interval(interval) if interval else "—"
            rows.append((name, _pct(metrics[key]), ci))
    table = format_table(rows, ("metric", "value", "95% CI (speakers)"))
    if any(cell == "—" for *_, cell in rows):
        table += f"\n— 95% CI n/a ({no_interval_reason(metrics)})"
    parts = [
        f"{metrics.get('utterances', 0)} utterances, "
        f"{metrics.get('reference_characters', 0)} reference characters",
        table,
    ]
    recall = metrics.get("term_recall")
    if recall:
        interval = recall.get("ci95")
        ci = ""  # an undefined recall (no term in the references) has no interval either
        if interval:
            ci = f", 95% CI {units.percent_interval(interval)}"
        elif recall.get("recall") is not None:
            ci = f", 95% CI n/a ({no_interval_reason(metrics, recall)})"
        parts.append(
            f"medical term recall {_pct(recall.get('recall'))}{ci} ({recall.get('hits', 0)}/"
            f"{recall.get('occurrences', 0)} occurrences of {recall.get('terms', 0)} terms)"
        )
    compare = metrics.get("compare")
    if compare:
        ci, p_value = compare.get("ci"), compare.get("p_value")
        ci_text = f", 95% CI {units.points_interval(ci)}" if ci else ""
        if compare.get("too_few_speakers"):
            ci_text = (
                f", 95% CI n/a (fewer than {MIN_INTERVAL_SPEAKERS} speakers: "
                f"{compare['too_few_speakers']}; no p-value)"
            )
        if p_value is not None:
            ci_text += f", {units.p_value(p_value)}"
        parts.append(
            f"vs --compare: CER {_pct(compare.get('this'))} vs {_pct(compare.get('other'))}, "
            f"Δ {units.points(compare.get('delta'))}{ci_text} "
            f"on {compare.get('utterances', 0)} shared utterances"
        )
    return "\n\n".join(parts)


def compare_table_rows(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The compare table for people (terminal and report.html): one row per system, best
    first; rates in percent with their 95% CIs, differences against the best in points."""
    with_terms = any("term_recall" in row for row in summary["systems"])
    header = ["system", "CER", "95% CI", "multi-ref CER", "WER"]
    header += ["term recall"] if with_terms else []
    header += ["vs best", "95% CI", "p", "RTF", "weights GiB", "peak GiB"]
    rows = []
    for row in summary["systems"]:
        versus = row.get("versus_best") or {}
        cells = [
            row["name"],
            units.percent(row["cer"]),
            units.percent_interval(row.get("cer_ci95")),
            units.percent(row.get("cer_multi_reference")),
            units.percent(row.get("wer")),
        ]
        if with_terms:
            cells.append(units.percent(row.get("term_recall")))
        if versus and versus["difference"] is None:
            cells += ["n/a", "", ""]
        elif versus:
            cells += [
                units.points(versus["difference"]),
                units.points_interval(versus.get("ci95")),
                units.p_value(versus["p_value"]) if "p_value" in versus else "n/a",
            ]
        else:
            cells += ["best", "", ""]
        cells += [
            "n/a" if row.get("rtf") is None else f"{row['rtf']:.3f}",
            "n/a" if row.get("weights_gib") is None else f"{row['weights_gib']:.2f}",
            "n/a (CPU)" if row.get("peak_gib") is None else f"{row['peak_gib']:.2f}",
        ]
        rows.append(cells)
    return header, rows
