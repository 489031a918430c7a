"""Plots and printed summaries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from voxadapt import units
from voxadapt.manifest import atomic_write


def plot_durations(
    probed_s: list[float],
    kept_s: list[float],
    path: Path,
    *,
    min_duration_s: float,
    max_duration_s: float,
    bins: int = 60,
) -> dict[str, Any]:
    """Histogram of every readable clip's duration, kept ones highlighted, bounds and mean marked.

    Returns the histogram (edges, counts of all probed clips) for stats.json.
    """
    upper = max([max_duration_s * 1.1, *probed_s]) if probed_s else max_duration_s * 1.1
    edges = np.linspace(0.0, upper, bins + 1)
    all_counts, _ = np.histogram(probed_s, bins=edges)
    kept_counts, _ = np.histogram(kept_s, bins=edges)
    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=100)
    axes.hist(probed_s, bins=edges, color="#c8c8c8", label=f"all readable clips ({len(probed_s)})")
    axes.hist(kept_s, bins=edges, color="#3b75af", label=f"kept ({len(kept_s)})")
    for bound, name in ((min_duration_s, "min"), (max_duration_s, "max")):
        axes.axvline(
            bound, color="#d62728", linestyle="--", linewidth=1.5, label=f"{name} {bound:g} s"
        )
    if kept_s:
        mean = float(np.mean(kept_s))
        axes.axvline(mean, color="black", linewidth=1.5, label=f"mean (kept) {mean:.1f} s")
    axes.set_xlabel("duration (s)")
    axes.set_ylabel("clips")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    hours = sum(kept_s) / 3600
    axes.set_title(f"Clip durations: {len(kept_s)} kept, {hours:.2f} h")
    axes.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    with atomic_write(path, "wb") as handle:
        figure.savefig(handle, format="png")
    plt.close(figure)
    return {
        "edges_s": [round(float(e), 4) for e in edges],
        "all": all_counts.tolist(),
        "kept": kept_counts.tolist(),
    }


def format_table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    """Plain-text table with right-aligned numeric columns."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        cells = [
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=False))
        ]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def format_prepare_summary(stats: dict[str, Any]) -> str:
    """The table `voxadapt prepare` prints: splits, then rejections by reason."""
    rows = [
        (split, str(s["utterances"]), f"{s['hours']:.2f}", str(s["speakers"]))
        for split, s in stats["splits"].items()
    ]
    rows.append(
        ("total kept", str(stats["kept"]), f"{stats['hours']:.2f}", str(stats["speakers"]["count"]))
    )
    parts = [format_table(rows, ("split", "utterances", "hours", "speakers"))]
    if stats["rejected_by_reason"]:
        reasons = [(reason, str(n)) for reason, n in stats["rejected_by_reason"].items()]
        reasons.append(("total rejected", str(stats["rejected"])))
        parts.append(format_table(reasons, ("rejected", "items")))
    probe = stats.get("probe", {})
    if probe.get("files_per_second"):
        parts.append(
            f"probed {probe['files']} files in {probe['seconds']:.1f} s "
            f"({probe['files_per_second']:.0f} files/s, {probe['decoded']} decoded)"
        )
    return "\n\n".join(parts)


# ----------------------------------------------------------------------- evaluation report


_pct = units.percent  # a rate for people; 'n/a' when undefined (no reference characters)


def format_metrics_summary(metrics: dict[str, Any]) -> str:
    """The table `voxadapt evaluate` prints."""
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
            ci = f"[{_pct(interval[0])}, {_pct(interval[1])}]" if interval else ""
            rows.append((name, _pct(metrics[key]), ci))
    parts = [
        f"{metrics.get('utterances', 0)} utterances, "
        f"{metrics.get('reference_characters', 0)} reference characters",
        format_table(rows, ("metric", "value", "95% CI (speakers)")),
    ]
    recall = metrics.get("term_recall")
    if recall:
        parts.append(
            f"medical term recall {_pct(recall.get('recall'))} ({recall.get('hits', 0)}/"
            f"{recall.get('occurrences', 0)} occurrences of {recall.get('terms', 0)} terms)"
        )
    compare = metrics.get("compare")
    if compare:
        ci, p_value = compare.get("ci"), compare.get("p_value")
        ci_text = f", 95% CI {units.points_interval(ci)}" if ci else ""
        if p_value is not None:
            ci_text += f", {units.p_value(p_value)}"
        parts.append(
            f"vs --compare: CER {_pct(compare.get('this'))} vs {_pct(compare.get('other'))}, "
            f"Δ {units.points(compare.get('delta'))}{ci_text} "
            f"on {compare.get('utterances', 0)} shared utterances"
        )
    return "\n\n".join(parts)


