"""82576/I210/I350 (igb) registers beyond the common set (82576 datasheet, ch. 8)."""

from __future__ import annotations

from enum import IntFlag

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


class Gpie(IntFlag):
    NSICR = 1 << 0  # ICR reads always clear ("non-selective")
    MSIX_MODE = 1 << 4
    EIAME = 1 << 30
    PBA = 1 << 31


def ivar_entry_shift(queue: int, tx: bool) -> tuple[int, int]:
    """(IVAR register offset, bit shift) of the entry for RX or TX queue ``queue``."""
    reg = IVAR0 + (queue % 8) * IVAR_STRIDE
    byte = (1 if tx else 0) + (2 if queue >= 8 else 0)
    return reg, byte * 8
