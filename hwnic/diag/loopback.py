"""Frames through an open port: link, MAC and PHY loopback, and a cabled pair.

Uses the public Nic API (``hwnic.open``, ``send``, ``receive``, ``phy_write``)
with frames from :mod:`hwnic.traffic`: :data:`FRAMES` frames of
:data:`SIZES` bytes in turn, each carrying its sequence number and a
checksummed pattern; all must come back, in order, intact.

* MAC loopback: RCTL.LBM = 01, the MAC hands TX to its own RX. QEMU's e1000
  ignores LBM (quirks.Flag.EMU_NO_MAC_LOOPBACK): skipped there. On silicon
  the MAC may also need the link forced (Linux's ``e1000_setup_loopback_test``
  sets CTRL.FRCSPD/FRCDPX); this test relies on the link being up.
* PHY loopback: BMCR.LOOPBACK with 1000 Mb/s full duplex forced (Linux's
  0x4140), then BMCR is put back and autonegotiation restarted.
* Pair: A to B, then B to A, over whatever joins them (the lab's QEMU hub).
"""

from __future__ import annotations

import time

import numpy as np

from hwnic import traffic
from hwnic.diag import phy
from hwnic.diag.result import TestFailed
from hwnic.nic import regs
from hwnic.nic.base import Nic

FRAMES = 256
SIZES = (60, 128, 512, 1514)
RECEIVE_TIMEOUT = 5.0  # s for all frames to come back (TCG lab: generous)
PHY_SETTLE = 0.25  # s after entering PHY loopback (Linux waits 250 ms for silicon)
RING_SIZE = 512  # descriptors: every test frame has one waiting (no hub-queue drops)
ETHERTYPE = traffic.ETHERTYPE_EXPERIMENTAL


def exchange(tx: Nic, rx: Nic, count: int = FRAMES) -> str:
    """Send ``count`` test frames from ``tx`` and check that ``rx`` gets them all, in order."""
    lengths = np.resize(np.array(SIZES, dtype=np.int64), count)
    frames = traffic.build(np.arange(count), lengths, tx.mac, rx.mac)
    sent = tx.send(frames, lengths, timeout=RECEIVE_TIMEOUT)
    if sent != count:
        raise TestFailed(f"only {sent} of {count} frames could be posted (TX ring stuck)")
    src = traffic.mac_bytes(tx.mac)
    seqs: list[np.ndarray] = []
    bad = 0
    got = 0
    deadline = time.monotonic() + RECEIVE_TIMEOUT
    while got < count:
        left = deadline - time.monotonic()
        batch = rx.receive(timeout=max(left, 0)) if left > 0 else None
        if batch is None:
            break
        with batch:
            rows, lens = batch.frames, batch.lengths.astype(np.int64)
            # Only our frames: a real network may carry others (LLDP, ...).
            ours = np.all(rows[:, 6:12] == src, axis=1) & (
                (rows[:, 12].astype(np.int64) << 8 | rows[:, 13]) == ETHERTYPE
            )
            checked = traffic.check(rows[ours], lens[ours])
        seqs.append(checked.seqs)
        bad += checked.bad
        got += int(ours.sum())
    order = np.concatenate(seqs) if seqs else np.zeros(0, np.uint64)
    if got < count:
        raise TestFailed(f"{got} of {count} frames came back within {RECEIVE_TIMEOUT} s")
    if bad:
        raise TestFailed(f"{bad} of {count} frames came back corrupted (length/checksum/pattern)")
    if not np.array_equal(order[:count], np.arange(count, dtype=np.uint64)):
        first = int(np.argmax(order[:count] != np.arange(count, dtype=np.uint64)))
        raise TestFailed(f"frames out of order: position {first} holds seq {int(order[first])}")
    return f"{count} frames of {'/'.join(map(str, SIZES))} B, in order and intact"


def link(nic: Nic, timeout: float) -> str:
    start = time.monotonic()
    nic.wait_link(True, timeout)  # NicError (a failure) says what to check
    state = nic.link
    duplex = "full" if state.full_duplex else "half"
    return f"up after {time.monotonic() - start:.1f} s, {state.speed_mbps} Mb/s {duplex} duplex"


def mac_loopback(nic: Nic) -> str:
    rctl = nic.bar.read32(regs.RCTL)
    nic.bar.write32(regs.RCTL, rctl | regs.Rctl.LBM_MAC)
    try:
        return exchange(nic, nic)
    finally:
        nic.bar.write32(regs.RCTL, rctl)


def phy_loopback(nic: Nic) -> str:
    saved = phy.read(nic.bar, regs.PHY_BMCR)
    forced = regs.BMCR_LOOPBACK | regs.BMCR_SPEED_1000 | regs.BMCR_FULL_DUPLEX
    nic.phy_write(regs.PHY_BMCR, forced)
    try:
        time.sleep(PHY_SETTLE)
        return exchange(nic, nic)
    finally:
        phy.restore_bmcr(nic.bar, saved)


def pair(a: Nic, b: Nic, timeout: float) -> str:
    a.wait_link(True, timeout)
    b.wait_link(True, timeout)
    exchange(a, b)
    exchange(b, a)
    return f"{FRAMES} frames each way, in order and intact"
