"""DMA memory on the host: IOVA allocation, pools with and without hugepages, views."""

from __future__ import annotations

import gc
import re
import warnings
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwnic.dma import (
    HUGEPAGE_SIZE,
    IOVA_ALIGN,
    IOVA_BASE,
    IOVA_LIMIT,
    NR_HUGEPAGES,
    Backing,
    DmaPool,
    IovaAllocator,
    RangeAllocator,
)
from hwnic.errors import DmaError, NoHugepages

# ---------------------------------------------------------------------------
# IOVA allocation
# ---------------------------------------------------------------------------


def test_iova_defaults_stay_below_39_bits() -> None:
    iovas = IovaAllocator()
    assert IOVA_LIMIT == 1 << 39
    a = iovas.allocate(HUGEPAGE_SIZE, HUGEPAGE_SIZE)
    assert a >= IOVA_BASE and a + HUGEPAGE_SIZE <= IOVA_LIMIT
    assert a % HUGEPAGE_SIZE == 0
    with pytest.raises(ValueError, match="39"):
        IovaAllocator(limit=1 << 40)
    with pytest.raises(ValueError, match="IOMMU page"):
        IovaAllocator(align=64)


def test_allocator_aligns_rounds_and_never_overlaps() -> None:
    r = RangeAllocator(0x1000, 0x100000, 0x1000)
    a = r.allocate(1)  # rounded up to one granule
    b = r.allocate(0x1000, 0x10000)
    c = r.allocate(0x3000)
    assert a == 0x1000
    assert b % 0x10000 == 0
    assert r.allocated == {a: 0x1000, b: 0x1000, c: 0x3000}
    spans = sorted((s, s + n) for s, n in r.allocated.items())
    assert all(e1 <= s2 for (_, e1), (s2, _) in pairwise(spans))
    # First fit: the gap that b's alignment left below it takes c.
    assert c == 0x2000
    assert r.allocate(0x1000) == 0x5000


