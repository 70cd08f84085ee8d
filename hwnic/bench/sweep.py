"""One run per value of a setting (``--sweep budget=16,64,256``): table and plot."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from hwnic.bench.options import BenchSettings, Sweep
from hwnic.bench.report import (
    machine,
    port_label,
    pyplot,
    save_figure,
    settings_line,
    where,
    wide_console,
)

RunOne = Callable[[BenchSettings], dict[str, Any]]  # settings -> report.to_dict(result)
PLOT_SIZE = (10.0, 6.0)
PLOT_DPI = 110
LOG_SCALE_SPAN = 10  # log x axis when the largest value is this many times the smallest


def run_sweep(base: BenchSettings, sweep: Sweep, run_one: RunOne) -> dict[str, Any]:
    """Run every value in turn; an interrupted run ends the sweep with what was measured."""
    runs: list[dict[str, Any]] = []
    for value, label in zip(sweep.values, sweep.labels(), strict=True):
        data = run_one(base.with_value(sweep.key, value))
        data["sweep_value"] = label
        runs.append(data)
        if data["summary"]["interrupted"]:
            break
    return {
        "kind": "hwnic-bench-sweep",
        "command": sys.argv,
        "sweep": {"key": sweep.key, "values": sweep.labels()},
        "settings": base.to_dict(),
        "machine": machine(),
        "runs": runs,
        "table": rows(runs),
    }


def rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The figures a sweep compares, one dict per run."""
    out = []
    for data in runs:
        s = data["summary"]
        rx = s["irq"].get("rx", {})
        out.append(
            {
                "value": data["sweep_value"],
                "tx_pps": s["tx_pps"],
                "rx_pps": s["rx_pps"],
                "tx_mbps": s["tx_mbps"],
                "rx_mbps": s["rx_mbps"],
                "loss": s["loss"],
                "loss_pct": s["loss_pct"],
                "rx_interrupts_per_s": rx.get("interrupts_per_s", 0.0),
                "rx_frames_per_dpc": rx.get("indicated_per_dpc_mean", 0.0),
                "rx_more_pending": rx.get("more_pending", 0),
                "interrupted": s["interrupted"],
            }
        )
    return out


def print_table(data: dict[str, Any], console: Console | None = None) -> None:
    console = console or wide_console()
    key = data["sweep"]["key"]
    first = data["runs"][0] if data["runs"] else None
    title = f"hwnic bench sweep over {key}" + (f": {port_label(first)}" if first else "")
    t = Table(title=title, title_justify="left")
    for name in (
        key,
        "TX fps",
        "RX fps",
        "TX Mbit/s",
        "RX Mbit/s",
        "loss %",
        "RX irq/s",
        "frames/DPC",
        "budget used up",
    ):
        t.add_column(name, justify="right")
    for r in data["table"]:
        loss = "" if r["loss_pct"] is None else f"{r['loss_pct']:.2f}"
        t.add_row(
            str(r["value"]) + (" (interrupted)" if r["interrupted"] else ""),
            f"{r['tx_pps']:,.0f}",
            f"{r['rx_pps']:,.0f}",
            f"{r['tx_mbps']:,.1f}",
            f"{r['rx_mbps']:,.1f}",
            loss,
            f"{r['rx_interrupts_per_s']:,.0f}",
            f"{r['rx_frames_per_dpc']:.1f}",
            f"{r['rx_more_pending']:,}",
        )
    console.print(t)


def _numeric(values: list[str]) -> list[float] | None:
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def plot(data: dict[str, Any], path: str | Path) -> Path:
    """Frame rates (and loss) against the swept value."""
    plt = pyplot()
    key = data["sweep"]["key"]
    table = data["table"]
    labels = [str(r["value"]) for r in table]
    xs = _numeric(labels)
    categorical = xs is None
    x: list[float] = list(range(len(labels))) if xs is None else xs
    from matplotlib.ticker import StrMethodFormatter

    fig, ax = plt.subplots(figsize=PLOT_SIZE, dpi=PLOT_DPI, layout="constrained")
    for name, color in (("tx_pps", "tab:blue"), ("rx_pps", "tab:orange")):
        ys = [r[name] for r in table]
        if any(ys):
            ax.plot(
                x, ys, marker="o", color=color, label=name.replace("_pps", "").upper() + " frames/s"
            )
    if xs and min(xs) > 0 and max(xs) >= LOG_SCALE_SPAN * min(xs):
        ax.set_xscale("log", base=2)
    ax.set_xticks(x)
    ax.set_xticklabels(labels)
    if categorical:
        ax.set_xlim(-0.5, len(labels) - 0.5)
    ax.set_xlabel(key)
    ax.set_ylabel("frames/s")
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.grid(alpha=0.3)
    losses = [r["loss_pct"] for r in table]
    if any(v is not None for v in losses):
        ax2 = ax.twinx()
        ax2.plot(
            x,
            [v or 0.0 for v in losses],
            color="tab:red",
            linestyle="--",
            marker="x",
            label="loss %",
        )
        ax2.set_ylabel("loss %")
        ax2.set_ylim(bottom=0)
        ax2.legend(loc="lower right", fontsize="small")
    ax.legend(loc="lower left", fontsize="small")
    first = data["runs"][0] if data["runs"] else None
    best = max(table, key=lambda r: r["rx_pps"] or r["tx_pps"]) if table else None
    best_text = ""
    if best:
        best_text = (
            f"best: {key} {best['value']}, RX {best['rx_pps']:,.0f} fps, "
            f"TX {best['tx_pps']:,.0f} fps"
        )
    ax.set_title(
        f"hwnic bench {data['settings']['mode']} sweep over {key}: "
        f"{port_label(first) if first else ''}\n"
        f"{settings_line(data['settings'])} ({key} swept); {where(data)}\n{best_text}",
        fontsize="medium",
    )
    return save_figure(fig, path)
