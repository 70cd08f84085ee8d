"""RX/TX rings against a fake NIC that writes descriptors back as QEMU does."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwnic import traffic
from hwnic.nic.descriptors import (
    ADVANCED_RX_FORMAT,
    LEGACY_RX_FORMAT,
    LEGACY_TX,
    RxFormat,
    RxStatus,
    TxStatus,
    as_qwords,
    as_raw,
)
from hwnic.nic.rx_ring import RxRing
from hwnic.nic.tx_ring import TxRing

POOL_IOVA = 0x1_0000_0000
BUF = 2048
SRC, DST = "02:00:00:00:00:01", "02:00:00:00:00:02"


class FakeNic:
    """Completes armed RX descriptors from head to tail, as the device would."""

    def __init__(self, ring: RxRing) -> None:
        self.ring = ring
        self.head = 0
        self.tail = 0
        self.tails: list[int] = []

    def write_tail(self, value: int) -> None:
        self.tail = value
        self.tails.append(value)

    def room(self) -> int:
        return (self.tail - self.head) % self.ring.size

    def receive(
        self,
        frames: np.ndarray,
        lengths: np.ndarray,
        *,
        status: int | None = None,
        errors: int = 0,
        wb_length: np.ndarray | None = None,
    ) -> int:
        """Write up to ``room()`` frames; returns how many it wrote."""
        fmt = self.ring.fmt
        raw = as_raw(self.ring.descs)
        q = as_qwords(self.ring.descs)
        n = min(len(frames), self.room())
        for i in range(n):  # the fake device, not the driver: a loop is fine here
            d = self.head
            slot = (int(q[d, 0]) - POOL_IOVA) // BUF
            length = int(lengths[i])
            self.ring.pool[slot, : min(length, BUF)] = frames[i, : min(length, BUF)]
            q[d, 1] = 0
            wl = length if wb_length is None else int(wb_length[i])
            raw[d, fmt.length_offset : fmt.length_offset + 2] = np.frombuffer(
                wl.to_bytes(2, "little"), np.uint8
            )
            raw[d, fmt.error_offset] = errors
            raw[d, fmt.status_offset] = RxStatus.DD | RxStatus.EOP if status is None else status
            self.head = (self.head + 1) % self.ring.size
        return n


def make_rx(
    fmt: RxFormat = LEGACY_RX_FORMAT,
    size: int = 64,
    zero_copy: bool = False,
    slots: int | None = None,
) -> tuple[RxRing, FakeNic]:
    descs = np.zeros(size, dtype=fmt.read_dtype)
    pool = np.zeros((slots or size * 2, BUF), dtype=np.uint8)
    holder: list[FakeNic] = []
    ring = RxRing(
        fmt,
        descs,
        0x1000,
        pool,
        POOL_IOVA,
        write_tail=lambda v: holder[0].write_tail(v),
        zero_copy=zero_copy,
    )
    nic = FakeNic(ring)
    holder.append(nic)
    ring.replenish()
    return ring, nic


def frames_for(seqs: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    return traffic.build(seqs, lengths, SRC, DST, width=traffic.MAX_FRAME)


@pytest.mark.parametrize("fmt", [LEGACY_RX_FORMAT, ADVANCED_RX_FORMAT], ids=lambda f: f.name)
@pytest.mark.parametrize("zero_copy", [False, True])
def test_every_size_round_trips_through_many_wraps(fmt: RxFormat, zero_copy: bool) -> None:
    ring, nic = make_rx(fmt, size=64, zero_copy=zero_copy)
    assert nic.tail == 63 and ring.armed == 63
    sizes = traffic.sizes_60_to_1514()
    frames = frames_for(np.arange(len(sizes)), sizes)
    got = []
    sent = 0
    while True:
        sent += nic.receive(frames[sent:], sizes[sent:])
        batch = ring.drain(16)
        if batch.count == 0 and sent == len(sizes):
            break
        checked = traffic.check(batch.frames, batch.lengths)
        assert checked.good.all()
        got.append(checked.seqs)
        batch.release()
    seqs = np.concatenate(got)
    assert (seqs == np.arange(len(sizes))).all()
    assert ring.counters["frames"] == len(sizes)
    assert ring.counters["drops_length"] == ring.counters["drops_error"] == 0


def test_budget_sets_more_pending() -> None:
    ring, nic = make_rx(size=64)
    lengths = np.full(40, 64)
    nic.receive(frames_for(np.arange(40), lengths), lengths)
    first = ring.drain(16)
    assert first.count == 16 and first.more_pending
    rest = ring.drain(100)
    assert rest.count == 24 and not rest.more_pending
    assert nic.tails[-1] == (40 + 63) % 64  # re-armed after each drain, one write each


def test_zero_copy_views_survive_until_released() -> None:
    ring, nic = make_rx(size=16, zero_copy=True, slots=32)
    lengths = np.full(10, 100)
    nic.receive(frames_for(np.arange(10), lengths), lengths)
    held = ring.drain(10)
    view = held.frame(3)
    before = view.copy()
    # Lots more traffic: the held buffers must never be re-armed.
    for k in range(5):
        seqs = np.arange(100 + 10 * k, 110 + 10 * k)
        n = nic.receive(frames_for(seqs, lengths), lengths)
        b = ring.drain(64)
        assert b.count == n
        b.release()
    assert (view == before).all()
    assert not np.isin(held.slots, ring.desc_slot).any()
    held.release()
    assert ring.free_buffers + ring.armed == 32


def test_starvation_then_recovery() -> None:
    ring, nic = make_rx(size=16, zero_copy=True, slots=20)
    lengths = np.full(15, 64)
    nic.receive(frames_for(np.arange(15), lengths), lengths)
    held = ring.drain(15)  # the consumer keeps everything
    assert ring.armed == 5  # only 5 spare buffers left to arm
    assert ring.counters["starved"] >= 1
    held.release()
    ring.replenish()
    assert ring.armed == 15


def test_garbage_is_counted_and_ring_recovers() -> None:
    ring, nic = make_rx(size=32)
    lengths = np.full(6, 64)
    frames = frames_for(np.arange(6), lengths)
    nic.receive(frames[:2], lengths[:2], wb_length=np.array([0, 5000]))
    nic.receive(frames[2:3], lengths[2:3], errors=0x01)  # CRC error
    nic.receive(frames[3:4], lengths[3:4])  # a good one after the garbage
    b = ring.drain(32)
    assert b.count == 1 and traffic.check(b.frames, b.lengths).seqs[0] == 3
    assert ring.counters["drops_length"] == 2 and ring.counters["drops_error"] == 1


def test_multi_descriptor_frames_dropped_and_counted() -> None:
    ring, nic = make_rx(size=32)
    lengths = np.full(4, 64)
    frames = frames_for(np.arange(4), lengths)
    nic.receive(frames[:2], lengths[:2], status=RxStatus.DD)  # no EOP: frame continues
    nic.receive(frames[2:3], lengths[2:3])  # ... and ends here
    assert ring.drain(32).count == 0
    assert ring.counters["drops_multi_descriptor"] == 1
    nic.receive(frames[3:4], lengths[3:4], status=RxStatus.DD)  # EOP not yet arrived
    assert ring.drain(32).count == 0 and ring.armed == 31  # left for the next drain


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 4000)),
        min_size=1,
        max_size=100,
    )
)
def test_random_write_backs_never_break_the_ring(garbage: list[tuple[int, int, int]]) -> None:
    ring, nic = make_rx(size=32)
    for status, errors, length in garbage:
        frame = np.zeros((1, traffic.MAX_FRAME), np.uint8)
        nic.receive(
            frame,
            np.array([min(length, traffic.MAX_FRAME)]),
            status=status | 1,
            errors=errors,
            wb_length=np.array([length]),
        )
        b = ring.drain(8)
        assert (b.lengths > 0).all() and (b.lengths <= BUF).all()
        b.release()
    # Whatever the garbage left unfinished, the next frame's EOP ends it (that
    # frame is dropped with it); the one after arrives intact.
    lengths = np.array([64, 64])
    nic.receive(frames_for(np.array([7, 8]), lengths), lengths)
    b = ring.drain(64)
    checked = traffic.check(b.frames, b.lengths)
    assert b.count >= 1 and checked.seqs[-1] == 8 and checked.good[-1]


def make_tx(size: int = 16) -> tuple[TxRing, list[int]]:
    tails: list[int] = []
    ring = TxRing(
        np.zeros(size, LEGACY_TX),
        0x2000,
        np.zeros((size, BUF), np.uint8),
        POOL_IOVA,
        write_tail=tails.append,
    )
    return ring, tails


def complete_tx(ring: TxRing, count: int) -> None:
    raw = as_raw(ring.descs)
    for i in range(count):
        raw[(ring.next_to_clean + i) % ring.size, 12] |= TxStatus.DD


def test_tx_post_back_pressure_and_reclaim() -> None:
    ring, tails = make_tx(16)
    lengths = np.arange(60, 80)
    frames = frames_for(np.arange(20), lengths)
    assert ring.post(frames, lengths) == 15  # size - 1: never overwrite in flight
    assert tails == [15] and ring.counters["ring_full"] == 1
    desc = ring.descs[3]
    assert desc["length"] == 63 and desc["cmd"] == 0x0B and desc["status"] == 0
    assert (ring.buffers[3, :63] == frames[3, :63]).all()
    assert ring.post(frames[15:], lengths[15:]) == 0
    complete_tx(ring, 10)
    assert ring.reclaim() == 10 and ring.free == 10
    assert ring.post(frames[15:], lengths[15:]) == 5
    assert tails[-1] == (15 + 5) % 16
