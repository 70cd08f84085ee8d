"""The transmit ring of legacy descriptors: post batches, reclaim completions.

A post copies a batch of frames into the descriptors' own buffers, writes
their second quadwords (length and command) in one numpy pass and the tail
once; a reclaim finds the run the NIC wrote DD back on with one C-level
pass over the status bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hwnic.nic.descriptors import (
    LEGACY_TX,
    TX_CMD_SHIFT,
    TX_CMD_SINGLE,
    TX_STATUS_OFFSET,
    TxCmd,
    TxStatus,
    as_qwords,
    as_raw,
)
from hwnic.nic.ring import ITEM_COPY_MIN, TailWriter, no_barrier, row_items

# TX status byte -> 1 once the NIC wrote DD back, else 0 (_NOT_DONE).
_TX_DONE_CLASS = bytes(1 if b & TxStatus.DD else 0 for b in range(256))
_NOT_DONE = b"\x00"
# The second quadword of a posted TX descriptor, less the length: a whole frame.
_TX_CMD_QWORD = np.uint64(int(TX_CMD_SINGLE) << TX_CMD_SHIFT)
# ... and of a descriptor in the middle of a frame that spans several: no EOP.
_TX_CMD_QWORD_MORE = np.uint64(int(TX_CMD_SINGLE & ~TxCmd.EOP) << TX_CMD_SHIFT)
# The longest frame hwnic sends (jumbo: 9000 bytes of payload + header + VLAN tag).
MAX_SPANNED_FRAME = 9018
_CAST_TO_U64: dict[str, Any] = {"dtype": np.uint64, "casting": "unsafe"}


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
        wmb: Callable[[], None] = no_barrier,
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
        # Strided views: the second quadword (length, cso, cmd, status, css,
        # special), the status byte and the length.
        self._q1 = self.qwords[:, 1]
        self._status = self.raw[:, TX_STATUS_OFFSET]
        self._length = self.descs["length"]
        # Copy width -> the buffers as one fixed-size item each (see ITEM_COPY_MIN).
        self._row_items: dict[int, np.ndarray | None] = {}
        # Frames posted since the byte counter was last brought up to date: the
        # last ones before tail. Their lengths are summed from the descriptors
        # (one reduction per many posts), before the ring can overwrite them.
        self._unsummed = 0
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
                "spanning_frames",
            ),
            0,
        )
        self.qwords[:, 0] = self.slot_iova  # each descriptor owns one buffer for good

    @property
    def free(self) -> int:
        return self.size - 1 - self.in_flight

    def post(
        self,
        frames: np.ndarray | Sequence[np.ndarray],
        lengths: np.ndarray | None = None,
        *,
        desc_bits: int = 0,
    ) -> int:
        """Copy frames into TX buffers, write descriptors, one tail write; returns count.

        ``desc_bits`` is ORed into each descriptor's second quadword: a family's
        per-send options (igb: an advanced descriptor asking for an IEEE 1588
        timestamp, see ``hwnic/nic/igb_ptp.py``).
        """
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
        n = len(lengths)
        free = self.size - 1 - self.in_flight
        if n > free:
            self.counters["ring_full"] += 1
            n = free
            lengths = lengths[:n]
        if n == 0:
            return 0
        longest = int(lengths.max())
        if longest > self.buffer_size:
            return self._post_spanning(rows, lengths, desc_bits)
        width = min(rows.shape[1], longest)
        if self._unsummed + n >= self.size:
            self._sum_bytes()  # the lengths about to be overwritten are counted first
        start = self.tail
        first = self.size - start  # descriptors before the ring's end
        if n <= first:
            self._fill(start, rows[:n], width)
            # Length | command, status (DD) and the rest cleared, in one pass.
            np.bitwise_or(lengths, _TX_CMD_QWORD, out=self._q1[start : start + n], **_CAST_TO_U64)
            self.tail = start + n if n < first else 0
        else:  # around the ring's end: a second run from descriptor 0
            self._fill(start, rows[:first], width)
            self._fill(0, rows[first:n], width)
            np.bitwise_or(lengths[:first], _TX_CMD_QWORD, out=self._q1[start:], **_CAST_TO_U64)
            np.bitwise_or(lengths[first:], _TX_CMD_QWORD, out=self._q1[: n - first], **_CAST_TO_U64)
            self.tail = n - first
        if desc_bits:
            self._or_bits(start, n, np.uint64(desc_bits))
        self.in_flight += n
        self._unsummed += n
        self.counters["frames"] += n
        self._wmb()
        self._write_tail(self.tail)
        self.counters["tail_writes"] += 1
        return n

    def _post_spanning(self, rows: np.ndarray, lengths: np.ndarray, desc_bits: int) -> int:
        """Frames longer than a buffer: each spans ceil(length / buffer) descriptors.

        Only the last descriptor of a frame has EOP (the NIC gathers until
        it); every one has RS, so reclaim counts descriptors as always. The
        copy loops over a frame's parts (at most MAX_FRAME / buffer size),
        each part of every frame at once.
        """
        size = self.buffer_size
        if int(lengths.max()) > MAX_SPANNED_FRAME:
            self.counters["too_long"] += 1
            raise ValueError(f"frames longer than {MAX_SPANNED_FRAME} bytes")
        parts = (lengths.astype(np.int64) + size - 1) // size
        ends = np.cumsum(parts)
        free = self.size - 1 - self.in_flight
        n = int(np.searchsorted(ends, free, side="right"))  # whole frames that fit
        if n < len(lengths):
            self.counters["ring_full"] += 1
        if n == 0:
            return 0
        parts, ends, lengths = parts[:n], ends[:n], lengths[:n]
        count = int(ends[-1])
        frame_of = np.repeat(np.arange(n), parts)
        part = np.arange(count) - np.repeat(ends - parts, parts)
        desc_len = np.minimum(lengths[frame_of] - part * size, size)
        pos = (self.tail + np.arange(count)) % self.size
        for j in range(int(parts.max())):
            here = part == j
            width = min(size, rows.shape[1] - j * size)
            if width > 0:
                self.buffers[pos[here], :width] = rows[frame_of[here], j * size : j * size + width]
        last = np.zeros(count, dtype=bool)
        last[ends - 1] = True
        if self._unsummed + count >= self.size:
            self._sum_bytes()
        q1 = desc_len.astype(np.uint64) | np.where(last, _TX_CMD_QWORD, _TX_CMD_QWORD_MORE)
        if desc_bits:
            q1 |= np.uint64(desc_bits)
        self._q1[pos] = q1
        self.tail = int(pos[-1] + 1) % self.size
        self.in_flight += count
        self._unsummed += count
        self.counters["frames"] += n
        self.counters["spanning_frames"] += int((parts > 1).sum())
        self._wmb()
        self._write_tail(self.tail)
        self.counters["tail_writes"] += 1
        return n

    def _or_bits(self, start: int, n: int, bits: np.uint64) -> None:
        """OR ``bits`` into the second quadword of ``n`` descriptors from ``start``."""
        first = min(n, self.size - start)
        self._q1[start : start + first] |= bits
        self._q1[: n - first] |= bits

    def _fill(self, start: int, rows: np.ndarray, width: int) -> None:
        """Copy ``rows[:, :width]`` into the buffers of descriptors ``start`` on."""
        n = len(rows)
        if n >= ITEM_COPY_MIN:
            if width not in self._row_items:
                self._row_items[width] = row_items(self.buffers, width)
            dst = self._row_items[width]
            src = None if dst is None else row_items(rows, width)
            if dst is not None and src is not None:
                dst[start : start + n] = src
                return
        self.buffers[start : start + n, :width] = rows[:, :width]

    def reclaim(self) -> int:
        """Free descriptors the NIC finished (DD written back); returns how many."""
        pending = self.in_flight
        if pending == 0:
            return 0
        start = self.next_to_clean
        end = start + pending
        if end <= self.size:
            status = self._status[start:end].tobytes()
        else:
            status = self._status[start:].tobytes() + self._status[: end - self.size].tobytes()
        done = status.translate(_TX_DONE_CLASS).find(_NOT_DONE)
        if done < 0:
            done = pending
        if done:
            self.next_to_clean = (start + done) % self.size
            self.in_flight -= done
            self.counters["reclaimed"] += done
        return done

    def _sum_bytes(self) -> None:
        """Bring the byte counter up to date (the posting thread only)."""
        self.counters["bytes"] += self._pending_bytes()
        self._unsummed = 0

    def _pending_bytes(self) -> int:
        """Bytes of the frames posted since the last :meth:`_sum_bytes`."""
        n = self._unsummed
        if n == 0:
            return 0
        start = self.tail - n
        if start >= 0:
            return int(self._length[start : self.tail].sum(dtype=np.int64))
        return int(self._length[start:].sum(dtype=np.int64)) + int(
            self._length[: self.tail].sum(dtype=np.int64)
        )

    def reset(self) -> int:
        """Forget posted frames the NIC never completed (it was reset); returns how many."""
        self._sum_bytes()  # before the lengths are cleared
        discarded = self.in_flight
        self.counters["reset_discards"] += discarded
        self.qwords[:, 1] = 0
        self.next_to_clean = self.tail = self.in_flight = 0
        return discarded

    def stats(self) -> dict[str, Any]:
        # Any thread: the pending bytes are read, not folded in.
        counters = {**self.counters, "bytes": self.counters["bytes"] + self._pending_bytes()}
        return {**counters, "in_flight": self.in_flight}
