#!/usr/bin/env python3
"""Replay timing of ``hwnic send`` on a lab port: how close departures come to the schedule.

Writes two 2,000-frame captures (60-byte frames 100 µs apart, and 1 ms apart)
and replays each on the first port of a ``--model`` pair with the timing
modes of ``hwnic send`` (the capture's gaps, ``--multiplier 10``, ``--pps
20000``, ``--topspeed``), through the same Replayer the command uses. The
peer port receives. Prints one Markdown row per run: departure error
(|departure - wanted|, µs) p50/p99/max and achieved against wanted rate.
``--spins`` adds rows of the capture-timed mode with other spin lengths (the
part of a wait spent reading the clock instead of sleeping).

    hwnic lab run --nic igb --nic igb -- python tools/bench_replay.py [--spins 0,1000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import hwnic
from hwnic import capture, traffic
from hwnic.bench import replay
from hwnic.bench.replay import CAPTURE, NS_PER_US, PPS, TOPSPEED, Replayer, Timing
from hwnic.cli.bench import lab_pair

FRAMES = 2000
LENGTH = 60
GAPS_US = (100, 1000)
T0_NS = 1_700_000_000_000_000_000
MODES = [
    ("capture timing", Timing(CAPTURE)),
    ("--multiplier 10", Timing(CAPTURE, multiplier=10.0)),
    ("--pps 20000", Timing(PPS, rate=20_000.0)),
    ("--topspeed", Timing(TOPSPEED)),
]


def _file(directory: Path, gap_us: int, mac: str) -> capture.Frames:
    path = directory / f"gap{gap_us}.pcap"
    lengths = np.full(FRAMES, LENGTH)
    frames = traffic.build(np.arange(FRAMES), lengths, mac, "ff:ff:ff:ff:ff:ff")
    with capture.CaptureWriter(path) as w:
        w.write(frames, lengths, T0_NS + np.arange(FRAMES) * gap_us * NS_PER_US)
    return capture.read(path)


def _row(label: str, gap_us: int, spin_us: int, r: replay.Report) -> dict[str, Any]:
    d = r.to_dict()
    return {**d, "file": f"{gap_us} µs gaps", "label": label, "spin_us": spin_us}


def _fmt(row: dict[str, Any]) -> str:
    err = row["error_us"] or {}
    cell = (lambda k: f"{err[k]:,.0f}") if err else (lambda k: "-")
    want = f"{row['wanted_pps']:,.0f}" if row["wanted_pps"] else "-"
    return (
        f"| {row['file']} | {row['label']} | {row['spin_us']} | {cell('p50')} | {cell('p99')} "
        f"| {cell('max')} | {want} | {row['achieved_pps']:,.0f} | {row['sends']:,} |"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="igb")
    ap.add_argument("--spins", default="", help="extra spin lengths (µs), comma-separated")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    spins = [int(s) for s in args.spins.split(",") if s]
    a, b = lab_pair(args.model)
    rows: list[dict[str, Any]] = []
    print(
        "| file | mode | spin µs | p50 µs | p99 µs | max µs | wanted fps | achieved fps | sends |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp, hwnic.open(b) as peer, hwnic.open(a) as nic:
        for gap in GAPS_US:
            data = _file(Path(tmp), gap, nic.mac)
            runs = [(label, t, replay.SPIN_NS // NS_PER_US) for label, t in MODES]
            runs += [("capture timing", Timing(CAPTURE), s) for s in spins]
            for label, timing, spin_us in runs:
                r = Replayer(
                    nic, data.frames, data.lengths, data.ts_ns, timing,
                    batch=512, spin_ns=spin_us * NS_PER_US,
                ).run()  # fmt: skip
                nic.flush(5.0)
                while (batch := peer.receive(timeout=0.2)) is not None:
                    batch.release()  # keep the peer's ring free
                rows.append(_row(label, gap, spin_us, r))
                print(_fmt(rows[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
