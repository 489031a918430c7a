"""Figures: the duration histogram of `prepare` and the CER bar charts of report.html,
drawn with the Korean font (`voxadapt.fonts`)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from voxadapt.fonts import plot_style
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
    with plot_style():
        figure, axes = plt.subplots(figsize=(8, 4.5), dpi=100, layout="constrained")
        axes.hist(
            probed_s, bins=edges, color="#c8c8c8", label=f"all readable clips ({len(probed_s)})"
        )
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
        with atomic_write(path, "wb") as handle:
            figure.savefig(handle, format="png")
    plt.close(figure)
    return {
        "edges_s": [round(float(e), 4) for e in edges],
        "all": all_counts.tolist(),
        "kept": kept_counts.tolist(),
    }


def _svg(figure: Figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    plt.close(figure)
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]  # drop the XML prolog and doctype: inline SVG


def cer_bar_figure(groups: dict[str, dict[str, Any]], *, title: str, xlabel: str) -> Figure:
    """Bar chart of CER per group in the given order (utterance counts on the bars; an empty
    bar marked n/a where the group's references are empty). Long or many labels are slanted
    and the layout is constrained, so every label stays inside the figure."""
    labels = list(groups)
    rates = [groups[label].get("cer") for label in labels]
    counts = [groups[label].get("utterances", 0) for label in labels]
    width = min(12.0, max(6.0, 1.6 + 0.55 * len(labels)))
    figure, axes = plt.subplots(figsize=(width, 3.4), dpi=100, layout="constrained")
    heights = [0.0 if r is None else 100 * r for r in rates]
    bars = axes.bar(range(len(labels)), heights, color="#3b75af")
    for bar, count, rate in zip(bars, counts, rates, strict=True):
        axes.annotate(
            f"n={count}" if rate is not None else f"n={count}, n/a",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=9,
        )
    axes.set_ylim(0, max([1.0, *heights]) * 1.18)  # headroom for the n= labels
    axes.set_xticks(range(len(labels)), labels)
    if len(labels) > 8 or max((len(label) for label in labels), default=0) > 10:
        axes.tick_params(axis="x", labelrotation=35)
        for label in axes.get_xticklabels():
            label.set_horizontalalignment("right")
            label.set_rotation_mode("anchor")
    axes.set_xlabel(xlabel)
    axes.set_ylabel("CER (%)")
    axes.set_title(title)
    return figure


def plot_cer_by_group(groups: dict[str, dict[str, Any]], *, title: str, xlabel: str) -> str:
    """`cer_bar_figure` as inline SVG (text drawn as glyph paths: no font needed to view it)."""
    with plot_style():
        return _svg(cer_bar_figure(groups, title=title, xlabel=xlabel))


def plot_cer_by_duration(by_duration: dict[str, dict[str, Any]]) -> str:
    """CER per duration bucket, shortest first, as inline SVG."""
    from voxadapt.scoring.breakdowns import group_order

    ordered = {label: by_duration[label] for label in sorted(by_duration, key=group_order)}
    return plot_cer_by_group(ordered, title="CER by clip duration", xlabel="clip duration")
