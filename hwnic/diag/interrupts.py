"""Interrupt test: every cause and every MSI-X message, raised by software.

Runs at the VFIO level (``Device.enable_irq`` eventfds polled here), as
tests/lab/test_vfio_lab.py does, not through hwnic's NDIS layer: the test
must raise a cause while it is masked and see *nothing*, and map causes to
messages one at a time, which a registered miniport's ISR and its
enable/disable rules would get in the way of. Each interrupt type VFIO
offers is tested in turn (QEMU's 82540EM has INTx only):

* INTx and MSI: with every cause masked (IMC), ICS raises them all and no
  interrupt may come, though ICR shows them; then each cause alone is
  unmasked (IMS) and raised (ICS) and must interrupt. INTx is acknowledged
  by reading ICR and unmasked in VFIO after each.
* MSI-X, 82574L: IVAR maps its five causes to messages 0-4; with every
  cause masked none may fire; then each cause must fire its own message.
* MSI-X, 82576: EICS raises each message with EIMS clear (silent) and set
  (fires); then LSC through IVAR_MISC fires the message it names.

QEMU's MSI-X throttling (EITR) sends one more message at each timer expiry
(docs/qemu-models.md): a message already seen may repeat while a later one
is tested, a message not yet tested may not fire.
"""

from __future__ import annotations

import contextlib
import os
import select
import time
from collections.abc import Sequence

from hwnic import vfio
from hwnic.diag.result import TestFailed
from hwnic.nic import regs, regs_e1000e, regs_igb

ALL = 0xFFFFFFFF
SIGNAL_TIMEOUT = 5.0  # s for an expected interrupt (generous: the lab runs under TCG)
QUIET_WINDOW = 0.2  # s watched for an interrupt that must not come
# Causes every family raises through ICS with the same meaning (TXDW, LSC,
# RXDMT0, RXO, RXT0): bit 1 (TXQE) and others are reserved on the 82576.
CAUSES = (regs.Icr.TXDW, regs.Icr.LSC, regs.Icr.RXDMT0, regs.Icr.RXO, regs.Icr.RXT0)
KIND = {vfio.IrqIndex.INTX: "INTx", vfio.IrqIndex.MSI: "MSI", vfio.IrqIndex.MSIX: "MSI-X"}


def drain(fds: Sequence[int]) -> None:
    """Read every eventfd that has a count, so old signals do not look new."""
    for fd in fds:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(fd)


