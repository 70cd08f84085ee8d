"""82576/I210/I350 (igb) registers beyond the common set (82576 datasheet, ch. 8)."""

from __future__ import annotations

from enum import IntFlag

from hwnic.nic import regs

GPIE = 0x1514  # general purpose interrupt enable
EICS = 0x1520  # extended interrupt cause set
EIMS = 0x1524  # extended interrupt mask set/read
EIMC = 0x1528  # extended interrupt mask clear
EIAC = 0x152C  # extended interrupt auto-clear
EIAM = 0x1530  # extended interrupt auto-mask
EICR = 0x1580  # extended interrupt cause read (clears on read)
EITR0 = 0x1680  # per-vector throttle, 4 bytes apart
EITR_STRIDE = 4
IVAR0 = 0x1700  # IVAR n at 0x1700 + 4n: RxQ n, TxQ n, RxQ n+8, TxQ n+8
IVAR_STRIDE = 4
IVAR_MISC = 0x1740  # byte 0: DRSTA vector, byte 1: other causes (LSC ...)
IVAR_VALID = 0x80  # valid bit of each 8-bit IVAR entry
IVAR_ENTRY_MASK = 0xFF
IVAR_MISC_OTHER_SHIFT = 8
EICR_OTHER = 1 << 31  # set in EICR for ICR causes when not in MSI-X mode

# Ring registers of queue n sit at these bases + n * QUEUE_STRIDE; the
# DBAL/DBAH/DLEN/DH/DT offsets within a queue are the common ones (regs.py).
RDBAL0 = 0xC000
TDBAL0 = 0xE000
QUEUE_STRIDE = 0x40
SRRCTL0 = 0xC00C  # split and replication receive control
RXDCTL0 = 0xC028
TXDCTL0 = 0xE028
XDCTL_ENABLE = 1 << 25  # queue enable in RXDCTL/TXDCTL
RA2 = 0x54E0  # receive addresses 16-23 (RAL/RAH pairs, 8 bytes apart)


# Queue q's registers (as ixy's IXGBE_RDT(i)).
def RDBAL(q: int) -> int:
    return RDBAL0 + q * QUEUE_STRIDE + regs.DBAL


def RDT(q: int) -> int:
    return RDBAL0 + q * QUEUE_STRIDE + regs.DT


def TDBAL(q: int) -> int:
    return TDBAL0 + q * QUEUE_STRIDE + regs.DBAL


def TDT(q: int) -> int:
    return TDBAL0 + q * QUEUE_STRIDE + regs.DT


def SRRCTL(q: int) -> int:
    return SRRCTL0 + q * QUEUE_STRIDE


def RXDCTL(q: int) -> int:
    return RXDCTL0 + q * QUEUE_STRIDE


def TXDCTL(q: int) -> int:
    return TXDCTL0 + q * QUEUE_STRIDE


def EITR(vector: int) -> int:
    return EITR0 + vector * EITR_STRIDE


RLPML = 0x5004  # receive long packet maximum length (with LPE), FCS included
RLPML_FCS = 4  # what RLPML counts beyond hwnic's frame lengths (as Linux's igb_rlpml_set)
SRRCTL_DESCTYPE_ADV_ONEBUF = 1 << 25  # advanced descriptors, one buffer
SRRCTL_BSIZEPKT_UNIT = 1024  # BSIZEPKT counts kilobytes
TCTL_RTLC = 1 << 24  # retransmit on late collision
MRQC_ENABLE_RSS_MQ = 0x2  # RSS over up to eight queues
EITR_INTERVAL_SHIFT = 2  # EITR interval: bits 14:2, in microseconds on the 82576


class Gpie(IntFlag):
    NSICR = 1 << 0  # ICR reads always clear ("non-selective")
    MSIX_MODE = 1 << 4
    EIAME = 1 << 30
    PBA = 1 << 31


