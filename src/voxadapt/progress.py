"""Progress of long loops: a tqdm bar on a terminal, periodic log lines everywhere else.

A bar is useless in a log file (nohup, SLURM, CI): it is either disabled, so the run says
nothing until it ends, or written as thousands of carriage returns. Without a terminal a loop
therefore logs a line at most every `VOXADAPT_PROGRESS_INTERVAL_S` seconds (default 30) and
one at the end, with done/total, rate and ETA, through `logging`, so the lines also land in
whatever log file the caller configured. A terminal that asks for plain text, TERM=dumb
(Emacs shells, some CI consoles) or NO_COLOR (https://no-color.org), gets the same lines:
nested bars move the cursor with escape sequences such a terminal prints as garbage. The bar
shows totals with the unit's decimals (`255.3/255.3 s audio`, never float noise).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from typing import Any

from tqdm.auto import tqdm

log = logging.getLogger(__name__)

INTERVAL_ENV = "VOXADAPT_PROGRESS_INTERVAL_S"
DEFAULT_INTERVAL_S = 30.0  # a line a minute is too rare to tell a hang; every second floods


def interval_s() -> float:
    """Seconds between progress lines without a terminal: $VOXADAPT_PROGRESS_INTERVAL_S or 30."""
    value = os.environ.get(INTERVAL_ENV, "").strip()
    if not value:
        return DEFAULT_INTERVAL_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):  # nan, inf, -1: not an interval
        log.warning(
            "%s=%r is not a number of seconds >= 0; using %g",
            INTERVAL_ENV,
            value,
            DEFAULT_INTERVAL_S,
        )
        return DEFAULT_INTERVAL_S
    return seconds


def plain_text_wanted() -> bool:
    """Whether the environment asks for text without escape sequences: TERM=dumb, or
    NO_COLOR set to anything but the empty string (as https://no-color.org defines it)."""
    return os.environ.get("TERM") == "dumb" or bool(os.environ.get("NO_COLOR"))


def on_terminal() -> bool:
    """Whether bars can be drawn: stderr is a terminal with a width (a pty that reports 0
    columns, as `script` or some CI runners make, cannot show a bar: lines instead) that does
    not ask for plain text (`plain_text_wanted`), or a notebook shows tqdm's widgets."""
    if plain_text_wanted():
        return False
    if "ipykernel" in sys.modules:
        return True
    if not sys.stderr.isatty():
        return False
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns > 0
    except (OSError, ValueError):
        return False


def format_rate(rate: float | None, unit: str) -> str:
    """`4.10 utt/s`; below 0.1 per second the inverse reads better: `20.0 s/step`."""
    if not rate:
        return f"? {unit}/s"
    return f"{rate:.2f} {unit}/s" if rate >= 0.1 else f"{1 / rate:.1f} s/{unit}"


def format_duration(seconds: float | None) -> str:
    """`05:07` or `1:02:03`, as tqdm shows elapsed and remaining time; `?` when unknown."""
    if seconds is None:
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class Progress:
    """Progress of one loop over `total` units: `update(n)` as work finishes, `note(text)`
    for what the bar or line should add (a loss, tokens generated so far). A context manager;
    use `progress()` to make one.
    """

    def __init__(
        self,
        total: float,
        desc: str,
        unit: str = "it",
        *,
        initial: float = 0,
        decimals: int = 0,
        leave: bool = True,
        enabled: bool = True,
        terminal: bool | None = None,
        interval: float | None = None,
    ) -> None:
        self.total, self.desc, self.unit, self.decimals = total, desc, unit, decimals
        self.n = self.initial = initial
        self.text = ""
        self.enabled = enabled and total > 0  # nothing to do: nothing to show
        self.interval = interval_s() if interval is None else interval
        self.started = self.last_line = time.monotonic()
        self.closed = False
        self.bar: _Bar | None = None
        if self.enabled and (on_terminal() if terminal is None else terminal):
            self.bar = _Bar(
                total=total,
                initial=initial,
                desc=desc,
                unit=unit,
                leave=leave,
                dynamic_ncols=True,  # a narrower window must not wrap (and repeat) the line
                bar_format=(
                    "{desc}: {percentage:3.0f}%|{bar}| "
                    f"{{n:.{decimals}f}}/{{total:.{decimals}f}} {{unit}} "
                    "[{elapsed}<{remaining}, {rate_text}{postfix}]"
                ),
            )

    def update(self, n: float = 1) -> None:
        """`n` more units done."""
        self.n += n
        if self.bar is not None:
            self.bar.update(n)  # redraws at most every 0.1 s (tqdm's mininterval)
        self._maybe_log()

    def note(self, text: str) -> None:
        """Text shown after the rate (e.g. `loss 1.2345`) from the next `update()` on; an
        `update(0)` shows it without progress (a generation step)."""
        self.text = text
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)

    def close(self, *, stopped: bool = False) -> None:
        """End the bar, or log the final line (`stopped`: the loop ended by an exception)."""
        if self.closed:
            return
        self.closed = True
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            log.info("%s", self.line(final="stopped after" if stopped else "in"))

    def line(self, final: str | None = None) -> str:
        """`cache features: 120/400 utt (30%), 4.10 utt/s, ETA 00:56`; a final line gives
        the time taken instead of the ETA, after `final` (`in 01:02`)."""
        elapsed = time.monotonic() - self.started
        rate = (self.n - self.initial) / elapsed if elapsed > 0 and self.n > self.initial else None
        done = f"{self.n:.{self.decimals}f}/{self.total:.{self.decimals}f} {self.unit}"
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        if final:
            when = f"{final} {format_duration(elapsed)}"
        else:
            when = f"ETA {format_duration((self.total - self.n) / rate if rate else None)}"
        text = f", {self.text}" if self.text else ""
        return f"{self.desc}: {done}{share}, {format_rate(rate, self.unit)}, {when}{text}"

    def _maybe_log(self) -> None:
        if self.bar is not None or not self.enabled:
            return
        now = time.monotonic()
        if now - self.last_line >= self.interval:
            self.last_line = now
            log.info("%s", self.line())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.close(stopped=exc_type is not None)


def progress(total: float, desc: str, unit: str = "it", **options: Any) -> Progress:
    """A `Progress` (a context manager): a tqdm bar on a terminal, else a log line every
    `interval_s()` seconds and at the end. Options: `initial` (resumed work), `decimals` of
    the unit (1 for seconds of audio), `leave=False` for a bar nested in another,
    `enabled=False` for silence (ranks other than 0), `terminal` to force a mode,
    `interval` in seconds. The lines come from the `voxadapt.progress` logger.
    """
    return Progress(total, desc, unit, **options)


class _Bar(tqdm):
    """tqdm (the notebook widget under Jupyter) whose rate reads `4.10 utt/s`, with a space
    (tqdm's own `4.10utt/s`, or `1.20s/s audio` when inverted, reads badly for long units)."""

    @property
    def format_dict(self) -> dict[str, Any]:
        values = super().format_dict
        rate, elapsed = values["rate"], values["elapsed"]
        if rate is None and elapsed:
            rate = (values["n"] - values["initial"]) / elapsed
        values["rate_text"] = format_rate(rate, values["unit"])
        return values
