"""Foundation checks on every NIC family in the lab, through real VFIO.

Each test opens the port, makes the device do something observable (read
registers, DMA a descriptor, raise an interrupt) and checks the effect.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from hwnic import pci, vfio
from hwnic.diag.interrupts import drain, fired
from hwnic.dma import DmaMemory
from hwnic.nic import regs, regs_e1000e, regs_igb
from hwnic.nic.descriptors import LEGACY_TX, TxCmd, TxStatus

pytestmark = pytest.mark.lab

ALL_CAUSES = 0xFFFFFFFF
SIGNAL_TIMEOUT = 5.0  # seconds: generous, the guest runs under TCG
QUIET_WINDOW = 0.3  # seconds to watch for a signal that must not come
SETTLE = 0.2  # lets throttle-timer repeats (docs/qemu-models.md) land before draining
MIN_FRAME = 60
LAB_MAC_PREFIX = "52:54:00:12:34:"


@pytest.fixture
def dev(port: pci.PciNic) -> Iterator[vfio.Device]:
    with vfio.open_device(port.bdf) as device:
        device.set_bus_master(True)
        bar = device.bar(0)
        bar.write32(regs.IMC, ALL_CAUSES)
        bar.read32(regs.ICR)
        yield device
        bar.write32(regs.IMC, ALL_CAUSES)
        device.set_bus_master(False)


def test_status_and_mac(dev: vfio.Device, port: pci.PciNic) -> None:
    bar = dev.bar(0)
    status = bar.read32(regs.STATUS)
    assert status not in (0, ALL_CAUSES), f"STATUS reads 0x{status:08x}: BAR0 not decoding"
    mac = regs.mac_from_ra(bar.read32(regs.RAL0), bar.read32(regs.RAH0))
    assert bar.read32(regs.RAH0) & regs.RAH_AV
    assert mac.startswith(LAB_MAC_PREFIX), mac
    assert port.family in ("e1000", "e1000e", "igb")


def test_regions_and_irq_counts(dev: vfio.Device, port: pci.PciNic) -> None:
    assert dev.region_info(0).size == 128 * 1024
    modes = (vfio.IrqIndex.INTX, vfio.IrqIndex.MSI, vfio.IrqIndex.MSIX)
    counts = [dev.irq_info(i).count for i in modes]
    expected = {  # docs/qemu-models.md: what QEMU 10 offers per model
        "e1000": (1, 0, 0),
        "e1000e": (1, 1, 5),
        "igb": (1, 1, 10),
    }[port.family or ""]
    assert tuple(counts) == expected


def test_dma_descriptor_write_back(dev: vfio.Device, port: pci.PciNic) -> None:
    """The NIC reads a TX descriptor and frame from our IOVAs and writes DD back."""
    bar = dev.bar(0)
    ring_len = regs.RING_LEN_ALIGN // LEGACY_TX.itemsize
    with DmaMemory(mapper=dev) as mem:
        ring_buf = mem.allocate(regs.RING_LEN_ALIGN)
        frame_buf = mem.allocate(MIN_FRAME)
        ring = ring_buf.array(LEGACY_TX, (ring_len,))
        ring[:] = np.zeros(ring_len, LEGACY_TX)
        frame = frame_buf.array(np.uint8, (MIN_FRAME,))
        frame[:6] = 0xFF  # broadcast
        frame[6:12] = 0x02
        frame[12:14] = (0x88, 0xB5)  # IEEE local experimental EtherType
        ring[0] = (frame_buf.iova, MIN_FRAME, 0, TxCmd.EOP | TxCmd.IFCS | TxCmd.RS, 0, 0, 0)
        base = regs_igb.TDBAL0 if port.family == "igb" else regs.TDBAL0
        bar.write32(regs.TCTL, 0)
        bar.write32(base + regs.DBAL, ring_buf.iova & 0xFFFFFFFF)
        bar.write32(base + regs.DBAH, ring_buf.iova >> 32)
        bar.write32(base + regs.DLEN, regs.RING_LEN_ALIGN)
        bar.write32(base + regs.DH, 0)
        bar.write32(base + regs.DT, 0)
        if port.family == "igb":
            bar.write32(regs_igb.TXDCTL0, regs_igb.XDCTL_ENABLE)
        bar.write32(regs.TCTL, regs.Tctl.EN | regs.Tctl.PSP)
        bar.write32(base + regs.DT, 1)  # QEMU transmits inside this write
        for _ in range(1000):
            if ring[0]["status"] & TxStatus.DD:
                break
            os.sched_yield()
        assert ring[0]["status"] & TxStatus.DD, "the NIC did not write DD back"
        assert bar.read32(base + regs.DH) == 1
        bar.write32(regs.TCTL, 0)


def _has(dev: vfio.Device, index: vfio.IrqIndex) -> bool:
    return dev.irq_info(index).count > 0


def test_intx_fires_masks_and_rearms(dev: vfio.Device) -> None:
    bar = dev.bar(0)
    (fd,) = dev.enable_irq(vfio.IrqIndex.INTX)
    try:
        bar.write32(regs.IMS, regs.Icr.LSC)
        bar.write32(regs.ICS, regs.Icr.LSC)
        assert fired([fd], SIGNAL_TIMEOUT) == {0}
        # VFIO masked the line on delivery: the still-asserted cause is silent.
        bar.write32(regs.ICS, regs.Icr.LSC)
        assert fired([fd], QUIET_WINDOW) == set()
        assert bar.read32(regs.ICR) & regs.Icr.LSC  # acknowledge: deasserts the line
        dev.unmask_intx()
        assert fired([fd], QUIET_WINDOW) == set()
        bar.write32(regs.ICS, regs.Icr.LSC)
        assert fired([fd], SIGNAL_TIMEOUT) == {0}, "unmask did not re-arm INTx"
        bar.read32(regs.ICR)
    finally:
        bar.write32(regs.IMC, ALL_CAUSES)
        dev.disable_irq(vfio.IrqIndex.INTX)


def test_msi_fires(dev: vfio.Device, port: pci.PciNic) -> None:
    if not _has(dev, vfio.IrqIndex.MSI):
        assert port.family == "e1000", "only the 82540EM lacks MSI"
        return
    bar = dev.bar(0)
    (fd,) = dev.enable_irq(vfio.IrqIndex.MSI)
    try:
        bar.write32(regs.IMS, regs.Icr.LSC)
        for _ in range(2):
            bar.write32(regs.ICS, regs.Icr.LSC)
            assert fired([fd], SIGNAL_TIMEOUT) == {0}
            assert bar.read32(regs.ICR) & regs.Icr.LSC
    finally:
        bar.write32(regs.IMC, ALL_CAUSES)
        dev.disable_irq(vfio.IrqIndex.MSI)


def test_msix_each_vector_alone(dev: vfio.Device, port: pci.PciNic) -> None:
    if not _has(dev, vfio.IrqIndex.MSIX):
        assert port.family == "e1000", "only the 82540EM lacks MSI-X"
        return
    bar = dev.bar(0)
    fds = dev.enable_irq(vfio.IrqIndex.MSIX)
    try:
        if port.family == "e1000e":
            _msix_e1000e(bar, fds)
        else:
            _msix_igb(bar, fds)
    finally:
        bar.write32(regs.IMC, ALL_CAUSES)
        if port.family == "igb":
            bar.write32(regs_igb.EIMC, ALL_CAUSES)
        dev.disable_irq(vfio.IrqIndex.MSIX)


def _msix_e1000e(bar: vfio.Bar, fds: Sequence[int]) -> None:
    """Map each of the five causes to its own vector with IVAR, raise it with ICS."""
    assert len(fds) == regs_e1000e.IVAR_CAUSES
    ctrl_ext = bar.read32(regs.CTRL_EXT) & ~regs_e1000e.CtrlExt.IAME
    bar.write32(regs.CTRL_EXT, ctrl_ext | regs_e1000e.CtrlExt.PBA_CLR)
    bar.write32(regs_e1000e.IVAR, regs_e1000e.ivar_value({c: c for c in range(len(fds))}))
    all_msix = 0
    for bit in regs_e1000e.MSIX_CAUSE_BITS:
        all_msix |= bit
    bar.write32(regs_e1000e.EIAC, all_msix)  # auto-clear, so every ICS is a new edge
    for vector, cause in enumerate(regs_e1000e.MSIX_CAUSE_BITS):
        drain(fds)
        bar.write32(regs.IMS, cause)
        bar.write32(regs.ICS, cause)
        assert fired(fds, SIGNAL_TIMEOUT) == {vector}, f"cause {cause!r}"
        # Only this vector's own fd may signal again (EITR expiry repeats).
        extra = fired(fds, SETTLE)
        assert extra <= {vector}, f"cause {cause!r} also signalled {extra}"


def _msix_igb(bar: vfio.Bar, fds: Sequence[int]) -> None:
    """EICS raises each vector; ICS(LSC) raises the one IVAR_MISC names."""
    bar.write32(regs_igb.GPIE, regs_igb.Gpie.MSIX_MODE | regs_igb.Gpie.NSICR)
    every = (1 << len(fds)) - 1
    bar.write32(regs_igb.EIAC, every)
    bar.write32(regs_igb.EIMS, every)
    for vector in range(len(fds)):
        drain(fds)
        bar.write32(regs_igb.EICS, 1 << vector)
        assert fired(fds, SIGNAL_TIMEOUT) == {vector}
        assert fired(fds, SETTLE) <= {vector}
    misc = len(fds) - 1
    bar.write32(regs_igb.IVAR_MISC, (misc | regs_igb.IVAR_VALID) << regs_igb.IVAR_MISC_OTHER_SHIFT)
    drain(fds)
    bar.write32(regs.IMS, regs.Icr.LSC)
    bar.write32(regs.ICS, regs.Icr.LSC)
    assert fired(fds, SIGNAL_TIMEOUT) == {misc}
    bar.read32(regs.ICR)


def test_reset_where_supported(dev: vfio.Device, port: pci.PciNic) -> None:
    did = dev.reset()
    if port.family == "igb":
        assert did, "the 82576 model has FLR: VFIO_DEVICE_RESET must work"
    # After any reset the registers still decode.
    dev.set_bus_master(True)
    assert dev.bar(0).read32(regs.STATUS) != ALL_CAUSES
