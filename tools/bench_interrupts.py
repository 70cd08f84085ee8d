#!/usr/bin/env python3
"""Benchmark the NDIS interrupt model with software-signalled interrupts.

Closed loop per message: a signaller writes the message's eventfd, the
dispatcher runs the ISR (mine, queue the default DPC), the DPC worker runs the
DPC, the framework re-enables, and the enable handler tells the signaller to
fire again. Reports the dispatch rate (interrupts/s through ISR -> DPC ->
re-enable) and ISR-to-DPC latency percentiles, both measured exactly (raw
samples) and from the framework's log2 histogram.

    PYTHONPATH=. .venv/bin/python tools/bench_interrupts.py --messages 1 --seconds 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from hwnic.ndis import (
    ISR_QUEUE_DEFAULT_DPC,
    EventfdSource,
    InterruptCharacteristics,
    InterruptType,
    IsrResult,
    MiniportAdapter,
    ReceiveThrottleParameters,
    register_interrupt,
)

PERCENTILES = (50.0, 90.0, 99.0, 99.9)
WARMUP_INTERRUPTS = 200
NS_PER_US = 1000.0

# The signaller process: for each (ack, irq) pair, wait for the ack eventfd
# (blocking) and write the irq eventfd. One thread per pair.
_SIGNALLER = r"""
import os, sys, threading
pairs = [tuple(map(int, p.split(":"))) for p in sys.argv[1:]]
def loop(ack, irq):
    while True:
        try:
            os.eventfd_read(ack)
        except OSError:
            return
        os.eventfd_write(irq, 1)
