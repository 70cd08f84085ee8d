"""Reliability in the lab: quiet on every exit, faults under traffic, counters that balance.

Quiet on exit: a child process opens a port pair, passes traffic and is
stopped by SIGINT, SIGTERM, an exception, a normal exit or SIGKILL. Except
after SIGKILL, the child reads the receiving port's registers through its
still-open VFIO device after the NIC closed; the test process then opens the
port itself and checks again (after VFIO's own release/open resets, which on
QEMU's e1000e do nothing), and re-opens the pair and passes traffic.

Faults: link flaps, a consumer holding every zero-copy buffer, ``Nic.reset``
on either port and an ``on_receive`` that raises, each while ``Flow`` keeps
frames moving. Every case balances: frames sent = received + reported drops
+ QEMU's loss, and QEMU's loss is bounded by the frames in flight at the start
of a disruption plus those sent during it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

import hwnic
from hwnic import traffic, vfio
from hwnic.nic import regs
from hwnic.nic import regs_igb as r_igb
from hwnic.nic.base import Nic
from hwnic.nic.rx_ring import RxBatch
from hwnic.pytest_plugin import LinkControl, Pair, rig_of

pytestmark = pytest.mark.lab

LabPair = Pair

LINK_TIMEOUT = 30.0
CHILD_TIMEOUT = 120.0  # seconds for a child to open its ports and pass traffic under TCG
SETTLE_TIMEOUT = 30.0  # seconds to wait for the last frames of a flow
FRAMES = 1200  # per fault test
FRAME_LEN = 64
RING = 128  # small rings: starvation and windows come quickly
FLAPS = 3
QUIET = 1.0  # seconds without a frame after which nothing delayed is still coming (TCG)
STARVED_WAIT = 3.0  # seconds to let a starved ring take what it can (a wait, not a check)
SIGNALS = {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM, "sigkill": signal.SIGKILL}

# The child: open the pair (B on its own VFIO device so it can read B's
# registers after the NIC closed), print "flowing" once frames arrive, then
# loop until signalled, or raise, or stop.
CHILD = r"""
import json, sys, time
import numpy as np
import hwnic
from hwnic import pci, traffic, vfio
from hwnic.cli.main import sigterm_as_ctrl_c
from hwnic.nic import model_class, regs
from hwnic.nic.base import NicConfig
import signal
a_bdf, b_bdf, how = sys.argv[1:4]
sigterm_as_ctrl_c()
signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
dev = vfio.open_device(b_bdf)
lengths = np.full(32, 64)
got = 0
told = False
try:
    with hwnic.open(a_bdf, wait_link=30) as a, \
         model_class(pci.describe(b_bdf).family)(dev, NicConfig(wait_link=30)) as b:
        frames = traffic.build(np.arange(32), lengths, a.mac, b.mac)
        while True:
            a.send(frames, lengths)
            while (batch := b.receive(timeout=0.05)) is not None:
                got += batch.count
            if got and not told:
                print("flowing", flush=True)
                told = True
            if got > 64 and how == "raise":
                raise RuntimeError("user code failed")
            if got > 64 and how == "exit":
                break
except KeyboardInterrupt:
    pass
except RuntimeError:
    pass
bar = dev.bar(0)
out = {"IMS": bar.read32(regs.IMS), "RCTL": bar.read32(regs.RCTL),
       "TCTL": bar.read32(regs.TCTL), "bus_master": dev.bus_master,
       "EIMS": bar.read32(0x1524) if pci.describe(b_bdf).family == "igb" else 0}
