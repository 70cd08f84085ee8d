#!/usr/bin/env python3
"""Software-path benchmark: the real RX drain and TX post code on rings in memory.

A producer completes RX descriptors the way the NIC writes them back (status
last) and a consumer completes TX descriptors (DD), both vectorised and
outside the timed region; only hwnic's own ring code is timed. Reports Mpps
per core by batch size and frame size, copy and zero-copy.

    .venv/bin/python tools/bench_swpath.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Any

import numpy as np

from hwnic.nic.descriptors import ADVANCED_RX_FORMAT, LEGACY_TX, RxStatus, TxStatus, as_raw
from hwnic.nic.ring import RxRing, TxRing

RING = 1024
BUF = 2048
POOL_IOVA = 1 << 32
BATCHES = (1, 4, 16, 64, 256)
SIZES = (64, 512, 1514)
TX_STATUS_BYTE = 12


def _complete_rx(ring: RxRing, count: int, length: int) -> None:
    """Write back ``count`` descriptors from next_to_clean, as the NIC would."""
    fmt = ring.fmt
    raw = ring.raw
    idx = (ring.next_to_clean + np.arange(count)) % ring.size
    raw[idx, fmt.length_offset] = length & 0xFF
    raw[idx, fmt.length_offset + 1] = length >> 8
    raw[idx, fmt.status_offset] = RxStatus.DD | RxStatus.EOP  # DD last


def bench_rx(batch: int, length: int, zero_copy: bool, seconds: float) -> float:
    descs = np.zeros(RING, ADVANCED_RX_FORMAT.read_dtype)
    pool = np.zeros((RING * (2 if zero_copy else 1), BUF), np.uint8)
    ring = RxRing(
        ADVANCED_RX_FORMAT,
        descs,
        0,
        pool,
        POOL_IOVA,
        write_tail=lambda v: None,
        zero_copy=zero_copy,
    )
    ring.replenish()
    frames = 0
    spent = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        _complete_rx(ring, batch, length)
        t0 = time.perf_counter()
        out = ring.drain(batch)
        out.release()
        spent += time.perf_counter() - t0
        frames += out.count
    return frames / spent / 1e6


def bench_tx(batch: int, length: int, seconds: float) -> float:
    descs = np.zeros(RING, LEGACY_TX)
    ring = TxRing(descs, 0, np.zeros((RING, BUF), np.uint8), POOL_IOVA, write_tail=lambda v: None)
    frames = np.zeros((batch, length), np.uint8)
    lengths = np.full(batch, length)
    raw = as_raw(descs)
    posted = 0
    spent = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        n = ring.post(frames, lengths)
        spent += time.perf_counter() - t0
        idx = (ring.next_to_clean + np.arange(ring.in_flight)) % ring.size
        raw[idx, TX_STATUS_BYTE] |= np.uint8(TxStatus.DD)  # the NIC finished them
        t0 = time.perf_counter()
        ring.reclaim()
        spent += time.perf_counter() - t0
        posted += n
    return posted / spent / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="0.2 s per case instead of 1 s")
    parser.add_argument("--json", metavar="FILE", help="write every figure to FILE")
    args = parser.parse_args()
    seconds = 0.2 if args.quick else 1.0
    results: list[dict[str, Any]] = []
    print(f"{'path':<14} {'size':>5} " + " ".join(f"{'b=' + str(b):>8}" for b in BATCHES))
    for path in ("rx copy", "rx zero-copy", "tx"):
        for size in SIZES:
            row = []
            for batch in BATCHES:
                if path == "tx":
                    mpps = bench_tx(batch, size, seconds)
                else:
                    mpps = bench_rx(batch, size, path == "rx zero-copy", seconds)
                row.append(mpps)
                results.append({"path": path, "size": size, "batch": batch, "mpps": mpps})
            print(f"{path:<14} {size:>5} " + " ".join(f"{m:8.2f}" for m in row))
    if args.json:
        meta = {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "numpy": np.__version__,
            "ring": RING,
        }
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
