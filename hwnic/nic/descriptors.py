"""Descriptor layouts as numpy structured dtypes (16 bytes each, little-endian).

Rings are numpy arrays of these over DMA memory, so the driver reads and
writes whole batches of descriptors at once.

Every format here is 16 bytes and shares one shape that the ring code relies on:
the driver arms a descriptor by writing the buffer address into the first
quadword and zero into the second (which clears DD in every RX layout), and the
NIC writes back status, errors and length into the second quadword. An
:class:`RxFormat` names the byte offsets of those fields, so the ring never needs
to know which NIC it drives.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag
from typing import NamedTuple

import numpy as np

DESCRIPTOR_SIZE = 16
# Rings must be a multiple of 128 bytes (e1000/e1000e mask RDLEN/TDLEN to it).
RING_ALIGN_DESCRIPTORS = 128 // DESCRIPTOR_SIZE

# Legacy transmit descriptor (8254x datasheet 3.3.3): the igb accepts it too,
# its bit layout coinciding with the advanced format for plain sends.
LEGACY_TX = np.dtype(
    [
        ("addr", "<u8"),
        ("length", "<u2"),
        ("cso", "u1"),
        ("cmd", "u1"),
        ("status", "u1"),
        ("css", "u1"),
        ("special", "<u2"),
    ]
)

# Legacy receive descriptor (8254x datasheet 3.2.3). Read and write-back share it.
LEGACY_RX = np.dtype(
    [
        ("addr", "<u8"),
        ("length", "<u2"),
        ("csum", "<u2"),
        ("status", "u1"),
        ("errors", "u1"),
        ("special", "<u2"),
    ]
)

# 82574 extended receive descriptor (RFCTL.EXTEN=1, RCTL.DTYP=00), read format.
EXT_RX_READ = np.dtype([("addr", "<u8"), ("reserved", "<u8")])
# ... and write-back: MRQ (RSS type in bits 3:0, queue in 12:8), RSS hash (or
# IP id + checksum), extended status (15:0) with errors (31:24), length, VLAN.
EXT_RX_WB = np.dtype(
    [
        ("mrq", "<u4"),
        ("rss", "<u4"),
        ("status_error", "<u4"),
        ("length", "<u2"),
        ("vlan", "<u2"),
    ]
)

# 82576 advanced one-buffer receive descriptor, read format (hdr_addr is 0
# without header split; it overlays status_error, so writing it clears DD).
ADV_RX_READ = np.dtype([("pkt_addr", "<u8"), ("hdr_addr", "<u8")])
# ... and write-back: packet info (RSS type in bits 3:0), header info, RSS hash,
# status_error (status 19:0, errors 31:20), length, VLAN.
ADV_RX_WB = np.dtype(
    [
        ("pkt_info", "<u2"),
        ("hdr_info", "<u2"),
        ("rss", "<u4"),
        ("status_error", "<u4"),
        ("length", "<u2"),
        ("vlan", "<u2"),
    ]
)


class TxCmd(IntFlag):
    EOP = 1 << 0  # end of packet
    IFCS = 1 << 1  # insert FCS
    RS = 1 << 3  # report status: write DD back
    DEXT = 1 << 5  # extended (context/data) descriptor
    IDE = 1 << 7  # interrupt delay enable


class TxStatus(IntFlag):
    DD = 1 << 0  # descriptor done


class RxStatus(IntFlag):
    """Low status byte, the same bits in the legacy, extended and advanced layouts."""

    DD = 1 << 0
    EOP = 1 << 1
    IXSM = 1 << 2  # ignore checksum indication
    VP = 1 << 3  # 802.1Q packet, VLAN field valid
    UDPCS = 1 << 4
    TCPCS = 1 << 5
    IPCS = 1 << 6
    PIF = 1 << 7  # passed in-exact filter


class RxError(IntFlag):
    """Error byte: the legacy ``errors`` field, or bits 31:24 of ``status_error``."""

    CE = 1 << 0  # CRC or alignment error
    SE = 1 << 1  # symbol error
    SEQ = 1 << 2  # sequence error
    CXE = 1 << 4  # carrier extension error
    TCPE = 1 << 5  # TCP/UDP checksum error: not a reason to drop
    IPE = 1 << 6  # IP checksum error: not a reason to drop
    RXE = 1 << 7  # RX data error


# Errors that make the frame itself bad (Linux FRAME_ERR_MASK); checksum errors
# only mean the stack must verify the checksum itself.
RX_FRAME_ERRORS = RxError.CE | RxError.SE | RxError.SEQ | RxError.CXE | RxError.RXE

# Byte offsets inside one 16-byte descriptor.
_ADDR_QWORD = 0  # quadword the driver writes the buffer address into
_WB_QWORD = 1  # quadword holding status/length after write-back
RSS_TYPE_MASK = 0x0F  # MRQ / pkt_info bits 3:0


class RxFields(NamedTuple):
    """Parsed write-back fields of a window of RX descriptors (arrays of equal length)."""

    dd: np.ndarray  # bool
    eop: np.ndarray  # bool
    length: np.ndarray  # uint16
    error: np.ndarray  # bool: a frame error bit is set
    rss: np.ndarray | None  # uint32 hash, or None for legacy


@dataclass(frozen=True)
class RxFormat:
    """Where the fields a ring needs live in one RX descriptor layout."""

    name: str
    read_dtype: np.dtype
    wb_dtype: np.dtype
    status_offset: int  # byte holding DD and EOP
    error_offset: int  # byte holding the RxError bits
    length_offset: int  # little-endian u16
    rss_offset: int | None  # little-endian u32 hash, if the layout has one
    rss_type_offset: int | None  # byte whose bits 3:0 are the RSS type

    def raw(self, descs: np.ndarray) -> np.ndarray:
        """The ring as an (N, 16) uint8 array (a view, no copy)."""
        return as_raw(descs)

    def arm(self, descs: np.ndarray, buffer_iovas: np.ndarray) -> None:
        """Hand descriptors to the NIC: buffer address in, DD (and the rest) cleared.

        ``descs`` is a slice of the ring (any 16-byte dtype), ``buffer_iovas`` one
        IOVA per descriptor.
        """
        q = as_qwords(descs)
        q[:, _ADDR_QWORD] = buffer_iovas
        q[:, _WB_QWORD] = 0

    def column(self, descs: np.ndarray, offset: int, dtype: str) -> np.ndarray:
        """A strided view of one field of every descriptor in ``descs``."""
        raw = as_raw(descs)
        width = np.dtype(dtype).itemsize
        return raw[:, offset : offset + width].view(dtype)[:, 0]

    def parse(self, descs: np.ndarray) -> RxFields:
        """Vectorised decode of a window of written-back descriptors.

        Reads the status byte first (the NIC writes DD last), then the rest.
        """
        status = self.column(descs, self.status_offset, "u1").copy()
        errors = self.column(descs, self.error_offset, "u1").copy()
        length = self.column(descs, self.length_offset, "<u2").copy()
        rss = None
        if self.rss_offset is not None:
            rss = self.column(descs, self.rss_offset, "<u4").copy()
        return RxFields(
            dd=(status & RxStatus.DD) != 0,
            eop=(status & RxStatus.EOP) != 0,
            length=length,
            error=(errors & RX_FRAME_ERRORS) != 0,
            rss=rss,
        )

    def rss_type(self, descs: np.ndarray) -> np.ndarray | None:
        """RSS type (bits 3:0) of each descriptor, or None for layouts without RSS."""
        if self.rss_type_offset is None:
            return None
        return self.column(descs, self.rss_type_offset, "u1") & RSS_TYPE_MASK


def as_raw(descs: np.ndarray) -> np.ndarray:
    """Reinterpret a C-contiguous array of 16-byte descriptors as (N, 16) uint8."""
    if descs.ndim == 2 and descs.dtype == np.uint8 and descs.shape[1] == DESCRIPTOR_SIZE:
        return descs
    if descs.dtype.itemsize != DESCRIPTOR_SIZE:
        raise ValueError(f"descriptors must be {DESCRIPTOR_SIZE} bytes, not {descs.dtype.itemsize}")
    return descs.reshape(-1).view(np.uint8).reshape(-1, DESCRIPTOR_SIZE)


def as_qwords(descs: np.ndarray) -> np.ndarray:
    """Reinterpret descriptors as (N, 2) little-endian uint64."""
    return as_raw(descs).view("<u8")


# Legacy: status byte 12, errors byte 13, length at 8 (8254x 3.2.3).
LEGACY_RX_FORMAT = RxFormat(
    name="legacy",
    read_dtype=LEGACY_RX,
    wb_dtype=LEGACY_RX,
    status_offset=12,
    error_offset=13,
    length_offset=8,
    rss_offset=None,
    rss_type_offset=None,
)

# Extended (82574): status_error at 8 (status low byte, errors in byte 11),
# length at 12, RSS hash at 4, MRQ at 0.
EXTENDED_RX_FORMAT = RxFormat(
    name="extended",
    read_dtype=EXT_RX_READ,
    wb_dtype=EXT_RX_WB,
    status_offset=8,
    error_offset=11,
    length_offset=12,
    rss_offset=4,
    rss_type_offset=0,
)

# Advanced one-buffer (82576): same positions as extended.
ADVANCED_RX_FORMAT = RxFormat(
    name="advanced",
    read_dtype=ADV_RX_READ,
    wb_dtype=ADV_RX_WB,
    status_offset=8,
    error_offset=11,
    length_offset=12,
    rss_offset=4,
    rss_type_offset=0,
)

RX_FORMATS = {f.name: f for f in (LEGACY_RX_FORMAT, EXTENDED_RX_FORMAT, ADVANCED_RX_FORMAT)}

# Command for a whole frame in one legacy TX descriptor: last one of the
# packet, append the FCS, and write DD back so the driver can reclaim it.
TX_CMD_SINGLE = TxCmd.EOP | TxCmd.IFCS | TxCmd.RS
# Bit positions inside the second quadword of a legacy TX descriptor.
TX_CMD_SHIFT = 24
TX_STATUS_SHIFT = 32
TX_STATUS_OFFSET = 12  # byte offset of the status byte


for _dt in (LEGACY_TX, LEGACY_RX, EXT_RX_READ, EXT_RX_WB, ADV_RX_READ, ADV_RX_WB):
    assert _dt.itemsize == DESCRIPTOR_SIZE
for _f in RX_FORMATS.values():
    assert _f.wb_dtype.fields is not None
assert EXT_RX_WB.fields is not None and EXT_RX_WB.fields["status_error"][1] == 8
assert ADV_RX_WB.fields is not None and ADV_RX_WB.fields["length"][1] == 12
assert LEGACY_RX.fields is not None and LEGACY_RX.fields["status"][1] == 12
