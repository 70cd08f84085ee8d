"""pcap and pcapng files: write whole batches of received frames, read them back.

dpkt makes the file headers (pcap ``LEFileHdr``; pcapng section header and
interface description blocks) and reads files. The per-frame records of a
batch are laid out with numpy in one go (a header row and the frame bytes
side by side, masked to each frame's length), so writing costs no Python
loop per frame. Records are little-endian, as the headers dpkt makes say.
Timestamps are in microseconds (what both formats assume by default).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
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


def read(path: str | Path) -> Frames:
    """Every frame of a pcap or pcapng file (Ethernet), through dpkt's readers."""
    path = Path(path)
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {os.strerror(exc.errno or 0)}") from exc
    with f:
        magic = f.read(MAGIC_LEN)
        f.seek(0)
        reader: dpkt.pcap.Reader | dpkt.pcapng.Reader
        try:
            if magic == PCAPNG_MAGIC:
                reader = dpkt.pcapng.Reader(f)
            elif magic in PCAP_MAGICS:
                reader = dpkt.pcap.Reader(f)
            else:
                raise UsageError(f"{path} is neither pcap nor pcapng", "give a capture file")
            if reader.datalink() != LINKTYPE_ETHERNET:
                raise UsageError(f"{path} is not an Ethernet capture", "give an Ethernet capture")
            # Reading is set-up, not the hot path: dpkt hands out one record at a time.
            records = [(ts, bytes(buf)) for ts, buf in reader]
        except (ValueError, dpkt.dpkt.Error) as exc:
            raise UsageError(f"{path}: damaged capture file ({exc})", "capture it again") from exc
    lengths = np.fromiter((len(b) for _, b in records), dtype=np.int64, count=len(records))
    width = int(lengths.max()) if len(records) else 0
    blob = np.frombuffer(b"".join(b for _, b in records), dtype=np.uint8)
    frames = np.zeros((len(records), width), dtype=np.uint8)
    frames[np.arange(width)[None, :] < lengths[:, None]] = blob
    ts_ns = np.array([round(float(ts) * 1e9) for ts, _ in records], dtype=np.int64)
    return Frames(frames, lengths, ts_ns)
