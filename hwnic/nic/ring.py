"""RX and TX descriptor rings over numpy views of DMA memory: the hot path.

Everything works on whole batches: a drain reads the status of a window of
descriptors at once, takes the run the NIC completed, validates it with numpy,
hands it up as one batch and re-arms the consumed descriptors with one tail
write. No Python loop runs per frame.

Conventions (the datasheets'): the NIC owns descriptors from head to tail-1;
the driver never arms more than ``size - 1`` so head == tail means "empty".
The rings know nothing of VFIO: they take arrays, IOVAs and a ``write_tail``
callable, so host tests drive them with ordinary memory and a fake NIC.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hwnic.nic.descriptors import (
    LEGACY_TX,
    RX_FRAME_ERRORS,
    TX_CMD_SHIFT,
    TX_CMD_SINGLE,
    RxFormat,
    RxStatus,
    TxStatus,
    as_qwords,
    as_raw,
)

# Plain ints for the hot path: IntFlag arithmetic costs microseconds per use.
_DD = np.uint8(int(RxStatus.DD))
_EOP = np.uint8(int(RxStatus.EOP))
_FRAME_ERRORS = np.uint8(int(RX_FRAME_ERRORS))
_TX_DD = np.uint8(int(TxStatus.DD))

# Status byte -> class, for bytes.translate on a whole window at once: one
# C-level pass finds the completed run and whether any frame spans descriptors.
_NOT_DONE, _DONE_EOP, _DONE_MORE = b"\x00", b"\x01", b"\x02"
_STATUS_CLASS = bytes(
    0 if not b & RxStatus.DD else 1 if b & RxStatus.EOP else 2 for b in range(256)
)
# Error byte -> 1 if it carries a frame error (checksum results are not errors).
_HAS_FRAME_ERROR = bytes(1 if b & RX_FRAME_ERRORS else 0 for b in range(256))
DESCRIPTOR_BYTES = 16
U16_BYTES = 2
BITS_PER_BYTE = 8
FEW = 64  # up to this many frames, Python's max() on bytes beats a reduction
UNSUMMED_MAX = 64  # fast-path batches whose bytes are summed together

TailWriter = Callable[[int], None]
LEGACY_TX_STATUS_OFFSET = 12  # byte holding DD in a legacy TX descriptor


def _no_barrier() -> None:
    """Host tests: ordinary memory needs no fence."""


def _window(start: int, count: int, size: int) -> list[slice]:
    """The ring positions start..start+count-1 as at most two slices (wrap-around)."""
    end = start + count
    if end <= size:
        return [slice(start, end)]
    return [slice(start, size), slice(0, end - size)]


class RxBatch:
    """Frames a drain indicated: lengths and where the data is.

    In copy mode ``frames`` is a compact copy (count x longest frame). In
    zero-copy mode the frames stay in the ring's buffers (``frame(i)`` is a
    view) until :meth:`release`; the ring never re-arms a buffer a batch holds.
    """

    __slots__ = ("_copy", "_released", "_ring", "lengths", "more_pending", "rss", "slots")

    def __init__(
        self,
        ring: RxRing | None,
        slots: np.ndarray,
        lengths: np.ndarray,
        copy: np.ndarray | None,
        rss: np.ndarray | None,
        more_pending: bool,
    ) -> None:
        self._ring = ring
        self.slots = slots
        self.lengths = lengths
        self._copy = copy
        self.rss = rss
        self.more_pending = more_pending
        self._released = copy is not None or not len(slots)

    @property
    def count(self) -> int:
        return len(self.lengths)

    @property
    def zero_copy(self) -> bool:
        return self._copy is None

    @property
    def frames(self) -> np.ndarray:
        """All frames as rows of one array (a copy in zero-copy mode)."""
        if self._copy is not None:
            return self._copy
        assert self._ring is not None
        width = int(self.lengths.max()) if self.count else 0
        return self._ring.pool[self.slots, :width]

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` (a view into DMA memory in zero-copy mode)."""
        length = int(self.lengths[i])
        if self._copy is not None:
            return self._copy[i, :length]
        assert self._ring is not None
        return self._ring.pool[int(self.slots[i]), :length]

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
    return RxBatch(a._ring, slots, lengths, copy, rss, b.more_pending)


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
        wmb: Callable[[], None] = _no_barrier,
        zero_copy: bool = False,
    ) -> None:
        size = len(descs)
        if pool.ndim != 2 or len(pool) < size:
            raise ValueError("the buffer pool needs at least one slot per descriptor")
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
        # Byte-level fast path: where the error byte and the length u16 sit.
        if lo % U16_BYTES:
            raise ValueError(f"{fmt.name}: the length field must be 16-bit aligned")
        self._err_at = fmt.error_offset
        self._len_u16 = lo // U16_BYTES
        self._u16_per_desc = DESCRIPTOR_BYTES // U16_BYTES
        self._len_at = lo
        # High-byte values that keep a length below the buffer size.
        self._hi_in_range = bytes(range(min(self.buffer_size >> BITS_PER_BYTE, 256)))
        self._unsummed: list[np.ndarray] = []
        # The pool slot behind each descriptor, and the slots nobody uses.
        self.desc_slot = np.full(size, -1, dtype=np.int64)
        self._free = np.arange(len(pool), dtype=np.int64)
        self._free_top = len(pool)  # _free[:_free_top] are free
        if not zero_copy:
            self._free_top = 0  # descriptor i owns slot i; copies never hold a slot
            self.desc_slot[:] = np.arange(size)
        # Copy mode: each descriptor as armed (its own buffer's IOVA, then zero).
        self._armed_copy = np.zeros((size, 2), dtype=np.uint64)
        self._armed_copy[:, 0] = self.slot_iova[:size]
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
                "starved",
                "tail_writes",
            ),
            0,
        )

    # -- buffers -------------------------------------------------------------------

    def _take(self, count: int) -> np.ndarray:
        with self._free_lock:
            count = min(count, self._free_top)
            self._free_top -= count
            return self._free[self._free_top : self._free_top + count].copy()

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
        if self.zero_copy:
            slots = self._take(want)
            n = len(slots)
        else:
            n = want  # copy mode: descriptor i owns pool slot i for good
        self.short = n < want
        if self.short:
            self.counters["starved"] += 1
        if n == 0:
            return 0
        end = start + n
        first = min(n, self.size - start)
        self._arm(slice(start, start + first), slots[:first] if self.zero_copy else None)
        if first < n:  # around the ring's end: a second run from descriptor 0
            self._arm(slice(0, n - first), slots[first:] if self.zero_copy else None)
        self.armed += n
        self.tail = end % self.size
        self._wmb()  # descriptors reach memory before the NIC sees the new tail
        self._write_tail(self.tail)
        self.counters["tail_writes"] += 1
        return n

    def _arm(self, where: slice, slots: np.ndarray | None) -> None:
        """Give the descriptors ``where`` their buffers (zero-copy: ``slots``)."""
        # Write-back formats overwrite the address quadword, so re-write it;
        # zeroing the second clears DD and the rest of the write-back.
        if slots is None:
            self.qwords[where] = self._armed_copy[where]  # descriptor i owns slot i
        else:
            self.desc_slot[where] = slots
            self.qwords[where, 0] = self.slot_iova[slots]
            self.qwords[where, 1] = 0

    # -- receiving -----------------------------------------------------------------

    def drain(self, budget: int) -> RxBatch:
        """Take up to ``budget`` completed frames; re-arm what was consumed."""
        limit = min(budget, self.armed)
        if limit <= 0:
            return RxBatch(self, _EMPTY_SLOTS, _EMPTY_LENGTHS, None, None, self._dd_at_head())
        start = self.next_to_clean
        # The fast path runs up to the ring's end, then on from slot 0.
        first = min(limit, self.size - start)
        batch = self._drain_clean(start, first)
        if batch is None:
            return self._drain_general(limit)
        if first < limit and batch.count == first and batch.more_pending:
            rest = min(limit - first, self.armed)
            after = self._drain_clean(0, rest)
            return _joined(batch, self._drain_general(rest) if after is None else after)
        return batch

    def _drain_general(self, limit: int) -> RxBatch:
        """Every case: wrap-around, bad descriptors, multi-descriptor frames."""
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
        if not eop.all():
            used, single = self._frames(eop, done)
            if used == 0:
                return RxBatch(self, _EMPTY_SLOTS, _EMPTY_LENGTHS, None, None, False)
            pos, lengths, errors = pos[:used], lengths[:used], errors[:used]
        bad = (lengths == 0) | (lengths > self.buffer_size) | ((errors & _FRAME_ERRORS) != 0)
        if single is not None:
            bad |= ~single
        slots = self.desc_slot[pos] if self.zero_copy else pos
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
        if self.zero_copy:
            self.desc_slot[pos] = -1
            if good is not None:
                self.give_back(slots[~good])
        self.replenish()
        return RxBatch(
            self,
            slots_out if self.zero_copy else _EMPTY_SLOTS,
            lengths,
            copy,
            rss,
            self._dd_at_head(),
        )

    def _drain_clean(self, start: int, limit: int) -> RxBatch | None:
        """The common case with few numpy calls, or None to take the general path.

        Taken when the completed run does not wrap and every descriptor in it
        is a whole frame (EOP), without error bits, with a length in
        1..buffer size. Status is read first (the NIC writes DD last), the
        rest of the run from a second snapshot.
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
        if 1 in body[self._err_at :: DESCRIPTOR_BYTES].translate(_HAS_FRAME_ERROR):
            return None
        lengths = np.frombuffer(body, "<u2")[self._len_u16 :: self._u16_per_desc]
        # Lengths checked on their bytes where that settles it (no reduction):
        # a high byte below the buffer's means in range, and a length is zero
        # only where both bytes are.
        lo = body[self._len_at :: DESCRIPTOR_BYTES]
        hi = body[self._len_at + 1 :: DESCRIPTOR_BYTES]
        # High bytes at or above the buffer size's: maybe too long, look closer.
        if hi.translate(None, self._hi_in_range) and int(lengths.max()) > self.buffer_size:
            return None
        if 0 in lo and 0 in hi and not lengths.all():
            return None
        if self.zero_copy:
            slots = self.desc_slot[start:end].copy()
            self.desc_slot[start:end] = -1
            copy = None
        else:
            slots = _EMPTY_SLOTS
            # The longest frame; for a few short ones, their largest low byte
            # is cheaper than a numpy reduction.
            short = done <= FEW and not hi.strip(b"\0")
            width = max(lo) if short else int(lengths.max())
            copy = self.pool[start:end, :width].copy()
        rss = None if self._rss is None else self._rss[start:end].copy()
        self.next_to_clean = end % self.size
        self.armed -= done
        c = self.counters
        c["descriptors"] += done
        c["frames"] += done
        self._unsummed.append(lengths)  # summed in stats(): one reduction per many drains
        if len(self._unsummed) >= UNSUMMED_MAX:
            self._sum_bytes()
        self.replenish()
        return RxBatch(self, slots, lengths, copy, rss, self._dd_at_head())

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
            armed = self.desc_slot[self.desc_slot >= 0]
            self.desc_slot[:] = -1
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
        return bool(self._status[self.next_to_clean] & _DD)

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


class TxRing:
    """A transmit ring of legacy descriptors: post batches, reclaim completions."""

    def __init__(
        self,
        descs: np.ndarray,
        desc_iova: int,
        buffers: np.ndarray,
        buffers_iova: int,
        *,
        write_tail: TailWriter,
        wmb: Callable[[], None] = _no_barrier,
    ) -> None:
        if descs.dtype != LEGACY_TX:
            raise ValueError("TX rings use legacy descriptors")
        size = len(descs)
        if buffers.ndim != 2 or len(buffers) < size:
            raise ValueError("the TX buffers need one slot per descriptor")
        self.descs = descs
        self.raw = as_raw(descs)
        self.qwords = as_qwords(descs)
        self.desc_iova = desc_iova
        self.size = size
        self.buffers = buffers
        self.buffer_size = buffers.shape[1]
        self._write_tail = write_tail
        self._wmb = wmb
        self.slot_iova = buffers_iova + np.arange(size, dtype=np.uint64) * np.uint64(
            self.buffer_size
        )
        self.next_to_clean = 0
        self.tail = 0
        self.in_flight = 0
        self.counters = dict.fromkeys(
            (
                "frames",
                "bytes",
                "reclaimed",
                "ring_full",
                "tail_writes",
                "too_long",
                "reset_discards",
            ),
            0,
        )
        self.qwords[:, 0] = self.slot_iova  # each descriptor owns one buffer for good

    @property
    def free(self) -> int:
        return self.size - 1 - self.in_flight

    def post(
        self, frames: np.ndarray | Sequence[np.ndarray], lengths: np.ndarray | None = None
    ) -> int:
        """Copy frames into TX buffers, write descriptors, one tail write; returns count."""
        if isinstance(frames, np.ndarray) and frames.ndim == 2:
            if lengths is None:
                lengths = np.full(len(frames), frames.shape[1], dtype=np.int64)
            rows = frames
        else:
            seq = list(frames)
            lengths = np.array([len(f) for f in seq], dtype=np.int64)
            width = int(lengths.max()) if len(seq) else 0
            rows = np.zeros((len(seq), width), dtype=np.uint8)
            for i, f in enumerate(seq):  # list input only: arrays take the fast path
                rows[i, : len(f)] = f
        lengths = np.asarray(lengths)
        n = min(len(lengths), self.free)
        if n < len(lengths):
            self.counters["ring_full"] += 1
        if n == 0:
            return 0
        if int(lengths[:n].max()) > self.buffer_size:
            self.counters["too_long"] += 1
            raise ValueError(f"frames longer than the {self.buffer_size}-byte TX buffers")
        width = min(rows.shape[1], int(lengths[:n].max()))
        done = 0
        for part in _window(self.tail, n, self.size):
            k = part.stop - part.start
            self.buffers[part, :width] = rows[done : done + k, :width]
            q1 = lengths[done : done + k].astype(np.uint64) | np.uint64(
                int(TX_CMD_SINGLE) << TX_CMD_SHIFT
            )
            self.qwords[part, 1] = q1  # cso, css, special 0; status (DD) cleared
            done += k
        self.tail = (self.tail + n) % self.size
        self.in_flight += n
        self.counters["frames"] += n
        self.counters["bytes"] += int(lengths[:n].sum(dtype=np.int64))
        self._wmb()
        self._write_tail(self.tail)
        self.counters["tail_writes"] += 1
        return n

    def reclaim(self) -> int:
        """Free descriptors the NIC finished (DD written back); returns how many."""
        if self.in_flight == 0:
            return 0
        start = self.next_to_clean
        parts = _window(start, self.in_flight, self.size)
        dd = np.concatenate([(self.raw[p, LEGACY_TX_STATUS_OFFSET] & _TX_DD) != 0 for p in parts])
        done = self.in_flight if dd.all() else int(np.argmin(dd))
        if done:
            self.next_to_clean = (start + done) % self.size
            self.in_flight -= done
            self.counters["reclaimed"] += done
        return done

    def reset(self) -> int:
        """Forget posted frames the NIC never completed (it was reset); returns how many."""
        discarded = self.in_flight
        self.counters["reset_discards"] += discarded
        self.qwords[:, 1] = 0
        self.next_to_clean = self.tail = self.in_flight = 0
        return discarded

    def stats(self) -> dict[str, Any]:
        return {**self.counters, "in_flight": self.in_flight}
