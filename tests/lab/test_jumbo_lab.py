"""Jumbo frames end to end: every size from 60 to 9018 bytes, in order, checksummed.

Port A sends, port B receives, both opened with ``max_frame=9018``: frames
longer than a 2 KB buffer span several descriptors on both sides (TX: EOP on
the last; RX: RCTL.LPE, igb RLPML) and arrive as one frame each.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import hwnic
from hwnic import traffic
from hwnic.nic.base import Nic
from hwnic.pytest_plugin import Pair

pytestmark = pytest.mark.lab

LINK_TIMEOUT = 30.0
CHUNK_TIMEOUT = 60.0  # seconds for one chunk's frames under TCG
CHUNK = 256  # frames built, sent and checked at a time (256 x 9 KB = 2.3 MB)
BUF = 2048


def receive_chunk(b: Nic, expect: int) -> tuple[list[np.ndarray], int]:
    seqs, bad, got = [], 0, 0
    deadline = time.monotonic() + CHUNK_TIMEOUT
    while got < expect and time.monotonic() < deadline:
        batch = b.receive(timeout=0.5)
        if batch is None:
            continue
        checked = traffic.check(batch.frames, batch.lengths)
        seqs.append(checked.seqs)
        bad += checked.bad
        got += batch.count
    return seqs, bad


def test_every_size_to_9018_arrives_in_order(pair: Pair) -> None:
    sizes = traffic.sizes_60_to_9018()
    with (
        hwnic.open(pair[0].bdf, wait_link=LINK_TIMEOUT, max_frame=traffic.MAX_JUMBO_FRAME) as a,
        hwnic.open(pair[1].bdf, wait_link=LINK_TIMEOUT, max_frame=traffic.MAX_JUMBO_FRAME) as b,
    ):
        got: list[np.ndarray] = []
        bad = 0
        for start in range(0, len(sizes), CHUNK):
            lengths = sizes[start : start + CHUNK]
            seqs = np.arange(start, start + len(lengths))
            frames = traffic.build(seqs, lengths, a.mac, b.mac)
            # Whole chunks fit the RX ring (5 buffers per 9 KB frame): nothing waits at the hub.
            assert a.send(frames, lengths, timeout=CHUNK_TIMEOUT) == len(lengths)
            chunk, chunk_bad = receive_chunk(b, len(lengths))
            got += chunk
            bad += chunk_bad
        seqs = np.concatenate(got) if got else np.zeros(0, np.uint64)
        assert bad == 0, "corrupted frames"
        assert len(seqs) == len(sizes), f"{len(seqs)} of {len(sizes)} frames arrived"
        assert (seqs == np.arange(len(sizes))).all(), "frames lost, duplicated or reordered"
        rx, tx = b.stats()["rx"][0], a.stats()["tx"][0]
        spanning = int((sizes > BUF).sum())
        assert rx["frames"] == len(sizes) and rx["spanning_frames"] == spanning
        assert rx["bytes"] == int(sizes.sum())
        assert tx["spanning_frames"] == spanning
        assert rx["drops_multi_descriptor"] == rx["drops_length"] == 0
