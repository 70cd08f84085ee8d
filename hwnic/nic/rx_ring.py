"""The receive ring: drain completed descriptors in batches, re-arm with fresh buffers.

A drain reads the status of a window of descriptors at once, takes the run
the NIC completed, validates it with numpy (or with C-level ``bytes``
methods on the fast path), hands it up as one :class:`RxBatch` and re-arms
the consumed descriptors with one tail write. Where each field sits in a
descriptor, and the lookup tables the checks use, are one frozen
:class:`RxLayout`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from hwnic.nic.descriptors import RX_FRAME_ERRORS, RxFormat, RxStatus, as_qwords, as_raw
from hwnic.nic.ring import (
    BITS_PER_BYTE,
    DESCRIPTOR_BYTES,
    ITEM_COPY_MIN,
    U16_BYTES,
    U32_BYTES,
    TailWriter,
    no_barrier,
    row_items,
)

# Plain ints for the hot path: IntFlag arithmetic costs microseconds per use.
_DD = np.uint8(int(RxStatus.DD))
_DD_BIT = int(RxStatus.DD)
_EOP = np.uint8(int(RxStatus.EOP))
_FRAME_ERRORS = np.uint8(int(RX_FRAME_ERRORS))
# Status byte -> class, for bytes.translate on a whole window at once: one
# C-level pass finds the completed run and whether any frame spans descriptors.
_NOT_DONE, _DONE_EOP, _DONE_MORE = b"\x00", b"\x01", b"\x02"
_STATUS_CLASS = bytes(
    0 if not b & RxStatus.DD else 1 if b & RxStatus.EOP else 2 for b in range(256)
)
# Error bytes without a frame error (checksum results are not errors): deleted
# with bytes.translate, whatever is left is a frame error.
_NO_FRAME_ERROR = bytes(b for b in range(256) if not b & RX_FRAME_ERRORS)
# _AT_MOST[w]: the byte values 0..w, deleted to find a byte above w.
_AT_MOST = [bytes(range(w + 1)) for w in range(256)]
_ZERO = b"\x00"
U32_PER_DESC = DESCRIPTOR_BYTES // U32_BYTES
FEW = 64  # up to this many frames, Python's max() on bytes beats a reduction
UNSUMMED_MAX = 64  # fast-path batches whose bytes are summed together


@dataclass(frozen=True)
class RxLayout:
    """Where a ring's write-back fields sit, as the hot path wants them."""

    status_at: int  # byte of DD/EOP in a descriptor
    err_at: int  # byte of the error bits
    len_at: int  # byte offset of the little-endian u16 length
    len_u16: int  # the same, in u16 units
    u16_per_desc: int
    rss_u32: int | None  # u32 index of the RSS hash, if the layout has one
    hi_in_range: bytes  # length high bytes that keep a length below the buffer size

    @classmethod
    def of(cls, fmt: RxFormat, buffer_size: int) -> RxLayout:
        lo = fmt.length_offset
        if lo % U16_BYTES:
            raise ValueError(f"{fmt.name}: the length field must be 16-bit aligned")
        if fmt.rss_offset is not None and fmt.rss_offset % U32_BYTES:
            raise ValueError(f"{fmt.name}: the RSS hash must be 32-bit aligned")
        return cls(
            status_at=fmt.status_offset,
            err_at=fmt.error_offset,
            len_at=lo,
            len_u16=lo // U16_BYTES,
            u16_per_desc=DESCRIPTOR_BYTES // U16_BYTES,
            rss_u32=None if fmt.rss_offset is None else fmt.rss_offset // U32_BYTES,
            hi_in_range=bytes(range(min(buffer_size >> BITS_PER_BYTE, 256))),
        )


