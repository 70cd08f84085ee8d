"""RxRing / TxRing (hwnic.nic.rings) against the fake QEMU-like devices."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from hwnic.nic.descriptors import (
    LEGACY_RX,
    LEGACY_TX,
    RX_FORMATS,
    RxError,
    RxStatus,
    as_qwords,
)
from hwnic.nic.rings import FakeRxDevice, FakeTxDevice, RxRing, TxRing

BUF = 2048
POOL_IOVA = 0x4000_0000
DESC_IOVA = 0x1000
MIN_FRAME, MAX_FRAME = 60, 1514
SEQ_BYTES = 4
CRC_BYTES = 4


def make_frames(seqs: np.ndarray, lengths: np.ndarray, seed: int = 0) -> np.ndarray:
    """Frames with a sequence number up front and a CRC32 of the payload at the end."""
    rng = np.random.default_rng(seed)
    out = rng.integers(0, 256, (len(seqs), int(lengths.max())), dtype=np.uint8)
    for i, (s, n) in enumerate(zip(seqs.tolist(), lengths.tolist(), strict=True)):
        out[i, :SEQ_BYTES] = np.frombuffer(int(s).to_bytes(SEQ_BYTES, "little"), np.uint8)
        crc = zlib.crc32(out[i, : n - CRC_BYTES].tobytes())
        out[i, n - CRC_BYTES : n] = np.frombuffer(crc.to_bytes(CRC_BYTES, "little"), np.uint8)
    return out


def check_frame(frame: np.ndarray) -> int:
    """Verify the checksum; return the sequence number."""
    data = frame.tobytes()
    assert zlib.crc32(data[:-CRC_BYTES]) == int.from_bytes(data[-CRC_BYTES:], "little")
    return int.from_bytes(data[:SEQ_BYTES], "little")


def rx_setup(
    n: int = 64, fmt: str = "legacy", zero_copy: bool = False, slots: int | None = None
) -> tuple[RxRing, FakeRxDevice, list[int]]:
    descs = np.zeros(n, LEGACY_RX)
    pool = np.zeros((slots or (2 * n if zero_copy else n), BUF), np.uint8)
    dev = FakeRxDevice(descs, pool, POOL_IOVA, RX_FORMATS[fmt])
    tails: list[int] = []

    def tail(v: int) -> None:
        tails.append(v)
        dev.write_tail(v)

    ring = RxRing(
        descs, DESC_IOVA, pool, POOL_IOVA, tail, fmt=RX_FORMATS[fmt], zero_copy=zero_copy,
        want_rss=RX_FORMATS[fmt].rss_offset is not None,
    )  # fmt: skip
    ring.replenish()
    return ring, dev, tails


@pytest.mark.parametrize("fmt", sorted(RX_FORMATS))
@pytest.mark.parametrize("zero_copy", [False, True])
def test_round_trip_every_size_with_wraps(fmt: str, zero_copy: bool) -> None:
    ring, dev, tails = rx_setup(64, fmt, zero_copy)
    assert tails == [63] and ring.armed == 63
    lengths = np.arange(MIN_FRAME, MAX_FRAME + 1)
    frames = make_frames(np.arange(len(lengths)), lengths)
    rng = np.random.default_rng(1)
    sent = got = 0
    seqs: list[int] = []
    while got < len(lengths):
        if sent < len(lengths):
            k = int(rng.integers(1, 50))
            sent += dev.receive(frames[sent : sent + k], lengths[sent : sent + k], rss=0xABCD)
        writes = len(tails)
        batch = ring.drain(int(rng.integers(1, 80)))
        if len(batch):
            assert len(tails) == writes + 1  # one tail write per batch
        assert batch.zero_copy == zero_copy
        for f in batch.frames():
            seqs.append(check_frame(f))
        if batch.rss is not None:
            assert (batch.rss == 0xABCD).all()
        got += len(batch)
        batch.release()
    assert seqs == list(range(len(lengths)))  # nothing lost, duplicated or reordered
    st = ring.stats()
    assert st.frames == len(lengths) and st.dropped == 0
    assert st.bytes == int(lengths.sum())
    assert st.descs_cleaned == len(lengths)
    assert ring.armed == ring.size - 1
    assert len(lengths) > 20 * ring.size  # wrapped many times


def test_budget_and_more_pending() -> None:
    ring, dev, _ = rx_setup(64)
    lengths = np.full(40, 100)
    dev.receive(make_frames(np.arange(40), lengths), lengths)
    b1 = ring.drain(16)
    assert len(b1) == 16 and b1.more_pending
    b2 = ring.drain(24)
    assert len(b2) == 24 and not b2.more_pending  # budget exactly used, nothing behind
    b3 = ring.drain(16)
    assert len(b3) == 0 and not b3.more_pending
    assert [check_frame(f) for f in (*b1.frames(), *b2.frames())] == list(range(40))


def test_copy_batch_is_compact() -> None:
    ring, dev, _ = rx_setup(64)
    lengths = np.array([64, 100, 70])
    dev.receive(make_frames(np.arange(3), lengths), lengths)
    b = ring.drain(8)
    assert b.data is not None and b.data.shape[0] == 3
    assert lengths.max() <= b.data.shape[1] <= BUF
    assert b.lengths.tolist() == lengths.tolist()


def test_zero_copy_views_survive_until_released() -> None:
    ring, dev, _ = rx_setup(32, zero_copy=True, slots=256)
    lengths = np.full(31, 200)
    dev.receive(make_frames(np.arange(31), lengths), lengths)
    held = ring.drain(64)
    views = held.frames()
    snapshot = [v.copy() for v in views]
    held_slots = set(held.slots.tolist())
    q = as_qwords(ring._raw)
    for round_ in range(10):  # many later drains overwrite every other buffer
        more = make_frames(np.arange(31) + 1000 * (round_ + 1), lengths, seed=round_ + 1)
        assert dev.receive(more, lengths) == 31
        armed_idx = (ring.next_to_clean + np.arange(ring.armed)) % ring.size
        armed_slots = set(((q[armed_idx, 0] - POOL_IOVA) // BUF).tolist())
        assert not armed_slots & held_slots  # the NIC never gets a held buffer
        b = ring.drain(64)
        assert len(b) == 31
        b.release()
    for v, s in zip(views, snapshot, strict=True):
        assert np.array_equal(v, s)
    assert [check_frame(v) for v in views] == list(range(31))
    held.release()
    held.release()  # idempotent
    with pytest.raises(ValueError):
        held.frame(0)


def test_starvation_and_recovery() -> None:
    ring, dev, tails = rx_setup(16, zero_copy=True, slots=24)
    lengths = np.full(15, 80)
    kept = []
    for r in range(3):
        dev.receive(make_frames(np.arange(15) + 100 * r, lengths), lengths)
        kept.append(ring.drain(64))
    assert sum(len(b) for b in kept) == 15 + 9  # the pool ran dry
    st = ring.stats()
    assert st.starved > 0
    assert ring.armed == 0 and dev.available == 0  # nothing to receive into
    writes = len(tails)
    assert ring.replenish() == 0 and len(tails) == writes  # no buffer: no tail write
    for b in kept:
        b.release()
    assert ring.free_buffers == 24
    assert ring.replenish() == 15 and tails[-1] == ring.tail and dev.available == 15
    dev.receive(make_frames(np.arange(5) + 999, np.full(5, 80)), np.full(5, 80))
    b = ring.drain(64)
    assert [check_frame(f) for f in b.frames()] == list(range(999, 1004))


def test_multi_descriptor_frame_dropped_whole() -> None:
    ring, dev, _ = rx_setup(16)
    big = make_frames(np.array([7]), np.array([5000]))[0]  # three buffers
    small = make_frames(np.array([8]), np.array([100]))[0, :100]
    assert dev.receive([big, small]) == 2
    got = []
    for _ in range(4):  # a budget of one still makes progress through the big frame
        got += [check_frame(f) for f in ring.drain(1).frames()]
    assert got == [8]
    st = ring.stats()
    assert st.drop_multi == 1 and st.drop_multi_descs == 3 and st.frames == 1


def test_multi_descriptor_frame_across_drains_never_split() -> None:
    ring, dev, _ = rx_setup(16)
    # Descriptors of one frame arriving over several drains, EOP last.
    for i, status in enumerate([RxStatus.DD, RxStatus.DD, RxStatus.DD | RxStatus.EOP]):
        dev.writeback(dev.head, BUF, status)
        dev.head += 1
        assert len(ring.drain(8)) == 0, i
    small = make_frames(np.array([3]), np.array([64]))
    dev.receive(small, np.array([64]))
    assert [check_frame(f) for f in ring.drain(8).frames()] == [3]
    assert ring.stats().drop_multi == 1


def test_eop_missing_for_whole_ring_then_recovers() -> None:
    ring, dev, _ = rx_setup(16)
    for _ in range(3 * ring.size):
        if dev.available == 0:
            ring.drain(64)
        dev.writeback(dev.head, 512, int(RxStatus.DD))
        dev.head = (dev.head + 1) % ring.size
    ring.drain(64)
    assert ring.armed == 15
    two = make_frames(np.array([1, 2]), np.array([64, 64]))
    dev.receive(two, np.array([64, 64]))
    got = [check_frame(f) for f in ring.drain(64).frames()]
    assert got == [2]  # the first one ends the endless frame, dropped with it
    st = ring.stats()
    assert st.drop_multi == 1 and st.drop_multi_descs == 3 * 16 + 1


@pytest.mark.parametrize("fmt", sorted(RX_FORMATS))
def test_bad_descriptors_counted_by_reason(fmt: str) -> None:
    ring, dev, _ = rx_setup(32, fmt)
    good = make_frames(np.array([42]), np.array([64]))
    cases = [
        (0, int(RxStatus.DD | RxStatus.EOP), 0),  # length zero
        (BUF + 1, int(RxStatus.DD | RxStatus.EOP), 0),  # beyond the buffer
        (60000, int(RxStatus.DD | RxStatus.EOP), 0),
        (100, int(RxStatus.DD | RxStatus.EOP), int(RxError.CE)),
        (100, int(RxStatus.DD | RxStatus.EOP), int(RxError.RXE)),
    ]
    for length, status, errors in cases:
        dev.writeback(dev.head, length, status, errors)
        dev.head += 1
    # A checksum error is reported, not dropped.
    dev.receive(good, np.array([64]), errors=int(RxError.TCPE))
    b = ring.drain(64)
    assert [check_frame(f) for f in b.frames()] == [42]
    st = ring.stats()
    assert (st.drop_len_zero, st.drop_len_oversize, st.drop_error) == (1, 2, 2)
    assert st.descs_cleaned == 6 and st.frames == 1


def test_exact_buffer_size_frame_accepted() -> None:
    ring, dev, _ = rx_setup(16)
    f = make_frames(np.array([5]), np.array([BUF]))
    dev.receive(f, np.array([BUF]))
    b = ring.drain(4)
    assert b.lengths.tolist() == [BUF] and check_frame(b.frame(0)) == 5


def test_dd_on_unarmed_descriptors_ignored_and_counted() -> None:
    ring, dev, _ = rx_setup(16, zero_copy=True, slots=20)
    lengths = np.full(15, 64)
    dev.receive(make_frames(np.arange(15), lengths), lengths)
    held = ring.drain(64)  # 15 held, 5 slots left: only 5 armed
    assert ring.armed == 5
    unarmed = [(ring.tail + i) % 16 for i in range(16 - ring.armed)]
    for i in unarmed:
        dev.writeback(i, 64, int(RxStatus.DD | RxStatus.EOP))
    # Fill every armed descriptor: the drain then looks beyond them.
    dev.receive(make_frames(np.arange(5) + 50, np.full(5, 64)), np.full(5, 64))
    b = ring.drain(64)
    assert [check_frame(f) for f in b.frames()] == list(range(50, 55))
    assert ring.stats().dd_unarmed == len(unarmed)
    held.release()
    b.release()
    dev.head = ring.next_to_clean  # the fake device's head is where the ring is
    ring.replenish()
    dev.receive(make_frames(np.array([77]), np.array([64])), np.array([64]))
    assert [check_frame(f) for f in ring.drain(64).frames()] == [77]


def test_ring_rejects_bad_geometry() -> None:
    pool = np.zeros((64, BUF), np.uint8)
    with pytest.raises(ValueError):
        RxRing(np.zeros(12, LEGACY_RX), 0, pool, 0, lambda v: None)
    with pytest.raises(ValueError):
        RxRing(np.zeros(128, LEGACY_RX), 0, pool, 0, lambda v: None)  # pool too small
    with pytest.raises(ValueError):
        RxRing(np.zeros(16, LEGACY_RX), 0, pool, 0, lambda v: None, want_rss=True)
    with pytest.raises(ValueError):
        TxRing(np.zeros(20, LEGACY_TX), 0, pool, 0, lambda v: None)


# ---------------------------------------------------------------------- TX
def tx_setup(n: int = 32, auto: bool = True) -> tuple[TxRing, FakeTxDevice, list[int]]:
    descs = np.zeros(n, LEGACY_TX)
    pool = np.zeros((n, BUF), np.uint8)
    dev = FakeTxDevice(descs, pool, POOL_IOVA, auto=auto, record=True)
    tails: list[int] = []

    def tail(v: int) -> None:
        tails.append(v)
        dev.write_tail(v)

    return TxRing(descs, DESC_IOVA, pool, POOL_IOVA, tail), dev, tails


def test_tx_round_trip_with_wraps() -> None:
    ring, dev, tails = tx_setup(32)
    lengths = np.arange(MIN_FRAME, MAX_FRAME + 1)
    frames = make_frames(np.arange(len(lengths)), lengths)
    rng = np.random.default_rng(2)
    done = 0
    while done < len(lengths):
        k = int(rng.integers(1, 40))
        writes = len(tails)
        n = ring.post(frames[done : done + k], lengths[done : done + k])
        assert len(tails) == writes + (1 if n else 0)
        done += n
        ring.reclaim()
    assert [check_frame(np.frombuffer(f, np.uint8)) for f in dev.sent] == list(range(len(lengths)))
    assert [len(f) for f in dev.sent] == lengths.tolist()
    c = ring.counters
    assert c.frames == len(lengths) and c.bytes == int(lengths.sum())
    assert c.reclaimed == len(lengths) and ring.in_flight == 0


def test_tx_back_pressure_and_reclaim() -> None:
    ring, dev, _ = tx_setup(16, auto=False)
    lengths = np.full(40, 64)
    frames = make_frames(np.arange(40), lengths)
    assert ring.post(frames) == 15  # N-1 usable
    assert ring.post(frames[15:]) == 0
    assert ring.counters.refused == 25 + 25 and ring.counters.full_events == 2
    assert ring.reclaim() == 0  # nothing completed: nothing freed, nothing overwritten
    dev.complete(6)
    assert ring.reclaim() == 6 and ring.free == 6
    assert ring.post(frames[15:]) == 6
    dev.complete()
    assert ring.reclaim() == 15
    assert [check_frame(np.frombuffer(f, np.uint8)) for f in dev.sent] == list(range(21))


def test_tx_list_input_and_validation() -> None:
    ring, dev, _ = tx_setup(16)
    lens = [60, 1514, 200, 61]
    frames = make_frames(np.arange(4), np.array(lens))
    assert ring.post([frames[i, :n] for i, n in enumerate(lens)]) == 4
    assert [len(f) for f in dev.sent] == lens
    assert [check_frame(np.frombuffer(f, np.uint8)) for f in dev.sent] == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        ring.post([np.zeros(0, np.uint8)])
    with pytest.raises(ValueError):
        ring.post([np.zeros(BUF + 1, np.uint8)])
    with pytest.raises(ValueError):
        ring.post(np.zeros((2, 100), np.uint8), np.array([10, 0]))
    with pytest.raises(ValueError):
        ring.post(np.zeros((2, 100), np.uint8), np.array([10, 101]))


def test_tx_ignores_dd_on_idle_descriptors() -> None:
    ring, dev, _ = tx_setup(16, auto=False)
    dev.raw[:, 12] = 1  # a device setting DD everywhere
    assert ring.reclaim() == 0
    assert ring.post(np.zeros((3, 64), np.uint8)) == 3
    assert ring.reclaim() == 0  # posting cleared the status of what it queued
    dev.complete()
    assert ring.reclaim() == 3
