"""pcap and pcapng files: write whole batches of received frames, read them back.

dpkt makes the file headers (pcap ``LEFileHdr``; pcapng section header and
interface description blocks) and reads files. The per-frame records of a
batch are laid out with numpy in one go (a header row and the frame bytes
side by side, masked to each frame's length), so writing costs no Python
loop per frame. Records are little-endian, as the headers dpkt makes say.
Files are written with microsecond timestamps (what both formats assume by
default); reading keeps every file's own resolution, to the nanosecond: pcap's
nanosecond magic, and pcapng's ``if_tsresol`` and ``if_tsoffset`` per
interface (replay timing depends on the gaps between frames).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import BinaryIO

import dpkt
import numpy as np

from hwnic.errors import UsageError

FORMATS = ("pcap", "pcapng")
LINKTYPE_ETHERNET = 1  # DLT_EN10MB
DEFAULT_SNAPLEN = 65535
NS_PER_US = 1000
US_PER_S = 1_000_000
PCAP_RECORD_HEADER = 16  # ts_sec, ts_usec, incl_len, orig_len (u32 each)
PCAPNG_EPB_TYPE = 6  # enhanced packet block
PCAPNG_EPB_HEADER = 28  # type, total length, interface, ts high, ts low, caplen, origlen
PCAPNG_EPB_TRAILER = 4  # total length again
PCAPNG_ALIGN = 4
PCAP_MAGICS = {
    bytes.fromhex(m) for m in ("d4c3b2a1", "a1b2c3d4", "4d3cb2a1", "a1b23c4d")
}  # µs and ns, either byte order
PCAPNG_MAGIC = bytes.fromhex("0a0d0d0a")  # section header block type
MAGIC_LEN = 4
U32 = np.dtype("<u4")
NS_PER_S = 1_000_000_000
PCAPNG_BLOCK_HEAD = 8  # block type, block total length
PCAPNG_BOM_LE = bytes.fromhex("4d3c2b1a")  # byte-order magic 0x1A2B3C4D, little-endian
PCAPNG_TSRESOL_POW2 = 0x80  # if_tsresol: the low 7 bits are a power of 2, not of 10
PCAPNG_TSRESOL_EXP = 0x7F
PCAPNG_DEFAULT_TSRESOL = 6  # µs when an interface does not say


def format_for(path: str | Path, fmt: str | None = None) -> str:
    """The format asked for, else the one the file name suggests (``.pcapng``), else pcap."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise UsageError(f"--format {fmt}", f"use one of {', '.join(FORMATS)}")
        return fmt
    return "pcapng" if str(path).endswith(".pcapng") else "pcap"


def _u32_bytes(columns: list[np.ndarray]) -> np.ndarray:
    """Little-endian u32 columns side by side as an (n, 4 * len(columns)) uint8 array."""
    table = np.stack([np.asarray(c, dtype=np.int64) for c in columns], axis=1).astype(U32)
    return table.view(np.uint8).reshape(len(table), -1)


def _pack(
    head: np.ndarray,
    frames: np.ndarray,
    caplen: np.ndarray,
    record_len: np.ndarray,
    tail: np.ndarray | None = None,
) -> bytes:
    """Records [head | first caplen bytes of the frame, zero-padded | tail], concatenated.

    ``record_len`` is each record's total size; the tail (if any) ends it.
    """
    n = len(caplen)
    hw = head.shape[1]
    tw = 0 if tail is None else tail.shape[1]
    rows = np.zeros((n, int(record_len.max())), dtype=np.uint8)
    rows[:, :hw] = head
    cols = np.arange(rows.shape[1])
    data = (cols[None, :] >= hw) & (cols[None, :] < hw + caplen[:, None])
    rows[data] = frames[np.arange(frames.shape[1])[None, :] < caplen[:, None]]
    if tail is not None:
        at = (record_len - tw)[:, None] + np.arange(tw)[None, :]
        rows[np.arange(n)[:, None], at] = tail
    return rows[cols[None, :] < record_len[:, None]].tobytes()


