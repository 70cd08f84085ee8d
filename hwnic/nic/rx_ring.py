"""Receive descriptor ring: batch drain, validation and replenishment over numpy.

The ring owns no memory and knows nothing of VFIO: it is given the descriptor
array, the packet-buffer pool (slots x buffer size) with their IOVAs, and a
``write_tail`` callback (the NIC model's bound MMIO write of RDT).

Hot-path rule: per drain, a fixed number of numpy/bytes operations whatever the
batch size; no per-frame Python. Wrap-around costs at most one extra slice.

Ownership. Descriptors ``[next_to_clean, next_to_use)`` (mod N) are armed: the
NIC may write them. At most N-1 are armed, so RDH == RDT always means "empty".
Anything the NIC writes outside the armed range is ignored (and counted when
seen). Nothing but the status snapshot decides what is read, and every index
and length is clamped before it touches the pool.

Delivery modes, chosen per ring:

* copy: a descriptor keeps its own pool slot for ever (slot i for descriptor
  i), the frames are copied out into a compact array and the buffer is re-armed
  at once;
* zero-copy: the batch holds the filled slots until :meth:`RxBatch.release`;
  every re-armed descriptor gets a *fresh* slot from the free list, so a held
  frame is never overwritten (seed 001: a kept packet is replaced by a new
  empty one before interrupts are re-enabled). When the free list runs dry the
  ring arms what it can and counts the starvation; :meth:`RxRing.replenish`
  finishes the job once the consumer releases buffers.

Multi-descriptor frames (EOP clear) are dropped whole and counted: a frame that
needs more than one buffer means jumbo frames the ring was not sized for, or a
misbehaving device. The ring consumes such descriptors as they complete and
remembers that it is inside a frame being discarded, so the NIC never waits on
a frame that cannot finish, and a frame is never split.

Not thread-safe, except :meth:`RxBatch.release`, which may be called from any
thread (it only appends to a list; the ring collects on its next call).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from hwnic.nic.descriptors import (
    DESCRIPTOR_SIZE,
    LEGACY_RX_FORMAT,
    RING_ALIGN_DESCRIPTORS,
    RX_FRAME_ERRORS,
    RxFormat,
    RxStatus,
    as_qwords,
    as_raw,
)

_ADDR = 0  # quadword index of the buffer address
_WB = 1  # quadword index of status/length after write-back

# Status byte -> class, for bytes.translate: 0 = not done, 1 = done with EOP,
# 2 = done without EOP (part of a multi-descriptor frame).
_NOT_DONE, _DONE_EOP, _DONE_MORE = 0, 1, 2
_STATUS_CLASS = bytes(
    (_NOT_DONE if not b & RxStatus.DD else _DONE_EOP if b & RxStatus.EOP else _DONE_MORE)
    for b in range(256)
)
# Error byte -> 1 if it carries a frame error (checksum errors are not).
_FRAME_ERROR = bytes(1 if b & RX_FRAME_ERRORS else 0 for b in range(256))
# Status byte -> 1 if DD is set.
_DD_SET = bytes(1 if b & RxStatus.DD else 0 for b in range(256))

# Byte value -> 1 if zero (to find zero lengths from their two bytes).
_IS_ZERO = bytes(1 if b == 0 else 0 for b in range(256))
_DD = int(RxStatus.DD)
_BITS_PER_BYTE = 8
_U16_BYTES, _U32_BYTES = 2, 4
_U16_PER_DESC = DESCRIPTOR_SIZE // _U16_BYTES
_U32_PER_DESC = DESCRIPTOR_SIZE // _U32_BYTES

# Batches kept in the lazy byte counter before it is summed.
_BYTES_FLUSH = 64


def _noop() -> None:
    """Default write barrier: numpy stores are program-ordered on x86."""


@dataclass
class RxCounters:
    frames: int = 0  # frames delivered
    bytes: int = 0  # bytes delivered
    descs_cleaned: int = 0  # descriptors consumed (good or dropped)
    drop_error: int = 0  # frame error bits (CE, SE, SEQ, CXE, RXE)
    drop_len_zero: int = 0
    drop_len_oversize: int = 0  # length beyond the buffer
    drop_multi: int = 0  # multi-descriptor frames dropped
    drop_multi_descs: int = 0  # descriptors belonging to them
    dd_unarmed: int = 0  # DD seen on descriptors the NIC did not own
    starved: int = 0  # replenish calls that could not arm every descriptor

    @property
    def dropped(self) -> int:
        """Frames dropped for any reason (multi-descriptor frames count once)."""
        return self.drop_error + self.drop_len_zero + self.drop_len_oversize + self.drop_multi

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class RxBatch:
    """Frames from one drain.

    Copy mode: ``data`` is a (count x max length) uint8 array the caller owns.
    Zero-copy: ``iovas`` names the pool slots holding the frames; read them with
    :meth:`frame` / :meth:`frames` / :meth:`as_array`, then :meth:`release`.
    ``lengths`` (uint16) is valid in both modes; ``rss`` holds the RSS hashes
    when the ring was asked for them.
    """

    __slots__ = (
        "_buf",
        "_iova0",
        "_pool",
        "_released",
        "_returned",
        "data",
        "iovas",
        "lengths",
        "more_pending",
        "rss",
    )

    def __init__(
        self,
        lengths: np.ndarray,
        more_pending: bool,
        data: np.ndarray | None = None,
        iovas: np.ndarray | None = None,
        pool: np.ndarray | None = None,
        iova0: int = 0,
        returned: list[np.ndarray] | None = None,
        rss: np.ndarray | None = None,
    ) -> None:
        self.lengths = lengths
        self.more_pending = more_pending
        self.data = data
        self.iovas = iovas
        self.rss = rss
        self._pool = pool
        self._iova0 = iova0
        self._buf = pool.shape[1] if pool is not None else 0
        self._returned = returned
        self._released = returned is None

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def zero_copy(self) -> bool:
        return self.iovas is not None

    @property
    def slots(self) -> np.ndarray:
        """Pool slot index of each frame (zero-copy batches)."""
        if self.iovas is None:
            raise ValueError("a copy-mode batch holds no pool slots")
        return ((self.iovas - np.uint64(self._iova0)) // np.uint64(self._buf)).astype(np.intp)

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` as a 1-D uint8 array (a view of the pool in zero-copy mode)."""
        length = int(self.lengths[i])
        if self.data is not None:
            return self.data[i, :length]
        if self._released:
            raise ValueError("batch already released: its buffers belong to the NIC again")
        assert self.iovas is not None and self._pool is not None
        slot = (int(self.iovas[i]) - self._iova0) // self._buf
        return self._pool[slot, :length]

    def frames(self) -> list[np.ndarray]:
        return [self.frame(i) for i in range(len(self))]

    def as_array(self) -> np.ndarray:
        """All frames as (count x max length): ``data`` in copy mode; in zero-copy
        mode a view of the pool when the slots are consecutive, else a copy."""
        if self.data is not None:
            return self.data
        if self._released:
            raise ValueError("batch already released: its buffers belong to the NIC again")
        assert self._pool is not None
        width = int(self.lengths.max()) if len(self) else 0
        slots = self.slots
        if len(slots) and int(slots[-1]) - int(slots[0]) == len(slots) - 1:
            first = int(slots[0])
            if np.array_equal(slots, np.arange(first, first + len(slots))):
                return self._pool[first : first + len(slots), :width]
        return self._pool[slots, :width]

    def release(self) -> None:
        """Give the buffers back to the ring (zero-copy). Idempotent, thread-safe."""
        if self._released:
            return
        self._released = True
        assert self._returned is not None and self.iovas is not None
        if len(self.iovas):
            self._returned.append(self.iovas)  # list.append is atomic under the GIL

    def __enter__(self) -> RxBatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class RxRing:
    """One RX queue. See the module docstring for the ownership rules.

    ``descs``: N descriptors (any 16-byte dtype, C-contiguous, N a multiple of 8),
    ``desc_iova``: IOVA of descriptor 0 (for the NIC model's RDBAL/RDBAH),
    ``pool``: (slots x buffer size) uint8, slot i at ``pool_iova + i * buffer size``,
    ``write_tail``: writes RDT; called once per batch, after ``wmb``.

    Raises ValueError for arguments that cannot make a ring.
    """

    def __init__(
        self,
        descs: np.ndarray,
        desc_iova: int,
        pool: np.ndarray,
        pool_iova: int,
        write_tail: Callable[[int], None],
        *,
        fmt: RxFormat = LEGACY_RX_FORMAT,
        wmb: Callable[[], None] = _noop,
        zero_copy: bool = False,
        want_rss: bool = False,
    ) -> None:
        raw = as_raw(descs)
        n = raw.shape[0]
        if n < RING_ALIGN_DESCRIPTORS or n % RING_ALIGN_DESCRIPTORS:
            raise ValueError(f"ring size {n} is not a multiple of {RING_ALIGN_DESCRIPTORS}")
        if pool.ndim != 2 or pool.dtype != np.uint8 or not pool.flags.c_contiguous:
            raise ValueError("pool must be a C-contiguous 2-D uint8 array (slots x buffer size)")
        if pool.shape[0] < n:
            raise ValueError(f"pool has {pool.shape[0]} slots, the ring needs at least {n}")
        if want_rss and fmt.rss_offset is None:
            raise ValueError(f"the {fmt.name} descriptor format carries no RSS hash")
        self.fmt = fmt
        self.size = n
        self.desc_iova = desc_iova
        self.pool = pool
        self.pool_iova = pool_iova
        self.buffer_size = pool.shape[1]
        self.zero_copy = zero_copy
        self.counters = RxCounters()
        self._write_tail = write_tail
        self._wmb = wmb
        self._raw = raw
        self._q = as_qwords(raw)
        self._status = raw[:, fmt.status_offset]
        self._errors = raw[:, fmt.error_offset]
        self._len_lo = fmt.length_offset
        self._err_at = fmt.error_offset
        self._rss_at = fmt.rss_offset if want_rss else None
        # High length byte -> 1 if the length may exceed the buffer (exactly
        # checked on the slow path).
        self._hi_limit = self.buffer_size >> _BITS_PER_BYTE
        self._hi_too_big = bytes(1 if b >= self._hi_limit else 0 for b in range(256))
        self._ntc = 0  # next to clean
        self._ntu = 0  # next to use: RDT
        self._armed = 0
        self._discarding = False  # inside a multi-descriptor frame being dropped
        self._pending_lengths: list[np.ndarray] = []
        self._empty_lengths = np.zeros(0, np.uint16)
        slot_iova = np.uint64(pool_iova) + np.arange(pool.shape[0], dtype=np.uint64) * np.uint64(
            self.buffer_size
        )
        # Copy mode: descriptor i always uses slot i. Zero-copy: the IOVA each
        # armed descriptor holds, and a FIFO of free slot IOVAs.
        self._arm_tab = np.zeros((n, 2), np.uint64)
        self._arm_tab[:, _ADDR] = slot_iova[:n]
        self._held = np.zeros(n, np.uint64)
        self._free = slot_iova.copy()
        self._free_head = 0
        self._free_count = len(slot_iova) if zero_copy else 0
        self._returned: list[np.ndarray] = []
        self._q[:] = 0  # nothing armed, no stale DD

    # ----------------------------------------------------------------- state
    @property
    def tail(self) -> int:
        """Value last given to (or next to be given to) RDT."""
        return self._ntu

    @property
    def next_to_clean(self) -> int:
        return self._ntc

    @property
    def armed(self) -> int:
        """Descriptors the NIC currently owns."""
        return self._armed

    @property
    def free_buffers(self) -> int:
        """Zero-copy: slots in the free list (released ones included)."""
        return self._free_count + sum(len(r) for r in self._returned)

    def stats(self) -> RxCounters:
        """Counters, with the lazily summed byte count brought up to date."""
        self._flush_bytes()
        return self.counters

    # ------------------------------------------------------------ hot path
    def drain(self, budget: int) -> RxBatch:
        """Take up to ``budget`` descriptors' worth of completed frames.

        ``budget`` is NDIS's MaxNblsToIndicate: at most that many frames come
        back; ``batch.more_pending`` says DD is already set on the next one.
        Consumed descriptors are re-armed and RDT written once.
        """
        n = self.size
        ntc = self._ntc
        armed = self._armed
        w = budget if budget < armed else armed
        if w <= 0:
            if armed == 0:
                self._count_unarmed_dd()
            self.replenish()
            return self._empty(armed > 0 and budget <= 0 and self._dd_at(ntc))
        end = ntc + w
        st = self._status
        # Status first: the NIC writes DD last, so only a descriptor seen DD in
        # this snapshot has its other fields read, from a second snapshot.
        snap = st[ntc:].tobytes() + st[: end - n].tobytes() if end > n else st[ntc:end].tobytes()
        classes = snap.translate(_STATUS_CLASS)
        run = classes.find(_NOT_DONE)
        if run < 0:
            run = w
        elif run == 0:
            self.replenish()
            return self._empty(False)
        end = ntc + run
        raw = self._raw
        body = raw[ntc:].tobytes() + raw[: end - n].tobytes() if end > n else raw[ntc:end].tobytes()
        lo = body[self._len_lo :: DESCRIPTOR_SIZE]
        hi = body[self._len_lo + 1 :: DESCRIPTOR_SIZE]
        errs = body[self._err_at :: DESCRIPTOR_SIZE]
        lengths = np.frombuffer(body, "<u2")[self._len_lo // _U16_BYTES :: _U16_PER_DESC]
        # Fast path: whole frames, no error bits, every length in 1..buffer size.
        # Checked on the length bytes: no high byte reaching the buffer size, and
        # no descriptor with both bytes zero.
        fast = (
            not self._discarding
            and classes.find(_DONE_MORE, 0, run) < 0
            and 1 not in errs.translate(_FRAME_ERROR)
            and 1 not in hi.translate(self._hi_too_big)
            and not (
                0 in hi
                and 0 in lo
                and int.from_bytes(lo.translate(_IS_ZERO), "little")
                & int.from_bytes(hi.translate(_IS_ZERO), "little")
            )
        )
        good: np.ndarray | None = None
        if fast:
            width = self._width(hi)
        else:
            good = self._classify(snap, errs, lengths, run)
            lengths = lengths[good]
            width = int(lengths.max()) if len(lengths) else 0

        rss = None
        if self._rss_at is not None:
            rss = np.frombuffer(body, "<u4")[self._rss_at // _U32_BYTES :: _U32_PER_DESC]
            if good is not None:
                rss = rss[good]

        if self.zero_copy:
            held = self._held
            if end > n:
                iovas = np.concatenate((held[ntc:], held[: end - n]))
            else:
                iovas = held[ntc:end].copy()
            if good is not None:
                self._push_free(iovas[~good])
                iovas = iovas[good]
            data = None
        else:
            iovas = None
            pool = self.pool
            if good is not None:
                data = pool[(np.flatnonzero(good) + ntc) % n, :width]
            elif end > n:
                data = np.concatenate((pool[ntc:, :width], pool[: end - n, :width]))
            else:
                data = pool[ntc:end, :width].copy()

        if run == armed:
            self._count_unarmed_dd()
        self._ntc = ntc = end - n if end >= n else end
        self._armed = armed = armed - run
        c = self.counters
        c.descs_cleaned += run
        c.frames += len(lengths)
        pending = self._pending_lengths
        pending.append(lengths)
        if len(pending) >= _BYTES_FLUSH:
            self._flush_bytes()
        more = run == budget and armed > 0 and int(st[ntc]) & _DD == _DD
        self.replenish()
        if iovas is not None:
            return RxBatch(
                lengths, more, iovas=iovas, pool=self.pool, iova0=self.pool_iova,
                returned=self._returned, rss=rss,
            )  # fmt: skip
        return RxBatch(lengths, more, data=data, rss=rss)

    def replenish(self) -> int:
        """Arm every unarmed descriptor a buffer is available for; write RDT once.

        The NIC model calls this (or :meth:`drain`, which calls it) before
        re-enabling the RX interrupt. Returns how many descriptors were armed.
        Unarmed descriptors (the one-descriptor gap, and any left by starvation)
        get their write-back cleared, so a DD seen there later is the NIC's doing.
        """
        n = self.size
        unarmed = n - self._armed
        want = unarmed - 1
        if want <= 0:
            return 0
        start = self._ntu
        end = start + unarmed
        q = self._q
        if not self.zero_copy:
            # Copy mode: descriptor i keeps slot i; rewrite the whole unarmed
            # region (gap included) from the precomputed (address, 0) table.
            tab = self._arm_tab
            if end > n:
                q[start:] = tab[start:]
                q[: end - n] = tab[: end - n]
            else:
                q[start:end] = tab[start:end]
            k = want
        else:
            if self._returned:
                self._collect_returned()
            k = min(want, self._free_count)
            if k < want:
                self.counters.starved += 1
            if end > n:
                q[start:, _WB] = 0
                q[: end - n, _WB] = 0
            else:
                q[start:end, _WB] = 0
            if k == 0:
                return 0
            self._arm_fresh(start, k, self._pop_free(k))
        self._armed += k
        ntu = start + k
        self._ntu = ntu - n if ntu >= n else ntu
        self._wmb()
        self._write_tail(self._ntu)
        return k

    # ------------------------------------------------------------ helpers
    def _classify(self, snap: bytes, errs: bytes, lengths: np.ndarray, run: int) -> np.ndarray:
        """Slow path: decide per descriptor what to deliver, count every drop."""
        c = self.counters
        status = np.frombuffer(snap, np.uint8, count=run)
        eop = (status & RxStatus.EOP) != 0
        frame_err = (np.frombuffer(errs, np.uint8, count=run) & RX_FRAME_ERRORS) != 0
        # A descriptor starts a frame when the one before it ended one.
        starts = np.empty(run, bool)
        starts[0] = not self._discarding
        starts[1:] = eop[:-1]
        single = eop & starts
        multi_start = starts & ~eop
        c.drop_multi += int(np.count_nonzero(multi_start))
        c.drop_multi_descs += run - int(np.count_nonzero(single))
        self._discarding = not bool(eop[-1])
        err = single & frame_err
        c.drop_error += int(np.count_nonzero(err))
        ok = single & ~frame_err
        zero = ok & (lengths == 0)
        over = ok & (lengths > self.buffer_size)
        c.drop_len_zero += int(np.count_nonzero(zero))
        c.drop_len_oversize += int(np.count_nonzero(over))
        good: np.ndarray = ok & ~zero & ~over
        return good

    def _arm_fresh(self, start: int, k: int, iovas: np.ndarray) -> None:
        """Zero-copy: give descriptors [start, start+k) the buffers ``iovas``."""
        n = self.size
        q = self._q
        held = self._held
        first = min(k, n - start)
        held[start : start + first] = iovas[:first]
        q[start : start + first, _ADDR] = iovas[:first]
        if first < k:
            held[: k - first] = iovas[first:]
            q[: k - first, _ADDR] = iovas[first:]

    def _width(self, hi: bytes) -> int:
        """Copy width covering every frame: the highest length byte seen, rounded
        up to the next 256 bytes, at most the buffer size (cheaper than a max)."""
        for v in range(self._hi_limit - 1, -1, -1):
            if v in hi:
                return min(self.buffer_size, (v + 1) << _BITS_PER_BYTE)
        return self.buffer_size

    def _pop_free(self, k: int) -> np.ndarray:
        cap = len(self._free)
        h = self._free_head
        if h + k <= cap:
            out = self._free[h : h + k].copy()
        else:
            out = np.concatenate((self._free[h:], self._free[: h + k - cap]))
        self._free_head = (h + k) % cap
        self._free_count -= k
        return out

    def _push_free(self, iovas: np.ndarray) -> None:
        k = len(iovas)
        if not k:
            return
        cap = len(self._free)
        if self._free_count + k > cap:
            raise RuntimeError("free list overflow: a buffer was returned twice")
        t = (self._free_head + self._free_count) % cap
        first = min(k, cap - t)
        self._free[t : t + first] = iovas[:first]
        if first < k:
            self._free[: k - first] = iovas[first:]
        self._free_count += k

    def _collect_returned(self) -> None:
        returned = self._returned
        while returned:
            self._push_free(returned.pop())

    def _dd_at(self, i: int) -> bool:
        return int(self._status[i]) & _DD == _DD

    def _count_unarmed_dd(self) -> None:
        """Count and clear DD on descriptors the NIC does not own (only checked
        when every armed descriptor was consumed: it is then cheap to look)."""
        n = self.size
        unarmed = n - self._armed
        if unarmed <= 0:
            return
        start = self._ntu
        end = start + unarmed
        if end > n:
            snap = self._status[start:].tobytes() + self._status[: end - n].tobytes()
        else:
            snap = self._status[start:end].tobytes()
        hits = snap.translate(_DD_SET).count(1)
        if hits:
            self.counters.dd_unarmed += hits
            if end > n:
                self._q[start:, _WB] = 0
                self._q[: end - n, _WB] = 0
            else:
                self._q[start:end, _WB] = 0

    def _flush_bytes(self) -> None:
        pending = self._pending_lengths
        if pending:
            total = int(np.concatenate(pending).sum(dtype=np.int64))
            pending.clear()
            self.counters.bytes += total

    def _empty(self, more_pending: bool) -> RxBatch:
        lengths = self._empty_lengths
        if self.zero_copy:
            return RxBatch(
                lengths, more_pending, iovas=np.zeros(0, np.uint64), pool=self.pool,
                iova0=self.pool_iova, returned=self._returned,
            )  # fmt: skip
        return RxBatch(lengths, more_pending, data=np.zeros((0, 0), np.uint8))
