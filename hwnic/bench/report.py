"""Results: the headline figures, the JSON file, the printed summary and the plot.

Everything downstream of a run works on the JSON-ready dict that
:func:`to_dict` makes, so a plot can be redrawn from a saved file.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import hwnic
from hwnic.bench.runner import BenchResult, mbps, rate

NS_PER_US = 1000.0
PERCENT = 100.0
HW_COUNTERS = ("gprc", "gptc", "gorc", "gotc", "mpc", "rnbc", "crcerrs", "algnerrc")
PLOT_SIZE = (13.0, 8.5)  # inches
PLOT_DPI = 110
US_LABEL_DECIMALS_BELOW = 10  # µs: smaller bucket bounds keep their decimals
ROLES = ("tx", "rx")
WIDE_CONSOLE = 120  # columns for the summary when stdout is not a terminal
TX_COLOR, RX_COLOR = "tab:blue", "tab:orange"


def machine() -> dict[str, Any]:
    """Where the figures were measured."""
    cpu = platform.processor() or platform.machine()
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                cpu = text.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "hostname": socket.gethostname(),
        "kernel": platform.release(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "in_lab": os.environ.get("HWNIC_LAB") == "1",
        "hwnic": hwnic.__version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _irq_summary(stats: dict[str, Any], seconds: float) -> dict[str, Any]:
    irq = stats.get("interrupts") or {}
    totals = irq.get("totals", {})
    per_dpc = irq.get("indicated_per_dpc", {})
    latency = irq.get("isr_to_dpc_ns", {})
    interrupts = int(totals.get("interrupts", 0))
    indicated = int(totals.get("indicated", 0))
    return {
        "interrupt_type": irq.get("granted_type"),
        "interrupts": interrupts,
        "interrupts_per_s": rate(interrupts, seconds),
        "dpc_runs": int(totals.get("dpc_runs", 0)),
        "more_pending": int(totals.get("more_pending", 0)),
        "time_cutoffs": int(totals.get("time_cutoffs", 0)),
        "indicated": indicated,
        "frames_per_interrupt": indicated / interrupts if interrupts else 0.0,
        "indicated_per_dpc_mean": float(per_dpc.get("mean", 0.0)),
        "indicated_per_dpc_p50": float(per_dpc.get("p50", 0.0)),
        "indicated_per_dpc_p99": float(per_dpc.get("p99", 0.0)),
        "isr_to_dpc_us_p50": float(latency.get("p50", 0.0)) / NS_PER_US,
        "isr_to_dpc_us_p99": float(latency.get("p99", 0.0)) / NS_PER_US,
    }


def summary(r: BenchResult) -> dict[str, Any]:
    """The headline figures of one run."""
    wall = r.samples[-1].t if r.samples else 0.0
    loss = r.loss
    roles = [role for role in ROLES if role in r.stats]
    # Interrupt rates over the time each port was busy (not the settling tail).
    seconds = {"tx": r.tx_seconds or wall, "rx": r.rx_seconds or wall}
    out: dict[str, Any] = {
        "interrupted": r.interrupted,
        "wall_seconds": wall,
        "tx_frames": r.tx_frames,
        "tx_bytes": r.tx_bytes,
        "tx_seconds": r.tx_seconds,
        "tx_pps": rate(r.tx_frames, r.tx_seconds),
        "tx_mbps": mbps(r.tx_bytes, r.tx_seconds),
        "tx_calls": r.tx_calls,
        "tx_stalls": r.tx_stalls,
        "tx_window_stalls": r.tx_window_stalls,
        "frames_per_send": r.tx_frames / r.tx_calls if r.tx_calls else 0.0,
        "rx_frames": r.rx_frames,
        "rx_bytes": r.rx_bytes,
        "rx_seconds": r.rx_seconds,
        "rx_pps": rate(r.rx_frames, r.rx_seconds),
        "rx_mbps": mbps(r.rx_bytes, r.rx_seconds),
        "rx_bad": r.rx_bad,
        "loss": loss,
        "loss_pct": PERCENT * loss / r.tx_frames if loss is not None and r.tx_frames else None,
        "irq": {role: _irq_summary(r.stats[role], seconds[role]) for role in roles},
        "hw": {
            role: {k: v for k, v in r.stats[role].get("hw", {}).items() if k in HW_COUNTERS}
            for role in roles
        },
    }
    return out


def to_dict(r: BenchResult, argv: list[str] | None = None) -> dict[str, Any]:
    """Everything about a run, JSON-ready: settings, machine, ports, figures, samples, stats."""
    return {
        "kind": "hwnic-bench",
        "command": argv if argv is not None else sys.argv,
        "settings": r.settings.to_dict(),
        "machine": machine(),
        "ports": r.ports,
        "summary": summary(r),
        "samples": [s.to_dict() for s in r.samples],
        "stats": r.stats,
    }


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    path = Path(path)
    if path.parent != Path():
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def port_label(data: dict[str, Any]) -> str:
    ports = {p["role"]: p for p in data.get("ports", [])}
    first = next(iter(ports.values()), None)
    if first is None:
        return "no port"
    route = " → ".join(ports[r]["bdf"] for r in ("tx", "rx") if r in ports)
    irq = "/".join(sorted({str(p["interrupt_type"]) for p in ports.values()}))
    return f"{first['model']} ({first['family']}), {route}, {irq}"


def headline(data: dict[str, Any]) -> str:
    s = data["summary"]
    parts = []
    if s["tx_frames"]:
        parts.append(f"TX {s['tx_pps']:,.0f} fps ({s['tx_mbps']:,.1f} Mbit/s)")
    if "rx" in s["irq"]:
        parts.append(f"RX {s['rx_pps']:,.0f} fps ({s['rx_mbps']:,.1f} Mbit/s)")
        parts.append(f"{s['irq']['rx']['interrupts_per_s']:,.0f} RX irq/s")
    if s["loss"] is not None:
        parts.append(f"loss {s['loss']:,} ({s['loss_pct'] or 0.0:.2f} %)")
    if s["interrupted"]:
        parts.append("INTERRUPTED")
    return ", ".join(parts)


def wide_console() -> Console:
    """A console for summaries: the terminal's width, or wide enough in logs and pipes."""
    return Console(width=None if sys.stdout.isatty() else WIDE_CONSOLE)


