#!/usr/bin/env python3
"""Per-call cost of hwnic's MMIO accessors, against a plain mmap read.

Runs on the host over ordinary memory (no device): it measures the Python
and cffi overhead that every register access pays.
    .venv/bin/python tools/bench_mmio.py [--calls N]
"""

from __future__ import annotations

import argparse
import mmap
import struct
import timeit

import numpy as np

from hwnic._vfio import ffi, lib
from hwnic.vfio import Bar

REGISTER = 0x8  # any aligned offset: STATUS on the real NIC
REPEATS = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500_000, help="calls per timing")
    args = parser.parse_args()
    mem = np.zeros(1 << 17, dtype=np.uint8)
    bar = Bar(ffi.cast("void *", mem.ctypes.data), mem.nbytes, index=0)
    mm = mmap.mmap(-1, mem.nbytes)
    unpack = struct.Struct("<I").unpack_from
    raw, base = lib.mmio_read32, ffi.cast("void *", mem.ctypes.data)
    cases = {
        "Bar.read32": lambda: bar.read32(REGISTER),
        "Bar.write32": lambda: bar.write32(REGISTER, 1),
        "lib.mmio_read32 (bare shim)": lambda: raw(base, REGISTER),
        "struct.unpack_from on mmap": lambda: unpack(mm, REGISTER),
    }
    for name, fn in cases.items():
        best = min(timeit.repeat(fn, number=args.calls, repeat=REPEATS)) / args.calls
        print(f"{name:<30} {best * 1e9:7.0f} ns/call")
    mm.close()


if __name__ == "__main__":
    main()