print("regs " + json.dumps(out), flush=True)
"""


# Every way out on the e1000e (QEMU's VFIO reset leaves its registers as they
# were, so what the driver did is what the test sees); the signals on all.
EXITS = {"e1000e": ("sigint", "sigterm", "raise", "exit", "sigkill")}
EXITS_ELSEWHERE = ("sigterm", "sigkill")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    rig = rig_of(metafunc.config)
    pairs = rig.pairs() if rig else {}
    if "pair" in metafunc.fixturenames and "how" in metafunc.fixturenames:
        cases = [
            (p, how) for f, p in sorted(pairs.items()) for how in EXITS.get(f, EXITS_ELSEWHERE)
        ]
        ids = [f"{p[0].model}-{how}" for p, how in cases]
        metafunc.parametrize(("pair", "how"), cases, ids=ids)
    elif "pair" in metafunc.fixturenames:
        cases = [p for _, p in sorted(pairs.items())]
        metafunc.parametrize("pair", cases, ids=[p[0].model for p in cases])


def quiet_registers(bdf: str, family: str) -> dict[str, int]:
    """IMS (EIMS), RCTL, TCTL and bus mastering of ``bdf``, read from this process."""
    with vfio.open_device(bdf) as dev:
        master = dev.bus_master
        dev.set_bus_master(False)  # memory decode on, to read BAR0
        bar = dev.bar(0)
        return {
            "IMS": bar.read32(regs.IMS),
            "EIMS": bar.read32(r_igb.EIMS) if family == "igb" else 0,
            "RCTL": bar.read32(regs.RCTL),
            "TCTL": bar.read32(regs.TCTL),
            "bus_master": master,
        }


def assert_quiet(values: dict[str, Any], where: str) -> None:
    assert values["IMS"] == 0, f"{where}: IMS {values['IMS']:#x}"
    assert values["EIMS"] == 0, f"{where}: EIMS {values['EIMS']:#x}"
    assert not values["RCTL"] & regs.Rctl.EN, f"{where}: RCTL.EN set"
    assert not values["TCTL"] & regs.Tctl.EN, f"{where}: TCTL.EN set"
    assert not values["bus_master"], f"{where}: bus mastering on"


def pass_traffic(a_bdf: str, b_bdf: str, n: int = 100) -> None:
    with (
        hwnic.open(a_bdf, wait_link=LINK_TIMEOUT) as a,
        hwnic.open(b_bdf, wait_link=LINK_TIMEOUT) as b,
    ):
        lengths = np.full(n, FRAME_LEN)
        assert a.send(traffic.build(np.arange(n), lengths, a.mac, b.mac), lengths) == n
        assert a.flush(SETTLE_TIMEOUT), "the NIC did not send every posted frame"
        assert a.tx_in_flight == 0
        seqs: list[np.ndarray] = []
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while sum(map(len, seqs)) < n and time.monotonic() < deadline:
            batch = b.receive(timeout=0.5)
            if batch is not None:
                seqs.append(traffic.check(batch.frames, batch.lengths).seqs)
        got = np.concatenate(seqs) if seqs else np.zeros(0)
        assert len(got) == n and (np.sort(got) == np.arange(n)).all()


def test_quiet_on_every_exit(pair: LabPair, how: str) -> None:
    a_bdf, b_bdf, family = pair[0].address, pair[1].address, pair[0].model
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, a_bdf, b_bdf, how],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    watchdog = threading.Timer(CHILD_TIMEOUT, child.kill)  # a hung child fails, not hangs
    watchdog.start()
    try:
        assert child.stdout is not None
        first = child.stdout.readline()  # blocks until traffic flows (or the child dies)
        if how in ("sigint", "sigterm", "sigkill"):
            assert first.strip() == "flowing", f"child: {first!r} {child.stderr.read()}"  # type: ignore[union-attr]
            child.send_signal(SIGNALS[how])
        out, err = child.communicate(timeout=CHILD_TIMEOUT)
    finally:
        watchdog.cancel()
        if child.poll() is None:
            child.kill()
            child.wait()
    if how == "sigkill":
        assert child.returncode == -signal.SIGKILL
    else:
        assert child.returncode == 0, err
        line = [x for x in (first + out).splitlines() if x.startswith("regs ")]
        assert line, f"the child printed no registers: {err}"
        assert_quiet(json.loads(line[0][5:]), f"{family} after {how}, from the child")
    after = quiet_registers(b_bdf, family)
    if how != "sigkill":
        assert_quiet(after, f"{family} after {how}, re-opened")
    else:
        # VFIO's release clears bus mastering; the rest is what the NIC kept.
        assert not after["bus_master"], "bus mastering survived the killed process"
    pass_traffic(a_bdf, b_bdf)  # works first time, whatever was left behind


# -- faults under traffic -------------------------------------------------------------


class Flow:
    """A sends ``total`` numbered frames to B, never more than half a ring unexplained.

    B's frames are counted in its ``on_receive`` callback. ``disruption()``
    brackets an event that may lose frames in QEMU and records the bound.
    """

    def __init__(self, a: Nic, total: int = FRAMES) -> None:
        self.a = a
        self.total = total
        self.window = RING // 2  # even if every excused frame arrives, <= ring-1 in flight
        self.sent = 0
        self.received = 0
        self.excused = 0  # frames the sender no longer waits for (disruptions)
        self.loss_bound = 0
        self.seqs: list[np.ndarray] = []
        self.bad = 0
        self.dropped_seqs: list[np.ndarray] = []
        self.last_mark = 0  # frames from here on must all arrive
        self.raise_once = False
        self.paused = False  # set while a disruption settles
        self.sender_idle = True
        self.holding = False  # zero-copy: keep every batch instead of releasing it
        self.held: list[RxBatch] = []
        self.cond = threading.Condition()
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.frames: np.ndarray | None = None
        self.thread = threading.Thread(target=self._send, name="flow-sender")

    def on_receive(self, queue: int, batch: RxBatch) -> None:
        checked = traffic.check(batch.frames, batch.lengths)
        if self.raise_once:
            self.raise_once = False
            self.dropped_seqs.append(checked.seqs)
            raise RuntimeError("a consumer bug in on_receive")
        with self.cond:
            self.seqs.append(checked.seqs)
            self.bad += int(checked.bad)
            self.received += batch.count
            if self.holding:
                self.held.append(batch)
            self.cond.notify_all()
        if not self.holding:
            batch.release()

    def let_go(self) -> int:
        """Stop holding and give every held buffer back; returns how many frames were held."""
        with self.cond:
            self.holding = False
            held, self.held = self.held, []
        for batch in held:
            batch.release()
        return sum(batch.count for batch in held)

    def start(self, b_mac: str) -> None:
        lengths = np.full(self.total, FRAME_LEN)
        self.frames = traffic.build(np.arange(self.total), lengths, self.a.mac, b_mac)
        self.thread.start()

    def _send(self) -> None:
        assert self.frames is not None
        chunk = 16
        lengths = np.full(chunk, FRAME_LEN)
        try:
            while self.sent < self.total and not self.stop.is_set():
                with self.cond:
                    if self.paused:
                        self.sender_idle = True
                        self.cond.notify_all()
                        self.cond.wait(0.05)
                        continue
                    self.sender_idle = False
                    dropped = sum(map(len, self.dropped_seqs))
                    ahead = self.sent - self.received - self.excused - dropped
                    if ahead + chunk > self.window:
                        self.cond.wait(0.05)
                        continue
                part = self.frames[self.sent : self.sent + chunk]
                n = self.a.send(part, lengths[: len(part)], timeout=1.0)
                with self.cond:
                    self.sent += n
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            with self.cond:
                self.sender_idle = True
                self.cond.notify_all()

    def wait_sent(self, count: int) -> None:
        deadline = time.monotonic() + SETTLE_TIMEOUT * 4
        while self.sent < min(count, self.total) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not self.errors, self.errors

    @contextmanager
    def disruption(self) -> Iterator[None]:
        """Bracket an event that may lose frames; afterwards, let what survived arrive.

        Frames in flight when it starts and frames sent during it may be lost
        (that is the bound). Some of them are only delayed (queued in QEMU
        while the ring could not take them), so the sender pauses until
        nothing more arrives for ``QUIET`` s before the window opens again:
        otherwise late survivors plus new frames could overflow the ring.
        """
        with self.cond:
            received_before = self.received
        yield
        with self.cond:
            self.paused = True
            self.cond.wait_for(lambda: self.sender_idle, SETTLE_TIMEOUT)
            last, quiet_since = self.received, time.monotonic()
            while time.monotonic() - quiet_since < QUIET:
                self.cond.wait(QUIET / 4)
                if self.received != last:
                    last, quiet_since = self.received, time.monotonic()
            dropped = sum(map(len, self.dropped_seqs))
            self.loss_bound += self.sent - received_before
            self.excused = self.sent - self.received - dropped  # gone for good by now
            self.last_mark = self.sent
            self.paused = False
            self.cond.notify_all()

    def finish(self, b: Nic) -> dict[str, int]:
        """Wait for the sender and the last frames; assert the counters balance."""
        self.thread.join(SETTLE_TIMEOUT * 4)
        assert not self.thread.is_alive(), "the sender stalled"
        assert not self.errors, self.errors
        assert self.sent == self.total
        with self.cond:
            self.cond.wait_for(
                lambda: (
                    self.received + self.driver_drops(b) >= self.total - self.loss_bound
                    and self._tail_arrived()
                ),
                SETTLE_TIMEOUT,
            )
        got = np.concatenate(self.seqs) if self.seqs else np.zeros(0, np.uint64)
        drops = self.driver_drops(b)
        lost = self.sent - self.received - drops
        summary = {"sent": self.sent, "received": self.received, "driver_drops": drops,
                   "qemu_lost": lost, "loss_bound": self.loss_bound}  # fmt: skip
        print(f"flow: {summary}")
        assert self.bad == 0, "corrupted frames"
        assert len(np.unique(got)) == len(got), "duplicates"
        assert 0 <= lost <= self.loss_bound, f"unexplained loss: {summary}"
        assert self._tail_arrived(), f"frames sent after the last disruption were lost: {summary}"
        if self.dropped_seqs:
            dropped = np.concatenate(self.dropped_seqs)
            assert not np.isin(dropped, got).any(), "a given-back batch was also delivered"
        return summary

    def _tail_arrived(self) -> bool:
        got = np.concatenate(self.seqs) if self.seqs else np.zeros(0, np.uint64)
        dropped = np.concatenate(self.dropped_seqs) if self.dropped_seqs else got[:0]
        tail = np.arange(self.last_mark, self.sent)
        return bool(np.isin(tail, np.concatenate([got, dropped])).all())

    def driver_drops(self, b: Nic) -> int:
        rx = sum(
            s["drops_length"] + s["drops_error"] + s["drops_multi_descriptor"]
            for s in (ring.stats() for ring in b.rx)
        )
        tx = sum(ring.stats()["reset_discards"] for ring in self.a.tx)
        return rx + tx + b.backlog_drops + b.callback_error_frames


@contextmanager
def flowing_pair(pair: LabPair, **b_opts: Any) -> Iterator[tuple[Nic, Nic, Flow]]:
    a_entry, b_entry = pair
    with hwnic.open(a_entry.address, wait_link=LINK_TIMEOUT, ring_size=RING) as a:
        flow = Flow(a)
        with hwnic.open(
            b_entry.address,
            wait_link=LINK_TIMEOUT,
            ring_size=RING,
            on_receive=flow.on_receive,
            **b_opts,
        ) as b:
            flow.start(b.mac)
            try:
                yield a, b, flow
            finally:
                flow.stop.set()
                flow.thread.join(SETTLE_TIMEOUT)


def test_link_flaps_under_traffic_balance(pair: LabPair, hwnic_link: LinkControl) -> None:
    with flowing_pair(pair) as (_, b, flow):
        changes = b.link_changes
        for i in range(FLAPS):
            flow.wait_sent(flow.total * (i + 1) // (FLAPS + 1))
            with flow.disruption():
                hwnic_link.set_link(pair[1], False, nic=b)
                b.wait_link(False, LINK_TIMEOUT)
                hwnic_link.set_link(pair[1], True, nic=b)
                b.wait_link(True, LINK_TIMEOUT)
        flow.finish(b)
        per_flap = hwnic_link.changes_per_flap(b)
        assert b.link_changes >= changes + per_flap * FLAPS, "a link change was not reported"


def test_reset_under_traffic_balances(pair: LabPair) -> None:
    """Nic.reset on the receiver, then on the sender, while frames flow."""
    with flowing_pair(pair) as (a, b, flow):
        for i, nic in enumerate((b, a)):
            flow.wait_sent(flow.total * (i + 1) // 3)
            with flow.disruption():
                nic.reset()
        summary = flow.finish(b)
        assert (a.resets, b.resets) == (1, 1)
        assert summary["received"] > 0


def test_starved_ring_recovers_and_balances(pair: LabPair) -> None:
    """The consumer holds every zero-copy buffer until the ring runs dry, then lets go."""
    with flowing_pair(pair, zero_copy=True) as (_, b, flow):
        ring = b.rx[0]
        flow.wait_sent(flow.total // 4)
        with flow.disruption():
            with flow.cond:
                flow.holding = True
            deadline = time.monotonic() + SETTLE_TIMEOUT
            # Starved: no spare buffer, and every armed descriptor filled by the NIC.
            while time.monotonic() < deadline and not (ring.free_buffers == 0 and ring.armed == 0):
                time.sleep(0.05)
            stats = ring.stats()
            assert (stats["free_buffers"], stats["armed"]) == (0, 0), f"never starved: {stats}"
            time.sleep(STARVED_WAIT)  # frames keep coming at an empty ring meanwhile
            held = flow.let_go()
        assert held >= b.config.pool_factor * ring.size - ring.size, "held fewer than the pool"
        summary = flow.finish(b)
        assert summary["received"] > held


def test_raising_dpc_is_recorded_and_traffic_goes_on(pair: LabPair) -> None:
    with flowing_pair(pair) as (_, b, flow):
        flow.wait_sent(flow.total // 3)
        with flow.cond:
            flow.raise_once = True
        flow.finish(b)
        assert b.interrupt is not None
        errors = b.interrupt.errors
        assert len(errors) == 1 and "consumer bug" in str(errors[0])
        assert b.callback_errors == 1
        assert b.callback_error_frames == sum(map(len, flow.dropped_seqs)) > 0