def fired(fds: Sequence[int], timeout: float) -> set[int]:
    """Indexes of the eventfds that signal within ``timeout`` (their counters are read)."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    ready = {fd for fd, _ in poller.poll(timeout * 1000)}
    hits = set()
    for i, fd in enumerate(fds):
        if fd in ready:
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(fd)
            hits.add(i)
    return hits


def _wait_for(fds: Sequence[int], want: int, timeout: float) -> set[int]:
    """Every message that fired until ``want`` did (or the timeout)."""
    deadline = time.monotonic() + timeout
    hits: set[int] = set()
    while want not in hits:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        hits |= fired(fds, left)
    return hits


def _quiet(fds: Sequence[int], what: str) -> None:
    hits = fired(fds, QUIET_WINDOW)
    if hits:
        raise TestFailed(f"{what}: message(s) {sorted(hits)} fired while masked")


def _cause_name(cause: int) -> str:
    return regs.Icr(cause).name or f"0x{cause:08X}"


def line_or_msi(dev: vfio.Device, bar: vfio.Bar, index: vfio.IrqIndex, family: str) -> int:
    """INTx or MSI: masked silence, then each cause alone. Returns causes checked."""
    kind = KIND[index]
    fds = dev.enable_irq(index)
    try:
        if family == "igb":
            bar.write32(regs_igb.GPIE, regs_igb.Gpie.NSICR)  # ICR reads clear
        bar.write32(regs.IMC, ALL)
        bar.read32(regs.ICR)
        drain(fds)
        every = 0
        for cause in CAUSES:
            every |= cause
        bar.write32(regs.ICS, every)
        _quiet(fds, f"{kind} with every cause masked")
        icr = bar.read32(regs.ICR)
        if icr & every != every:
            raise TestFailed(f"{kind}: ICS raised 0x{every:08X} but ICR read 0x{icr:08X}")
        if index is vfio.IrqIndex.INTX:
            dev.unmask_intx()
        for cause in CAUSES:
            bar.write32(regs.IMS, cause)
            bar.write32(regs.ICS, cause)
            if 0 not in _wait_for(fds, 0, SIGNAL_TIMEOUT):
                raise TestFailed(f"{kind}: cause {_cause_name(cause)} raised no interrupt")
            bar.write32(regs.IMC, cause)
            icr = bar.read32(regs.ICR)  # acknowledges (and deasserts INTx)
            if not icr & cause:
                raise TestFailed(f"{kind}: ICR 0x{icr:08X} lacks {_cause_name(cause)}")
            if index is vfio.IrqIndex.INTX:
                dev.unmask_intx()
        return len(CAUSES)
    finally:
        bar.write32(regs.IMC, ALL)
        bar.read32(regs.ICR)
        dev.disable_irq(index)


def _expect(fds: Sequence[int], message: int, what: str) -> None:
    hits = _wait_for(fds, message, SIGNAL_TIMEOUT)
    if message not in hits:
        raise TestFailed(f"MSI-X {what}: message {message} did not fire (fired: {sorted(hits)})")
    if max(hits) > message:  # only messages already tested may repeat (EITR expiry)
        raise TestFailed(f"MSI-X {what}: message(s) {sorted(hits)} fired, expected {message}")


def msix_82574(dev: vfio.Device, bar: vfio.Bar) -> int:
    """Five causes, five messages (IVAR). Returns messages checked."""
    fds = dev.enable_irq(vfio.IrqIndex.MSIX)
    try:
        bar.write32(regs.IMC, ALL)
        ctrl_ext = bar.read32(regs.CTRL_EXT) & ~regs_e1000e.CtrlExt.IAME
        bar.write32(regs.CTRL_EXT, ctrl_ext | regs_e1000e.CtrlExt.PBA_CLR)
        causes = regs_e1000e.MSIX_CAUSE_BITS[: len(fds)]
        bar.write32(regs_e1000e.IVAR, regs_e1000e.ivar_value({c: c for c in range(len(causes))}))
        every = 0
        for bit in causes:
            every |= bit
        bar.write32(regs_e1000e.EIAC, every)  # auto-clear: every ICS is a new edge
        drain(fds)
        # Masked first: QEMU's EITR timers are not running yet, so silence is exact.
        bar.write32(regs.ICS, every)
        _quiet(fds, "every cause masked")
        bar.write32(regs.ICR, ALL)  # write 1 to clear: nothing left pending
        bar.read32(regs.ICR)
        for message, cause in enumerate(causes):
            bar.write32(regs.IMS, cause)
            bar.write32(regs.ICS, cause)
            _expect(fds, message, f"cause {regs_e1000e.IcrMsix(cause).name}")
            bar.write32(regs.IMC, cause)
        return len(causes)
    finally:
        bar.write32(regs.IMC, ALL)
        bar.write32(regs.ICR, ALL)
        dev.disable_irq(vfio.IrqIndex.MSIX)


def msix_82576(dev: vfio.Device, bar: vfio.Bar) -> int:
    """EICS per message, then LSC through IVAR_MISC. Returns messages checked."""
    fds = dev.enable_irq(vfio.IrqIndex.MSIX)
    try:
        bar.write32(regs.IMC, ALL)
        bar.write32(regs_igb.EIMC, ALL)
        bar.write32(regs_igb.GPIE, regs_igb.Gpie.MSIX_MODE | regs_igb.Gpie.NSICR)
        every = (1 << len(fds)) - 1
        bar.write32(regs_igb.EIAC, every)
        drain(fds)
        bar.write32(regs_igb.EICS, every)
        _quiet(fds, "every message masked (EIMC)")
        bar.read32(regs_igb.EICR)  # clears: EIMS must not find them pending
        bar.write32(regs_igb.EIMS, every)
        for message in range(len(fds)):
            bar.write32(regs_igb.EICS, 1 << message)
            _expect(fds, message, "EICS")
        misc = len(fds) - 1
        bar.write32(
            regs_igb.IVAR_MISC, (misc | regs_igb.IVAR_VALID) << regs_igb.IVAR_MISC_OTHER_SHIFT
        )
        fired(fds, 0)  # forget repeats before the LSC check
        bar.write32(regs.IMS, regs.Icr.LSC)
        bar.write32(regs.ICS, regs.Icr.LSC)
        _expect(fds, misc, "LSC through IVAR_MISC")
        return len(fds) + 1
    finally:
        bar.write32(regs.IMC, ALL)
        bar.write32(regs_igb.EIMC, ALL)
        bar.read32(regs.ICR)
        bar.read32(regs_igb.EICR)
        bar.write32(regs_igb.IVAR_MISC, 0)
        bar.write32(regs_igb.GPIE, 0)
        dev.disable_irq(vfio.IrqIndex.MSIX)


def run(dev: vfio.Device, family: str) -> str:
    """Every interrupt type the device offers; returns the detail line."""
    bar = dev.bar(0)
    parts = []
    missing = []
    for index in (vfio.IrqIndex.INTX, vfio.IrqIndex.MSI, vfio.IrqIndex.MSIX):
        if dev.irq_info(index).count == 0:
            missing.append(KIND[index])
            continue
        if index is vfio.IrqIndex.MSIX:
            if family == "e1000e":
                parts.append(f"MSI-X {msix_82574(dev, bar)} messages")
            elif family == "igb":
                parts.append(f"MSI-X {msix_82576(dev, bar)} messages")
            else:
                missing.append("MSI-X (no test for this family)")
        else:
            parts.append(f"{KIND[index]} {line_or_msi(dev, bar, index, family)} causes")
    detail = ", ".join(parts)
    if missing:
        detail += f"; not offered: {', '.join(missing)}"
    return detail
