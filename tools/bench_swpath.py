#!/usr/bin/env python3
"""Software-path benchmark: the real RX drain and TX post code on rings in memory.

A producer completes RX descriptors the way the NIC writes them back (status
last) and a consumer completes TX descriptors (DD), both vectorised and
outside the timed region; only hwnic's own ring code is timed. Reports Mpps
per core by batch size and frame size, copy and zero-copy.

What one timed RX batch includes: ``RxRing.drain`` (status scan, DD/EOP,
error bits, lengths within the buffer, the copy out or the zero-copy slots,
re-arming the consumed descriptors with fresh buffers, the tail write, the
batch object, counters, more-pending) and ``RxBatch.release`` (zero-copy
buffers back to the pool). One TX batch: ``TxRing.post`` (copy into the TX
buffers, descriptors, tail write) and ``TxRing.reclaim``.

``--versus`` puts hwnic's RX drain next to a minimal drain timed the same
way on the same ring and producer: it finds the completed run, checks lengths
and error bytes, copies each frame's first 64 bytes into a preallocated array
and clears the status bytes, and nothing else (no EOP, no wrap-around, no
re-arming, no batch object). The ratio is hwnic's rate over the minimal one.

    .venv/bin/python tools/bench_swpath.py [--quick] [--json FILE]
    .venv/bin/python tools/bench_swpath.py --paths "rx copy,rx zero-copy" --sizes 64
    .venv/bin/python tools/bench_swpath.py --versus [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from hwnic.nic.descriptors import ADVANCED_RX_FORMAT, LEGACY_TX, RxStatus, TxStatus, as_raw
from hwnic.nic.rx_ring import RxRing
from hwnic.nic.tx_ring import TxRing

RING = 1024
BUF = 2048
POOL_IOVA = 1 << 32
BATCHES = (1, 4, 16, 64, 256)
SIZES = (64, 512, 1514)
PATHS = ("rx copy", "rx zero-copy", "tx")
TX_STATUS_BYTE = 12
BYTE_MASK = 0xFF
BITS_PER_BYTE = 8
VERSUS_SIZE = 64  # frame size of the side-by-side comparison
VERSUS_BATCHES = (64, 256)
MINIMAL_COPY_BYTES = 64  # the minimal drain copies this much of every frame


def _complete(raw: np.ndarray, start: int, count: int, length: int) -> None:
    """Write back ``count`` advanced RX descriptors from ``start``, as the NIC would."""
    fmt = ADVANCED_RX_FORMAT
    idx = (start + np.arange(count)) % len(raw)
    raw[idx, fmt.length_offset] = length & BYTE_MASK
    raw[idx, fmt.length_offset + 1] = length >> BITS_PER_BYTE
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
        _complete(ring.raw, ring.next_to_clean, batch, length)
        t0 = time.perf_counter()
        out = ring.drain(batch)
        out.release()
        spent += time.perf_counter() - t0
        frames += out.count
    return frames / spent / 1e6


def bench_minimal(batch: int, length: int, seconds: float) -> float:
    """The minimal drain (see the module's docstring), timed like :func:`bench_rx`."""
    fmt = ADVANCED_RX_FORMAT
    raw = as_raw(np.zeros(RING, fmt.read_dtype))
    status = raw[:, fmt.status_offset]
    errors = raw[:, fmt.error_offset]
    lengths = raw[:, fmt.length_offset : fmt.length_offset + 2].view("<u2")[:, 0]
    pool = np.zeros((RING, BUF), np.uint8)
    out = np.empty((RING, MINIMAL_COPY_BYTES), np.uint8)
    dd = np.uint8(RxStatus.DD)
    head = 0
    frames = 0
    spent = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        _complete(raw, head, batch, length)
        t0 = time.perf_counter()
        window = min(batch, RING - head)
        done = (status[head : head + window] & dd) != 0
        n = window if done.all() else int(done.argmin())
        if n:
            got = lengths[head : head + n].copy()
            _bad = bool((got > BUF).any()) or bool(errors[head : head + n].any())
            out[:n] = pool[head : head + n, :MINIMAL_COPY_BYTES]
            status[head : head + n] = 0
            head = (head + n) % RING
        spent += time.perf_counter() - t0
        frames += n
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


def table(
    seconds: float, paths: list[str], sizes: list[int], results: list[dict[str, Any]]
) -> None:
    """Mpps of every path and frame size by batch size."""
    print(f"{'path':<14} {'size':>5} " + " ".join(f"{'b=' + str(b):>8}" for b in BATCHES))
    for path in paths:
        for size in sizes:
            row = []
            for batch in BATCHES:
                if path == "tx":
                    mpps = bench_tx(batch, size, seconds)
                else:
                    mpps = bench_rx(batch, size, path == "rx zero-copy", seconds)
                row.append(mpps)
                results.append({"path": path, "size": size, "batch": batch, "mpps": mpps})
            print(f"{path:<14} {size:>5} " + " ".join(f"{m:8.2f}" for m in row))


def versus(seconds: float, runs: int, results: list[dict[str, Any]]) -> None:
    """hwnic's RX drain next to the minimal drain: medians of ``runs``, interleaved."""
    paths: dict[str, Callable[[int], float]] = {
        "minimal": lambda b: bench_minimal(b, VERSUS_SIZE, seconds),
        "rx copy": lambda b: bench_rx(b, VERSUS_SIZE, False, seconds),
        "rx zero-copy": lambda b: bench_rx(b, VERSUS_SIZE, True, seconds),
    }
    print(f"{VERSUS_SIZE}-byte frames, Mpps, medians of {runs} (ratio: hwnic / minimal)")
    print(f"{'batch':>5} {'minimal':>8} {'rx copy':>8} {'ratio':>6} {'zero-copy':>9} {'ratio':>6}")
    for batch in VERSUS_BATCHES:
        got: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(runs):  # interleaved, so a busy moment hits every path alike
            for name, run in paths.items():
                got[name].append(run(batch))
        med = {name: statistics.median(v) for name, v in got.items()}
        base = med["minimal"]
        for name, values in got.items():
            results.append(
                {
                    "path": name,
                    "size": VERSUS_SIZE,
                    "batch": batch,
                    "mpps": med[name],
                    "runs": values,
                }
            )
        print(
            f"{batch:>5} {base:8.2f} {med['rx copy']:8.2f} {med['rx copy'] / base:6.2f}"
            f" {med['rx zero-copy']:9.2f} {med['rx zero-copy'] / base:6.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="0.2 s per case instead of 1 s")
    parser.add_argument("--json", metavar="FILE", help="write every figure to FILE")
    parser.add_argument(
        "--versus", action="store_true", help="RX at 64 bytes next to a minimal drain, ratios"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per case for --versus")
    parser.add_argument(
        "--paths", default=",".join(PATHS), help=f"comma-separated, of {', '.join(PATHS)}"
    )
    parser.add_argument(
        "--sizes", default=",".join(map(str, SIZES)), help="frame sizes, comma-separated"
    )
    args = parser.parse_args()
    paths = args.paths.split(",")
    if not set(paths) <= set(PATHS):
        parser.error(f"--paths: choose from {', '.join(PATHS)}")
    sizes = [int(size) for size in args.sizes.split(",")]
    seconds = 0.2 if args.quick else 1.0
    results: list[dict[str, Any]] = []
    if args.versus:
        versus(seconds, args.runs, results)
    else:
        table(seconds, paths, sizes, results)
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
