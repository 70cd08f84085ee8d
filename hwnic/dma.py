"""DMA memory: pinned buffers with an IOVA the NIC can use, and numpy views.

A :class:`DmaPool` carves buffers out of a few large chunks. Each chunk is
one mapping of 2 MiB hugepages (or, if there are none, of ordinary pages
locked with mlock), mapped into the IOMMU once with an IOVA chosen here::

    with open_device(bdf) as dev, DmaPool(dev) as pool:
        ring = pool.allocate(4096, align=128)
        descs = ring.array(numpy.uint64, (256, 2))   # a view: no copy
        bar0.write32(RDBAL, ring.iova & 0xFFFFFFFF)

``mapper`` is anything with ``map_dma(vaddr, iova, size)`` and
``unmap_dma(iova, size)`` (a :class:`hwnic.vfio.Device` or ``Container``),
or None for memory only (host tests), where IOVAs are still assigned.

Views (``array``, ``memory``) point into the mapping. The pool does not
``munmap`` a chunk while a view of it is still alive (it leaks the mapping
and warns instead of letting a later access crash), but the device loses
access as soon as a buffer's pool is closed.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import sys
import warnings
from enum import Enum
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from hwnic._vfio import ffi, lib
from hwnic.errors import DmaError, NoHugepages

log = logging.getLogger(__name__)

PAGE_SIZE = mmap.PAGESIZE
HUGEPAGE_SIZE = 2 << 20  # the x86-64 2 MiB hugepage, the size hwnic asks for

# Intel VT-d's 3-level (39-bit) page tables: the smallest address width a
# VT-d IOMMU offers, and QEMU's intel-iommu default (aw-bits=39) for years.
# IOVAs below it work on every Intel IOMMU, emulated or real.
IOVA_ADDRESS_BITS = 39
IOVA_LIMIT = 1 << IOVA_ADDRESS_BITS
# Start at 4 GiB: below it sit the x86 MSI window (0xFEE00000, reserved in
# every IOMMU domain) and firmware-reserved (RMRR) ranges.
IOVA_BASE = 1 << 32
IOVA_ALIGN = 4096  # the IOMMU page: MAP_DMA works on whole pages

DEFAULT_CHUNK_SIZE = 2 * HUGEPAGE_SIZE  # a 256-descriptor ring plus 1k 2 KiB buffers, roughly
MIN_ALIGN = 64  # one cache line: the smallest granule buffers are carved in
DEFAULT_ALIGN = 4096

NR_HUGEPAGES = "/proc/sys/vm/nr_hugepages"
_HUGEPAGE_HINT = f"reserve some as root: echo 64 > {NR_HUGEPAGES}"


class DmaMapper(Protocol):
    """What a pool needs from the IOMMU side (vfio Device or Container)."""

    def map_dma(self, vaddr: int, iova: int, size: int) -> None: ...

    def unmap_dma(self, iova: int, size: int) -> None: ...


class Backing(Enum):
    """What a chunk of DMA memory is made of."""

    HUGETLB = "hugetlb"  # 2 MiB hugepages (memfd_create with MFD_HUGETLB)
    ANONYMOUS = "anonymous"  # ordinary 4 KiB pages, mlock()ed


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _round_up(n: int, align: int) -> int:
    return (n + align - 1) & ~(align - 1)


# --------------------------------------------------------------------------
# Address-range allocation
# --------------------------------------------------------------------------


class RangeAllocator:
    """First-fit allocator of aligned, non-overlapping ranges in [base, limit).

    Sizes are rounded up to ``align`` (the granule); each allocation may ask
    for a stronger power-of-two alignment. Freed ranges merge with their
    neighbours. Raises :class:`DmaError` when no free range fits.
    """

    def __init__(self, base: int, limit: int, align: int) -> None:
        if not _is_pow2(align):
            raise ValueError(f"alignment must be a power of two, not {align}")
        if base < 0 or limit <= base:
            raise ValueError(f"empty range [{base:#x}, {limit:#x})")
        self.base, self.limit, self.align = base, limit, align
        first = _round_up(base, align)
        self._free: list[tuple[int, int]] = [(first, limit)] if first < limit else []
        self._used: dict[int, int] = {}  # start -> size

    @property
    def allocated(self) -> dict[int, int]:
        """A copy of the live allocations, start -> size."""
        return dict(self._used)

    @property
    def free_bytes(self) -> int:
        return sum(end - start for start, end in self._free)

    def allocate(self, size: int, align: int | None = None) -> int:
        if size <= 0:
            raise ValueError(f"size must be positive, not {size}")
        if align is not None and not _is_pow2(align):
            raise ValueError(f"alignment must be a power of two, not {align}")
        align = max(align or self.align, self.align)
        size = _round_up(size, self.align)
        for i, (start, end) in enumerate(self._free):
            addr = _round_up(start, align)
            if addr + size > end:
                continue
            pieces = [(s, e) for s, e in ((start, addr), (addr + size, end)) if e > s]
            self._free[i : i + 1] = pieces
            self._used[addr] = size
            return addr
        raise DmaError(
            f"no free {size:#x}-byte range aligned to {align:#x} in "
            f"[{self.base:#x}, {self.limit:#x}) ({self.free_bytes:#x} bytes free, fragmented)",
            "free buffers you no longer need, or allocate fewer, larger ones",
        )

    def free(self, addr: int) -> int:
        """Return the range starting at ``addr``; returns its size."""
        size = self._used.pop(addr, None)
        if size is None:
            raise ValueError(f"{addr:#x} is not the start of an allocated range")
        end = addr + size
        free = self._free
        lo, hi = 0, len(free)  # binary search for the insertion point
        while lo < hi:
            mid = (lo + hi) // 2
            if free[mid][0] < addr:
                lo = mid + 1
            else:
                hi = mid
        if lo < len(free) and free[lo][0] == end:  # merge with the next range
            end = free.pop(lo)[1]
        if lo > 0 and free[lo - 1][1] == addr:  # and with the previous one
            addr = free[lo - 1][0]
            free[lo - 1] = (addr, end)
        else:
            free.insert(lo, (addr, end))
        return size


class IovaAllocator(RangeAllocator):
    """IOVAs for our DMA mappings: page-aligned, below :data:`IOVA_LIMIT`."""

    def __init__(
        self, base: int = IOVA_BASE, limit: int = IOVA_LIMIT, align: int = IOVA_ALIGN
    ) -> None:
        if limit > IOVA_LIMIT:
            raise ValueError(f"IOVAs must stay below 2**{IOVA_ADDRESS_BITS} ({IOVA_LIMIT:#x})")
        if align < IOVA_ALIGN:
            raise ValueError(f"IOVA alignment must be at least the IOMMU page ({IOVA_ALIGN})")
        super().__init__(base, limit, align)


# --------------------------------------------------------------------------
# Chunks: one mapping each, in memory and in the IOMMU
# --------------------------------------------------------------------------


def _alloc_pages(size: int, hugetlb: bool) -> tuple[Any, int]:
    """mmap ``size`` bytes; returns (pointer, -errno or 0)."""
    out = ffi.new("void **")
    rc = lib.hv_dma_alloc(size, 1 if hugetlb else 0, out)
    return (out[0] if rc == 0 else ffi.NULL), rc


class _Chunk:
    """One pinned mapping with one IOVA range; buffers are carved from it."""

    def __init__(self, ptr: Any, nbytes: int, backing: Backing, iova: int, dedicated: bool):
        self.ptr = ptr
        self.vaddr = int(ffi.cast("uintptr_t", ptr))
        self.nbytes = nbytes
        self.backing = backing
        self.iova = iova
        self.dedicated = dedicated  # holds one large buffer; released when it is freed
        # The one array over the chunk; buffers slice it on demand, so only
        # views handed out to callers keep references to it.
        self.u8: npt.NDArray[np.uint8] | None = np.frombuffer(
            ffi.buffer(ptr, nbytes), dtype=np.uint8
        )
        self.space = RangeAllocator(0, nbytes, MIN_ALIGN)

    def views_alive(self) -> bool:
        """True while a numpy view or memoryview of this chunk still exists."""
        # getrefcount counts its argument and our attribute: 2 means no views.
        return sys.getrefcount(self.u8) > 2


class DmaPool:
    """Allocator of DMA buffers over a few large pinned, IOMMU-mapped chunks.

    ``use_hugepages``: try 2 MiB hugepages first (the default); when none are
    free fall back to mlock()ed pages and log why, unless
    ``require_hugepages``, which raises :class:`NoHugepages` instead.
    """

    def __init__(
        self,
        mapper: DmaMapper | None = None,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        use_hugepages: bool = True,
        require_hugepages: bool = False,
        iova: IovaAllocator | None = None,
    ) -> None:
        if chunk_size <= 0:
            raise ValueError(f"chunk size must be positive, not {chunk_size}")
        self.mapper = mapper
        self.chunk_size = _round_up(chunk_size, HUGEPAGE_SIZE)
        self.use_hugepages = use_hugepages or require_hugepages
        self.require_hugepages = require_hugepages
        self.iovas = iova if iova is not None else IovaAllocator()
        self.fallback_reason: str | None = None  # why hugepages were not used, if not
        self._chunks: list[_Chunk] = []
        self._closed = False

    # -- chunks ----------------------------------------------------------------

    def _get_pages(self, size: int) -> tuple[Any, int, Backing]:
        if self.use_hugepages and self.fallback_reason is None:
            hsize = _round_up(size, HUGEPAGE_SIZE)
            ptr, rc = _alloc_pages(hsize, hugetlb=True)
            if rc == 0:
                return ptr, hsize, Backing.HUGETLB
            reason = f"no {hsize >> 20} MiB of free 2 MiB hugepages ({_errname(rc)})"
            if self.require_hugepages:
                raise NoHugepages(reason, _HUGEPAGE_HINT)
            # Remember, so later chunks do not retry (and log) every time.
            self.fallback_reason = reason
            log.info("DMA memory: %s; using mlock()ed 4 KiB pages", reason)
        elif self.require_hugepages:
            raise NoHugepages(f"2 MiB hugepages ran out ({self.fallback_reason})", _HUGEPAGE_HINT)
        psize = _round_up(size, PAGE_SIZE)
        ptr, rc = _alloc_pages(psize, hugetlb=False)
        if rc != 0:
            raise DmaError(
                f"cannot allocate {psize:#x} bytes of locked memory ({_errname(rc)})",
                "raise the locked-memory limit (ulimit -l) or run as root",
            )
        return ptr, psize, Backing.ANONYMOUS

    def _new_chunk(self, size: int, iova_align: int, dedicated: bool) -> _Chunk:
        if self._closed:
            raise DmaError("the DMA pool is closed")
        ptr, nbytes, backing = self._get_pages(size)
        try:
            iova = self.iovas.allocate(nbytes, max(iova_align, HUGEPAGE_SIZE))
        except BaseException:
            lib.hv_munmap(ptr, nbytes)
            raise
        chunk = _Chunk(ptr, nbytes, backing, iova, dedicated)
        try:
            if self.mapper is not None:
                self.mapper.map_dma(chunk.vaddr, iova, nbytes)
        except BaseException:
            self.iovas.free(iova)
            chunk.u8 = None
            lib.hv_munmap(ptr, nbytes)
            raise
        self._chunks.append(chunk)
        return chunk

    def _release_chunk(self, chunk: _Chunk) -> None:
        self._chunks.remove(chunk)
        try:
            if self.mapper is not None:
                self.mapper.unmap_dma(chunk.iova, chunk.nbytes)
        finally:
            self.iovas.free(chunk.iova)
            alive = chunk.views_alive()
            chunk.u8 = None  # buffers of this chunk now report "freed"
            if alive:
                # munmap now would turn a later access through a view into a crash.
                warnings.warn(
                    f"DMA chunk at {chunk.vaddr:#x} still has numpy views; leaking its "
                    f"{chunk.nbytes:#x} bytes instead of unmapping them",
                    ResourceWarning,
                    stacklevel=3,
                )
            else:
                lib.hv_munmap(chunk.ptr, chunk.nbytes)

    # -- public ----------------------------------------------------------------

    @property
    def backing(self) -> Backing | None:
        """HUGETLB if every chunk is on hugepages, ANONYMOUS if any is not."""
        if not self._chunks:
            return None
        if all(c.backing is Backing.HUGETLB for c in self._chunks):
            return Backing.HUGETLB
        return Backing.ANONYMOUS

    @property
    def chunks(self) -> list[tuple[int, int, int, Backing]]:
        """(vaddr, iova, nbytes, backing) of each chunk, for diagnostics."""
        return [(c.vaddr, c.iova, c.nbytes, c.backing) for c in self._chunks]

    def allocate(self, size: int, *, align: int = DEFAULT_ALIGN) -> DmaBuffer:
        """A buffer of ``size`` bytes with ``iova % align == 0``.

        Memory is zero when its chunk is new, and holds old data when reused.

        Buffers up to the chunk size share chunks; larger ones (or ones
        aligned beyond 2 MiB) get a chunk of their own.
        """
        if size <= 0:
            raise ValueError(f"size must be positive, not {size}")
        if not _is_pow2(align):
            raise ValueError(f"alignment must be a power of two, not {align}")
        if self._closed:
            raise DmaError("the DMA pool is closed")
        if size > self.chunk_size or align > HUGEPAGE_SIZE:
            chunk = self._new_chunk(size, align, dedicated=True)
            return self._carve(chunk, chunk.space.allocate(size, MIN_ALIGN), size)
        for chunk in self._chunks:
            if chunk.dedicated:
                continue
            try:
                offset = chunk.space.allocate(size, align)
            except DmaError:
                continue
            return self._carve(chunk, offset, size)
        chunk = self._new_chunk(self.chunk_size, HUGEPAGE_SIZE, dedicated=False)
        return self._carve(chunk, chunk.space.allocate(size, align), size)

    def _carve(self, chunk: _Chunk, offset: int, size: int) -> DmaBuffer:
        return DmaBuffer(self, chunk, offset, size, owner=True)

    def _free(self, buf: DmaBuffer) -> None:
        chunk = buf._chunk
        chunk.space.free(buf._offset)
        if chunk.dedicated and not self._closed:
            self._release_chunk(chunk)

    def close(self) -> None:
        """Unmap and free every chunk (buffers become unusable). Idempotent."""
        if self._closed:
            return
        self._closed = True
        first: BaseException | None = None
        for chunk in list(self._chunks):
            try:
                self._release_chunk(chunk)
            except BaseException as e:  # keep releasing the rest
                first = first or e
        if first is not None:
            raise first

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> DmaPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# The brief's other name for the same object.
DmaMemory = DmaPool


def _errname(rc: int) -> str:
    return f"{errno.errorcode.get(-rc, str(-rc))}: {os.strerror(-rc)}"


# --------------------------------------------------------------------------
# Buffers
# --------------------------------------------------------------------------


class DmaBuffer:
    """``nbytes`` of DMA memory at ``vaddr`` (CPU) and ``iova`` (device)."""

    __slots__ = ("_chunk", "_freed", "_offset", "_owner", "_pool", "iova", "nbytes", "vaddr")

    def __init__(self, pool: DmaPool, chunk: _Chunk, offset: int, size: int, *, owner: bool):
        self._pool = pool
        self._chunk = chunk
        self._offset = offset
        self._owner = owner  # False for views: freeing them is a no-op
        self._freed = False
        self.nbytes = size
        self.vaddr = chunk.vaddr + offset
        self.iova = chunk.iova + offset

    @property
    def backing(self) -> Backing:
        return self._chunk.backing

    def _bytes(self) -> npt.NDArray[np.uint8]:
        whole = self._chunk.u8
        if whole is None or self._freed:
            raise DmaError("this DMA buffer has been freed (or its pool closed)")
        return whole[self._offset : self._offset + self.nbytes]

    def array(
        self, dtype: npt.DTypeLike, shape: int | tuple[int, ...] | None = None, offset: int = 0
    ) -> np.ndarray[Any, np.dtype[Any]]:
        """A numpy view of the buffer from ``offset`` (no copy; writes reach DMA memory).

        Without ``shape``: a 1-D array of as many items as fit.
        """
        mem = self._bytes()
        dt = np.dtype(dtype)
        if not 0 <= offset <= self.nbytes:
            raise ValueError(f"offset {offset} is outside the {self.nbytes}-byte buffer")
        if shape is None:
            shape = ((self.nbytes - offset) // dt.itemsize,)
        elif isinstance(shape, int):
            shape = (shape,)
        count = 1
        for dim in shape:
            count *= dim
        end = offset + count * dt.itemsize
        if count < 0 or end > self.nbytes:
            raise ValueError(
                f"{shape} of {dt} at offset {offset} needs {end} bytes; buffer has {self.nbytes}"
            )
        return mem[offset:end].view(dt).reshape(shape)

    @property
    def memory(self) -> memoryview:
        """A writable memoryview of the whole buffer (no copy)."""
        return memoryview(self._bytes())  # type: ignore[arg-type]

    def read(self, offset: int = 0, size: int | None = None) -> bytes:
        """A copy of ``size`` bytes from ``offset`` (to the end by default)."""
        end = self.nbytes if size is None else offset + size
        if not 0 <= offset <= end <= self.nbytes:
            raise ValueError(f"[{offset}, {end}) is outside the {self.nbytes}-byte buffer")
        return self._bytes()[offset:end].tobytes()

    def write(self, data: bytes | bytearray | memoryview, offset: int = 0) -> None:
        n = len(data)
        if not 0 <= offset <= offset + n <= self.nbytes:
            raise ValueError(f"{n} bytes at {offset} do not fit the {self.nbytes}-byte buffer")
        self._bytes()[offset : offset + n] = np.frombuffer(data, dtype=np.uint8)

    def view(self, offset: int, size: int) -> DmaBuffer:
        """A sub-buffer sharing this memory, with its own ``iova``/``vaddr``."""
        if size <= 0 or not 0 <= offset <= offset + size <= self.nbytes:
            raise ValueError(
                f"view [{offset}, {offset + size}) is outside the {self.nbytes}-byte buffer"
            )
        self._bytes()
        return DmaBuffer(self._pool, self._chunk, self._offset + offset, size, owner=False)

    def split(self, size: int) -> list[DmaBuffer]:
        """Equal back-to-back views of ``size`` bytes (e.g. packet buffers)."""
        if size <= 0:
            raise ValueError(f"size must be positive, not {size}")
        return [self.view(off, size) for off in range(0, self.nbytes - size + 1, size)]

    def free(self) -> None:
        """Give the memory back to the pool (views: just forget it). Idempotent."""
        if self._freed:
            return
        self._freed = True
        if self._owner and not self._pool.closed:
            self._pool._free(self)

    def __len__(self) -> int:
        return self.nbytes

    def __enter__(self) -> DmaBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.free()

    def __repr__(self) -> str:
        state = " freed" if self._freed else ""
        return f"<DmaBuffer iova={self.iova:#x} nbytes={self.nbytes:#x}{state}>"
