"""82574L (e1000e) registers beyond the common set (82574 datasheet, ch. 10)."""

from __future__ import annotations

from enum import IntFlag

from hwnic.nic import regs

EITR0 = 0x00E8  # per-vector interrupt throttle, 4 bytes apart
EITR_STRIDE = 4
EIAC = 0x00DC  # extended interrupt auto-clear
IAM = 0x00E0  # interrupt acknowledge auto-mask
IVAR = 0x00E4  # interrupt vector allocation
TARC0 = 0x3840
TARC_ENABLE = 1 << 10  # must stay set or queue 0 never transmits
MRQC_ENABLE_RSS_2Q = 0x1  # RSS over the two queues
RETA_QUEUE1 = 0x80  # the 82574 takes an entry's queue from its bit 7


def EITR(vector: int) -> int:
    return EITR0 + vector * EITR_STRIDE


def TARC(q: int) -> int:
    return TARC0 + q * regs.QUEUE_STRIDE


# IVAR holds one 4-bit field per cause: vector in bits 2:0, bit 3 = valid.
IVAR_FIELD_BITS = 4
IVAR_VALID = 0x8
IVAR_TX_INT_EVERY_WB = 1 << 31


class IvarCause:
    """Field index of each MSI-X cause in IVAR (and its order in the vector table)."""

    RXQ0 = 0
    RXQ1 = 1
    TXQ0 = 2
    TXQ1 = 3
    OTHER = 4


IVAR_CAUSES = 5  # the 82574 has exactly five MSI-X causes


class IcrMsix(IntFlag):
    """The MSI-X cause bits of ICR/ICS/IMS/IMC/EIAC."""

    RXQ0 = 1 << 20
    RXQ1 = 1 << 21
    TXQ0 = 1 << 22
    TXQ1 = 1 << 23
    OTHER = 1 << 24


# ICR bit of each IVAR cause, in IvarCause order.
MSIX_CAUSE_BITS = (IcrMsix.RXQ0, IcrMsix.RXQ1, IcrMsix.TXQ0, IcrMsix.TXQ1, IcrMsix.OTHER)


class CtrlExt(IntFlag):
    SPD_BYPS = 1 << 15
    EIAME = 1 << 24  # extended interrupt auto-mask enable
    IAME = 1 << 27  # interrupt acknowledge auto-mask enable
    INT_TIMERS_CLEAR_ENA = 1 << 29
    PBA_CLR = 1 << 31  # IMS writes clear the mapped vectors' pending bits


def ivar_value(vectors: dict[int, int], every_writeback: bool = False) -> int:
    """IVAR for a map of IvarCause -> MSI-X vector (unlisted causes are left invalid)."""
    value = IVAR_TX_INT_EVERY_WB if every_writeback else 0
    for cause, vector in vectors.items():
        value |= (vector | IVAR_VALID) << (cause * IVAR_FIELD_BITS)
    return value
