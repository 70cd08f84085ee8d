"""Read a NIC's identity and state through VFIO without initialising it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from hwnic import pci
from hwnic.nic import regs


@dataclass
class BarInfo:
    index: int
    size: int
    mmap: bool


@dataclass
class NicInfo:
    bdf: str
    pci_id: str
    model: str
    family: str
    driver: str | None
    iommu_group: int | None
    mac: str
    link_up: bool
    speed_mbps: int
    full_duplex: bool
    status: int
    bars: list[BarInfo] = field(default_factory=list)
    interrupts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = f"0x{self.status:08x}"
        return d


def read_info(bdf: str, *, allow_noiommu: bool = False) -> NicInfo:
    """Open ``bdf`` through VFIO and read model, MAC, link, BARs and IRQ counts."""
    model = pci.require_supported(pci.describe(bdf))
    nic = pci.require_vfio(bdf)
    from hwnic import vfio  # after the cheap sysfs checks, which give better errors

    with vfio.open_device(nic.bdf, allow_noiommu=allow_noiommu) as dev:
        # Memory decoding on, or the register reads below fail; bus mastering
        # stays as it is (nothing here DMAs).
        command = dev.config_read(vfio.PCI_COMMAND, vfio.PCI_COMMAND_SIZE)
        if not command & vfio.PCI_COMMAND_MEMORY:
            command |= vfio.PCI_COMMAND_MEMORY
            dev.config_write(vfio.PCI_COMMAND, command, vfio.PCI_COMMAND_SIZE)
        bars = []
        for index in range(vfio.RegionIndex.BAR0, vfio.RegionIndex.BAR5 + 1):
            region = dev.region_info(index)
            if region.size:
                bars.append(BarInfo(index, region.size, region.mmappable))
        bar0 = dev.bar(0)
        status = bar0.read32(regs.STATUS)
        mac = regs.mac_from_ra(bar0.read32(regs.RAL0), bar0.read32(regs.RAH0))
        link_up, speed, duplex = regs.link_from_status(status)
        interrupts = {
            name: dev.irq_info(index).count
            for name, index in (
                ("intx", vfio.IrqIndex.INTX),
                ("msi", vfio.IrqIndex.MSI),
                ("msix", vfio.IrqIndex.MSIX),
            )
        }
    return NicInfo(
        bdf=nic.bdf,
        pci_id=nic.pci_id,
        model=model.name,
        family=model.family,
        driver=nic.driver,
        iommu_group=nic.iommu_group,
        mac=mac,
        link_up=link_up,
        speed_mbps=speed,
        full_duplex=duplex,
        status=status,
        bars=bars,
        interrupts=interrupts,
    )
