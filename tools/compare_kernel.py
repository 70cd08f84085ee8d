"""hwnic against the Linux kernel driver, on the same two emulated NICs of one hub.

Run inside the lab (not part of tools/test.sh):
    hwnic lab run --nic e1000 --nic e1000 --nic e1000e --nic e1000e --nic igb --nic igb \\
        -- python tools/compare_kernel.py --runs 3 --count 20000 --json results/compare.json

For each model with two ports on one hub (A sends, B receives), four modes:
  hwnic  -> hwnic   ``hwnic.bench`` loopback (the ``hwnic bench loopback`` code)
  kernel -> hwnic   pktgen on A's kernel netdev; hwnic counts on B
  hwnic  -> kernel  ``hwnic.bench`` tx on A; B's kernel counters (rx_packets)
  kernel -> kernel  pktgen on A; B's kernel counters
Each mode sends ``--count`` 64-byte frames as fast as the sender can, ``--runs``
times; the table has medians of the sender's rate, the rate at which frames
arrived (received / sending time) and the loss. Ports move between vfio-pci
and their kernel driver with ``hwnic.pci`` (unbind_vfio / bind_vfio) and are all
back on vfio-pci at the end, also after an error or Ctrl-C. The kernel netdevs
are brought up promiscuous, without addresses and with IPv6 off, so they send
nothing of their own.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import hwnic
from hwnic import pci
from hwnic.bench.options import BenchSettings, parse_sizes
from hwnic.bench.report import machine
from hwnic.bench.runner import Bench, RxCounter
from hwnic.lab.guest import lab_pairs

PKTGEN = Path("/proc/net/pktgen")
FRAME_LEN = 64  # on the wire with FCS; pktgen's pkt_size and hwnic's lengths exclude it
FCS_LEN = 4
CARRIER_TIMEOUT = 30.0  # s for a kernel netdev to appear and see carrier (TCG)
QUIET = 1.0  # s without a new frame after which the receiver has everything
LINK_WAIT = 30.0
MODES = ("hwnic->hwnic", "kernel->hwnic", "hwnic->kernel", "kernel->kernel")
SYSFS_NET = "/sys/class/net/{}/statistics/{}"
PKTGEN_RESULT = re.compile(r"Result: OK: (\d+)\(c\d+\+d\d+\) usec, (\d+) \(")


def sh(*cmd: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"compare: {' '.join(cmd)}: {proc.stderr.strip()}")


# -- ports on their kernel driver ----------------------------------------------------


def to_kernel(bdf: str) -> str:
    """Give ``bdf`` to its kernel driver; bring its netdev up quietly; return its name."""
    pci.unbind_vfio(bdf)
    net = Path(f"/sys/bus/pci/devices/{bdf}/net")
    deadline = time.monotonic() + CARRIER_TIMEOUT
    while not (net.exists() and any(net.iterdir())):
        if time.monotonic() > deadline:
            driver = pci.describe(bdf).driver
            raise SystemExit(f"compare: {bdf} has no kernel netdev (driver {driver})")
        time.sleep(0.1)
    sh("udevadm", "settle")  # udev renames eth0 (to enpNs0): take the final name
    ifname = next(net.iterdir()).name
    Path(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6").write_text("1\n")
    sh("ip", "link", "set", ifname, "promisc", "on", "up")
    carrier = Path(f"/sys/class/net/{ifname}/carrier")
    while carrier.read_text().strip() != "1":
        if time.monotonic() > deadline:
            raise SystemExit(f"compare: {ifname} ({bdf}) has no carrier")
        time.sleep(0.1)
    return ifname


def to_vfio(bdf: str) -> None:
    if pci.describe(bdf).driver != "vfio-pci":
        pci.bind_vfio(bdf)


def counter(ifname: str, name: str) -> int:
    return int(Path(SYSFS_NET.format(ifname, name)).read_text())


def wait_quiet(read: Any) -> int:
    """Until ``read()`` stops changing for QUIET s; its last value."""
    last, since = read(), time.monotonic()
    while time.monotonic() - since < QUIET:
        time.sleep(QUIET / 10)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
    return int(last)


def pktgen(ifname: str, count: int, dst_mac: str) -> tuple[int, float]:
    """Send ``count`` 64-byte frames from ``ifname``; (frames sent, seconds) as pktgen says."""
    sh("modprobe", "pktgen")
    thread = PKTGEN / "kpktgend_0"
    thread.write_text("rem_device_all\n")
    thread.write_text(f"add_device {ifname}\n")
    dev = PKTGEN / ifname
    for line in (f"count {count}", f"pkt_size {FRAME_LEN - FCS_LEN}", "delay 0",
                 f"dst_mac {dst_mac}", "dst 10.255.0.2", "clone_skb 0", "burst 1"):  # fmt: skip
        dev.write_text(line + "\n")
    (PKTGEN / "pgctrl").write_text("start\n")  # returns when all were sent
    text = dev.read_text()
    thread.write_text("rem_device_all\n")
    m = PKTGEN_RESULT.search(text)
    if not m:
        raise SystemExit(f"compare: no pktgen result for {ifname}:\n{text}")
    return int(m.group(2)), int(m.group(1)) / 1e6


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
    before = counter(b_if, "rx_packets")
    r = Bench(settings(args, "tx"), tx=a).run()
    got = wait_quiet(lambda: counter(b_if, "rx_packets")) - before
    return figures(r.tx_frames, r.tx_seconds, got)


def run_kk(a_if: str, b_if: str, args: argparse.Namespace) -> dict[str, float]:
    before = counter(b_if, "rx_packets")
    mac = Path(f"/sys/class/net/{b_if}/address").read_text().strip()
    sent, seconds = pktgen(a_if, args.count, mac)
    got = wait_quiet(lambda: counter(b_if, "rx_packets")) - before
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
