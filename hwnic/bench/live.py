"""The table shown while a benchmark runs.

On a terminal: a rich ``Live`` table refreshed about twice a second. Anywhere
else (a pipe, a log, the QEMU lab's console): one plain line per second, so
the output stays readable when it is not a TTY.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table

from hwnic.bench.runner import Progress

REFRESH_PER_SECOND = 2
LINE_INTERVAL = 1.0  # s between plain lines
ROLES = ("tx", "rx")


def _n(value: float) -> str:
    return f"{value:,.0f}"


def table(p: Progress, title: str) -> Table:
    """The live table: one column per port, rates over the last interval."""
    t = Table(title=title, caption=_caption(p), title_justify="left", caption_justify="left")
    t.add_column("")
    roles = [r for r in ROLES if r in p.irq]
    for role in roles:
        t.add_column(f"{role.upper()} port", justify="right")
    pps = {"tx": p.tx_pps, "rx": p.rx_pps}
    mbit = {"tx": p.tx_mbps, "rx": p.rx_mbps}
    frames = {"tx": p.tx_frames, "rx": p.rx_frames}
    t.add_row("frames/s", *[_n(pps[r]) for r in roles])
    t.add_row("Mbit/s", *[f"{mbit[r]:,.1f}" for r in roles])
    t.add_row("frames", *[_n(frames[r]) for r in roles])
    t.add_row("interrupts/s", *[_n(p.irq[r]["interrupts_per_s"]) for r in roles])
    t.add_row("DPC runs", *[_n(p.irq[r]["dpc_runs"]) for r in roles])
    t.add_row("budget used up", *[_n(p.irq[r]["more_pending"]) for r in roles])
    t.add_row("time cut-offs", *[_n(p.irq[r]["time_cutoffs"]) for r in roles])
    return t


def _caption(p: Progress) -> str:
    text = f"{p.elapsed:.1f} s, {p.phase}"
    if p.loss is not None:
        pct = 100.0 * p.loss / p.tx_frames if p.tx_frames else 0.0
        text += f"; loss so far {p.loss:,} ({pct:.2f} %, frames on their way count)"
    return text


def line(p: Progress) -> str:
    """One plain line per second for logs and pipes."""
    parts = [f"{p.elapsed:6.1f} s {p.phase:<9}"]
    if "tx" in p.irq:
        parts.append(f"tx {p.tx_pps:>9,.0f} fps {p.tx_mbps:7.1f} Mbit/s")
    if "rx" in p.irq:
        rx = p.irq["rx"]
        parts.append(
            f"rx {p.rx_pps:>9,.0f} fps {p.rx_mbps:7.1f} Mbit/s,"
            f" {rx['interrupts_per_s']:,.0f} irq/s, {rx['dpc_runs']:,.0f} DPCs,"
            f" {rx['more_pending']:,.0f} budget used up"
        )
    if p.loss is not None:
        parts.append(f"loss {p.loss:,}")
    return " | ".join(parts)


class LiveView:
    """Context manager; ``update(progress)`` from the sampling loop."""

    def __init__(
        self,
        title: str,
        *,
        stream: TextIO | None = None,
        tty: bool | None = None,
        quiet: bool = False,
    ) -> None:
        self.title = title
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.quiet = quiet
        self._live: Live | None = None
        self._last_line = 0.0

    def __enter__(self) -> LiveView:
        if self.tty and not self.quiet:
            console = Console(file=self.stream)
            self._live = Live(
                console=console, refresh_per_second=REFRESH_PER_SECOND, transient=False
            )
            self._live.start()
        return self

    def update(self, p: Progress) -> None:
        if self.quiet:
            return
        if self._live is not None:
            self._live.update(table(p, self.title))
            return
        now = time.monotonic()
        if now - self._last_line >= LINE_INTERVAL or p.phase == "done":
            self._last_line = now
            print(line(p), file=self.stream, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
