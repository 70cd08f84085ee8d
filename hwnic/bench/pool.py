"""Prebuilt test frames, resent over and over with fresh sequence numbers.

The pool holds ``POOL_FRAMES`` frames built once by :func:`hwnic.traffic.build`
with sequence numbers 0..n-1. The payload pattern and checksum depend on the
sequence number modulo 256 only, and the pool size is a multiple of 256, so
frame ``s`` of the stream is pool row ``s % n`` with its 4-byte sequence
field rewritten to ``s``: still a valid test frame. The rewrite happens once
per pass over the pool (one vectorised assignment for all its rows), so a
:meth:`FramePool.take` within a pass is two slices and no numpy arithmetic.

Streams: the top bits of the sequence number name a *stream* (one per trial
of an RFC 2544 search), so a receiver can tell a late frame of an earlier
trial from one of the current trial (:func:`count_streams`). A trial starts
its sequence numbers at :func:`stream_base`; streams are reused cyclically,
``STREAMS`` trials apart, long after any late frame could still arrive.
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
STREAM_BITS = 5
STREAMS = 1 << STREAM_BITS
STREAM_SHIFT = 32 - STREAM_BITS
# Frames one stream numbers before running into the next: 90 s at 64 B line rate.
MAX_STREAM_FRAMES = 1 << STREAM_SHIFT


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


def stream_base(stream: int) -> int:
    """The first sequence number of ``stream`` (a multiple of the pool size)."""
    return (stream % STREAMS) << STREAM_SHIFT


def _seq(frames: np.ndarray, row: int, seq_col: int) -> int:
    return int.from_bytes(frames[row, seq_col : seq_col + SEQ_BYTES].tobytes(), "big")


def count_streams(
    frames: np.ndarray, seq_col: int, ethertype: int, out: np.ndarray, n: int | None = None
) -> None:
    """Add the number of test frames per stream in ``frames`` (rows) to ``out``.

    Frames of one trial arrive in order, so when the first and the last frame
    of a batch are test frames of one stream, all of them are: two reads. Only
    a batch that straddles two trials (or holds foreign frames) is decoded
    whole, with numpy.
    """
    n = len(frames) if n is None else n
    if not n:
        return
    tag = ethertype.to_bytes(2, "big")
    first, last = frames[0], frames[n - 1]
    ours = first[12:14].tobytes() == tag and last[12:14].tobytes() == tag
    if ours:
        a = _seq(frames, 0, seq_col) >> STREAM_SHIFT
        if a == _seq(frames, n - 1, seq_col) >> STREAM_SHIFT:
            out[a] += n
            return
    rows = frames[:n]
    types = rows[:, 12].astype(np.uint16) << 8 | rows[:, 13]
    seqs = np.ascontiguousarray(rows[:, seq_col : seq_col + SEQ_BYTES]).view(">u4")[:, 0]
    streams = seqs[types == ethertype] >> STREAM_SHIFT
    out += np.bincount(streams.astype(np.intp), minlength=STREAMS)
