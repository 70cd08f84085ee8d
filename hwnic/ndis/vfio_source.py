"""An :class:`~hwnic.ndis.source.InterruptSource` over a VFIO device.

Maps the NDIS interrupt types onto vfio-pci's IRQ indexes; the device owns the
eventfds it creates and closes them when the index is disabled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from hwnic.ndis.source import InterruptType

if TYPE_CHECKING:
    from hwnic.vfio import Device


class VfioInterruptSource:
    """Interrupts of a :class:`hwnic.vfio.Device` (imported lazily: host tests need no VFIO)."""

    def __init__(self, device: Device) -> None:
        from hwnic.vfio import IrqIndex

        self.device = device
        self._index = {
            InterruptType.LINE_BASED: IrqIndex.INTX,
            InterruptType.MSI: IrqIndex.MSI,
            InterruptType.MSIX: IrqIndex.MSIX,
        }

    def message_counts(self) -> Mapping[InterruptType, int]:
        return {kind: self.device.irq_info(index).count for kind, index in self._index.items()}

    def connect(self, kind: InterruptType, count: int) -> list[int]:
        return self.device.enable_irq(self._index[kind], count)

    def disconnect(self, kind: InterruptType) -> None:
        self.device.disable_irq(self._index[kind])

    def unmask_line(self) -> None:
        self.device.unmask_intx()