def print_summary(data: dict[str, Any], console: Console | None = None) -> None:
    """The end-of-run table: one column per port, then loss."""
    console = console or wide_console()
    s = data["summary"]
    settings = data["settings"]
    console.print(f"hwnic bench {settings['mode']}: {port_label(data)}")
    t = Table()
    t.add_column("")
    roles = list(s["irq"])
    for role in roles:
        t.add_column(f"{role.upper()} port", justify="right")

    def row(name: str, values: dict[str, str]) -> None:
        t.add_row(name, *[values.get(r, "") for r in roles])

    row("frames", {"tx": f"{s['tx_frames']:,}", "rx": f"{s['rx_frames']:,}"})
    row("seconds", {"tx": f"{s['tx_seconds']:.2f}", "rx": f"{s['rx_seconds']:.2f}"})
    row("frames/s", {"tx": f"{s['tx_pps']:,.0f}", "rx": f"{s['rx_pps']:,.0f}"})
    row("Mbit/s", {"tx": f"{s['tx_mbps']:,.1f}", "rx": f"{s['rx_mbps']:,.1f}"})
    irq = s["irq"]
    row("interrupt type", {r: str(irq[r]["interrupt_type"]) for r in roles})
    row("interrupts", {r: f"{irq[r]['interrupts']:,}" for r in roles})
    row("interrupts/s", {r: f"{irq[r]['interrupts_per_s']:,.0f}" for r in roles})
    row("DPC runs", {r: f"{irq[r]['dpc_runs']:,}" for r in roles})
    row("budget used up", {r: f"{irq[r]['more_pending']:,}" for r in roles})
    row("time cut-offs", {r: f"{irq[r]['time_cutoffs']:,}" for r in roles})
    row(
        "frames per DPC (mean/p99)",
        {
            r: f"{irq[r]['indicated_per_dpc_mean']:.1f} / {irq[r]['indicated_per_dpc_p99']:.0f}"
            for r in roles
        },
    )
    row(
        "ISR→DPC µs (p50/p99)",
        {
            r: f"{irq[r]['isr_to_dpc_us_p50']:.0f} / {irq[r]['isr_to_dpc_us_p99']:.0f}"
            for r in roles
        },
    )
    row("send() calls, stalls", {"tx": f"{s['tx_calls']:,}, {s['tx_stalls']:,}"})
    console.print(t)
    console.print(f"settings: {settings_line(settings)}")
    console.print(f"result:   {headline(data)}")