class CaptureWriter:
    """Append batches of frames to a pcap or pcapng file (``with`` closes it)."""

    def __init__(
        self,
        path: str | Path,
        fmt: str | None = None,
        *,
        snaplen: int = DEFAULT_SNAPLEN,
        fileobj: BinaryIO | None = None,
    ) -> None:
        self.path = Path(path)
        self.format = format_for(path, fmt)
        self.snaplen = snaplen
        self._own = fileobj is None
        self._file: BinaryIO = fileobj if fileobj is not None else open(self.path, "wb")  # noqa: SIM115
        self.frames = 0
        self.bytes = 0
        if self.format == "pcap":
            header = dpkt.pcap.LEFileHdr(snaplen=snaplen, linktype=LINKTYPE_ETHERNET)
            self._file.write(bytes(header))
        else:
            shb = dpkt.pcapng.SectionHeaderBlockLE()
            idb = dpkt.pcapng.InterfaceDescriptionBlockLE(
                snaplen=snaplen, linktype=LINKTYPE_ETHERNET
            )
            self._file.write(bytes(shb) + bytes(idb))
        self._file.flush()

    def write(self, frames: np.ndarray, lengths: np.ndarray, ts_ns: int | np.ndarray) -> int:
        """Write ``len(lengths)`` frames (rows of ``frames``); one timestamp or one per frame."""
        lengths = np.asarray(lengths, dtype=np.int64)
        n = len(lengths)
        if n == 0:
            return 0
        frames = np.asarray(frames, dtype=np.uint8).reshape(n, -1)
        if int(lengths.max()) > frames.shape[1]:
            raise ValueError("a length exceeds its frame row")
        caplen = np.minimum(lengths, self.snaplen)
        ts_us = np.broadcast_to(np.asarray(ts_ns, dtype=np.int64) // NS_PER_US, (n,))
        if self.format == "pcap":
            head = _u32_bytes([ts_us // US_PER_S, ts_us % US_PER_S, caplen, lengths])
            data = _pack(head, frames, caplen, PCAP_RECORD_HEADER + caplen)
        else:
            padded = (caplen + PCAPNG_ALIGN - 1) // PCAPNG_ALIGN * PCAPNG_ALIGN
            total = PCAPNG_EPB_HEADER + padded + PCAPNG_EPB_TRAILER
            head = _u32_bytes(
                [
                    np.full(n, PCAPNG_EPB_TYPE),
                    total,
                    np.zeros(n),
                    ts_us >> 32,
                    ts_us & 0xFFFFFFFF,
                    caplen,
                    lengths,
                ]
            )
            tail = _u32_bytes([total])
            data = _pack(head, frames, caplen, total, tail)
        self._file.write(data)
        self._file.flush()
        self.frames += n
        self.bytes += int(lengths.sum())
        return n

    def close(self) -> None:
        if self._own and not self._file.closed:
            self._file.close()

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Frames:
    """Frames read from a file: rows zero-padded to the longest, with lengths and times."""

    frames: np.ndarray  # (n, width) uint8
    lengths: np.ndarray  # (n,) int64
    ts_ns: np.ndarray  # (n,) int64

    @property
    def count(self) -> int:
        return len(self.lengths)


def _pcap_ns(ts: float | Decimal) -> int:
    """dpkt's pcap time back to integer ns: nanosecond files give an exact Decimal;
    microsecond ones a float near enough (< 0.12 µs off until 2106) to round back."""
    if isinstance(ts, Decimal):
        return int(ts * NS_PER_S)
    return round(ts * US_PER_S) * NS_PER_US


def _ticks_to_ns(tsresol: int) -> tuple[int, int]:
    """(multiply, divide) turning pcapng ticks of resolution ``if_tsresol`` into ns."""
    exp = tsresol & PCAPNG_TSRESOL_EXP
    if tsresol & PCAPNG_TSRESOL_POW2:
        return NS_PER_S, 1 << exp
    return (10 ** (9 - exp), 1) if exp <= 9 else (1, 10 ** (exp - 9))


def _pcapng_records(f: BinaryIO, path: Path) -> Iterator[tuple[int, bytes]]:
    """(ns, frame) of every packet block, each interface's if_tsresol/if_tsoffset applied.

    dpkt's own reader turns time into a float (~240 ns steps at today's epoch)
    and knows only the first interface, so the blocks are walked here and
    parsed with dpkt's block classes. A cut last block ends the file.
    """
    le = True
    ifaces: list[tuple[int, int, int]] = []  # (multiply, divide, offset ns) per interface
    while len(head := f.read(PCAPNG_BLOCK_HEAD)) == PCAPNG_BLOCK_HEAD:
        if head[:MAGIC_LEN] == PCAPNG_MAGIC:  # a section: its byte order, new interfaces
            bom = f.read(MAGIC_LEN)
            le = bom == PCAPNG_BOM_LE
            head += bom
            ifaces = []
        btype, blen = struct.unpack("<II" if le else ">II", head[:PCAPNG_BLOCK_HEAD])
        if blen < len(head):
            raise ValueError(f"a pcapng block of {blen} bytes")
        rest = f.read(blen - len(head))
        if len(rest) < blen - len(head):
            return
        buf = head + rest
        if btype == dpkt.pcapng.PCAPNG_BT_IDB:
            idb = (
                dpkt.pcapng.InterfaceDescriptionBlockLE
                if le
                else dpkt.pcapng.InterfaceDescriptionBlock
            )(buf)
            if idb.linktype != LINKTYPE_ETHERNET:
                raise UsageError(f"{path} is not an Ethernet capture", "give an Ethernet capture")
            resol, offset = PCAPNG_DEFAULT_TSRESOL, 0
            for opt in idb.opts:
                if opt.code == dpkt.pcapng.PCAPNG_OPT_IF_TSRESOL:
                    resol = opt.data[0]
                elif opt.code == dpkt.pcapng.PCAPNG_OPT_IF_TSOFFSET:
                    offset = struct.unpack("<q" if le else ">q", opt.data)[0] * NS_PER_S
            ifaces.append((*_ticks_to_ns(resol), offset))
        elif btype in (dpkt.pcapng.PCAPNG_BT_EPB, dpkt.pcapng.PCAPNG_BT_PB):
            if btype == dpkt.pcapng.PCAPNG_BT_EPB:
                cls = dpkt.pcapng.EnhancedPacketBlockLE if le else dpkt.pcapng.EnhancedPacketBlock
            else:
                cls = dpkt.pcapng.PacketBlockLE if le else dpkt.pcapng.PacketBlock
            pkt = cls(buf)
            if pkt.iface_id >= len(ifaces):
                raise ValueError(f"a packet of interface {pkt.iface_id}, not described")
            mul, div, offset = ifaces[pkt.iface_id]
            yield offset + ((pkt.ts_high << 32) | pkt.ts_low) * mul // div, bytes(pkt.pkt_data)
        # other blocks (statistics, name resolution, simple packets without time) are skipped


def read(path: str | Path) -> Frames:
    """Every frame of a pcap or pcapng file (Ethernet), with its time in ns since the epoch."""
    path = Path(path)
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {os.strerror(exc.errno or 0)}") from exc
    with f:
        magic = f.read(MAGIC_LEN)
        f.seek(0)
        # Reading is set-up, not the hot path: one record at a time is fine here.
        records: list[tuple[int, bytes]]
        try:
            if magic == PCAPNG_MAGIC:
                records = list(_pcapng_records(f, path))
            elif magic in PCAP_MAGICS:
                reader = dpkt.pcap.Reader(f)
                if reader.datalink() != LINKTYPE_ETHERNET:
                    raise UsageError(
                        f"{path} is not an Ethernet capture", "give an Ethernet capture"
                    )
                records = [(_pcap_ns(ts), bytes(buf)) for ts, buf in reader]
            else:
                raise UsageError(f"{path} is neither pcap nor pcapng", "give a capture file")
        except (ValueError, struct.error, dpkt.dpkt.Error) as exc:
            raise UsageError(f"{path}: damaged capture file ({exc})", "capture it again") from exc
    lengths = np.fromiter((len(b) for _, b in records), dtype=np.int64, count=len(records))
    width = int(lengths.max()) if len(records) else 0
    blob = np.frombuffer(b"".join(b for _, b in records), dtype=np.uint8)
    frames = np.zeros((len(records), width), dtype=np.uint8)
    frames[np.arange(width)[None, :] < lengths[:, None]] = blob
    ts_ns = np.fromiter((t for t, _ in records), dtype=np.int64, count=len(records))
    return Frames(frames, lengths, ts_ns)
