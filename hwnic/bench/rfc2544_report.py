"""RFC 2544 results: the JSON-ready dict, the printed table and the plot.

As with :mod:`hwnic.bench.report`, everything works on the dict that
:func:`to_dict` makes, so a table or plot can be redone from a saved file.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from hwnic.bench import rfc2544
from hwnic.bench.report import machine, port_label, pyplot, save_figure, where, wide_console

KIND = {"throughput": "hwnic-bench-throughput", "burst": "hwnic-bench-burst"}
PLOT_SIZE = (10.0, 6.0)
PLOT_DPI = 110
LINE_CURVE_POINTS = 200
MS_PER_S = 1000.0


def to_dict(
    test: str,
    searches: dict[int, list[rfc2544.Search]],
    *,
    speed_mbps: int,
    settings: dict[str, Any],
    ports: list[dict[str, Any]],
    interrupted: bool = False,
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """Everything about a throughput or burst test: settings, ports, table, every trial."""
    row = rfc2544.throughput_row if test == "throughput" else rfc2544.burst_row
    return {
        "kind": KIND[test],
        "test": test,
        "command": argv if argv is not None else sys.argv,
        "settings": settings,
        "machine": machine(),
        "ports": ports,
        "link_mbps": speed_mbps,
        "interrupted": interrupted,
        "rows": [row(size, found, speed_mbps) for size, found in searches.items() if found],
        "searches": [s.to_dict() for found in searches.values() for s in found],
    }


def _limits(row: dict[str, Any]) -> str:
    return ", ".join(row["limits"])


def _spread(row: dict[str, Any], key: str, fmt: str) -> str:
    if row["searches"] < 2:
        return ""
    return f"{row[key + '_min']:{fmt}}-{row[key + '_max']:{fmt}}"


def print_table(data: dict[str, Any], console: Console | None = None) -> None:
    """One line per frame size."""
    console = console or wide_console()
    test = data["test"]
    title = f"RFC 2544 {test}: {port_label(data)}, link {data['link_mbps']} Mbit/s"
    t = Table(title=title, title_justify="left")
    repeats = any(r["searches"] > 1 for r in data["rows"])
    if test == "throughput":
        names = ["size", "frames/s", "Mbit/s L2", "Mbit/s wire", "% line", "line fps"]
    else:
        names = ["size", "burst frames", "ms at line rate", "ms to send", "line fps"]
    if repeats:
        names.append("min-max")
    for name in [*names, "limit", "trials"]:
        t.add_column(name, justify="right")
    for r in data["rows"]:
        if test == "throughput":
            cells = [
                f"{r['fps']:,.0f}",
                f"{r['l2_mbps']:,.1f}",
                f"{r['wire_mbps']:,.1f}",
                f"{r['line_pct']:.2f}",
                f"{r['line_fps']:,.0f}",
            ]
            spread = _spread(r, "fps", ",.0f")
        else:
            cells = [
                f"{r['frames']:,.0f}",
                f"{r['wire_seconds'] * MS_PER_S:,.2f}",
                f"{r['send_seconds'] * MS_PER_S:,.1f}",
                f"{r['line_fps']:,.0f}",
            ]
            spread = _spread(r, "frames", ",.0f")
        if repeats:
            cells.append(spread)
        t.add_row(str(r["size"]), *cells, _limits(r), str(r["trials"]))
    console.print(t)
    if data["interrupted"]:
        console.print("INTERRUPTED: the table holds the sizes searched before Ctrl-C")


def plot(data: dict[str, Any], path: str | Path) -> Path:
    """Throughput: frames/s against size with the line-rate curve. Burst: frames against size."""
    plt = pyplot()
    from matplotlib.ticker import StrMethodFormatter

    fig, ax = plt.subplots(figsize=PLOT_SIZE, dpi=PLOT_DPI, layout="constrained")
    rows = data["rows"]
    sizes = [r["size"] for r in rows]
    speed = data["link_mbps"]
    if data["test"] == "throughput":
        lo, hi = rfc2544.MIN_WIRE_SIZE, rfc2544.MAX_WIRE_SIZE
        curve = [lo + (hi - lo) * i / (LINE_CURVE_POINTS - 1) for i in range(LINE_CURVE_POINTS)]
        ax.plot(
            curve,
            [rfc2544.line_rate_fps(round(x), speed) for x in curve],
            color="grey",
            linestyle="--",
            label=f"line rate, {speed} Mbit/s",
        )
        ax.plot(sizes, [r["fps"] for r in rows], marker="o", label="throughput (no drop)")
        for r in rows:
            ax.annotate(
                f" {r['line_pct']:.1f} %", (r["size"], r["fps"]), fontsize="small", va="bottom"
            )
        ax.set_yscale("log")
        ax.set_ylabel("frames/s")
    else:
        ax.plot(sizes, [r["frames"] for r in rows], marker="o", label="longest burst, no drop")
        burst = data["settings"].get("max_burst")
        if burst:
            ax.axhline(burst, color="grey", linestyle="--", label=f"longest tried, {burst:,}")
        ax.set_ylim(bottom=0)
        ax.set_ylabel("frames back to back")
    ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.set_xlabel("frame size on the wire, bytes (FCS included)")
    ax.set_xticks(sizes)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    s = data["settings"]
    how = (
        f"trial {s['trial_seconds']:g} s"
        if data["test"] == "throughput"
        else f"bursts up to {s['max_burst']:,}"
    )
    ax.set_title(
        f"RFC 2544 {data['test']}: {port_label(data)}\n"
        f"{how}, loss tolerance {s['loss_tolerance']}, resolution {s['resolution']}, "
        f"{s['repeat']} search(es) per size; {where(data)}",
        fontsize="medium",
    )
    return save_figure(fig, path)
