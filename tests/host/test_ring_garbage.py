"""Rings against write-backs no sane NIC produces: nothing out of bounds, all counted, recovery.

The "device" here scribbles over the whole descriptor ring at once, armed or
not: zero and oversized lengths, EOP missing, error bits, DD on descriptors
the driver never armed (and on TX descriptors never posted). The drivers
never read RDH/TDH, so a wild head pointer has nothing to corrupt.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hwnic import traffic
from hwnic.nic.descriptors import (
    ADVANCED_RX_FORMAT,
    EXTENDED_RX_FORMAT,
    LEGACY_RX_FORMAT,
    LEGACY_TX,
    RX_FRAME_ERRORS,
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
SIZE = 16
SRC, DST = "02:00:00:00:00:01", "02:00:00:00:00:02"
FORMATS = [LEGACY_RX_FORMAT, EXTENDED_RX_FORMAT, ADVANCED_RX_FORMAT]
TX_STATUS_OFFSET = 12

# One descriptor's write-back: (status byte, error byte, length).
garbage_entry = st.tuples(
    st.integers(0, 255),
    st.integers(0, 255),
    st.sampled_from([0, 1, 59, 64, BUF, BUF + 1, 4096, 65535]) | st.integers(0, 65535),
)


def make_rx(fmt: RxFormat, zero_copy: bool, slots: int) -> tuple[RxRing, list[int]]:
    tails: list[int] = []
    ring = RxRing(
        fmt,
        np.zeros(SIZE, dtype=fmt.read_dtype),
        0x1000,
        np.zeros((slots, BUF), dtype=np.uint8),
        POOL_IOVA,
        write_tail=tails.append,
        zero_copy=zero_copy,
    )
    ring.replenish()
    return ring, tails


def scribble(ring: RxRing, entries: list[tuple[int, int, int]]) -> None:
    """Write ``entries`` over descriptors from next_to_clean on, armed or not."""
    raw = as_raw(ring.descs)
    fmt = ring.fmt
    for i, (status, errors, length) in enumerate(entries):
        d = (ring.next_to_clean + i) % ring.size
        raw[d, 8:16] = 0
        raw[d, fmt.length_offset : fmt.length_offset + 2] = np.frombuffer(
            length.to_bytes(2, "little"), np.uint8
        )
        raw[d, fmt.error_offset] = errors
        raw[d, fmt.status_offset] = status


def expected_singles(
    ring: RxRing, descs: np.ndarray, start: int, used: int
) -> tuple[int, int, int]:
    """(good, bad length, bad error) among single-descriptor frames in ``used`` descriptors.

    ``descs``: the ring as the device left it, before the drain re-armed it.
    """
    fields = ring.fmt.parse(descs)
    good = bad_length = bad_error = 0
    prev_eop = True
    for i in range(used):  # the reference model: a plain loop
        d = (start + i) % ring.size
        eop = bool(fields.eop[d])
        if prev_eop and eop:
            length = int(fields.length[d])
            if length == 0 or length > BUF:
                bad_length += 1
            elif fields.error[d]:
                bad_error += 1
            else:
                good += 1
        prev_eop = eop
    return good, bad_length, bad_error


def deliver_good(ring: RxRing, seqs: np.ndarray) -> None:
    """A sane device again: frames into the armed buffers, DD|EOP."""
    lengths = np.full(len(seqs), 64)
    frames = traffic.build(seqs, lengths, SRC, DST)
    raw, q = as_raw(ring.descs), as_qwords(ring.descs)
    fmt = ring.fmt
    for i in range(len(seqs)):
        d = (ring.next_to_clean + i) % ring.size
        slot = (int(q[d, 0]) - POOL_IOVA) // BUF
        ring.pool[slot, :64] = frames[i, :64]
        raw[d, 8:16] = 0
        raw[d, fmt.length_offset : fmt.length_offset + 2] = np.frombuffer(
            (64).to_bytes(2, "little"), np.uint8
        )
        raw[d, fmt.status_offset] = RxStatus.DD | RxStatus.EOP


@settings(max_examples=150, deadline=None)
@given(
    fmt=st.sampled_from(FORMATS),
    zero_copy=st.booleans(),
    rounds=st.lists(st.lists(garbage_entry, min_size=1, max_size=SIZE), min_size=1, max_size=6),
    budget=st.integers(1, SIZE),
)
def test_whole_ring_garbage_is_bounded_counted_and_recovers(
    fmt: RxFormat, zero_copy: bool, rounds: list[list[tuple[int, int, int]]], budget: int
) -> None:
    slots = SIZE * 2
    ring, _ = make_rx(fmt, zero_copy, slots)
    held = []
    for entries in rounds:
        scribble(ring, entries)
        start, armed_before = ring.next_to_clean, ring.armed
        before, written = dict(ring.counters), ring.descs.copy()
        batch = ring.drain(budget)
        used = ring.counters["descriptors"] - before["descriptors"]
        assert 0 <= used <= min(budget, armed_before), "consumed a descriptor never armed"
        assert (batch.lengths > 0).all() and (batch.lengths <= BUF).all()
        good, bad_length, bad_error = expected_singles(ring, written, start, used)
        assert batch.count == good
        assert ring.counters["drops_length"] - before["drops_length"] == bad_length
        assert ring.counters["drops_error"] - before["drops_error"] == bad_error
        if zero_copy:
            assert ((batch.slots >= 0) & (batch.slots < slots)).all()
            held.append(batch)
        # Every slot is somewhere: armed, free or held by the consumer; none twice.
        if zero_copy:
            armed = ring.desc_slot[ring.desc_slot >= 0]
            free = ring._free[: ring.free_buffers]
            kept = np.concatenate([b.slots for b in held] + [armed, free])
            assert len(kept) == slots and len(np.unique(kept)) == slots
        assert 0 <= ring.armed <= SIZE - 1
    for b in held:
        b.release()
    # Recovery: a clean drain of whatever the garbage left half-done (the next
    # EOP ends it), then a sane device's frames all arrive intact.
    ring.replenish()
    scribble(ring, [(RxStatus.DD | RxStatus.EOP, RX_FRAME_ERRORS, 64)] * ring.armed)
    ring.drain(SIZE).release()
    ring.replenish()
    n = ring.armed
    assert n == SIZE - 1
    deliver_good(ring, np.arange(n))
    out = ring.drain(SIZE)
    checked = traffic.check(out.frames, out.lengths)
    assert out.count == n and checked.good.all() and (checked.seqs == np.arange(n)).all()


def test_no_eop_in_a_whole_ring_is_dropped_not_stuck() -> None:
    for fmt in FORMATS:
        ring, _ = make_rx(fmt, False, SIZE)
        scribble(ring, [(RxStatus.DD, 0, 64)] * SIZE)
        assert ring.drain(SIZE).count == 0
        assert ring.counters["drops_multi_descriptor"] >= 1
        assert ring.armed == SIZE - 1  # consumed and re-armed


@settings(max_examples=100, deadline=None)
@given(
    posted=st.integers(0, SIZE - 1),
    dd=st.lists(st.booleans(), min_size=SIZE, max_size=SIZE),
)
def test_tx_dd_on_never_posted_descriptors_is_ignored(posted: int, dd: list[bool]) -> None:
    ring = TxRing(
        np.zeros(SIZE, LEGACY_TX),
        0x2000,
        np.zeros((SIZE, BUF), np.uint8),
        POOL_IOVA,
        write_tail=lambda v: None,
    )
    lengths = np.full(posted, 64)
    assert ring.post(traffic.build(np.arange(posted), lengths, SRC, DST), lengths) == posted
    raw = as_raw(ring.descs)
    for d, bit in enumerate(dd):  # the device writes DD anywhere, posted or not
        raw[d, TX_STATUS_OFFSET] = TxStatus.DD if bit else 0
    done = ring.reclaim()
    first_clear = dd.index(False) if False in dd else SIZE
    assert done == min(posted, first_clear), "reclaimed a descriptor never posted"
    assert 0 <= ring.in_flight <= SIZE - 1 and ring.free == SIZE - 1 - ring.in_flight
    # The ring still works: the rest completes, then a full ring posts.
    raw[:, TX_STATUS_OFFSET] = TxStatus.DD
    ring.reclaim()
    assert ring.in_flight == 0
    lengths = np.full(SIZE - 1, 64)
    assert ring.post(traffic.build(np.arange(SIZE - 1), lengths, SRC, DST), lengths) == SIZE - 1


def test_reset_returns_armed_buffers_and_discards_tx() -> None:
    ring, tails = make_rx(LEGACY_RX_FORMAT, True, SIZE * 2)
    deliver_good(ring, np.arange(4))
    held = ring.drain(4)
    ring.reset()
    assert ring.armed == 0 and ring.next_to_clean == 0 and ring.tail == 0
    assert ring.free_buffers == SIZE * 2 - 4  # all but the consumer's four
    ring.replenish()
    assert ring.armed == SIZE - 1 and tails[-1] == SIZE - 1
    held.release()
    tx = TxRing(
        np.zeros(SIZE, LEGACY_TX), 0x2000, np.zeros((SIZE, BUF), np.uint8), POOL_IOVA,
        write_tail=lambda v: None,
    )  # fmt: skip
    lengths = np.full(5, 64)
    tx.post(traffic.build(np.arange(5), lengths, SRC, DST), lengths)
    assert tx.reset() == 5 and tx.in_flight == 0 and tx.stats()["reset_discards"] == 5


def test_released_buffers_wake_a_short_ring() -> None:
    ring, _ = make_rx(LEGACY_RX_FORMAT, True, SIZE + 2)
    calls = []
    ring.on_refill_needed = lambda: calls.append(1)
    deliver_good(ring, np.arange(SIZE - 1))
    held = ring.drain(SIZE)  # only 3 spare buffers: the ring is short now
    assert ring.short and not calls
    held.release()
    assert calls, "nobody was told to re-arm the starved ring"
    ring.replenish()
    assert not ring.short and ring.armed == SIZE - 1
