"""Jumbo frames: RX runs of descriptors joined into one frame, TX frames spread over several.

The fake device splits each frame over consecutive 2 KB buffers as the NICs
do (every buffer full but the last, EOP on the last). Garbage runs (an EOP in
the wrong place, a run longer than the maximum, a run that never ends) are
dropped and counted, and the ring goes on.
"""

from __future__ import annotations

import numpy as np
import pytest

from hwnic import traffic
from hwnic.nic.descriptors import (
    ADVANCED_RX_FORMAT,
    EXTENDED_RX_FORMAT,
    LEGACY_RX_FORMAT,
    LEGACY_TX,
    RxFormat,
    RxStatus,
    TxCmd,
    as_qwords,
    as_raw,
)
from hwnic.nic.rx_ring import RxRing
from hwnic.nic.tx_ring import TxRing

POOL_IOVA = 0x1_0000_0000
BUF = 2048
MAX = traffic.MAX_JUMBO_FRAME
SRC, DST = "02:00:00:00:00:01", "02:00:00:00:00:02"
FORMATS = [LEGACY_RX_FORMAT, EXTENDED_RX_FORMAT, ADVANCED_RX_FORMAT]


class SpanningNic:
    """Writes frames into armed descriptors, a buffer at a time, as the NIC does."""

    def __init__(self, ring: RxRing) -> None:
        self.ring = ring
        self.head = 0
        self.tail = 0

    def write_tail(self, value: int) -> None:
        self.tail = value

    def put(self, data: np.ndarray, length: int, status: int, desc_len: int | None = None) -> None:
        fmt = self.ring.fmt
        raw, q = as_raw(self.ring.descs), as_qwords(self.ring.descs)
        d = self.head
        slot = (int(q[d, 0]) - POOL_IOVA) // BUF
        self.ring.pool[slot, : len(data)] = data
        q[d, 1] = 0
        wl = length if desc_len is None else desc_len
        raw[d, fmt.length_offset : fmt.length_offset + 2] = np.frombuffer(
            wl.to_bytes(2, "little"), np.uint8
        )
        raw[d, fmt.status_offset] = status
        self.head = (self.head + 1) % self.ring.size

    def room(self) -> int:
        return (self.tail - self.head) % self.ring.size

    def receive(self, frame: np.ndarray, length: int) -> bool:
        parts = -(-length // BUF)
        if parts > self.room():
            return False
        for j in range(parts):
            chunk = frame[j * BUF : min(length, (j + 1) * BUF)]
            last = j == parts - 1
            self.put(chunk, len(chunk), RxStatus.DD | (RxStatus.EOP if last else 0))
        return True


def make(fmt: RxFormat, zero_copy: bool, size: int = 64) -> tuple[RxRing, SpanningNic]:
    holder: list[SpanningNic] = []
    ring = RxRing(
        fmt,
        np.zeros(size, dtype=fmt.read_dtype),
        0x1000,
        np.zeros((size * 2, BUF), dtype=np.uint8),
        POOL_IOVA,
        write_tail=lambda v: holder[0].write_tail(v),
        zero_copy=zero_copy,
        max_frame=MAX,
    )
    holder.append(SpanningNic(ring))
    ring.replenish()
    return ring, holder[0]


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
@pytest.mark.parametrize("zero_copy", [False, True], ids=["copy", "zero-copy"])
def test_every_size_to_9018_arrives_whole_in_order(fmt: RxFormat, zero_copy: bool) -> None:
    ring, nic = make(fmt, zero_copy)
    sizes = np.concatenate([np.arange(60, 200), np.arange(2040, 2060), np.arange(4090, 4100),
                            np.arange(MAX - 40, MAX + 1)])  # fmt: skip
    frames = traffic.build(np.arange(len(sizes)), sizes, SRC, DST)
    got, sent = [], 0
    while True:
        while sent < len(sizes) and nic.receive(frames[sent], int(sizes[sent])):
            sent += 1
        batch = ring.drain(16)
        if batch.count == 0 and sent == len(sizes):
            break
        checked = traffic.check(batch.frames, batch.lengths)
        assert checked.good.all(), f"bad frames {checked.seqs[~checked.good]}"
        if zero_copy and batch.count:  # the buffers of each frame, as views, make it up
            i = int(np.argmax(batch.lengths))
            joined = np.concatenate(batch.buffers(i))
            assert len(joined) == batch.lengths[i]
            assert (joined == batch.frames[i, : batch.lengths[i]]).all()
        got.append(checked.seqs)
        batch.release()
    assert (np.concatenate(got) == np.arange(len(sizes))).all()
    c = ring.counters
    assert c["frames"] == len(sizes) and c["spanning_frames"] == int((sizes > BUF).sum())
    assert c["drops_multi_descriptor"] == c["drops_length"] == c["drops_error"] == 0
    assert ring.stats()["bytes"] == int(sizes.sum())


@pytest.mark.parametrize("zero_copy", [False, True], ids=["copy", "zero-copy"])
def test_garbage_runs_are_dropped_and_the_ring_goes_on(zero_copy: bool) -> None:
    ring, nic = make(LEGACY_RX_FORMAT, zero_copy, size=32)
    good = traffic.build(np.arange(3), np.array([3000, 3000, 3000]), SRC, DST)
    # An EOP in the wrong place: a short first buffer, then the rest.
    nic.put(good[0, :100], 100, RxStatus.DD)
    nic.put(good[0, 100:2000], 1900, RxStatus.DD | RxStatus.EOP)
    # Longer than the maximum: five full buffers and one more.
    for _ in range(5):
        nic.put(np.zeros(BUF, np.uint8), BUF, RxStatus.DD)
    nic.put(np.zeros(100, np.uint8), 100, RxStatus.DD | RxStatus.EOP)
    # A frame error on a middle buffer.
    raw = as_raw(ring.descs)
    nic.receive(good[1], 3000)
    raw[(nic.head - 2) % ring.size, ring.fmt.error_offset] = 0x01  # CRC error on its 1st part
    assert nic.receive(good[2], 3000)  # and one good frame after the garbage
    batch = ring.drain(32)
    checked = traffic.check(batch.frames, batch.lengths)
    assert batch.count == 1 and checked.good.all() and int(checked.seqs[0]) == 2
    batch.release()
    c = ring.counters
    assert c["drops_multi_descriptor"] == 3 and c["frames"] == 1
    assert ring.armed == ring.size - 1  # every consumed descriptor re-armed
    if zero_copy:  # nothing leaked: every slot armed or free
        assert ring.free_buffers + ring.armed == len(ring.pool)


def test_a_run_that_never_ends_is_dropped_not_stuck() -> None:
    ring, nic = make(LEGACY_RX_FORMAT, False, size=16)
    for _ in range(ring.size - 1):
        nic.put(np.zeros(BUF, np.uint8), BUF, RxStatus.DD)  # no EOP anywhere
    assert ring.drain(16).count == 0
    assert ring.counters["drops_multi_descriptor"] == 1 and ring.armed == ring.size - 1


def test_a_frame_still_arriving_waits_for_its_eop() -> None:
    ring, nic = make(LEGACY_RX_FORMAT, False, size=32)
    frame = traffic.build(np.arange(1), np.array([5000]), SRC, DST)[0]
    nic.put(frame[:BUF], BUF, RxStatus.DD)
    nic.put(frame[BUF : 2 * BUF], BUF, RxStatus.DD)
    assert ring.drain(32).count == 0 and ring.counters["drops_multi_descriptor"] == 0
    nic.put(frame[2 * BUF : 5000], 5000 - 2 * BUF, RxStatus.DD | RxStatus.EOP)
    batch = ring.drain(32)
    assert batch.count == 1 and traffic.check(batch.frames, batch.lengths).good.all()


def test_without_jumbo_a_spanning_frame_is_dropped() -> None:
    ring = RxRing(
        LEGACY_RX_FORMAT, np.zeros(16, dtype=LEGACY_RX_FORMAT.read_dtype), 0x1000,
        np.zeros((32, BUF), np.uint8), POOL_IOVA, write_tail=lambda v: None,
    )  # fmt: skip
    ring.replenish()
    nic = SpanningNic(ring)
    nic.tail = ring.tail
    frame = traffic.build(np.arange(1), np.array([3000]), SRC, DST)[0]
    assert nic.receive(frame, 3000)
    assert ring.drain(16).count == 0 and ring.counters["drops_multi_descriptor"] == 1


def tx_ring(size: int = 32) -> tuple[TxRing, list[int]]:
    tails: list[int] = []
    ring = TxRing(
        np.zeros(size, dtype=LEGACY_TX), 0x2000, np.zeros((size, BUF), np.uint8), 0x3000_0000,
        write_tail=tails.append,
    )  # fmt: skip
    return ring, tails


def test_tx_spreads_a_jumbo_frame_over_full_buffers_eop_on_the_last() -> None:
    ring, tails = tx_ring()
    lengths = np.array([64, 9018, 2048, 2049])
    frames = traffic.build(np.arange(4), lengths, SRC, DST)
    assert ring.post(frames, lengths) == 4
    parts = [1, 5, 1, 2]
    assert ring.in_flight == sum(parts) and tails == [sum(parts)]
    desc_len = ring.descs["length"][: sum(parts)].astype(int)
    cmd = ring.descs["cmd"][: sum(parts)].astype(int)
    eop = (cmd & TxCmd.EOP) != 0
    assert list(np.flatnonzero(eop)) == list(np.cumsum(parts) - 1)
    assert ((cmd & TxCmd.RS) != 0).all()
    # The device's view: buffers joined up to each EOP give back the frames.
    start = 0
    for i, n in enumerate(parts):
        joined = np.concatenate([ring.buffers[start + j, : desc_len[start + j]] for j in range(n)])
        assert len(joined) == lengths[i] and (joined == frames[i, : lengths[i]]).all()
        assert (desc_len[start : start + n - 1] == BUF).all()
        start += n
    assert ring.counters["spanning_frames"] == 2 and ring.stats()["bytes"] == int(lengths.sum())


def test_tx_posts_only_whole_frames_when_the_ring_is_nearly_full() -> None:
    ring, _ = tx_ring(size=8)  # 7 usable descriptors
    lengths = np.array([9018, 9018])  # 5 descriptors each
    frames = traffic.build(np.arange(2), lengths, SRC, DST)
    assert ring.post(frames, lengths) == 1 and ring.in_flight == 5
    assert ring.post(frames[1:], lengths[1:]) == 0  # 2 left: the frame waits, not half-posted
    with pytest.raises(ValueError):
        ring.post(np.zeros((1, 9100), np.uint8), np.array([9100]))