def _svg(figure) -> str:
    import io

    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    plt.close(figure)
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]  # drop the XML prolog and doctype: inline SVG


def plot_cer_by_duration(by_duration: dict[str, dict[str, Any]]) -> str:
    """Bar chart of CER per duration bucket, shortest first (utterance counts on the bars;
    an empty bar marked n/a where the bucket's references are empty), as inline SVG."""
    from voxadapt.scoring.breakdowns import group_order

    labels = sorted(by_duration, key=group_order)
    rates = [by_duration[label].get("cer") for label in labels]
    counts = [by_duration[label].get("utterances", 0) for label in labels]
    figure, axes = plt.subplots(figsize=(7, 3.2), dpi=100)
    bars = axes.bar(labels, [0.0 if r is None else 100 * r for r in rates], color="#3b75af")
    for bar, count, rate in zip(bars, counts, rates, strict=True):
        axes.annotate(
            f"n={count}" if rate is not None else f"n={count}, n/a",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    axes.set_xlabel("clip duration")
    axes.set_ylabel("CER (%)")
    axes.set_title("CER by clip duration")
    figure.tight_layout()
    return _svg(figure)


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:0.6em 0 1.4em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}
th{background:#f2f2f2}
.align{font-family:monospace;white-space:pre-wrap;text-align:left}
.sub{background:#ffd27f}.del{background:#ff9c9c;text-decoration:line-through}
.ins{background:#9be39b}.muted{color:#777}
"""


def _table(header: list[str], rows: list[list[str]]) -> str:
    from html import escape

    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _alignment_html(reference: str, hypothesis: str) -> tuple[str, str]:
    from html import escape

    from voxadapt.scoring.edits import alignment

    ref_html, hyp_html = [], []
    for op, ref_part, hyp_part in alignment(reference, hypothesis):
        if op == "equal":
            ref_html.append(escape(ref_part))
            hyp_html.append(escape(hyp_part))
        elif op == "substitute":
            ref_html.append(f'<span class="sub">{escape(ref_part)}</span>')
            hyp_html.append(f'<span class="sub">{escape(hyp_part)}</span>')
        elif op == "delete":
            ref_html.append(f'<span class="del">{escape(ref_part)}</span>')
        else:
            hyp_html.append(f'<span class="ins">{escape(hyp_part)}</span>')
    return "".join(ref_html), "".join(hyp_html)


def _top_errors_html(top_errors: dict[str, dict[str, list]]) -> list[str]:
    """One table per level (characters, eojeol): substitutions, deletions and insertions
    side by side, most frequent first."""
    from itertools import zip_longest

    parts = []
    for level, title in (("characters", "Characters"), ("eojeol", "Eojeol (words)")):
        errors = top_errors.get(level) or {}
        columns = [
            [
                (f"{e['reference']} → {e['hypothesis']}", e["count"])
                for e in errors.get("substitutions", [])
            ],
            [(e["reference"], e["count"]) for e in errors.get("deletions", [])],
            [(e["hypothesis"], e["count"]) for e in errors.get("insertions", [])],
        ]
        cells = [
            [str(value) for entry in line for value in entry]
            for line in zip_longest(*columns, fillvalue=("", ""))
        ]
        if cells:
            parts.append(f"<h3>{title}</h3>")
            parts.append(
                _table(["substitution (ref → hyp)", "n", "deletion", "n", "insertion", "n"], cells)
            )
    return ["<h2>Most frequent errors</h2>", *parts] if parts else []


def _multi_reference_html(metrics: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """What the multi-reference numbers mean, and the rows whose reference changed."""
    count = metrics.get("multi_reference_utterances") or 0
    if not count:
        return []
    changed = [
        row
        for row in rows
        if (row.get("multi_reference") or {}).get("reference_normalized")
        not in (None, row.get("reference_normalized"))
    ][:25]
    parts = [
        "<h2>Multi-reference scoring</h2>",
        f"<p>{count} references carry dual transcriptions such as <code>(70%)/(칠십 퍼센트)"
        "</code>. <b>CER</b> scores against the training text (one form per span, "
        "comparable with published results); <b>CER, multi-reference</b> scores each "
        f"utterance against the closest form the label allows, chosen per span: "
        f"{_pct(metrics.get('cer'))} vs {_pct(metrics.get('cer_multi_reference'))}. The "
        "difference is what the model is charged for saying a number or unit the other "
        "correct way.</p>",
    ]
    if changed:
        parts.append(
            _table(
                ["id", "training-text reference", "closest reference", "hypothesis"],
                [
                    [
                        str(r["id"]),
                        r["reference_normalized"],
                        r["multi_reference"]["reference_normalized"],
                        r["hypothesis_normalized"],
                    ]
                    for r in changed
                ],
            )
        )
    return parts


def write_report(
    path: Path, metrics: dict[str, Any], rows: list[dict[str, Any]], *, worst: int = 25
) -> Path:
    """One self-contained HTML page: headline table, breakdowns, CER-by-duration plot,
    most frequent errors, term recall, and the worst utterances with colored alignments.
    No network assets."""
    from html import escape

    from voxadapt.scoring.breakdowns import group_order
    from voxadapt.scoring.edits import EditCounts

    parts = [
        "<!DOCTYPE html><html lang='ko'><head><meta charset='utf-8'>",
        f"<title>voxadapt evaluation</title><style>{_STYLE}</style></head><body>",
        "<h1>voxadapt evaluation</h1>",
        f"<p class='muted'>model {escape(str(metrics.get('model')))}, adapter "
        f"{escape(str(metrics.get('adapter')))}; scoring normalization "
        f"{escape(str(metrics.get('scoring_normalization')))}</p>",
        "<h2>Headline</h2>",
        f"<pre>{escape(format_metrics_summary(metrics))}</pre>",
        *_multi_reference_html(metrics, rows),
    ]
    breakdown = metrics.get("breakdowns", {})
    if breakdown.get("duration"):
        parts += ["<h2>CER by duration</h2>", plot_cer_by_duration(breakdown["duration"])]
    for field, groups in breakdown.items():
        parts.append(f"<h2>By {escape(field)}</h2>")
        parts.append(
            _table(
                [field, "utterances", "CER", "WER", "sWER", "SER", "insertions"],
                [
                    [
                        value,
                        str(m.get("utterances", 0)),
                        _pct(m.get("cer")),
                        _pct(m.get("wer")),
                        _pct(m.get("swer")),
                        _pct(m.get("ser")),
                        _pct(m.get("insertion_rate")),
                    ]
                    for value, m in sorted(groups.items(), key=lambda item: group_order(item[0]))
                ],
            )
        )
    parts += _top_errors_html(metrics.get("top_errors") or {})
    recall = metrics.get("term_recall")
    if recall and recall.get("most_missed"):
        parts.append("<h2>Most-missed medical terms</h2>")
        parts.append(
            _table(
                ["term", "missed", "occurrences"],
                [
                    [m["term"], str(m["missed"]), str(m["occurrences"])]
                    for m in recall["most_missed"]
                ],
            )
        )

    def badness(row: dict[str, Any]) -> tuple[int, float]:
        counts = EditCounts(**row["scores"]["cer"])
        # an empty reference has no rate: rank its insertions above any finite rate
        if counts.rate is None:
            return counts.errors, float("inf") if counts.errors else 0.0
        return counts.errors, counts.rate

    parts.append(
        f"<h2>Worst {min(worst, len(rows))} utterances</h2><p class='muted'>"
        "<span class='sub'>substituted</span> <span class='del'>deleted</span> "
        "<span class='ins'>inserted</span> (normalized text)</p>"
    )
    worst_rows = sorted(rows, key=badness, reverse=True)[:worst]
    lines = ["<table><tr><th>id</th><th>CER</th><th>reference / hypothesis</th></tr>"]
    for row in worst_rows:
        ref_html, hyp_html = _alignment_html(
            row["reference_normalized"], row["hypothesis_normalized"]
        )
        flags = " (loop)" if row.get("repetition_loop") else ""
        lines.append(
            f"<tr><td>{escape(str(row['id']))}{flags}</td>"
            f"<td>{_pct(EditCounts(**row['scores']['cer']).rate)}</td>"
            f"<td class='align'>REF: {ref_html}<br>HYP: {hyp_html}</td></tr>"
        )
    lines.append("</table>")
    parts += lines
    parts.append("</body></html>")
    with atomic_write(path) as handle:
        handle.write("\n".join(parts))
    return path
