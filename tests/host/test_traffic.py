"""Test-traffic frames: what build() writes, check() recognises, and damage it catches."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwnic import traffic

SRC, DST = "52:54:00:12:34:01", "52:54:00:12:34:02"


@pytest.mark.parametrize("flows", [False, True])
def test_round_trip_every_size(flows: bool) -> None:
    sizes = np.arange(traffic.min_length(flows), traffic.MAX_FRAME + 1)
    seqs = np.arange(len(sizes)) + 1000
    flow_ids = seqs % 7 if flows else None
    frames = traffic.build(seqs, sizes, SRC, DST, flows=flow_ids)
    assert frames.shape == (len(sizes), traffic.MAX_FRAME)
    result = traffic.check(frames, sizes, flows=flows)
    assert result.good.all()
    assert (result.seqs == seqs).all()
    # Nothing is written past a frame's length.
    assert frames[0, sizes[0] :].sum() == 0
    assert bytes(frames[0, :6]) == bytes.fromhex("525400123402")


def test_ipv4_header_checksum_verifies() -> None:
    frames = traffic.build(np.arange(3), np.full(3, 100), SRC, DST, flows=np.arange(3))
    ip = frames[:, traffic.ETH_HEADER : traffic.ETH_HEADER + traffic.IPV4_HEADER]
    words = (ip[:, 0::2].astype(np.uint32) << 8) | ip[:, 1::2]
    total = words.sum(axis=1)
    total = (total & 0xFFFF) + (total >> 16)
    assert (total == 0xFFFF).all()
    assert frames[0, 26:30].tolist() == [10, 0, 0, 0] and frames[2, 29] == 2


@settings(max_examples=50, deadline=None)
@given(
    st.integers(0, 9),
    st.integers(traffic.MIN_FRAME, 200),
    st.sampled_from(["flip", "cut", "pad", "seq"]),
)
def test_damage_is_caught(index: int, length: int, damage: str) -> None:
    n = 10
    lengths = np.full(n, length)
    frames = traffic.build(np.arange(n), lengths, SRC, DST, width=256)
    got_lengths = lengths.copy()
    if damage == "flip":
        frames[index, length - 1] ^= 0x40
    elif damage == "cut":
        got_lengths[index] -= 1
    elif damage == "pad":
        got_lengths[index] += 1
    else:
        frames[index, traffic.ETH_HEADER + 3] ^= 1  # another frame's seq: pattern mismatch
    result = traffic.check(frames, got_lengths)
    assert not result.good[index]
    assert result.good.sum() == n - 1


def test_bad_lengths_refused() -> None:
    with pytest.raises(ValueError):
        traffic.build(np.arange(1), np.array([59]), SRC, DST)
    with pytest.raises(ValueError):
        traffic.build(np.arange(1), np.array([traffic.MAX_JUMBO_FRAME + 1]), SRC, DST)