def ivar_entry_shift(queue: int, tx: bool, layout_82580: bool = False) -> tuple[int, int]:
    """(IVAR register offset, bit shift) of the entry for RX or TX queue ``queue``.

    82576: IVAR n holds RxQ n, TxQ n, RxQ n+8, TxQ n+8. I350/I210 (the 82580
    layout, quirks.Flag.IVAR_82580_LAYOUT): IVAR n holds RxQ 2n, TxQ 2n,
    RxQ 2n+1, TxQ 2n+1.
    """
    if layout_82580:
        reg = IVAR0 + (queue // 2) * IVAR_STRIDE
        byte = (1 if tx else 0) + (2 if queue % 2 else 0)
    else:
        reg = IVAR0 + (queue % 8) * IVAR_STRIDE
        byte = (1 if tx else 0) + (2 if queue >= 8 else 0)
    return reg, byte * 8


# -- IEEE 1588 time sync (82576 datasheet 7.9 and 8.17; Linux igb_ptp.c) ----------
# One RX and one TX timestamp latch: each stays locked (VALID set) until its
# high register is read (QEMU unlocks RX on RXSATRH, the 82576 on RXSTMPH).
SYSTIML = 0xB600  # system time, low 32 bits (reading it latches SYSTIMH)
SYSTIMH = 0xB604  # system time, high 32 bits
TIMINCA = 0xB608  # increment attributes: period (31:24) and value (23:0)
TIMADJL = 0xB60C  # time adjustment offset, low
TIMADJH = 0xB610  # time adjustment offset, high (bit 31: sign)
TSYNCTXCTL = 0xB614  # TX time sync control
TXSTMPL = 0xB618  # TX timestamp, low
TXSTMPH = 0xB61C  # TX timestamp, high (reading it unlocks the TX latch)
TSYNCRXCTL = 0xB620  # RX time sync control
RXSTMPL = 0xB624  # RX timestamp, low
RXSTMPH = 0xB628  # RX timestamp, high
RXSATRL = 0xB62C  # RX timestamp attributes, low: source UUID low
RXSATRH = 0xB630  # RX timestamp attributes, high: source UUID high (15:0), sequenceId (31:16)
TSYNCRXCFG = 0x5F50  # RX time sync configuration: PTP v1 control (7:0), v2 messageId (15:8)
ETQF0 = 0x5CB0  # EtherType queue filter n at ETQF0 + 4n
ETQF_STRIDE = 4
ETQF_ENTRIES = 8
TIMINCA_INCPERIOD_SHIFT = 24
TSYNCRXCFG_V2_MSGID_SHIFT = 8


def ETQF(n: int) -> int:
    return ETQF0 + n * ETQF_STRIDE


class Tsynctxctl(IntFlag):
    VALID = 1 << 0  # a TX timestamp is latched in TXSTMPL/H
    ENABLED = 1 << 4


class Tsyncrxctl(IntFlag):
    VALID = 1 << 0  # an RX timestamp is latched in RXSTMPL/H and RXSATRL/H
    TYPE_L2_V2 = 0x00  # type field (3:1): IEEE 802.1AS / 1588 v2 over Ethernet
    TYPE_ALL = 0x08
    TYPE_EVENT_V2 = 0x0A
    ENABLED = 1 << 4


class Etqf(IntFlag):
    FILTER_ENABLE = 1 << 26
    IMM_INT = 1 << 29
    TIMESTAMP_1588 = 1 << 30  # time stamp frames this filter matches
    QUEUE_ENABLE = 1 << 31


ETQF_ETYPE_MASK = 0xFFFF


class AdvTxd(IntFlag):
    """Advanced TX data descriptor: bits of cmd_type_len (the second quadword's low half)."""

    MAC_TSTAMP = 1 << 19  # IEEE 1588: time stamp this packet
    DTYP_DATA = 0x3 << 20  # descriptor type: advanced data
    DCMD_EOP = 1 << 24
    DCMD_IFCS = 1 << 25
    DCMD_RS = 1 << 27
    DCMD_DEXT = 1 << 29  # descriptor extension: advanced format


ADVTXD_PAYLEN_SHIFT = 14  # olinfo_status: payload length in bits 31:14