threads = [threading.Thread(target=loop, args=p, daemon=True) for p in pairs]
for t in threads: t.start()
sys.stdin.read()  # run until the parent closes our stdin
"""


class LoopMiniport:
    """ISR stamps the time, DPC records the latency, enable re-arms the signaller."""

    def __init__(self, messages: int, capacity: int) -> None:
        self.t_isr = [0] * messages
        self.samples = np.zeros(capacity, dtype=np.int64)
        self.n = 0
        self.lock = threading.Lock()
        self.acks: list[int] = []
        self.kick = self._kick_thread  # replaced for the process signaller
        self.source: EventfdSource | None = None
        self.thread_wakeups: list[threading.Semaphore] = []

    def message_isr(self, _ctx: Any, message_id: int) -> IsrResult:
        self.t_isr[message_id] = time.perf_counter_ns()
        return ISR_QUEUE_DEFAULT_DPC

    def message_dpc(
        self, _ctx: Any, message_id: int, _dpc_ctx: Any, t: ReceiveThrottleParameters
    ) -> None:
        latency = time.perf_counter_ns() - self.t_isr[message_id]
        with self.lock:
            if self.n < len(self.samples):
                self.samples[self.n] = latency
                self.n += 1
        t.indicated = 1

    def enable_message(self, _ctx: Any, message_id: int) -> None:
        self.kick(message_id)

    def _kick_thread(self, message_id: int) -> None:
        self.thread_wakeups[message_id].release()

    def kick_process(self, message_id: int) -> None:
        os.eventfd_write(self.acks[message_id], 1)

    def noop(self, *_args: Any) -> None:
        pass

    def characteristics(self) -> InterruptCharacteristics:
        return InterruptCharacteristics(
            isr=lambda ctx: self.message_isr(ctx, 0),
            dpc=lambda ctx, d, t: self.message_dpc(ctx, 0, d, t),
            enable=lambda ctx: self.enable_message(ctx, 0),
            disable=self.noop,
            message_isr=self.message_isr,
            message_dpc=self.message_dpc,
            enable_message=self.enable_message,
            disable_message=self.noop,
        )


def run(messages: int, seconds: float, signaller: str, budget: int) -> dict[str, Any]:
    capacity = 2_000_000
    mp = LoopMiniport(messages, capacity)
    source = EventfdSource({InterruptType.MSIX: messages})
    adapter = MiniportAdapter("bench")
    adapter.set_miniport_attributes()
    interrupt = register_interrupt(
        adapter, None, mp.characteristics(), source, messages=messages, budget=budget
    )
    stop = threading.Event()
    helpers: list[threading.Thread] = []
    child: subprocess.Popen[bytes] | None = None
    try:
        if signaller == "process":
            mp.acks = [os.eventfd(0, os.EFD_CLOEXEC) for _ in range(messages)]
            fds = source._fds  # the eventfds the source wired (the "device" side)
            pairs = [f"{a}:{f}" for a, f in zip(mp.acks, fds, strict=True)]
            child = subprocess.Popen(
                [sys.executable, "-c", _SIGNALLER, *pairs],
                stdin=subprocess.PIPE,
                pass_fds=[*mp.acks, *fds],
            )
            mp.kick = mp.kick_process
        else:
            mp.thread_wakeups = [threading.Semaphore(0) for _ in range(messages)]

            def loop(message_id: int) -> None:
                wake = mp.thread_wakeups[message_id]
                while True:
                    wake.acquire()
                    if stop.is_set():
                        return
                    source.fire(message_id)

            helpers = [threading.Thread(target=loop, args=(k,)) for k in range(messages)]
            for h in helpers:
                h.start()
        for k in range(messages):
            mp.kick(k)  # first interrupt of each loop
        # warm up, then measure
        while interrupt.stats.total("reenables") < WARMUP_INTERRUPTS * messages:
            time.sleep(0.01)
        with mp.lock:
            mp.n = 0
        before = interrupt.stats.total("reenables")
        t0 = time.perf_counter()
        time.sleep(seconds)
        after = interrupt.stats.total("reenables")
        elapsed = time.perf_counter() - t0
    finally:
        stop.set()
        for w in mp.thread_wakeups:
            w.release()
        for h in helpers:
            h.join()
        if child is not None:
            assert child.stdin is not None
            child.stdin.close()
            child.wait(30)
        interrupt.deregister()
        for a in mp.acks:
            os.close(a)
    raw = mp.samples[: mp.n] / NS_PER_US
    stats = interrupt.stats
    hist = stats.isr_to_dpc_ns
    return {
        "signaller": signaller,
        "messages": messages,
        "seconds": elapsed,
        "interrupts": after - before,
        "interrupts_per_s": (after - before) / elapsed,
        "isr_to_dpc_us": {f"p{q:g}": float(np.percentile(raw, q)) for q in PERCENTILES}
        if len(raw)
        else {},
        "isr_to_dpc_us_histogram": {f"p{q:g}": hist.percentile(q) / NS_PER_US for q in PERCENTILES},
        "samples": len(raw),
        "errors": [repr(e) for e in interrupt.errors],
        "stats": stats.to_dict()["totals"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, nargs="+", default=[1, 2])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--signaller", choices=("process", "thread"), nargs="+", default=["process"])
    p.add_argument("--budget", type=int, default=64)
    p.add_argument("--json", type=Path, help="write the results to this file")
    args = p.parse_args(argv)
    results = []
    for sig in args.signaller:
        for n in args.messages:
            r = run(n, args.seconds, sig, args.budget)
            results.append(r)
            lat = r["isr_to_dpc_us"]
            print(
                f"{sig:7} signaller, {n} message(s): {r['interrupts_per_s']:>9,.0f} interrupts/s; "
                f"ISR->DPC us p50 {lat.get('p50', 0):.1f} p90 {lat.get('p90', 0):.1f} "
                f"p99 {lat.get('p99', 0):.1f} p99.9 {lat.get('p99.9', 0):.1f}"
                + (f"; errors {r['errors']}" if r["errors"] else "")
            )
    report = {
        "python": sys.version.split()[0],
        "cpus": sorted(os.sched_getaffinity(0)),
        "loadavg": os.getloadavg(),
        "results": results,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
