"""hwnic against the Linux kernel driver, on the same two emulated NICs of one hub.

Run inside the lab (not part of tools/test.sh):
    mkdir -p results; hwnic lab run --rwdir "$PWD/results" \\
        --nic e1000 --nic e1000 --nic e1000e --nic e1000e --nic igb --nic igb \\
        -- python tools/compare_kernel.py --runs 5 --json results/compare.json

For each model with two ports on one hub (A sends, B receives), four modes:
  hwnic  -> hwnic   ``hwnic.bench`` loopback (the ``hwnic bench loopback`` code)
  kernel -> hwnic   pktgen on A's kernel netdev; hwnic counts on B
  hwnic  -> kernel  ``hwnic.bench`` tx on A; B's kernel counters (rx_packets)
  kernel -> kernel  pktgen on A; B's kernel counters
Each mode sends ``--count`` 64-byte frames as fast as the sender can, ``--runs``
times; the table has medians of the sender's rate, the rate at which frames
arrived (received / sending time) and the loss. Ports move between vfio-pci
and their kernel driver and are all
back on vfio-pci at the end, also after an error or Ctrl-C (``hwnic.lab.kernel``
does the moving and runs pktgen).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import hwnic
from hwnic.bench.options import BenchSettings, parse_sizes
from hwnic.bench.report import machine
from hwnic.bench.runner import Bench, RxCounter
from hwnic.lab.guest import lab_pairs
from hwnic.lab.kernel import mac_of, pktgen, rx_packets, to_kernel, to_vfio

FRAME_LEN = 64  # bytes on the wire, with FCS
QUIET = 1.0  # s without a new frame after which the receiver has everything
LINK_WAIT = 30.0
MODES = ("hwnic->hwnic", "kernel->hwnic", "hwnic->kernel", "kernel->kernel")


def wait_quiet(read: Any) -> int:
    """Until ``read()`` stops changing for QUIET s; its last value."""
    last, since = read(), time.monotonic()
    while time.monotonic() - since < QUIET:
        time.sleep(QUIET / 10)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
    return int(last)


# -- the four modes ------------------------------------------------------------------


def settings(args: argparse.Namespace, mode: str) -> BenchSettings:
    return BenchSettings(mode=mode, sizes=parse_sizes(str(FRAME_LEN)), count=args.count)


def run_hh(a: str, b: str, args: argparse.Namespace) -> dict[str, float]:
    r = Bench(settings(args, "loopback"), tx=a, rx=b).run()
    return figures(r.tx_frames, r.tx_seconds, r.rx_frames)


def run_kh(a_if: str, b: str, args: argparse.Namespace) -> dict[str, float]:
    count = RxCounter(1)
    with hwnic.open(b, on_receive=count, wait_link=LINK_WAIT) as nic:
        sent, seconds = pktgen(a_if, args.count, nic.mac)
        got = wait_quiet(lambda: count.totals()[0])
    return figures(sent, seconds, got)


def run_hk(a: str, b_if: str, args: argparse.Namespace) -> dict[str, float]:
    before = rx_packets(b_if)
    r = Bench(settings(args, "tx"), tx=a).run()
    got = wait_quiet(lambda: rx_packets(b_if)) - before
    return figures(r.tx_frames, r.tx_seconds, got)


def run_kk(a_if: str, b_if: str, args: argparse.Namespace) -> dict[str, float]:
    before = rx_packets(b_if)
    sent, seconds = pktgen(a_if, args.count, mac_of(b_if))
    got = wait_quiet(lambda: rx_packets(b_if)) - before
    return figures(sent, seconds, got)


def figures(sent: int, seconds: float, received: int) -> dict[str, float]:
    return {
        "tx_frames": sent,
        "tx_seconds": seconds,
        "rx_frames": received,
        "tx_pps": sent / seconds if seconds else 0.0,
        "rx_pps": received / seconds if seconds else 0.0,  # frames that arrived per sending second
        "loss_pct": 100.0 * (sent - received) / sent if sent else 0.0,
    }


def compare(model: str, a: str, b: str, args: argparse.Namespace, out: dict[str, Any]) -> None:
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    out[model] = {"ports": [a, b], "runs": runs}

    def repeat(mode: str, fn: Any, *ports: str) -> None:
        for i in range(args.runs):
            r = fn(*ports, args)
            runs[mode].append(r)
            print(f"compare: {model} {mode} run {i + 1}: {json.dumps(r)}", file=sys.stderr)

    repeat("hwnic->hwnic", run_hh, a, b)
    a_if = to_kernel(a)
    repeat("kernel->hwnic", run_kh, a_if, b)
    b_if = to_kernel(b)
    repeat("kernel->kernel", run_kk, a_if, b_if)
    to_vfio(a)
    repeat("hwnic->kernel", run_hk, a, b_if)
    to_vfio(b)


def medians(out: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for model, data in out.items():
        for mode, runs in data["runs"].items():
            if runs:
                row = {"model": model, "mode": mode, "runs": len(runs)}
                for key in ("tx_pps", "rx_pps", "loss_pct"):
                    row[key] = statistics.median(r[key] for r in runs)
                rows.append(row)
    return rows


def show(rows: list[dict[str, Any]]) -> None:
    table = Table(title=f"hwnic vs kernel driver, {FRAME_LEN}-byte frames (medians)")
    for col in ("model", "sender -> receiver", "runs", "TX fps", "RX fps", "loss %"):
        table.add_column(col, justify="left" if col in ("model", "sender -> receiver") else "right")
    for r in rows:
        table.add_row(r["model"], r["mode"], str(r["runs"]), f"{r['tx_pps']:,.0f}",
                      f"{r['rx_pps']:,.0f}", f"{r['loss_pct']:.1f}")  # fmt: skip
    Console(width=100).print(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per mode (default 3)")
    parser.add_argument("--count", type=int, default=20000, help="frames per run (default 20000)")
    parser.add_argument("--model", action="append", help="only these models (default: all pairs)")
    parser.add_argument("--json", type=Path, help="write every run and the medians here")
    args = parser.parse_args()
    pairs = {m: p for m, p in lab_pairs().items() if not args.model or m in args.model}
    if not pairs:
        raise SystemExit("compare: needs two lab NICs of one model on one hub")
    out: dict[str, Any] = {}
    try:
        for model, (a, b) in sorted(pairs.items()):
            compare(model, a.address, b.address, args, out)
    finally:
        for a, b in pairs.values():
            for bdf in (a.address, b.address):
                to_vfio(bdf)
    rows = medians(out)
    show(rows)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine(), "count": args.count,
                                         "models": out, "medians": rows}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
