"""Transmit descriptor ring: batch post and reclaim over numpy (legacy descriptors).

Descriptor i always uses TX buffer slot i, so posting a batch is one slice copy
of the frames plus two slice writes of descriptors (two of each on wrap-around),
and one tail write. Every descriptor carries EOP|IFCS|RS: one frame per
descriptor, and DD comes back on each, so reclaim is a scan of status bytes.

Descriptors ``[next_to_clean, next_to_use)`` are in flight; at most N-1 are, so
TDH == TDT always means "idle". A post never touches an in-flight descriptor:
what does not fit is refused (back-pressure) and counted.

Not thread-safe: one poster, and reclaim from the same thread (or under the
NIC model's lock).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from hwnic.nic.descriptors import (
    RING_ALIGN_DESCRIPTORS,
    TX_CMD_SHIFT,
    TX_CMD_SINGLE,
    TX_STATUS_OFFSET,
    TxStatus,
    as_qwords,
    as_raw,
)

_ADDR = 0
_CTL = 1  # quadword holding length, cmd and status
_DD_SET = bytes(1 if b & TxStatus.DD else 0 for b in range(256))
_LEN_MASK = 0xFFFF  # length field of the control quadword
_CMD_BITS = np.uint64(int(TX_CMD_SINGLE) << TX_CMD_SHIFT)


def _noop() -> None:
    """Default write barrier: numpy stores are program-ordered on x86."""


@dataclass
class TxCounters:
    frames: int = 0  # frames posted
    bytes: int = 0  # bytes posted (without FCS)
    reclaimed: int = 0  # descriptors whose DD came back
    refused: int = 0  # frames refused because the ring was full
    full_events: int = 0  # post calls that could not take the whole batch

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class TxRing:
    """One TX queue of legacy descriptors.

    ``descs``: N descriptors (16-byte dtype, C-contiguous, N a multiple of 8),
    ``desc_iova``: IOVA of descriptor 0 (for TDBAL/TDBAH),
    ``pool``: (slots >= N) x buffer size uint8; slot i at ``pool_iova + i * size``,
    ``write_tail``: writes TDT once per batch, after ``wmb``.

    Raises ValueError for arguments that cannot make a ring, and from
    :meth:`post` for frames of length 0 or longer than a buffer.
    """

    def __init__(
        self,
        descs: np.ndarray,
        desc_iova: int,
        pool: np.ndarray,
        pool_iova: int,
        write_tail: Callable[[int], None],
        *,
        wmb: Callable[[], None] = _noop,
    ) -> None:
        raw = as_raw(descs)
        n = raw.shape[0]
        if n < RING_ALIGN_DESCRIPTORS or n % RING_ALIGN_DESCRIPTORS:
            raise ValueError(f"ring size {n} is not a multiple of {RING_ALIGN_DESCRIPTORS}")
        if pool.ndim != 2 or pool.dtype != np.uint8 or not pool.flags.c_contiguous:
            raise ValueError("pool must be a C-contiguous 2-D uint8 array (slots x buffer size)")
        if pool.shape[0] < n:
            raise ValueError(f"pool has {pool.shape[0]} slots, the ring needs at least {n}")
        self.size = n
        self.desc_iova = desc_iova
        self.pool = pool
        self.pool_iova = pool_iova
        self.buffer_size = pool.shape[1]
        self.counters = TxCounters()
        self._write_tail = write_tail
        self._wmb = wmb
        self._q = as_qwords(raw)
        self._status = raw[:, TX_STATUS_OFFSET]
        self._iova_tab = np.uint64(pool_iova) + np.arange(n, dtype=np.uint64) * np.uint64(
            self.buffer_size
        )
        self._q[:, _CTL] = 0
        self._q[:, _ADDR] = self._iova_tab
        self._ntu = 0
        self._ntc = 0
        self._in_flight = 0

    @property
    def tail(self) -> int:
        return self._ntu

    @property
    def next_to_clean(self) -> int:
        return self._ntc

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def free(self) -> int:
        """Descriptors a post can use now (N-1 at most)."""
        return self.size - 1 - self._in_flight

    def post(
        self, frames: np.ndarray | Sequence[np.ndarray], lengths: np.ndarray | None = None
    ) -> int:
        """Queue frames for sending; returns how many were taken (from the front).

        ``frames``: an (n x L) uint8 array, with ``lengths`` (n,) if the frames
        are shorter than L; or a sequence of 1-D uint8 arrays. One tail write.
        """
        if isinstance(frames, np.ndarray) and frames.ndim == 2:
            return self._post_2d(frames, lengths)
        if isinstance(frames, np.ndarray):
            raise ValueError("frames must be a 2-D array or a sequence of 1-D arrays")
        return self._post_list(frames)

    def _accept(self, n: int) -> int:
        k = min(n, self.size - 1 - self._in_flight)
        if k < n:
            self.counters.refused += n - k
            self.counters.full_events += 1
        return k

    def _post_2d(self, frames: np.ndarray, lengths: np.ndarray | None) -> int:
        n, width = frames.shape
        k = self._accept(n)
        if k == 0:
            return 0
        if lengths is None:
            if not 0 < width <= self.buffer_size:
                raise ValueError(f"frame length {width} not in 1..{self.buffer_size}")
            ctl = np.full(1, np.uint64(width) | _CMD_BITS)  # broadcast to every row
            total = k * width
        else:
            ctl = np.asarray(lengths[:k]).astype(np.uint64)
            top = int((ctl - np.uint64(1)).max())  # a zero length wraps to 2**64-1
            if top >= min(width, self.buffer_size):
                raise ValueError(f"frame lengths must be in 1..{min(width, self.buffer_size)}")
            width = top + 1
            total = -1  # summed after the copy, only when needed
            ctl |= _CMD_BITS
        start = self._ntu
        first = min(k, self.size - start)
        per_row = len(ctl) > 1 or lengths is not None
        q = self._q
        pool = self.pool
        pool[start : start + first, :width] = frames[:first, :width]
        q[start : start + first, _ADDR] = self._iova_tab[start : start + first]
        q[start : start + first, _CTL] = ctl[:first] if per_row else ctl
        if first < k:
            rest = k - first
            pool[:rest, :width] = frames[first:k, :width]
            q[:rest, _ADDR] = self._iova_tab[:rest]
            q[:rest, _CTL] = ctl[first:k] if per_row else ctl
        if total < 0:
            total = int((ctl & np.uint64(_LEN_MASK)).sum(dtype=np.uint64))
        return self._kick(k, total)

    def _post_list(self, frames: Sequence[np.ndarray]) -> int:
        k = self._accept(len(frames))
        if k == 0:
            return 0
        taken = frames[:k]
        lens = np.fromiter((len(f) for f in taken), np.int64, count=k)
        if int(lens.min()) < 1 or int(lens.max()) > self.buffer_size:
            raise ValueError(f"frame lengths must be in 1..{self.buffer_size}")
        flat = np.concatenate([np.asarray(f, np.uint8).reshape(-1) for f in taken])
        # Scatter all frames with one fancy assignment: byte j of frame i goes to
        # slot (start+i) mod N at offset j.
        slots = (self._ntu + np.arange(k)) % self.size
        starts = np.cumsum(lens) - lens
        dest = np.repeat(slots * self.buffer_size - starts, lens) + np.arange(len(flat))
        self.pool.reshape(-1)[dest] = flat
        ctl = lens.astype(np.uint64) | _CMD_BITS
        q = self._q
        q[slots, _ADDR] = self._iova_tab[slots]
        q[slots, _CTL] = ctl
        return self._kick(k, int(lens.sum()))

    def _kick(self, k: int, total: int) -> int:
        ntu = self._ntu + k
        self._ntu = ntu - self.size if ntu >= self.size else ntu
        self._in_flight += k
        self.counters.frames += k
        self.counters.bytes += total
        self._wmb()
        self._write_tail(self._ntu)
        return k

    def reclaim(self) -> int:
        """Free the in-flight descriptors whose DD came back, in order."""
        w = self._in_flight
        if w == 0:
            return 0
        a = self._ntc
        end = a + w
        n = self.size
        st = self._status
        snap = st[a:].tobytes() + st[: end - n].tobytes() if end > n else st[a:end].tobytes()
        done = snap.translate(_DD_SET).find(0)
        if done < 0:
            done = w
        if done:
            nxt = a + done
            self._ntc = nxt - n if nxt >= n else nxt
            self._in_flight = w - done
            self.counters.reclaimed += done
        return done
