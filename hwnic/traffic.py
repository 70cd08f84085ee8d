"""Test traffic: frames with sequence numbers and checksummed payloads, built and
checked a whole batch at a time with numpy (no per-frame Python loop).

Layout after the Ethernet header (and, for flows, IPv4 + UDP headers):
``seq`` (u32, big-endian), ``length`` (u16: the whole frame's length),
``checksum`` (u16: sum of the pattern bytes mod 2**16), then the pattern
``(seq + i) & 0xFF``. A frame that was cut, padded, corrupted, duplicated or
reordered fails one of the checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ETH_HEADER = 14
ETHERTYPE_EXPERIMENTAL = 0x88B5  # IEEE 802 local experimental EtherType 1
ETHERTYPE_IPV4 = 0x0800
IPV4_HEADER = 20
UDP_HEADER = 8
IPPROTO_UDP = 17
IPV4_TTL = 64
IPV4_VERSION_IHL = 0x45
TEST_HEADER = 8  # seq (4) + length (2) + checksum (2)
MIN_FRAME = 60  # without FCS
MAX_FRAME = 1514
MAX_JUMBO_FRAME = 9018  # 9000 bytes of payload, the header and a VLAN tag (no FCS)
FLOW_BASE_IP = 0x0A000000  # 10.0.0.0/8: addresses only inside the emulated hub
FLOW_DST_IP = 0x0AFF0001
FLOW_BASE_PORT = 10000
UDP_DST_PORT = 9  # discard


def mac_bytes(mac: str) -> np.ndarray:
    return np.frombuffer(bytes(int(p, 16) for p in mac.split(":")), dtype=np.uint8)


def payload_offset(flows: bool) -> int:
    return ETH_HEADER + (IPV4_HEADER + UDP_HEADER if flows else 0)


def min_length(flows: bool) -> int:
    return max(MIN_FRAME, payload_offset(flows) + TEST_HEADER)


def _put_be(frames: np.ndarray, col: int, values: np.ndarray, nbytes: int) -> None:
    """Write ``values`` big-endian into columns col..col+nbytes of every row."""
    for i in range(nbytes):  # a loop over bytes of a field, not over frames
        shift = 8 * (nbytes - 1 - i)
        frames[:, col + i] = (values >> shift) & 0xFF


def _get_be(frames: np.ndarray, col: int, nbytes: int) -> np.ndarray:
    value = np.zeros(len(frames), dtype=np.uint64)
    for i in range(nbytes):
        value = (value << np.uint64(8)) | frames[:, col + i].astype(np.uint64)
    return value


def _ipv4_checksum(headers: np.ndarray) -> np.ndarray:
    """RFC 791 header checksums of a (n, 20) array with the checksum field zero."""
    words = headers[:, 0::2].astype(np.uint32) << 8 | headers[:, 1::2].astype(np.uint32)
    total = words.sum(axis=1)
    while np.any(total >> 16):
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


def build(
    seqs: np.ndarray,
    lengths: np.ndarray,
    src: str,
    dst: str,
    *,
    flows: np.ndarray | None = None,
    width: int | None = None,
) -> np.ndarray:
    """Frames (n x width uint8, zero beyond each length) for sequence numbers ``seqs``.

    ``flows`` (one int per frame) makes them IPv4/UDP with a source address and
    port per flow, so RSS spreads them over queues.
    """
    seqs = np.asarray(seqs, dtype=np.uint64)
    lengths = np.asarray(lengths, dtype=np.int64)
    with_ip = flows is not None
    off = payload_offset(with_ip)
    if len(lengths) and (lengths.min() < min_length(with_ip) or lengths.max() > MAX_JUMBO_FRAME):
        raise ValueError(f"frame lengths must be {min_length(with_ip)}..{MAX_JUMBO_FRAME}")
    n = len(seqs)
    width = width or (int(lengths.max()) if n else MIN_FRAME)
    frames = np.zeros((n, width), dtype=np.uint8)
    frames[:, 0:6] = mac_bytes(dst)
    frames[:, 6:12] = mac_bytes(src)
    if with_ip:
        assert flows is not None
        flows = np.asarray(flows, dtype=np.uint64)
        _put_be(frames, 12, np.full(n, ETHERTYPE_IPV4, np.uint64), 2)
        ip = ETH_HEADER
        frames[:, ip] = IPV4_VERSION_IHL
        _put_be(frames, ip + 2, (lengths - ETH_HEADER).astype(np.uint64), 2)
        frames[:, ip + 8] = IPV4_TTL
        frames[:, ip + 9] = IPPROTO_UDP
        _put_be(frames, ip + 12, FLOW_BASE_IP + flows, 4)
        _put_be(frames, ip + 16, np.full(n, FLOW_DST_IP, np.uint64), 4)
        _put_be(frames, ip + 10, _ipv4_checksum(frames[:, ip : ip + IPV4_HEADER]), 2)
        udp = ip + IPV4_HEADER
        _put_be(frames, udp, FLOW_BASE_PORT + flows, 2)
        _put_be(frames, udp + 2, np.full(n, UDP_DST_PORT, np.uint64), 2)
        _put_be(frames, udp + 4, (lengths - udp).astype(np.uint64), 2)
    else:
        _put_be(frames, 12, np.full(n, ETHERTYPE_EXPERIMENTAL, np.uint64), 2)
    _put_be(frames, off, seqs, 4)
    _put_be(frames, off + 4, lengths.astype(np.uint64), 2)
    start = off + TEST_HEADER
    cols = np.arange(width, dtype=np.uint64)
    pattern = ((seqs[:, None] + cols[None, :]) & 0xFF).astype(np.uint8)
    inside = (cols[None, :] >= start) & (cols[None, :] < lengths[:, None].astype(np.uint64))
    frames[:, start:] = np.where(inside[:, start:], pattern[:, start:], 0)
    sums = frames[:, start:].sum(axis=1, dtype=np.uint64) & 0xFFFF
    _put_be(frames, off + 6, sums, 2)
    return frames


@dataclass
class Checked:
    """The verdict on a batch of received frames."""

    seqs: np.ndarray  # sequence number of every frame, in arrival order
    good: np.ndarray  # bool per frame: length, checksum and pattern all right

    @property
    def bad(self) -> int:
        return int((~self.good).sum())


def check(frames: np.ndarray, lengths: np.ndarray, *, flows: bool = False) -> Checked:
    """Verify frames built by :func:`build` (rows may be wider than each frame)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    off = payload_offset(flows)
    n, width = frames.shape
    if n == 0:
        return Checked(np.zeros(0, np.uint64), np.zeros(0, bool))
    seqs = _get_be(frames, off, 4)
    claimed = _get_be(frames, off + 4, 2).astype(np.int64)
    checksum = _get_be(frames, off + 6, 2)
    start = off + TEST_HEADER
    cols = np.arange(width, dtype=np.uint64)
    inside = (cols[None, :] >= start) & (cols[None, :] < lengths[:, None].astype(np.uint64))
    body = np.where(inside, frames, 0)
    sums = body[:, start:].sum(axis=1, dtype=np.uint64) & 0xFFFF
    expect = ((seqs[:, None] + cols[None, :]) & 0xFF).astype(np.uint8)
    pattern_ok = np.all(~inside | (frames == expect), axis=1)
    good = (claimed == lengths) & (sums == checksum) & pattern_ok
    return Checked(seqs, good)


def sizes_60_to_9018() -> np.ndarray:
    """Every frame size up to the largest jumbo frame hwnic handles (no FCS)."""
    return np.arange(MIN_FRAME, MAX_JUMBO_FRAME + 1)


def sizes_60_to_1514() -> np.ndarray:
    """Every frame size from the minimum to the maximum Ethernet frame (no FCS)."""
    return np.arange(MIN_FRAME, MAX_FRAME + 1)