def settings_line(settings: dict[str, Any]) -> str:
    itr = settings["itr_us"]
    rate_ = settings["rate"]
    return ", ".join(
        [
            f"size {settings['sizes']['label']}",
            f"batch {settings['batch']}",
            f"budget {settings['budget']}",
            f"queues {settings['queues']}",
            f"irq {settings['interrupt'] or 'auto'}",
            f"ITR {'default' if itr is None else f'{itr:g} µs'}",
            f"rate {'max' if rate_ is None else f'{rate_:,.0f}/s'}",
            f"ring {settings['ring_size']}",
            *_window_part(settings),
        ]
    )


def _window_part(settings: dict[str, Any]) -> list[str]:
    if settings.get("mode") != "loopback" or "in_flight_limit" not in settings:
        return []  # not a loopback run, or saved before the window existed
    limit = settings["in_flight_limit"]
    return ["open loop" if limit is None else f"window {limit}"]


# -- plots ---------------------------------------------------------------------------------


def _series(samples: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """Rate of counter ``key`` between consecutive samples, at each interval's end."""
    t, v = [], []
    for a, b in itertools.pairwise(samples):
        dt = b["t"] - a["t"]
        if dt > 0:
            t.append(b["t"])
            v.append((b[key] - a[key]) / dt)
    return t, v


def _buckets(hist: dict[str, Any]) -> tuple[list[int], list[int]]:
    """(lower bound, count) of a Log2Histogram dict's non-empty buckets."""
    items = sorted((int(k.split("-")[0]), int(c)) for k, c in hist.get("buckets", {}).items())
    return [lo for lo, _ in items], [c for _, c in items]


def _bucket_label(lo: int) -> str:
    if lo <= 1:
        return str(lo)
    return f"{lo}-{2 * lo - 1}"


def _us_label(lo_ns: int) -> str:
    """A log2 bucket of nanoseconds as a range of µs, e.g. 16-33."""
    lo, hi = lo_ns / NS_PER_US, (2 * lo_ns - 1) / NS_PER_US if lo_ns else 0.0
    return f"{lo:.3g}-{hi:.3g}" if lo < US_LABEL_DECIMALS_BELOW else f"{lo:,.0f}-{hi:,.0f}"


def prepare_matplotlib() -> None:
    """Point matplotlib at a writable config dir seeded with the user's font cache.

    In the QEMU lab the home directory is read-only: matplotlib would rebuild
    its font cache on every run, which takes long under TCG.
    """
    if "MPLCONFIGDIR" in os.environ:
        return
    config = Path.home() / ".config" / "matplotlib"
    if os.access(config if config.exists() else config.parent, os.W_OK):
        return
    tmp = Path(tempfile.mkdtemp(prefix="hwnic-matplotlib-"))
    for cache in (Path.home() / ".cache" / "matplotlib").glob("fontlist-*.json"):
        shutil.copy(cache, tmp)
    os.environ["MPLCONFIGDIR"] = str(tmp)


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display), config dir prepared."""
    prepare_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def where(data: dict[str, Any]) -> str:
    """Where a result was measured, for plot titles: the lab or the host, and CPUs."""
    m = data.get("machine", {})
    place = "QEMU lab (TCG)" if m.get("in_lab") else m.get("hostname", "")
    return f"{place}, {m.get('cpus', '?')} CPUs"


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` as PNG (making the directory) and close it."""
    plt = pyplot()
    path = Path(path)
    if path.parent != Path():
        path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot(data: dict[str, Any], path: str | Path) -> Path:
    """Rate over time, frames per DPC, ISR-to-DPC latency; the title says what and how much."""
    plt = pyplot()
    from matplotlib.ticker import StrMethodFormatter

    fig = plt.figure(figsize=PLOT_SIZE, dpi=PLOT_DPI, layout="constrained")
    grid = fig.add_gridspec(2, 2, height_ratios=[1.1, 1.0])
    ax_rate = fig.add_subplot(grid[0, :])
    ax_dpc = fig.add_subplot(grid[1, 0])
    ax_lat = fig.add_subplot(grid[1, 1])
    samples = data["samples"]
    s = data["summary"]
    roles = list(s["irq"])
    for role, color in (("tx", TX_COLOR), ("rx", RX_COLOR)):
        if role not in roles:
            continue
        t, v = _series(samples, f"{role}_frames")
        ax_rate.plot(t, v, label=f"{role.upper()} frames/s", color=color, marker=".")
        ax_rate.axhline(
            s[f"{role}_pps"],
            color=color,
            linestyle=":",
            linewidth=1,
            label=f"{role.upper()} mean {s[f'{role}_pps']:,.0f}",
        )
    if s["tx_frames"] and s["rx_frames"]:
        ax_rate.axvline(s["tx_seconds"], color="grey", linestyle="--", linewidth=1)
        ax_rate.annotate(
            " sending ended",
            (s["tx_seconds"], 0),
            xycoords=("data", "axes fraction"),
            va="bottom",
            fontsize="small",
            color="grey",
        )
    ax_rate.set_xlabel("seconds since sending started")
    ax_rate.set_ylabel("frames/s")
    ax_rate.set_ylim(bottom=0)
    ax_rate.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax_rate.grid(alpha=0.3)
    ax_rate.legend(loc="lower right", fontsize="small")
    ax_rate.set_title("rate over time (per sample interval)", fontsize="medium")

    width = 0.8 / max(len(roles), 1)
    for ax, key, xlabel, labeler in (
        (ax_dpc, "indicated_per_dpc", "frames indicated per DPC run", _bucket_label),
        (ax_lat, "isr_to_dpc_ns", "ISR → DPC latency, µs", _us_label),
    ):
        all_lows: list[int] = sorted(
            {
                lo
                for role in roles
                for lo in _buckets(data["stats"][role]["interrupts"].get(key, {}))[0]
            }
        )
        index = {lo: i for i, lo in enumerate(all_lows)}
        for k, role in enumerate(roles):
            lows, counts = _buckets(data["stats"][role]["interrupts"].get(key, {}))
            xs = [index[lo] + (k - (len(roles) - 1) / 2) * width for lo in lows]
            color = TX_COLOR if role == "tx" else RX_COLOR
            ax.bar(xs, counts, width=width, color=color, label=f"{role.upper()} port")
        ax.set_xticks(range(len(all_lows)))
        ax.set_xticklabels([labeler(lo) for lo in all_lows], rotation=45, fontsize="small")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("DPC runs" if key == "indicated_per_dpc" else "interrupts")
        ax.grid(alpha=0.3, axis="y")
        if roles:
            ax.legend(fontsize="small")
    rx = s["irq"].get("rx")
    if rx:
        ax_dpc.set_title(
            f"RX: mean {rx['indicated_per_dpc_mean']:.1f} frames/DPC, "
            f"{rx['more_pending']:,} budget used up",
            fontsize="medium",
        )
        ax_lat.set_title(
            f"RX: p50 {rx['isr_to_dpc_us_p50']:,.0f} µs, p99 {rx['isr_to_dpc_us_p99']:,.0f} µs",
            fontsize="medium",
        )
    fig.suptitle(
        f"hwnic bench {data['settings']['mode']}: {port_label(data)}\n"
        f"{settings_line(data['settings'])}; {where(data)}\n"
        f"{headline(data)}",
        fontsize="large",
    )
    return save_figure(fig, path)