class RxBatch:
    """Frames a drain indicated: lengths and where the data is.

    In copy mode ``frames`` is a compact copy (count x longest frame). In
    zero-copy mode the frames stay in the ring's buffers (``frame(i)`` is a
    view) until :meth:`release`; the ring never re-arms a buffer a batch holds.
    ``rss`` (hashes, or None for layouts without one) is decoded on first use
    from the drain's snapshot of the descriptors. A jumbo frame spans several
    buffers: in zero-copy mode ``spans`` then holds the number of buffers
    (``slots``) of each frame, and :meth:`buffers` gives their views.
    """

    __slots__ = (
        "_copy",
        "_released",
        "_ring",
        "_rss",
        "_rss_source",
        "lengths",
        "more_pending",
        "slots",
        "spans",
    )

    def __init__(
        self,
        ring: RxRing | None,
        slots: np.ndarray,
        lengths: np.ndarray,
        copy: np.ndarray | None,
        rss: np.ndarray | None,
        more_pending: bool,
        rss_source: tuple[bytes, int] | None = None,
        spans: np.ndarray | None = None,
    ) -> None:
        self._ring = ring
        self.slots = slots
        self.spans = spans  # zero-copy only: buffers per frame, None when all are one
        self.lengths = lengths
        self._copy = copy
        self._rss = rss
        # (descriptor snapshot, index of the hash's first u32): rss decoded lazily.
        self._rss_source = rss_source
        self.more_pending = more_pending
        self._released = copy is not None or not len(slots)

    @property
    def count(self) -> int:
        return len(self.lengths)

    @property
    def zero_copy(self) -> bool:
        return self._copy is None

    @property
    def rss(self) -> np.ndarray | None:
        """RSS hash of each frame (uint32), or None for layouts without one."""
        if self._rss_source is not None:
            body, first = self._rss_source
            self._rss = np.frombuffer(body, "<u4")[first::U32_PER_DESC].copy()
            self._rss_source = None
        return self._rss

    @property
    def frames(self) -> np.ndarray:
        """All frames as rows of one array (a copy in zero-copy mode)."""
        if self._copy is not None:
            return self._copy
        assert self._ring is not None
        width = int(self.lengths.max()) if self.count else 0
        if self.spans is None:
            return self._ring.pool[self.slots, :width]
        out = np.zeros((self.count, width), np.uint8)
        for i in range(self.count):  # jumbo frames: KBs each, a few per batch
            out[i, : int(self.lengths[i])] = self.frame(i)
        return out

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i``: a view into DMA memory in zero-copy mode (a copy if it spans)."""
        length = int(self.lengths[i])
        if self._copy is not None:
            return self._copy[i, :length]
        assert self._ring is not None
        if self.spans is None or self.spans[i] == 1:
            return self._ring.pool[int(self.slots[self._first(i)]), :length]
        return np.concatenate(self.buffers(i))

    def buffers(self, i: int) -> list[np.ndarray]:
        """Zero-copy: views of the buffers that make frame ``i``, in order."""
        if self._copy is not None:
            return [self.frame(i)]
        assert self._ring is not None
        first = self._first(i)
        n = 1 if self.spans is None else int(self.spans[i])
        size = self._ring.buffer_size
        left = int(self.lengths[i])
        views = []
        for slot in self.slots[first : first + n]:
            views.append(self._ring.pool[int(slot), : min(size, left)])
            left -= size
        return views

    def _first(self, i: int) -> int:
        """Index in ``slots`` of frame ``i``'s first buffer."""
        if self.spans is None:
            return i
        return int(self.spans[:i].sum())

    def release(self) -> None:
        """Give zero-copy buffers back to the ring (idempotent; no-op for copies)."""
        if self._released:
            return
        self._released = True
        assert self._ring is not None
        self._ring.give_back(self.slots)

    def __len__(self) -> int:
        return self.count

    def __enter__(self) -> RxBatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


_EMPTY_SLOTS = np.zeros(0, dtype=np.int64)
_EMPTY_LENGTHS = np.zeros(0, dtype=np.uint16)


def _joined(a: RxBatch, b: RxBatch) -> RxBatch:
    """Two consecutive batches of one ring as one (a drain across the ring's end)."""
    if not b.count:
        a.more_pending = b.more_pending
        return a
    lengths = np.concatenate((a.lengths, b.lengths))
    copy = None
    if a._copy is not None and b._copy is not None:
        copy = np.zeros((len(lengths), max(a._copy.shape[1], b._copy.shape[1])), np.uint8)
        copy[: a.count, : a._copy.shape[1]] = a._copy
        copy[a.count :, : b._copy.shape[1]] = b._copy
    rss = None if a.rss is None or b.rss is None else np.concatenate((a.rss, b.rss))
    slots = np.concatenate((a.slots, b.slots))
    spans = None
    if a.spans is not None or b.spans is not None:
        spans = np.concatenate([x.spans if x.spans is not None else np.ones(x.count, np.int64)
                                for x in (a, b)])  # fmt: skip
    return RxBatch(a._ring, slots, lengths, copy, rss, b.more_pending, spans=spans)


