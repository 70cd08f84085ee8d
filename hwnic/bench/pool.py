"""Prebuilt test frames, resent over and over with fresh sequence numbers.

The pool holds ``POOL_FRAMES`` frames built once by :func:`hwnic.traffic.build`
with sequence numbers 0..n-1. The payload pattern and checksum depend on the
sequence number modulo 256 only, and the pool size is a multiple of 256, so
frame ``s`` of the stream is pool row ``s % n`` with its 4-byte sequence
field rewritten to ``s``: still a valid test frame. The rewrite happens once
per pass over the pool (one vectorised assignment for all its rows), so a
:meth:`FramePool.take` within a pass is two slices and no numpy arithmetic.
"""

from __future__ import annotations

import numpy as np

from hwnic import traffic
from hwnic.bench.options import SizeMix

SEQ_PERIOD = 256  # the payload pattern repeats with the sequence number mod 256
POOL_FRAMES = 4096
SEQ_BYTES = 4
SEQ_MASK = (1 << 32) - 1  # the sequence field is a u32: the stream's count wraps
SIZE_SEED = 0x1E1000  # fixed: the order of a size mix is the same every run


class FramePool:
    """Frames for a size mix; :meth:`take` returns the next batch, ready to send."""

    def __init__(
        self,
        sizes: SizeMix,
        src_mac: str,
        dst_mac: str,
        *,
        frames: int = POOL_FRAMES,
        flows: int = 0,
    ) -> None:
        if frames % SEQ_PERIOD:
            raise ValueError(f"the pool size must be a multiple of {SEQ_PERIOD}")
        cycle = np.array(sizes.cycle(), dtype=np.int64)
        lengths = np.resize(cycle, frames)
        if len(cycle) > 1:  # interleave the sizes the same way every run
            lengths = np.random.default_rng(SIZE_SEED).permutation(lengths)
        self.flows = flows
        flow_ids = np.arange(frames) % flows if flows else None
        self.frames = traffic.build(np.arange(frames), lengths, src_mac, dst_mac, flows=flow_ids)
        self.lengths = lengths
        self.size = frames
        self.seq_col = traffic.payload_offset(bool(flows))
        # Every row's sequence field as one big-endian u32 (a view), and the
        # row numbers to add a pass's first sequence number to.
        seq_field = self.frames[:, self.seq_col : self.seq_col + SEQ_BYTES]
        self._seqs = seq_field.view(">u4")[:, 0]
        self._rows = np.arange(frames, dtype=np.uint32)
        self._pass = 0  # the pass over the pool whose sequence numbers the rows hold

    def take(self, sent: int, want: int) -> tuple[np.ndarray, np.ndarray]:
        """Frames ``sent`` .. ``sent+want-1`` (fewer at the pool's end): a view and lengths.

        The view stays valid until a take from another pass over the pool.
        """
        lap, pos = divmod(sent, self.size)
        if lap != self._pass:  # a new pass: every row gets its sequence number for it
            np.add(self._rows, np.uint32((lap * self.size) & SEQ_MASK), out=self._seqs)
            self._pass = lap
        n = min(want, self.size - pos)
        return self.frames[pos : pos + n], self.lengths[pos : pos + n]

    def bytes_of(self, sent: int, n: int) -> int:
        """Bytes (no FCS) of frames ``sent`` .. ``sent+n-1``, within one take."""
        pos = sent % self.size
        return int(self.lengths[pos : pos + n].sum())
