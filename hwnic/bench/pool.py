"""Prebuilt test frames, resent over and over with fresh sequence numbers.

The pool holds ``POOL_FRAMES`` frames built once by :func:`hwnic.traffic.build`
with sequence numbers 0..n-1. The payload pattern and checksum depend on the
sequence number modulo 256 only, and the pool size is a multiple of 256, so
frame ``s`` of the stream is pool row ``s % n`` with its 4-byte sequence
field rewritten to ``s``: still a valid test frame, and the rewrite is one
vectorised assignment per batch.
"""

from __future__ import annotations

import numpy as np

from hwnic import traffic
from hwnic.bench.options import SizeMix

SEQ_PERIOD = 256  # the payload pattern repeats with the sequence number mod 256
POOL_FRAMES = 4096
SEQ_BYTES = 4
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

    def take(self, sent: int, want: int) -> tuple[np.ndarray, np.ndarray]:
        """Frames ``sent`` .. ``sent+want-1`` (fewer at the pool's end): a view and lengths."""
        pos = sent % self.size
        n = min(want, self.size - pos)
        rows = self.frames[pos : pos + n]
        seqs = (np.arange(sent, sent + n, dtype=np.uint64) & np.uint64(0xFFFFFFFF)).astype(">u4")
        rows[:, self.seq_col : self.seq_col + SEQ_BYTES] = seqs.view(np.uint8).reshape(n, SEQ_BYTES)
        return rows, self.lengths[pos : pos + n]

    def bytes_of(self, sent: int, n: int) -> int:
        """Bytes (no FCS) of frames ``sent`` .. ``sent+n-1``, within one take."""
        pos = sent % self.size
        return int(self.lengths[pos : pos + n].sum())