def test_allocator_exhaustion_and_reuse() -> None:
    r = RangeAllocator(0, 0x4000, 0x1000)
    blocks = [r.allocate(0x1000) for _ in range(4)]
    assert blocks == [0, 0x1000, 0x2000, 0x3000]
    with pytest.raises(DmaError, match="no free"):
        r.allocate(0x1000)
    assert r.free(0x1000) == 0x1000
    assert r.free(0x2000) == 0x1000
    assert r.allocate(0x2000) == 0x1000  # the two freed neighbours merged
    with pytest.raises(ValueError, match="not the start"):
        r.free(0x1800)
    with pytest.raises(ValueError):
        r.allocate(0x1000, 3)  # not a power of two


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.integers(1, 0x9000),
            st.sampled_from([0x1000, 0x2000, 0x8000, 0x10000]),
            st.integers(0, 1000),
        ),
        max_size=60,
    )
)
def test_allocator_invariants_hold_for_any_sequence(ops: list[tuple[bool, int, int, int]]) -> None:
    base, limit, granule = 0x3000, 0x80000, 0x1000
    r = RangeAllocator(base, limit, granule)
    live: dict[int, int] = {}
    for do_alloc, size, align, pick in ops:
        if do_alloc or not live:
            try:
                addr = r.allocate(size, align)
            except DmaError:
                # Refusal is legitimate only if no gap between live ranges fits it.
                need = -(-size // granule) * granule
                edges = [base, *sorted(e for s, n in live.items() for e in (s, s + n)), limit]
                gaps = list(zip(edges[::2], edges[1::2], strict=True))
                assert all(-(-lo // align) * align + need > hi for lo, hi in gaps)
                continue
            assert addr % align == 0 and addr % granule == 0
            assert base <= addr and addr + size <= limit
            live[addr] = -(-size // granule) * granule
        else:
            addr = sorted(live)[pick % len(live)]
            assert r.free(addr) == live.pop(addr)
        spans = sorted((s, s + n) for s, n in live.items())
        assert all(e1 <= s2 for (_, e1), (s2, _) in pairwise(spans))
        assert r.allocated == live
        assert r.free_bytes + sum(live.values()) == limit - base
    for addr in list(live):
        r.free(addr)
    assert r.allocate(limit - base) == base  # everything merged back into one range


# ---------------------------------------------------------------------------
# Pools
# ---------------------------------------------------------------------------


class RecordingMapper:
    """Stands in for a vfio Device: records what the pool maps."""

    def __init__(self, fail: bool = False) -> None:
        self.live: dict[int, tuple[int, int]] = {}
        self.log: list[tuple[str, int, int]] = []
        self.fail = fail

    def map_dma(self, vaddr: int, iova: int, size: int) -> None:
        if self.fail:
            raise DmaError("mapping refused")
        assert vaddr % 4096 == 0 and iova % 4096 == 0 and size % 4096 == 0
        assert iova not in self.live
        self.live[iova] = (vaddr, size)
        self.log.append(("map", iova, size))

    def unmap_dma(self, iova: int, size: int) -> None:
        assert self.live.pop(iova)[1] == size
        self.log.append(("unmap", iova, size))


def test_pool_without_hugepages_views_are_views() -> None:
    with DmaPool(use_hugepages=False) as pool:
        buf = pool.allocate(8192, align=128)
        assert buf.backing is Backing.ANONYMOUS and pool.backing is Backing.ANONYMOUS
        assert buf.nbytes == len(buf) == 8192
        assert buf.iova % 128 == 0 and IOVA_BASE <= buf.iova < IOVA_LIMIT
        words = buf.array(np.uint32)
        assert words.shape == (2048,) and words.flags.writeable
        words[:] = np.arange(2048, dtype=np.uint32)
        bytes_view = buf.array(np.uint8, (8192,))
        assert bytes_view[4:8].tobytes() == b"\x01\x00\x00\x00"
        bytes_view[0] = 0xEE
        assert words[0] == 0xEE  # seen through the other view: same memory
        assert np.shares_memory(words, bytes_view)
        assert words.ctypes.data == buf.vaddr
        shaped = buf.array(np.uint64, (4, 2), offset=16)
        assert shaped.shape == (4, 2) and shaped.ctypes.data == buf.vaddr + 16
        buf.memory[100] = 7
        assert buf.read(100, 1) == b"\x07"
        buf.write(b"hello", 200)
        assert bytes_view[200:205].tobytes() == b"hello"
        with pytest.raises(ValueError):
            buf.array(np.uint64, (1025,))
        with pytest.raises(ValueError):
            buf.write(b"xx", 8191)


def test_subviews_have_their_own_iova() -> None:
    with DmaPool(use_hugepages=False) as pool:
        buf = pool.allocate(16 * 2048, align=2048)
        sub = buf.view(4096, 2048)
        assert sub.iova == buf.iova + 4096 and sub.vaddr == buf.vaddr + 4096
        sub.array(np.uint8)[:] = 9
        assert (buf.array(np.uint8)[4096:6144] == 9).all()
        assert buf.array(np.uint8)[6144] == 0
        parts = buf.split(2048)
        assert len(parts) == 16
        assert [p.iova - buf.iova for p in parts] == list(range(0, 16 * 2048, 2048))
        sub.free()  # views do not own memory: buf stays usable
        assert buf.array(np.uint8)[4096] == 9
        with pytest.raises(ValueError):
            buf.view(32 * 1024 - 100, 200)


def test_small_buffers_share_chunks_and_memory_is_reused() -> None:
    mapper = RecordingMapper()
    with DmaPool(mapper, use_hugepages=False) as pool:
        bufs = [pool.allocate(2048, align=2048) for _ in range(1024)]  # 2 MiB of buffers
        assert len(pool.chunks) == 1  # one mapping, not one per buffer
        assert len(mapper.log) == 1
        spans = sorted((b.iova, b.iova + b.nbytes) for b in bufs)
        assert all(e1 <= s2 for (_, e1), (s2, _) in pairwise(spans))
        chunk_vaddr, chunk_iova, chunk_size, _ = pool.chunks[0]
        assert all(b.iova - chunk_iova == b.vaddr - chunk_vaddr for b in bufs)
        assert all(chunk_iova <= b.iova < chunk_iova + chunk_size for b in bufs)
        freed_iova = bufs[10].iova
        bufs[10].free()
        bufs[10].free()  # idempotent
        with pytest.raises(DmaError, match="freed"):
            bufs[10].array(np.uint8)
        again = pool.allocate(2048, align=2048)
        assert again.iova == freed_iova
    assert mapper.live == {}  # closing the pool unmapped everything
    with pytest.raises(DmaError, match="freed"):
        bufs[0].array(np.uint8)


def test_large_allocation_gets_its_own_chunk() -> None:
    mapper = RecordingMapper()
    with DmaPool(mapper, use_hugepages=False, chunk_size=HUGEPAGE_SIZE) as pool:
        small = pool.allocate(4096)
        big = pool.allocate(3 * HUGEPAGE_SIZE + 5)
        assert len(pool.chunks) == 2
        assert big.iova % HUGEPAGE_SIZE == 0
        big.array(np.uint8)[-1] = 1
        big.free()  # a dedicated chunk is released at once
        assert len(pool.chunks) == 1 and len(mapper.live) == 1
        assert small.array(np.uint8)[0] == 0


def test_mapper_failure_leaves_nothing_behind() -> None:
    pool = DmaPool(RecordingMapper(fail=True), use_hugepages=False)
    with pytest.raises(DmaError, match="refused"):
        pool.allocate(4096)
    assert pool.chunks == [] and pool.iovas.allocated == {}
    pool.close()
    with pytest.raises(DmaError, match="closed"):
        pool.allocate(4096)


def test_live_numpy_view_keeps_memory_mapped_on_close() -> None:
    pool = DmaPool(use_hugepages=False)
    arr = pool.allocate(4096).array(np.uint32)
    arr[3] = 0xDEAD
    with pytest.warns(ResourceWarning, match="still has numpy views"):
        pool.close()
    assert arr[3] == 0xDEAD  # still readable: the pool leaked the chunk instead of crashing


def test_closing_without_views_does_not_warn() -> None:
    pool = DmaPool(use_hugepages=False)
    buf = pool.allocate(4096)
    arr = buf.array(np.uint8)
    arr[0] = 1
    del arr
    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pool.close()


def test_bad_arguments() -> None:
    with DmaPool(use_hugepages=False) as pool:
        with pytest.raises(ValueError):
            pool.allocate(0)
        with pytest.raises(ValueError):
            pool.allocate(64, align=96)
    with pytest.raises(ValueError):
        DmaPool(chunk_size=0)


# ---------------------------------------------------------------------------
# Hugepages (this host: root may resize the pool; restored afterwards)
# ---------------------------------------------------------------------------


def _meminfo(field: str) -> int:
    m = re.search(rf"^{field}:\s+(\d+)", Path("/proc/meminfo").read_text(), re.M)
    assert m, field
    return int(m.group(1))


def _set_nr_hugepages(n: int) -> int:
    Path(NR_HUGEPAGES).write_text(f"{n}\n")
    return int(Path(NR_HUGEPAGES).read_text())


@pytest.fixture
def hugepages() -> Iterator[int]:
    """Make sure 8 free 2 MiB hugepages exist; put the old count back afterwards."""
    want = 8
    try:
        before = int(Path(NR_HUGEPAGES).read_text())
        if _meminfo("HugePages_Free") < want:
            _set_nr_hugepages(before + want)
    except OSError as e:
        pytest.skip(f"cannot raise {NR_HUGEPAGES} ({e.strerror}): not root or no hugetlbfs")
    if _meminfo("HugePages_Free") < want:
        _set_nr_hugepages(before)
        pytest.skip(f"the kernel would not reserve {want} hugepages (memory too fragmented)")
    yield want
    _set_nr_hugepages(before)


@pytest.fixture
def no_free_hugepages() -> Iterator[None]:
    """Zero free hugepages for the test (only possible if nobody else uses any)."""
    try:
        before = int(Path(NR_HUGEPAGES).read_text())
        if _meminfo("HugePages_Total") - _meminfo("HugePages_Free") > 0:
            pytest.skip("another process holds hugepages; cannot empty the pool safely")
        _set_nr_hugepages(0)
    except OSError as e:
        pytest.skip(f"cannot write {NR_HUGEPAGES} ({e.strerror}): not root")
    yield
    _set_nr_hugepages(before)


def test_pool_on_hugepages(hugepages: int) -> None:
    mapper = RecordingMapper()
    with DmaPool(mapper, require_hugepages=True) as pool:
        buf = pool.allocate(HUGEPAGE_SIZE // 2, align=4096)
        assert pool.backing is Backing.HUGETLB and pool.fallback_reason is None
        vaddr, iova, size, backing = pool.chunks[0]
        assert vaddr % HUGEPAGE_SIZE == 0 and iova % HUGEPAGE_SIZE == 0
        assert size % HUGEPAGE_SIZE == 0 and backing is Backing.HUGETLB
        a = buf.array(np.uint64)
        a[:] = 0x0123456789ABCDEF
        assert buf.read(0, 8) == (0x0123456789ABCDEF).to_bytes(8, "little")
        assert mapper.live[iova] == (vaddr, size)
        assert _meminfo("HugePages_Free") <= hugepages - size // HUGEPAGE_SIZE
        del a
    assert mapper.live == {}


def test_fallback_without_hugepages(no_free_hugepages: None) -> None:
    with DmaPool() as pool:
        buf = pool.allocate(4096)
        assert buf.backing is Backing.ANONYMOUS
        assert pool.fallback_reason is not None and "hugepages" in pool.fallback_reason
    with pytest.raises(NoHugepages, match="nr_hugepages") as info:
        DmaPool(require_hugepages=True).allocate(4096)
    assert "echo 64" in info.value.hint
    assert IOVA_ALIGN == 4096
