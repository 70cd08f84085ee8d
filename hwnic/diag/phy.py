"""PHY registers through MDIC from a bare BAR (the diagnostics run without a Nic)."""

from __future__ import annotations

import time

from hwnic.diag.registers import Registers
from hwnic.errors import NicError
from hwnic.nic import regs

MDIC_TIMEOUT = 1.0  # s; QEMU completes at once, silicon in tens of microseconds
POLL = 0.0005


def _wait(bar: Registers, what: str) -> int:
    deadline = time.monotonic() + MDIC_TIMEOUT
    while True:
        mdic = bar.read32(regs.MDIC)
        if mdic & regs.MDIC_ERROR:
            raise NicError(f"MDIC {what} failed (MDIC 0x{mdic:08X})", "is the PHY at address 1?")
        if mdic & regs.MDIC_READY:
            return mdic
        if time.monotonic() > deadline:
            raise NicError(f"MDIC {what} did not complete", "reset the port")
        time.sleep(POLL)


def read(bar: Registers, reg: int) -> int:
    address = (reg << regs.MDIC_REG_SHIFT) | (regs.PHY_ADDRESS << regs.MDIC_PHY_SHIFT)
    bar.write32(regs.MDIC, address | regs.MDIC_OP_READ)
    return _wait(bar, f"read of PHY register {reg}") & regs.MDIC_DATA_MASK


def write(bar: Registers, reg: int, value: int) -> None:
    bar.write32(
        regs.MDIC,
        (value & regs.MDIC_DATA_MASK)
        | (reg << regs.MDIC_REG_SHIFT)
        | (regs.PHY_ADDRESS << regs.MDIC_PHY_SHIFT)
        | regs.MDIC_OP_WRITE,
    )
    _wait(bar, f"write of PHY register {reg}")


def restore_bmcr(bar: Registers, saved: int) -> None:
    """Put BMCR back; restart autonegotiation if it was on (a loopback ended)."""
    value = saved & ~(regs.BMCR_RESET | regs.BMCR_LOOPBACK)
    if value & regs.BMCR_AUTONEG_ENABLE:
        value |= regs.BMCR_AUTONEG_RESTART
    write(bar, regs.PHY_BMCR, value)