class RxRing:
    """A receive ring: drain completed descriptors in batches, re-arm with fresh buffers."""

    def __init__(
        self,
        fmt: RxFormat,
        descs: np.ndarray,
        desc_iova: int,
        pool: np.ndarray,
        pool_iova: int,
        *,
        write_tail: TailWriter,
        wmb: Callable[[], None] = no_barrier,
        zero_copy: bool = False,
        max_frame: int | None = None,
    ) -> None:
        size = len(descs)
        if pool.ndim != 2 or len(pool) < size:
            raise ValueError("the buffer pool needs at least one slot per descriptor")
        # Frames up to max_frame may span descriptors (jumbo; the NIC needs LPE):
        # each but the last fills its buffer. None: one buffer per frame.
        self.max_frame = pool.shape[1] if max_frame is None else max_frame
        self.fmt = fmt
        self.descs = descs
        self.raw = as_raw(descs)
        self.qwords = as_qwords(descs)
        self.desc_iova = desc_iova
        self.size = size
        self.pool = pool
        self.pool_iova = pool_iova
        self.buffer_size = pool.shape[1]
        self.zero_copy = zero_copy
        self._write_tail = write_tail
        self._wmb = wmb
        self.slot_iova = pool_iova + np.arange(len(pool), dtype=np.uint64) * np.uint64(
            self.buffer_size
        )
        # Strided views of the write-back fields, and ring positions for any
        # window start..start+n-1 as one slice of _pos (no wrap-around cases).
        self._status = self.raw[:, fmt.status_offset]
        self._errors = self.raw[:, fmt.error_offset]
        lo = fmt.length_offset
        self._length = self.raw[:, lo : lo + 2].view("<u2")[:, 0]
        self._rss = (
            None
            if fmt.rss_offset is None
            else self.raw[:, fmt.rss_offset : fmt.rss_offset + 4].view("<u4")[:, 0]
        )
        self._pos = np.concatenate([np.arange(size), np.arange(size)])
        self.layout = RxLayout.of(fmt, self.buffer_size)
        self._width = 0  # the last short batch's copy width: usually the next one's
        # Copy width -> the pool's rows as one fixed-size item each (see ITEM_COPY_MIN).
        self._row_items: dict[int, np.ndarray | None] = {}
        self._unsummed: list[np.ndarray] = []
        # The pool slot behind each descriptor. Only the armed window
        # next_to_clean .. tail-1 is meaningful (see desc_slot); a drain
        # leaves the entries it consumed as they were.
        self._slot = np.arange(size, dtype=np.int64)
        self._free = np.arange(len(pool), dtype=np.int64)
        self._free_top = len(pool)  # _free[:_free_top] are free
        if not zero_copy:
            self._free_top = 0  # descriptor i owns slot i; copies never hold a slot
        # Each descriptor or pool slot as armed (the buffer's IOVA, then zero
        # write-back), so arming is one copy (copy mode) or one gather (zero-copy).
        self._armed_copy = np.zeros((size, 2), dtype=np.uint64)
        self._armed_copy[:, 0] = self.slot_iova[:size]
        self._armed_slot = np.zeros((len(pool), 2), dtype=np.uint64)
        self._armed_slot[:, 0] = self.slot_iova
        self._free_lock = threading.Lock()
        self.next_to_clean = 0
        self.tail = 0
        self.armed = 0  # descriptors the NIC owns: next_to_clean .. tail-1
        self.short = False  # the last replenish could not arm every descriptor
        # Called (from the releasing thread) when buffers come back to a short
        # ring: nothing else would re-arm it, as a starved NIC raises no interrupt.
        self.on_refill_needed: Callable[[], None] | None = None
        self.counters = dict.fromkeys(
            (
                "frames",
                "bytes",
                "descriptors",
                "drops_length",
                "drops_error",
                "drops_multi_descriptor",
                "spanning_frames",
                "starved",
                "tail_writes",
            ),
            0,
        )

    # -- buffers -------------------------------------------------------------------

    @property
    def desc_slot(self) -> np.ndarray:
        """The pool slot behind each descriptor, -1 where none is armed (a fresh array).

        Copy mode: descriptor i owns slot i for good.
        """
        if not self.zero_copy:
            return np.arange(self.size, dtype=np.int64)
        slots = np.full(self.size, -1, dtype=np.int64)
        pos = self._pos[self.next_to_clean : self.next_to_clean + self.armed]
        slots[pos] = self._slot[pos]
        return slots

    def give_back(self, slots: np.ndarray) -> None:
        """Return buffer slots to the pool (thread-safe: consumers call it)."""
        with self._free_lock:
            n = len(slots)
            self._free[self._free_top : self._free_top + n] = slots
            self._free_top += n
        if n and self.short and self.on_refill_needed is not None:
            self.on_refill_needed()

    @property
    def free_buffers(self) -> int:
        return self._free_top

    # -- arming --------------------------------------------------------------------

    def replenish(self) -> int:
        """Arm every descriptor that has none, with fresh buffers; one tail write.

        Called after each drain and before the interrupt is re-enabled (seed
        001: a buffer the consumer kept is replaced before re-enabling). With
        the pool empty (the consumer holds everything) the ring stays short and
        the shortfall is counted; the NIC then back-pressures.
        """
        want = self.size - 1 - self.armed
        if want <= 0:
            self.short = False
            return 0
        start = self.tail
        first = self.size - start  # descriptors before the ring's end
        qwords = self.qwords
        if self.zero_copy:
            # Under the lock: the slots are read straight off the free stack,
            # which a releasing consumer would otherwise overwrite.
            with self._free_lock:
                top = self._free_top
                n = want if want <= top else top
                fresh = self._free[top - n : top]
                # Both quadwords of each descriptor (IOVA, then zero) in one gather.
                if n <= first:
                    self._slot[start : start + n] = fresh
                    self._armed_slot.take(fresh, 0, qwords[start : start + n], "clip")
                else:  # around the ring's end: a second run from descriptor 0
                    self._slot[start:] = fresh[:first]
                    self._slot[: n - first] = fresh[first:]
                    self._armed_slot.take(fresh[:first], 0, qwords[start:], "clip")
                    self._armed_slot.take(fresh[first:], 0, qwords[: n - first], "clip")
                self._free_top = top - n
            if n < want:
                self.short = True
                self.counters["starved"] += 1
                if n == 0:
                    return 0
            else:
                self.short = False
        else:
            # Copy mode: descriptor i owns pool slot i for good, so the armed
            # descriptors are a template.
            n = want
            if n <= first:
                qwords[start : start + n] = self._armed_copy[start : start + n]
            else:
                qwords[start:] = self._armed_copy[start:]
                qwords[: n - first] = self._armed_copy[: n - first]
            self.short = False
        self.armed += n
        self.tail = start + n if n < first else start + n - self.size
        self._wmb()  # descriptors reach memory before the NIC sees the new tail
        self._write_tail(self.tail)
        self.counters["tail_writes"] += 1
        return n

    # -- receiving -----------------------------------------------------------------

    def drain(self, budget: int) -> RxBatch:
        """Take up to ``budget`` completed frames; re-arm what was consumed."""
        armed = self.armed
        limit = budget if budget < armed else armed
        if limit <= 0:
            return RxBatch(self, _EMPTY_SLOTS, _EMPTY_LENGTHS, None, None, self._dd_at_head())
        start = self.next_to_clean
        # The fast path runs up to the ring's end, then on from slot 0; the
        # consumed descriptors are re-armed once, at the end (one tail write).
        first = self.size - start
        wraps = first < limit
        if not wraps:
            first = limit
        batch = self._drain_clean(start, first, not wraps)
        if batch is None:
            return self._drain_general(limit)
        if not wraps:
            return batch
        if batch.count == first and batch.more_pending:
            rest = limit - first
            after = self._drain_clean(0, rest, False)
            if after is None:
                after = self._drain_general(rest, rearm=False)
            batch = _joined(batch, after)
        if batch.count:
            self.replenish()
            batch.more_pending = self._dd_at_head()  # as the general path sees it
        return batch

    def _drain_general(self, limit: int, *, rearm: bool = True) -> RxBatch:
        """Every case: wrap-around, bad descriptors, multi-descriptor frames.

        ``rearm=False`` leaves the re-arming to the caller.
        """
        start = self.next_to_clean
        wraps = start + limit > self.size
        pos = self._pos[start : start + limit]
        # Status first: the NIC writes DD after everything else.
        status = self._status.take(pos) if wraps else self._status[start : start + limit].copy()
        dd = (status & _DD) != 0
        done = limit if dd.all() else int(dd.argmin())
        if done == 0:
            return RxBatch(self, _EMPTY_SLOTS, _EMPTY_LENGTHS, None, None, False)
        pos = pos[:done]
        status = status[:done]
        wraps = start + done > self.size
        lengths = self._length.take(pos) if wraps else self._length[start : start + done].copy()
        errors = self._errors.take(pos) if wraps else self._errors[start : start + done]
        eop = (status & _EOP) != 0
        used = done
        single: np.ndarray | None = None  # None: every descriptor is a whole frame
        if not eop.all() and self.max_frame > self.buffer_size:
            return self._drain_spanning(start, pos, lengths, errors, eop, rearm)
        if not eop.all():
            used, single = self._frames(eop, done)
            if used == 0:
                return RxBatch(self, _EMPTY_SLOTS, _EMPTY_LENGTHS, None, None, False)
            pos, lengths, errors = pos[:used], lengths[:used], errors[:used]
        bad = (lengths == 0) | (lengths > self.buffer_size) | ((errors & _FRAME_ERRORS) != 0)
        if single is not None:
            bad |= ~single
        slots = self._slot[pos] if self.zero_copy else pos
        rss = None
        if self._rss is not None:
            rss = self._rss.take(pos)
        if bad.any():
            self._count_drops(lengths, errors, single)
            good = ~bad
            slots_out, lengths, rss = slots[good], lengths[good], None if rss is None else rss[good]
        else:
            good = None
            slots_out = slots
        copy = None
        if not self.zero_copy:
            width = int(lengths.max()) if len(lengths) else 0
            if good is None and not wraps:
                copy = self.pool[start : start + used, :width].copy()
            else:
                copy = self.pool[slots_out, :width]  # fancy indexing copies
        self.next_to_clean = (start + used) % self.size
        self.armed -= used
        self.counters["descriptors"] += used
        self.counters["frames"] += len(lengths)
        self.counters["bytes"] += int(lengths.sum(dtype=np.int64))
        if self.zero_copy and good is not None:
            self.give_back(slots[~good])
        if rearm:
            self.replenish()
        return RxBatch(
            self,
            slots_out if self.zero_copy else _EMPTY_SLOTS,
            lengths,
            copy,
            rss,
            self._dd_at_head(),
        )

    def _drain_clean(self, start: int, limit: int, rearm: bool = True) -> RxBatch | None:
        """The common case with few numpy calls, or None to take the general path.

        Taken when every descriptor in the completed run (up to the ring's
        end) is a whole frame (EOP), without error bits, with a length in
        1..buffer size. Status is read first (the NIC writes DD last), the
        rest of the run from a second snapshot; the checks work on that
        snapshot's bytes (C-level bytes methods cost a tenth of a numpy call).
        ``rearm=False`` leaves the re-arming to the caller.
        """
        classes = self._status[start : start + limit].tobytes().translate(_STATUS_CLASS)
        done = classes.find(_NOT_DONE)
        if done < 0:
            done = limit
        elif done == 0:
            return RxBatch(self, _EMPTY_SLOTS, _EMPTY_LENGTHS, None, None, False)
        if classes.find(_DONE_MORE, 0, done) >= 0:
            return None
        end = start + done
        body = self.raw[start:end].tobytes()
        lay = self.layout
        if body[lay.err_at :: DESCRIPTOR_BYTES].translate(None, _NO_FRAME_ERROR):
            return None
        lengths = np.frombuffer(body, "<u2")[lay.len_u16 :: lay.u16_per_desc]
        lo = body[lay.len_at :: DESCRIPTOR_BYTES]
        # The high bytes that are not zero: none for frames below 256 bytes.
        hi = body[lay.len_at + 1 :: DESCRIPTOR_BYTES].translate(None, _ZERO)
        zero_copy = self.zero_copy
        if not hi:
            if 0 in lo:  # a zero length
                return None
            width = self._width  # the longest frame: usually the last batch's
            if not zero_copy and (lo.translate(None, _AT_MOST[width]) or width not in lo):
                width = max(lo) if done <= FEW else int(lengths.max())
                self._width = width
        else:
            # Lengths checked on their bytes where that settles it: a high byte
            # below the buffer size's means in range, and a length is zero only
            # where both bytes are.
            if 0 in lo and len(hi) < done and not lengths.all():
                return None
            width = 0
            if hi.translate(None, lay.hi_in_range) or not zero_copy:
                width = int(lengths.max())
                if width > self.buffer_size:
                    return None
        if zero_copy:
            slots = self._slot[start:end].copy()
            copy = None
        else:
            slots = _EMPTY_SLOTS
            items = None
            if done >= ITEM_COPY_MIN:
                if width not in self._row_items:
                    self._row_items[width] = row_items(self.pool, width)
                items = self._row_items[width]
            if items is None:
                copy = self.pool[start:end, :width].copy()
            else:
                copy = np.ndarray((done, width), np.uint8, items[start:end].copy())
        rss = None if lay.rss_u32 is None else (body, lay.rss_u32)
        self.next_to_clean = end % self.size
        self.armed -= done
        c = self.counters
        c["descriptors"] += done
        c["frames"] += done
        self._unsummed.append(lengths)  # summed in stats(): one reduction per many drains
        if len(self._unsummed) >= UNSUMMED_MAX:
            self._sum_bytes()
        if rearm:
            self.replenish()
        # More pending: the NIC already completed the next descriptor.
        more = self.raw.item(self.next_to_clean, self.layout.status_at) & _DD_BIT and self.armed > 0
        return RxBatch(self, slots, lengths, copy, None, bool(more), rss)

    def _drain_spanning(
        self,
        start: int,
        pos: np.ndarray,
        lengths: np.ndarray,
        errors: np.ndarray,
        eop: np.ndarray,
        rearm: bool,
    ) -> RxBatch:
        """A window where frames may span descriptors (jumbo): one frame per EOP run.

        A run is a frame if every descriptor but its last is full (the buffer
        size), none has an error bit and the total is 1..max_frame; any other
        run (an EOP in the wrong place, too long) is dropped and counted.
        Descriptors after the last EOP wait for the rest of their frame,
        unless they fill the ring (a run that never ends: dropped).
        """
        done = len(pos)
        ends = np.flatnonzero(eop)
        used = int(ends[-1]) + 1 if len(ends) else 0
        endless = used == 0 and done >= self.size - 1
        if endless:
            used, ends = done, np.array([done - 1])
        if used == 0:
            return RxBatch(self, _EMPTY_SLOTS, _EMPTY_LENGTHS, None, None, False)
        pos, lengths, errors = pos[:used], lengths[:used].astype(np.int64), errors[:used]
        firsts = np.concatenate(([0], ends[:-1] + 1))
        spans = ends - firsts + 1
        totals = np.add.reduceat(lengths, firsts)
        # A descriptor is in order if it ends its frame or fills its buffer.
        in_order = eop[:used] | (lengths == self.buffer_size)
        whole = np.logical_and.reduceat(in_order, firsts)
        erred = np.bitwise_or.reduceat(errors & _FRAME_ERRORS, firsts) != 0
        one_too_long = (spans == 1) & (totals > self.buffer_size)
        too_long = (totals == 0) | (totals > self.max_frame) | one_too_long
        good = whole & ~erred & ~too_long
        if endless:
            good[:] = False
        multi_bad = ~good & ((spans > 1) | endless)
        self.counters["drops_multi_descriptor"] += int(multi_bad.sum())
        self.counters["drops_length"] += int((too_long & ~multi_bad).sum())
        self.counters["drops_error"] += int((erred & ~too_long & ~multi_bad).sum())
        slots = self._slot[pos] if self.zero_copy else pos
        keep = np.repeat(good, spans)  # per descriptor: part of a good frame
        frame_lengths = totals[good].astype(np.uint16)  # jumbo frames fit 16 bits
        rss = None if self._rss is None else self._rss.take(pos[ends[good]])
        copy = None
        out_spans = None
        if self.zero_copy:
            if not keep.all():
                self.give_back(slots[~keep])
            slots_out = slots[keep]
            out_spans = spans[good]
        else:
            slots_out = _EMPTY_SLOTS
            copy = self._gather(slots, firsts[good], spans[good], totals[good])
        self.next_to_clean = (start + used) % self.size
        self.armed -= used
        self.counters["descriptors"] += used
        self.counters["frames"] += int(good.sum())
        self.counters["spanning_frames"] += int((good & (spans > 1)).sum())
        self.counters["bytes"] += int(totals[good].sum())
        if rearm:
            self.replenish()
        return RxBatch(
            self, slots_out, frame_lengths, copy, rss, self._dd_at_head(), spans=out_spans
        )

    def _gather(
        self, slots: np.ndarray, firsts: np.ndarray, spans: np.ndarray, totals: np.ndarray
    ) -> np.ndarray:
        """Copy mode: each frame's buffers joined into one row (n x longest frame)."""
        width = int(totals.max()) if len(totals) else 0
        out = np.zeros((len(totals), width), np.uint8)
        one = spans == 1
        if one.any():  # one-buffer frames: one fancy-indexed copy for all
            cols = min(width, self.buffer_size)
            out[one, :cols] = self.pool[slots[firsts[one]], :cols]
        flat = self.pool.reshape(-1)
        size = self.buffer_size
        for i in np.flatnonzero(~one):  # spanning frames: a few per batch, each KBs long
            first, n, total = int(firsts[i]), int(spans[i]), int(totals[i])
            run = slots[first : first + n]
            if n > 1 and (np.diff(run) == 1).all():  # consecutive buffers: one slice
                out[i, :total] = flat[int(run[0]) * size : int(run[0]) * size + total]
            else:
                out[i, :total] = self.pool[run].reshape(-1)[:total]
        return out

    def _frames(self, eop: np.ndarray, done: int) -> tuple[int, np.ndarray]:
        """Descriptors to consume and which of them are whole one-descriptor frames.

        Descriptors after the last EOP belong to a frame still arriving and are
        left for the next drain, unless the run spans the whole ring (it can
        never complete: garbage), in which case it is consumed and dropped.
        """
        ends = np.flatnonzero(eop)
        used = int(ends[-1]) + 1 if len(ends) else 0
        if used == 0 and done >= self.size - 1:
            used = done
        starts = np.empty(done, dtype=bool)
        starts[0] = True
        starts[1:] = eop[:-1]
        single = (starts & eop)[:used]
        multi = int(eop[:used].sum() - single.sum())
        if used == done and not eop[done - 1]:
            multi += 1  # the unfinished run dropped as garbage
        self.counters["drops_multi_descriptor"] += multi
        return used, single

    def _count_drops(
        self, lengths: np.ndarray, errors: np.ndarray, single: np.ndarray | None
    ) -> None:
        whole = np.ones(len(lengths), bool) if single is None else single
        bad_length = ((lengths == 0) | (lengths > self.buffer_size)) & whole
        bad_error = ((errors & _FRAME_ERRORS) != 0) & whole & ~bad_length
        self.counters["drops_length"] += int(bad_length.sum())
        self.counters["drops_error"] += int(bad_error.sum())

    def reset(self) -> None:
        """Forget every armed descriptor (the NIC is stopped and reset): back to empty.

        Buffers behind armed descriptors return to the pool; buffers consumers
        hold stay theirs. The caller re-arms with :meth:`replenish`.
        """
        if self.zero_copy:
            armed = self._slot[self._pos[self.next_to_clean : self.next_to_clean + self.armed]]
            with self._free_lock:  # no refill hook: the caller re-arms
                n = len(armed)
                self._free[self._free_top : self._free_top + n] = armed
                self._free_top += n
        self.qwords[:] = 0
        self.next_to_clean = self.tail = self.armed = 0
        self.short = False

    def _dd_at_head(self) -> bool:
        """Whether the NIC already completed the next descriptor (more pending)."""
        if self.armed == 0:
            return False
        return bool(self.raw.item(self.next_to_clean, self.layout.status_at) & _DD_BIT)

    def _sum_bytes(self) -> None:
        """Fold the fast path's pending lengths into the byte counter (drain's thread only)."""
        pending, self._unsummed = self._unsummed, []
        if pending:
            self.counters["bytes"] += int(np.concatenate(pending).sum(dtype=np.int64))

    def stats(self) -> dict[str, Any]:
        # Any thread: read the pending lengths without taking them from drain().
        pending = list(self._unsummed)
        unsummed = int(np.concatenate(pending).sum(dtype=np.int64)) if pending else 0
        counters = {**self.counters, "bytes": self.counters["bytes"] + unsummed}
        return {**counters, "armed": self.armed, "free_buffers": self.free_buffers}
