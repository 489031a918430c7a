"""One unit convention for rates.

Files (metrics.json, predictions.jsonl, log.jsonl, trainer_state.json,
voxadapt_adapter.json) store rates as fractions (0.236 = 23.6%; a CER can exceed 1 when a
system inserts more than the reference holds). Everything printed for people (terminal lines,
logs, reports) shows percent with two decimals, differences in percentage points, and p-values
as `p<0.001` below that bound.
"""

from __future__ import annotations

DECIMALS = 2


def percent(fraction: float | None, decimals: int = DECIMALS) -> str:
    """A rate stored as a fraction, for people: `23.62%`; `n/a` when undefined."""
    return "n/a" if fraction is None else f"{100 * fraction:.{decimals}f}%"


def points(delta: float | None, decimals: int = DECIMALS) -> str:
    """A difference of two rates in percentage points, signed: `-1.25 points`."""
    return "n/a" if delta is None else f"{100 * delta:+.{decimals}f} points"


def points_interval(interval: tuple[float, float] | list[float] | None) -> str:
    """A confidence interval of a difference, in points: `[-2.10, -0.40] points`."""
    if not interval:
        return "n/a"
    low, high = interval
    return f"[{100 * low:+.{DECIMALS}f}, {100 * high:+.{DECIMALS}f}] points"


def percent_interval(interval: tuple[float, float] | list[float] | None) -> str:
    """A confidence interval of a rate: `[21.04%, 25.90%]`."""
    if not interval:
        return "n/a"
    return f"[{percent(interval[0])}, {percent(interval[1])}]"


def p_value(p: float | None) -> str:
    """`p<0.001` below a thousandth (a bootstrap never shows p = 0), else `p=0.034`."""
    if p is None:
        return "p n/a"
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"
