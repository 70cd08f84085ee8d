"""Descriptor rings, and software models of the NIC side for host tests.

The rings live in :mod:`hwnic.nic.rx_ring` and :mod:`hwnic.nic.tx_ring`; this
module re-exports them and adds :class:`FakeRxDevice` / :class:`FakeTxDevice`,
which write descriptors back the way QEMU 10's e1000, e1000e and igb models
do (QEMU-NICS.md §3, §4), so that the rings, the NIC models and
``tools/bench_swpath.py`` can be exercised without a device.

Wiring, for a NIC model::

    rx = RxRing(descs, descs_iova, pool, pool_iova,
                write_tail=lambda v: bar0.write32(RDT0, v), wmb=barrier,
                fmt=ADVANCED_RX_FORMAT, zero_copy=True)
    # program RDBAL/RDBAH = rx.desc_iova, RDLEN = rx.size * 16, RDH = RDT = 0, enable
    rx.replenish()                    # arms N-1 descriptors, writes RDT once
    ...
    batch = rx.drain(max_to_indicate) # in the DPC
    indicate(batch); more = batch.more_pending
    rx.replenish()                    # before re-enabling the interrupt
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hwnic.nic.descriptors import (
    LEGACY_RX_FORMAT,
    TX_CMD_SHIFT,
    TX_STATUS_OFFSET,
    RxFormat,
    RxStatus,
    TxCmd,
    TxStatus,
    as_qwords,
    as_raw,
)
from hwnic.nic.rx_ring import RxBatch, RxCounters, RxRing
from hwnic.nic.tx_ring import TxCounters, TxRing

__all__ = [
    "DeviceFault",
    "FakeRxDevice",
    "FakeTxDevice",
    "RxBatch",
    "RxCounters",
    "RxRing",
    "TxCounters",
    "TxRing",
]

_QWORD_BYTES = 8
_BITS = 8
_U16 = 0xFFFF
_WB_BASE = 8  # byte offset of the second quadword
_TX_LEN_MASK = 0xFFFF
_TX_CMD_MASK = 0xFF


class DeviceFault(Exception):
    """The fake device was told to DMA outside the pool (a driver bug)."""


def _shift(offset: int) -> np.uint64:
    """Bit shift of a field at ``offset`` within the write-back quadword."""
    return np.uint64((offset - _WB_BASE) * _BITS)


class FakeRxDevice:
    """Receives frames into an RX ring the way QEMU does.

    It owns descriptors ``[head, tail)``; each frame goes into the buffer whose
    address the driver wrote, a frame longer than a buffer spans several
    descriptors (EOP on the last), and each descriptor is written back first
    with DD clear, then its status byte with DD.
    """

    def __init__(
        self,
        descs: np.ndarray,
        pool: np.ndarray,
        pool_iova: int,
        fmt: RxFormat = LEGACY_RX_FORMAT,
    ) -> None:
        self.fmt = fmt
        self.raw = as_raw(descs)
        self.q = as_qwords(self.raw)
        self.size = self.raw.shape[0]
        self.pool = pool
        self.pool_iova = pool_iova
        self.buffer_size = pool.shape[1]
        self.head = 0
        self.tail = 0
        self.tail_writes = 0
        self.status_extra = 0  # extra status bits (checksum flags) on every frame

    def write_tail(self, value: int) -> None:
        """The RDT register: what the ring passes as ``write_tail``."""
        if not 0 <= value < self.size:
            raise DeviceFault(f"RDT {value} out of range")
        self.tail = value
        self.tail_writes += 1

    @property
    def available(self) -> int:
        """Descriptors the driver has given the device."""
        return (self.tail - self.head) % self.size

    def _slots(self, idx: np.ndarray) -> np.ndarray:
        addr = self.q[idx, 0].astype(np.int64) - self.pool_iova
        slots = addr // self.buffer_size
        if (
            (addr % self.buffer_size).any()
            or (slots < 0).any()
            or (slots >= self.pool.shape[0]).any()
        ):
            raise DeviceFault("descriptor buffer address outside the pool")
        return slots

    def receive(
        self,
        frames: np.ndarray | Sequence[np.ndarray],
        lengths: np.ndarray | None = None,
        *,
        errors: int = 0,
        rss: int = 0,
        rss_type: int = 0,
    ) -> int:
        """Deliver frames (an n x L array with optional lengths, or a list of 1-D
        arrays); returns how many fit (QEMU would queue the rest)."""
        if isinstance(frames, np.ndarray) and frames.ndim == 2:
            lens = (
                np.full(len(frames), frames.shape[1], np.int64)
                if lengths is None
                else np.asarray(lengths, np.int64)
            )
            if len(lens) and int(lens.max()) <= self.buffer_size:
                return self._receive_2d(frames, lens, errors, rss, rss_type)
            rows = [frames[i, : lens[i]] for i in range(len(frames))]
        else:
            rows = list(frames)
        done = 0
        for f in rows:  # slow path for tests: frames spanning several buffers
            if not self._receive_one(np.asarray(f, np.uint8), errors, rss, rss_type):
                break
            done += 1
        return done

    def _receive_2d(
        self, frames: np.ndarray, lens: np.ndarray, errors: int, rss: int, rss_type: int
    ) -> int:
        k = min(len(frames), self.available)
        if k == 0:
            return 0
        idx = (self.head + np.arange(k)) % self.size
        slots = self._slots(idx)
        width = min(frames.shape[1], self.buffer_size)
        self.pool[slots, :width] = frames[:k, :width]
        status = np.full(k, int(RxStatus.EOP) | self.status_extra, np.uint64)
        self._writeback(idx, lens[:k].astype(np.uint64), status, errors, rss, rss_type)
        self.head = (self.head + k) % self.size
        return k

    def _receive_one(self, frame: np.ndarray, errors: int, rss: int, rss_type: int) -> bool:
        pieces = max(1, -(-len(frame) // self.buffer_size))
        if pieces > self.available:
            return False
        for p in range(pieces):
            idx = np.array([self.head])
            chunk = frame[p * self.buffer_size : (p + 1) * self.buffer_size]
            slot = int(self._slots(idx)[0])
            self.pool[slot, : len(chunk)] = chunk
            last = p == pieces - 1
            status = self.status_extra | (int(RxStatus.EOP) if last else 0)
            self._writeback(
                idx,
                np.array([len(chunk)], np.uint64),
                np.array([status], np.uint64),
                errors if last else 0,
                rss,
                rss_type,
            )
            self.head = (self.head + 1) % self.size
        return True

    def writeback(
        self,
        index: int,
        length: int,
        status: int,
        errors: int = 0,
        rss: int = 0,
        rss_type: int = 0,
    ) -> None:
        """Write one descriptor back with arbitrary contents (garbage injection);
        touches neither head nor the pool."""
        self._writeback(
            np.array([index % self.size]),
            np.array([length & _U16], np.uint64),
            np.array([status & ~int(RxStatus.DD)], np.uint64),
            errors,
            rss,
            rss_type,
            dd=bool(status & RxStatus.DD),
        )

    def _writeback(
        self,
        idx: np.ndarray,
        lens: np.ndarray,
        status: np.ndarray,
        errors: int,
        rss: int,
        rss_type: int,
        dd: bool = True,
    ) -> None:
        fmt = self.fmt
        # First write: the whole descriptor, DD clear.
        wb = (
            (lens << _shift(fmt.length_offset))
            | ((status & np.uint64(~int(RxStatus.DD) & 0xFF)) << _shift(fmt.status_offset))
            | (np.uint64(errors) << _shift(fmt.error_offset))
        )
        if fmt.rss_offset is not None:
            self.q[idx, 0] = np.uint64(rss_type) | (np.uint64(rss) << np.uint64(32))
        self.q[idx, 1] = wb
        # Second write: the status byte, now with DD.
        if dd:
            self.raw[idx, fmt.status_offset] = (status | np.uint64(RxStatus.DD)).astype(np.uint8)


class FakeTxDevice:
    """Sends from a TX ring the way QEMU does: a TDT write walks the ring from
    TDH to TDT synchronously and writes DD back on descriptors with RS.

    With ``auto=False`` the walk waits for :meth:`complete` (to test back-pressure).
    ``record=True`` keeps the bytes of every frame sent in ``sent``.
    """

    def __init__(
        self,
        descs: np.ndarray,
        pool: np.ndarray,
        pool_iova: int,
        *,
        auto: bool = True,
        record: bool = False,
    ) -> None:
        self.raw = as_raw(descs)
        self.q = as_qwords(self.raw)
        self.size = self.raw.shape[0]
        self.pool = pool
        self.pool_iova = pool_iova
        self.buffer_size = pool.shape[1]
        self.auto = auto
        self.record = record
        self.head = 0
        self.tail = 0
        self.sent: list[bytes] = []
        self.frames = 0
        self.bytes = 0

    def write_tail(self, value: int) -> None:
        if not 0 <= value < self.size:
            raise DeviceFault(f"TDT {value} out of range")
        self.tail = value
        if self.auto:
            self.complete()

    def complete(self, limit: int | None = None) -> int:
        """Process up to ``limit`` descriptors from TDH towards TDT."""
        k = (self.tail - self.head) % self.size
        if limit is not None:
            k = min(k, limit)
        if k == 0:
            return 0
        idx = (self.head + np.arange(k)) % self.size
        ctl = self.q[idx, 1]
        lens = (ctl & np.uint64(_TX_LEN_MASK)).astype(np.int64)
        cmd = ((ctl >> np.uint64(TX_CMD_SHIFT)) & np.uint64(_TX_CMD_MASK)).astype(np.uint8)
        if self.record:
            addr = self.q[idx, 0].astype(np.int64) - self.pool_iova
            for a, n in zip(addr.tolist(), lens.tolist(), strict=True):
                slot, off = divmod(a, self.buffer_size)
                if off or not 0 <= slot < self.pool.shape[0] or n > self.buffer_size:
                    raise DeviceFault("TX descriptor outside the pool")
                self.sent.append(self.pool[slot, :n].tobytes())
        self.frames += int(np.count_nonzero(cmd & TxCmd.EOP))
        self.bytes += int(lens.sum())
        rs = (cmd & TxCmd.RS) != 0
        self.raw[idx[rs], TX_STATUS_OFFSET] |= np.uint8(TxStatus.DD)
        self.head = (self.head + k) % self.size
        return k
