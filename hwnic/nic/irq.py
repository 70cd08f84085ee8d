"""How a NIC serves the interrupt type it was granted: chosen once, at registration.

A :class:`Nic` asks its family for an :class:`InterruptMode` when the NDIS
framework has granted an interrupt type (``Nic.interrupt_mode``); from then on
the NDIS handlers call the mode and never test the type again. A mode says:

* ``plan``: which RX queues and causes each message serves;
* ``configure``: the cause-to-message mapping registers (IVAR, GPIE, ...);
* ``isr``: acknowledge and mask one message, and whether the NIC raised it;
* ``other_causes``: the non-queue causes (link) the DPC of the "other"
  message handles;
* ``enable``/``disable``: unmask or mask exactly one message.

:class:`SharedLine` serves line-based and MSI interrupts for every family
(one message, ICR says whether this NIC raised it). Each family's MSI-X mode
lives in its own model file (``e1000e.py``, ``igb.py``), next to the rest of
that NIC's story.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hwnic.ndis import ISR_NOT_MINE, ISR_QUEUE_DEFAULT_DPC, IsrResult
from hwnic.nic import regs

if TYPE_CHECKING:
    from hwnic.nic.base import Nic

ALL_CAUSES = 0xFFFFFFFF


@dataclass(frozen=True)
class MessagePlan:
    """What one interrupt message serves: RX queues and/or the "other" causes."""

    rx: tuple[int, ...] = ()
    other: bool = False


class InterruptMode:
    """The per-type part of a NIC's interrupt handling (see the module docstring)."""

    def __init__(self, nic: Nic) -> None:
        self.nic = nic
        self.bar = nic.bar

    def plan(self, count: int) -> list[MessagePlan]:
        """One message for everything unless a mode maps causes to several."""
        return [MessagePlan(rx=tuple(range(self.nic.config.queues)), other=True)]

    def configure(self, plans: list[MessagePlan]) -> None:
        """Program the cause-to-message mapping (nothing for a shared line)."""

    def isr(self, message_id: int) -> IsrResult:
        raise NotImplementedError

    def other_causes(self, message_id: int) -> int:
        return 0

    def enable(self, message_id: int) -> None:
        raise NotImplementedError

    def disable(self, message_id: int) -> None:
        raise NotImplementedError

    def enable_all(self, plans: list[MessagePlan]) -> None:
        """Unmask every message that serves something; the others stay masked."""
        for message_id, plan in enumerate(plans):
            if plan.rx or plan.other:
                self.enable(message_id)


class SharedLine(InterruptMode):
    """Line-based (INTx, maybe shared) and MSI: one message, ICR tells the causes.

    The ISR reads ICR, which clears it (and deasserts the line): zero means
    another device on a shared line raised it. It keeps the causes for the
    DPC, masks every cause with IMC and asks for the default DPC; the last
    DPC of the batch unmasks with IMS.
    """

    def __init__(self, nic: Nic) -> None:
        super().__init__(nic)
        self._causes = 0  # ICR bits an ISR saw, for the DPC
        self._lock = threading.Lock()

    def isr(self, message_id: int) -> IsrResult:
        icr = self.bar.read32(regs.ICR)
        if not icr:
            return ISR_NOT_MINE  # a shared line's other device, or a stale message
        with self._lock:
            self._causes |= icr
        self.bar.write32(regs.IMC, ALL_CAUSES)
        return ISR_QUEUE_DEFAULT_DPC

    def other_causes(self, message_id: int) -> int:
        with self._lock:
            causes, self._causes = self._causes, 0
        return causes

    def enable(self, message_id: int) -> None:
        self.bar.write32(regs.IMS, self.nic.line_causes())

    def disable(self, message_id: int) -> None:
        self.bar.write32(regs.IMC, ALL_CAUSES)
