"""The NDIS 5 style: MiniportHandleInterrupt with Disable/EnableInterrupt."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from hwnic.errors import InterruptError
from hwnic.ndis import (
    EventfdSource,
    InterruptType,
    LegacyInterruptCharacteristics,
    MiniportAdapter,
    register_legacy_interrupt,
)

COUNTS = {InterruptType.MSIX: 4, InterruptType.MSI: 1, InterruptType.LINE_BASED: 1}


class Nic5:
    """An NDIS 5 miniport with a receive ring and a buffer pool."""

    def __init__(self, reenable_in_handler: bool = False, not_mine: bool = False) -> None:
        self.log: list[str] = []
        self.cond = threading.Condition()
        self.reenable_in_handler = reenable_in_handler
        self.not_mine = not_mine
        self.ring_slots_empty = 0  # slots whose buffer the protocol kept

    def _log(self, what: str) -> None:
        with self.cond:
            self.log.append(what)
            self.cond.notify_all()

    def isr(self, _ctx: Any) -> tuple[bool, bool]:
        self._log("isr")
        if self.not_mine:
            return False, False
        self._log("disable")  # the ISR dismisses and disables on the NIC
        return True, True

    def handle_interrupt(self, _ctx: Any) -> bool:
        self._log("handle")
        self.ring_slots_empty += 2  # two packets indicated and kept by the protocol
        if self.reenable_in_handler:
            self.ring_slots_empty = 0  # replenish first, then the faster self re-enable
            self._log("self-enable")
            return True
        return False

    def disable_interrupt(self, _ctx: Any) -> None:
        self._log("disable")

    def enable_interrupt(self, _ctx: Any) -> None:
        self._log(f"enable(empty={self.ring_slots_empty})")

    def replenish(self, _ctx: Any) -> None:
        self._log(f"replenish({self.ring_slots_empty})")
        self.ring_slots_empty = 0

    def wait(self, what: str, n: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.log.count(what) >= n, 20.0), self.log

    def characteristics(self, with_isr: bool = True, shared: bool = False) -> Any:
        return LegacyInterruptCharacteristics(
            handle_interrupt=self.handle_interrupt,
            disable_interrupt=self.disable_interrupt,
            enable_interrupt=self.enable_interrupt,
            isr=self.isr if with_isr else None,
            before_enable=self.replenish,
            shared=shared,
        )


def adapter() -> MiniportAdapter:
    a = MiniportAdapter("ndis5")
    a.set_miniport_attributes()
    return a


def test_enable_after_handler_with_replenish_first() -> None:
    nic = Nic5()
    with register_legacy_interrupt(
        adapter(), None, nic.characteristics(), EventfdSource(COUNTS)
    ) as i:
        assert i.granted_type is InterruptType.MSI and len(i.messages) == 1
        for n in range(1, 3):
            i.source.fire()  # type: ignore[attr-defined]
            nic.wait("enable(empty=0)", n)
    assert nic.log == ["isr", "disable", "handle", "replenish(2)", "enable(empty=0)"] * 2


def test_handler_that_reenabled_gets_no_enable_call() -> None:
    nic = Nic5(reenable_in_handler=True)
    with register_legacy_interrupt(
        adapter(), None, nic.characteristics(), EventfdSource(COUNTS)
    ) as i:
        for n in range(1, 3):
            i.source.fire()  # type: ignore[attr-defined]
            nic.wait("self-enable", n)
        assert i.wait_idle(20.0)
        assert i.stats[0].early_reenables == 2
    assert not any(e.startswith(("enable", "replenish")) for e in nic.log)


def test_without_isr_the_framework_disables_and_always_queues_the_handler() -> None:
    nic = Nic5()
    ch = nic.characteristics(with_isr=False)
    with register_legacy_interrupt(
        adapter(), None, ch, EventfdSource(COUNTS), prefer=InterruptType.LINE_BASED
    ) as i:
        i.source.fire()  # type: ignore[attr-defined]
        nic.wait("enable(empty=0)", 1)
    assert nic.log == ["disable", "handle", "replenish(2)", "enable(empty=0)"]


def test_shared_line_not_mine_runs_no_handler() -> None:
    nic = Nic5(not_mine=True)
    ch = nic.characteristics(shared=True)
    source = EventfdSource(COUNTS)
    with register_legacy_interrupt(
        adapter(), None, ch, source, prefer=InterruptType.LINE_BASED
    ) as i:
        for n in range(1, 3):
            source.fire()
            nic.wait("isr", n)
        assert i.wait_idle(20.0)
    assert nic.log == ["isr", "isr"]
    assert source.unmasks == 2


def test_shared_without_isr_and_msix_are_refused() -> None:
    nic = Nic5()
    with pytest.raises(InterruptError, match="shared"):
        register_legacy_interrupt(
            adapter(), None, nic.characteristics(with_isr=False, shared=True), EventfdSource(COUNTS)
        )
    with pytest.raises(InterruptError, match="MSI-X"):
        register_legacy_interrupt(
            adapter(), None, nic.characteristics(), EventfdSource(COUNTS), prefer=InterruptType.MSIX
        )
