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
