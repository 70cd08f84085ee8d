"""The fast drain against the general numpy path: the same batch from the same ring state.

Two rings are driven identically into one state (position anywhere, so runs
cross the ring's end; zero-copy buffers held by the consumer or not), then
the same write-backs (clean runs, error bits, bad lengths, frames spanning
descriptors, descriptors not done) are scribbled into both. One drains with
``drain`` (the fast path, falling back when it must), the other with the
general path alone; batch, counters, descriptors and buffer bookkeeping must
agree. The TX half checks the row copies and the lazily summed byte counter.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hwnic.nic.descriptors import (
    ADVANCED_RX_FORMAT,
    EXTENDED_RX_FORMAT,
    LEGACY_RX_FORMAT,
    LEGACY_TX,
    RxError,
    RxFormat,
    RxStatus,
    TxStatus,
    as_raw,
)
from hwnic.nic.rx_ring import RxBatch, RxRing
from hwnic.nic.tx_ring import TxRing

POOL_IOVA = 0x1_0000_0000
BUF = 2048
FORMATS = [LEGACY_RX_FORMAT, EXTENDED_RX_FORMAT, ADVANCED_RX_FORMAT]
DONE = RxStatus.DD | RxStatus.EOP
TX_STATUS_OFFSET = 12
BYTE = 256
HASH_STEP = 2654435761  # Knuth's multiplicative hash: distinct hashes per descriptor
U32_MASK = (1 << 32) - 1

# One descriptor's write-back: (status byte, error byte, length).
Entry = tuple[int, int, int]
good_entry = st.tuples(
    st.integers(0, BYTE - 1).map(lambda s: s | DONE),  # other status bits are information
    st.sampled_from([0, 0, RxError.TCPE, RxError.IPE]),  # checksum results: no frame error
    st.sampled_from([1, 60, 64, 255, 256, 1514, BUF]) | st.integers(1, BUF),
)
more_entry = st.tuples(st.just(int(RxStatus.DD)), st.just(0), st.integers(1, BUF))  # no EOP
garbage_entry = st.tuples(
    st.integers(0, BYTE - 1),
    st.integers(0, BYTE - 1),
    st.sampled_from([0, BUF + 1, 65535]) | st.integers(0, 65535),
)
any_entry = st.one_of(good_entry, good_entry, good_entry, more_entry, garbage_entry)


@st.composite
def rounds(draw: st.DrawFn, size: int) -> list[tuple[list[Entry], int, bool]]:
    """Rounds of (write-backs from next_to_clean on, budget, consumer keeps the batch)."""
    out = []
    for _ in range(draw(st.integers(1, 4))):
        clean = draw(st.booleans())  # long clean runs: the fast path all the way
        entry = good_entry if clean else any_entry
        entries = draw(st.lists(entry, min_size=1, max_size=size))
        out.append((entries, draw(st.integers(1, size)), draw(st.booleans())))
    return out


def make_rx(fmt: RxFormat, size: int, zero_copy: bool, seed: int) -> RxRing:
    slots = size * 2 if zero_copy else size
    pool = np.random.default_rng(seed).integers(0, BYTE, (slots, BUF), dtype=np.uint8)
    ring = RxRing(
        fmt,
        np.zeros(size, dtype=fmt.read_dtype),
        0x1000,
        pool,
        POOL_IOVA,
        write_tail=lambda v: None,
        zero_copy=zero_copy,
    )
    ring.replenish()
    return ring


def scribble(ring: RxRing, entries: list[Entry]) -> None:
    """Write ``entries`` over descriptors from next_to_clean on (armed or not), status last."""
    raw = as_raw(ring.descs)
    fmt = ring.fmt
    for i, (status, errors, length) in enumerate(entries):
        d = (ring.next_to_clean + i) % ring.size
        raw[d, 8:16] = 0
        raw[d, fmt.length_offset : fmt.length_offset + 2] = list(length.to_bytes(2, "little"))
        raw[d, fmt.error_offset] = errors
        raw[d, fmt.status_offset] = status
        if fmt.rss_offset is not None:  # a hash per descriptor, to see it follow its frame
            rss = (d * HASH_STEP) & U32_MASK
            raw[d, fmt.rss_offset : fmt.rss_offset + 4] = list(rss.to_bytes(4, "little"))


def advance(ring: RxRing, count: int, held: list[RxBatch], keep: bool) -> None:
    """Receive and drain ``count`` good frames, so next_to_clean moves on."""
    while count:
        n = min(count, ring.armed)
        if n == 0:
            break
        scribble(ring, [(DONE, 0, 64)] * n)
        batch = ring.drain(n)
        count -= n
        if keep:
            held.append(batch)
        else:
            batch.release()


def assert_same_batch(a: RxBatch, b: RxBatch) -> None:
    assert a.count == b.count
    assert a.zero_copy == b.zero_copy
    assert np.array_equal(a.lengths, b.lengths)
    assert a.lengths.dtype == b.lengths.dtype
    assert a.frames.shape == b.frames.shape  # count x the longest frame
    for i in range(a.count):  # bytes beyond a frame's length are unspecified
        assert np.array_equal(a.frame(i), b.frame(i))
    assert np.array_equal(a.slots, b.slots)
    assert (a.rss is None) == (b.rss is None)
    if a.rss is not None and b.rss is not None:
        assert np.array_equal(a.rss, b.rss)
    assert a.more_pending == b.more_pending


def assert_same_ring(a: RxRing, b: RxRing) -> None:
    assert a.stats() == b.stats()  # every counter, bytes included; armed; free buffers
    for name in ("next_to_clean", "tail", "armed", "short"):
        assert getattr(a, name) == getattr(b, name), name
    assert np.array_equal(a.raw, b.raw)  # the same descriptors re-armed with the same buffers
    assert np.array_equal(a.desc_slot, b.desc_slot)
    assert np.array_equal(a._free[: a.free_buffers], b._free[: b.free_buffers])


@settings(max_examples=300, deadline=None)
@given(
    fmt=st.sampled_from(FORMATS),
    size=st.sampled_from([16, 32, 256]),
    zero_copy=st.booleans(),
    data=st.data(),
)
def test_fast_drain_matches_the_general_path(
    fmt: RxFormat, size: int, zero_copy: bool, data: st.DataObject
) -> None:
    seed = data.draw(st.integers(0, 2**32 - 1))
    fast, general = make_rx(fmt, size, zero_copy, seed), make_rx(fmt, size, zero_copy, seed)
    start = data.draw(st.integers(0, size - 1), label="start")
    keep_first = zero_copy and data.draw(st.booleans(), label="consumer keeps buffers")
    held_fast: list[RxBatch] = []
    held_general: list[RxBatch] = []
    advance(fast, start, held_fast, keep_first)
    advance(general, start, held_general, keep_first)
    assert_same_ring(fast, general)
    for entries, budget, keep in data.draw(rounds(size), label="rounds"):
        scribble(fast, entries)
        scribble(general, entries)
        a = fast.drain(budget)
        limit = min(budget, general.armed)
        b = general._drain_general(limit) if limit > 0 else general.drain(budget)
        assert_same_batch(a, b)
        assert_same_ring(fast, general)
        if keep:
            held_fast.append(a)
            held_general.append(b)
        else:
            a.release()
            b.release()
        assert_same_ring(fast, general)
    for x, y in zip(held_fast, held_general, strict=True):
        x.release()
        y.release()
    assert_same_ring(fast, general)


def test_a_clean_run_across_the_ring_end_is_one_batch_and_one_tail_write() -> None:
    for zero_copy in (False, True):
        tails: list[int] = []
        size = 256
        ring = RxRing(
            ADVANCED_RX_FORMAT,
            np.zeros(size, dtype=ADVANCED_RX_FORMAT.read_dtype),
            0x1000,
            np.zeros((size * 2, BUF), dtype=np.uint8),
            POOL_IOVA,
            write_tail=tails.append,
            zero_copy=zero_copy,
        )
        ring.replenish()
        advance(ring, 200, [], keep=False)
        writes = ring.counters["tail_writes"]
        scribble(ring, [(DONE, 0, 60 + i % 5) for i in range(150)])
        batch = ring.drain(150)
        assert batch.count == 150 and ring.next_to_clean == (200 + 150) % size
        assert batch.frames.shape == (150, 64)
        assert ring.counters["tail_writes"] == writes + 1
        assert ring.armed == size - 1
        batch.release()


@settings(max_examples=100, deadline=None)
@given(
    posts=st.lists(st.lists(st.integers(1, BUF), min_size=0, max_size=300), min_size=1, max_size=6),
    width=st.sampled_from([64, 1514, BUF]),
    seed=st.integers(0, 2**32 - 1),
)
def test_tx_posts_copy_every_row_and_count_every_byte(
    posts: list[list[int]], width: int, seed: int
) -> None:
    size = 256
    ring = TxRing(
        np.zeros(size, LEGACY_TX),
        0x2000,
        np.zeros((size, BUF), np.uint8),
        POOL_IOVA,
        write_tail=lambda v: None,
    )
    rng = np.random.default_rng(seed)
    raw = as_raw(ring.descs)
    sent_bytes = 0
    for lengths_list in posts:
        lengths = np.minimum(np.array(lengths_list, dtype=np.int64), width)
        rows = rng.integers(0, BYTE, (len(lengths), width), dtype=np.uint8)
        start = ring.tail
        n = ring.post(rows, lengths)
        assert n == min(len(lengths), size - 1)  # everything before was reclaimed
        sent_bytes += int(lengths[:n].sum())
        longest = int(lengths[:n].max()) if n else 0
        for i in range(n):
            d = (start + i) % size
            assert np.array_equal(ring.buffers[d, :longest], rows[i, :longest])
            assert ring.descs[d]["length"] == lengths[i] and ring.descs[d]["status"] == 0
        assert ring.stats()["bytes"] == sent_bytes
        raw[:, TX_STATUS_OFFSET] |= np.uint8(TxStatus.DD)  # the NIC sent everything
        assert ring.reclaim() == n and ring.in_flight == 0
    assert ring.stats()["bytes"] == sent_bytes
