"""Plots and printed summaries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

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


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"


def format_metrics_summary(metrics: dict[str, Any]) -> str:
    """The table `voxadapt evaluate` prints."""
    rows = []
    for key, name in (
        ("cer", "CER (no spaces)"),
        ("cer_spaces", "CER (with spaces)"),
        ("wer", "WER (eojeol)"),
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
    if recall and recall.get("recall") is not None:
        parts.append(
            f"medical term recall {_pct(recall['recall'])} "
            f"({recall['hits']}/{recall['occurrences']} occurrences of {recall['terms']} terms)"
        )
    compare = metrics.get("compare")
    if compare:
        ci = compare.get("ci")
        ci_text = ""
        if ci:
            ci_text = f", 95% CI [{_pct(ci[0])}, {_pct(ci[1])}], p={compare['p_value']:.3f}"
        parts.append(
            f"vs --compare: CER {_pct(compare['this'])} vs {_pct(compare['other'])}, "
            f"Δ {100 * compare['delta']:+.2f} points{ci_text} "
            f"on {compare['utterances']} shared utterances"
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
    """Bar chart of CER per duration bucket (utterance counts on the bars), as inline SVG."""
    labels = list(by_duration)
    cers = [100 * by_duration[label]["cer"] for label in labels]
    counts = [by_duration[label]["utterances"] for label in labels]
    figure, axes = plt.subplots(figsize=(7, 3.2), dpi=100)
    bars = axes.bar(labels, cers, color="#3b75af")
    for bar, count in zip(bars, counts, strict=True):
        axes.annotate(
            f"n={count}",
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

    from voxadapt.metrics import alignment

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


def write_report(
    path: Path, metrics: dict[str, Any], rows: list[dict[str, Any]], *, worst: int = 25
) -> Path:
    """One self-contained HTML page: headline table, breakdowns, CER-by-duration plot,
    term recall, and the worst utterances with colored alignments. No network assets."""
    from html import escape

    from voxadapt.metrics import EditCounts

    parts = [
        "<!DOCTYPE html><html lang='ko'><head><meta charset='utf-8'>",
        f"<title>voxadapt evaluation</title><style>{_STYLE}</style></head><body>",
        "<h1>voxadapt evaluation</h1>",
        f"<p class='muted'>model {escape(str(metrics.get('model')))}, adapter "
        f"{escape(str(metrics.get('adapter')))}; scoring normalization "
        f"{escape(str(metrics.get('scoring_normalization')))}</p>",
        "<h2>Headline</h2>",
        f"<pre>{escape(format_metrics_summary(metrics))}</pre>",
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
                        str(m["utterances"]),
                        _pct(m["cer"]),
                        _pct(m["wer"]),
                        _pct(m["swer"]),
                        _pct(m["ser"]),
                        _pct(m["insertion_rate"]),
                    ]
                    for value, m in groups.items()
                ],
            )
        )
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
