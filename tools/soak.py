"""Soak: loopback traffic for minutes with periodic link flaps; the counters must balance.

Run inside the lab (not part of tools/test.sh):
    hwnic lab run --nic igb --nic igb -- python tools/soak.py --minutes 10

Port A sends numbered frames to port B (same hub), never more than half of
B's ring unaccounted for (QEMU drops what a hub flush brings beyond a full
ring). Every ``--flap-every`` s B's link goes down and up; frames in flight
when it went down or sent while it was down may be lost, and that bound is
recorded. At the end: sent = received + reported drops + QEMU's loss, with
QEMU's loss within the flap bound. Exits 1 on an unexplained gap, a
corrupted or duplicated frame, or a handler error.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

import numpy as np

import hwnic
from hwnic import traffic
from hwnic.lab.control import LabControl
from hwnic.lab.guest import lab_pairs
from hwnic.lab.topology import LabNic
from hwnic.nic.base import Nic
from hwnic.nic.rx_ring import RxBatch

CHUNK = 32
FRAME_LEN = 64
LINK_TIMEOUT = 30.0
SETTLE_TIMEOUT = 30.0
CREDIT_WAIT = 0.05  # seconds the sender sleeps when its window is full
REPORT_EVERY = 30.0


class Soak:
    def __init__(self, a: Nic, ring_size: int) -> None:
        self.a = a
        self.window = ring_size // 2
        self.cond = threading.Condition()
        self.sent = self.received = self.bad = self.duplicates = 0
        self.excused = self.loss_bound = 0
        self.seen = np.zeros(1 << 20, dtype=bool)
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.b_mac = ""

    def on_receive(self, queue: int, batch: RxBatch) -> None:
        checked = traffic.check(batch.frames, batch.lengths)
        seqs = checked.seqs.astype(np.int64)
        with self.cond:
            if len(seqs) and int(seqs.max()) >= len(self.seen):
                grown = np.zeros(max(len(self.seen) * 2, int(seqs.max()) + 1), dtype=bool)
                grown[: len(self.seen)] = self.seen
                self.seen = grown
            self.duplicates += int(self.seen[seqs].sum()) + len(seqs) - len(np.unique(seqs))
            self.seen[seqs] = True
            self.bad += int(checked.bad)
            self.received += batch.count
            self.cond.notify_all()

    def send_loop(self) -> None:
        lengths = np.full(CHUNK, FRAME_LEN)
        try:
            while not self.stop.is_set():
                with self.cond:
                    if self.sent - self.received - self.excused + CHUNK > self.window:
                        self.cond.wait(CREDIT_WAIT)
                        continue
                    seq = self.sent
                frames = traffic.build(np.arange(seq, seq + CHUNK), lengths, self.a.mac, self.b_mac)
                n = self.a.send(frames, lengths, timeout=1.0)
                with self.cond:
                    self.sent += n
        except BaseException as exc:
            self.errors.append(exc)

    def flap(self, control: LabControl, qemu_id: str, b: Nic) -> None:
        with self.cond:
            received_before = self.received
        control.set_link(qemu_id, False)
        b.wait_link(False, LINK_TIMEOUT)
        control.set_link(qemu_id, True)
        b.wait_link(True, LINK_TIMEOUT)
        with self.cond:
            bound = self.sent - received_before  # in flight at the start + sent during
            self.loss_bound += bound
            self.excused += bound
            self.cond.notify_all()


def driver_drops(a: Nic, b: Nic) -> dict[str, int]:
    rx = [ring.stats() for ring in b.rx]
    return {
        "rx_bad_length": sum(s["drops_length"] for s in rx),
        "rx_frame_error": sum(s["drops_error"] for s in rx),
        "rx_multi_descriptor": sum(s["drops_multi_descriptor"] for s in rx),
        "backlog": b.backlog_drops,
        "callback_error": b.callback_error_frames,
        "tx_reset_discards": sum(ring.stats()["reset_discards"] for ring in a.tx),
    }


def lab_pair() -> tuple[LabNic, LabNic]:
    pairs = lab_pairs()
    if not pairs:
        raise SystemExit("soak: needs two lab NICs on one hub (hwnic lab run --nic igb --nic igb)")
    return next(iter(pairs.values()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long (default 10)")
    parser.add_argument("--flap-every", type=float, default=30.0, help="seconds between flaps")
    parser.add_argument("--ring-size", type=int, default=256, help="descriptors per ring")
    args = parser.parse_args()
    a_entry, b_entry = lab_pair()
    control = LabControl()
    with hwnic.open(a_entry.address, ring_size=args.ring_size, wait_link=LINK_TIMEOUT) as a:
        soak = Soak(a, args.ring_size)
        with hwnic.open(
            b_entry.address,
            ring_size=args.ring_size,
            wait_link=LINK_TIMEOUT,
            on_receive=soak.on_receive,
        ) as b:
            soak.b_mac = b.mac
            sender = threading.Thread(target=soak.send_loop, name="soak-sender")
            start = time.monotonic()
            end = start + args.minutes * 60
            next_flap = start + args.flap_every
            next_report = start + REPORT_EVERY
            flaps = 0
            sender.start()
            try:
                while time.monotonic() < end and not soak.errors:
                    now = time.monotonic()
                    if now >= next_flap:
                        soak.flap(control, b_entry.qemu_id, b)
                        flaps += 1
                        next_flap = time.monotonic() + args.flap_every
                    if now >= next_report:
                        print(f"soak: {now - start:5.0f} s sent {soak.sent} "
                              f"received {soak.received} flaps {flaps}", flush=True)  # fmt: skip
                        next_report += REPORT_EVERY
                    time.sleep(0.2)
            finally:
                soak.stop.set()
                sender.join(SETTLE_TIMEOUT)
            drops = driver_drops(a, b)
            with soak.cond:
                soak.cond.wait_for(
                    lambda: (
                        soak.sent - soak.received - sum(drops.values()) <= soak.loss_bound
                        and soak.received + sum(drops.values()) >= soak.sent - soak.loss_bound
                    ),
                    SETTLE_TIMEOUT,
                )
            time.sleep(1.0)  # late frames from the last window
            drops = driver_drops(a, b)
            elapsed = time.monotonic() - start
            lost = soak.sent - soak.received - sum(drops.values())
            totals = b.stats()["interrupts"]["totals"]
            summary = {
                "seconds": round(elapsed, 1),
                "frames_sent": soak.sent,
                "frames_received": soak.received,
                "rate_fps": round(soak.received / elapsed),
                "dropped_by_reason": {**drops, "qemu_link_down": lost},
                "qemu_loss_bound": soak.loss_bound,
                "corrupted": soak.bad,
                "duplicates": soak.duplicates,
                "flaps": flaps,
                "link_changes": b.link_changes,
                "interrupts_b": {
                    k: totals[k] for k in ("interrupts", "dpc_runs", "dpc_errors") if k in totals
                },
                "interrupt_errors": [repr(e) for e in (b.interrupt.errors if b.interrupt else [])],
                "sender_errors": [repr(e) for e in soak.errors],
            }
    print(json.dumps(summary, indent=2))
    balanced = 0 <= lost <= soak.loss_bound
    ok = balanced and not (soak.bad or soak.duplicates or soak.errors)
    ok = ok and not summary["interrupt_errors"]
    print("soak: " + ("PASS: the counters balance" if ok else "FAIL"), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
