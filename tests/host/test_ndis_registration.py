"""NdisMRegisterInterruptEx: ordering, type fallback, message table, ISR before return."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest

from hwnic.errors import InterruptError
from hwnic.ndis import (
    ISR_QUEUE_DEFAULT_DPC,
    EventfdSource,
    InterruptCharacteristics,
    InterruptSource,
    InterruptType,
    MiniportAdapter,
    register_interrupt,
)
from hwnic.ndis.testing import RecordingMiniport

ALL = {InterruptType.MSIX: 5, InterruptType.MSI: 1, InterruptType.LINE_BASED: 1}
CPUS = sorted(os.sched_getaffinity(0))


def adapter(name: str = "nic") -> MiniportAdapter:
    a = MiniportAdapter(name)
    a.set_miniport_attributes(adapter_context={"name": name}, check_for_hang_seconds=2)
    return a


def test_eventfd_source_satisfies_the_protocol() -> None:
    assert isinstance(EventfdSource(ALL), InterruptSource)


def test_refused_before_set_miniport_attributes() -> None:
    m = RecordingMiniport()
    source = EventfdSource(ALL)
    bare = MiniportAdapter("early")
    with pytest.raises(InterruptError, match="set_miniport_attributes"):
        register_interrupt(bare, None, m.characteristics(), source)
    assert source.connected is None  # nothing was wired
    bare.set_miniport_attributes()
    with register_interrupt(bare, None, m.characteristics(), source) as interrupt:
        assert interrupt.granted_type is InterruptType.MSIX


@pytest.mark.parametrize(
    ("counts", "expected", "n"),
    [
        (ALL, InterruptType.MSIX, 5),
        ({InterruptType.MSI: 1, InterruptType.LINE_BASED: 1}, InterruptType.MSI, 1),
        ({InterruptType.LINE_BASED: 1}, InterruptType.LINE_BASED, 1),
        (
            {InterruptType.MSIX: 0, InterruptType.MSI: 0, InterruptType.LINE_BASED: 1},
            InterruptType.LINE_BASED,
            1,
        ),
    ],
)
def test_fallback_msix_then_msi_then_line_by_counts(
    counts: dict[InterruptType, int], expected: InterruptType, n: int
) -> None:
    source = EventfdSource(counts)
    with register_interrupt(adapter(), None, RecordingMiniport().characteristics(), source) as i:
        assert i.granted_type is expected
        assert source.connected is expected
        assert [info.message_id for info in i.messages] == list(range(n))
    assert source.connected is None


@pytest.mark.parametrize("kind", list(InterruptType))
def test_insisting_on_a_type_grants_exactly_it(kind: InterruptType) -> None:
    source = EventfdSource(ALL)
    m = RecordingMiniport()
    with register_interrupt(adapter(), None, m.characteristics(), source, prefer=kind) as i:
        assert i.granted_type is kind


def test_insisting_on_an_unavailable_type_is_refused_without_fallback() -> None:
    source = EventfdSource({InterruptType.LINE_BASED: 1})
    with pytest.raises(InterruptError, match="MSI-X"):
        register_interrupt(
            adapter(),
            None,
            RecordingMiniport().characteristics(),
            source,
            prefer=InterruptType.MSIX,
        )
    assert source.connected is None


def test_without_message_handlers_msix_is_never_granted() -> None:
    m = RecordingMiniport()
    ch = m.characteristics(message_handlers=False)
    with register_interrupt(adapter(), None, ch, EventfdSource(ALL)) as i:
        assert i.granted_type is InterruptType.MSI
    with pytest.raises(InterruptError, match="message-signalled handlers"):
        register_interrupt(adapter(), None, ch, EventfdSource(ALL), prefer=InterruptType.MSIX)


def test_no_usable_type_is_refused() -> None:
    with pytest.raises(InterruptError, match="no usable interrupt"):
        register_interrupt(
            adapter(), None, RecordingMiniport().characteristics(), EventfdSource({})
        )


def test_incomplete_characteristics_are_refused() -> None:
    m = RecordingMiniport()
    partial = InterruptCharacteristics(
        isr=m.isr, dpc=m.dpc, enable=m.enable, disable=m.disable, message_isr=m.message_isr
    )
    with pytest.raises(InterruptError, match="message_dpc"):
        register_interrupt(adapter(), None, partial, EventfdSource(ALL))
    no_dpc = InterruptCharacteristics(isr=m.isr, dpc=None, enable=m.enable, disable=m.disable)  # type: ignore[arg-type]
    with pytest.raises(InterruptError, match="'dpc'"):
        register_interrupt(adapter(), None, no_dpc, EventfdSource(ALL))


def test_one_interrupt_per_adapter_until_deregistered() -> None:
    a = adapter()
    m = RecordingMiniport()
    first = register_interrupt(a, None, m.characteristics(), EventfdSource(ALL))
    assert a.interrupt is first
    with pytest.raises(InterruptError, match="already"):
        register_interrupt(a, None, m.characteristics(), EventfdSource(ALL))
    first.deregister()
    assert a.interrupt is None
    register_interrupt(a, None, m.characteristics(), EventfdSource(ALL)).deregister()


def test_message_table_spreads_over_the_affinity_set_and_honours_overrides() -> None:
    m = RecordingMiniport()
    with register_interrupt(adapter(), None, m.characteristics(), EventfdSource(ALL)) as i:
        assert len(i.messages) == ALL[InterruptType.MSIX]
        assert [x.vector for x in i.messages] == list(range(5))
        assert [x.target_cpu for x in i.messages] == [CPUS[k % len(CPUS)] for k in range(5)]
    override = {0: CPUS[-1], 2: CPUS[0]}
    with register_interrupt(
        adapter(), None, m.characteristics(), EventfdSource(ALL), messages=3, target_cpus=override
    ) as i:
        assert len(i.messages) == 3
        assert i.messages[0].target_cpu == CPUS[-1]
        assert i.messages[2].target_cpu == CPUS[0]
        i.queue_dpc(0, 0, None)  # a zero mask queues nothing
        i.queue_dpc(0, 1 << CPUS[-1], "ctx")
        m.wait_count("enable", 1, message_id=0)
        (dpc,) = m.calls("dpc", 0)
        assert dpc.cpu == CPUS[-1] and dpc.affinity == {CPUS[-1]}


def test_target_cpu_outside_affinity_is_refused() -> None:
    outside = max(CPUS) + 1
    with pytest.raises(InterruptError, match="affinity"):
        register_interrupt(
            adapter(),
            None,
            RecordingMiniport().characteristics(),
            EventfdSource(ALL),
            target_cpus=[outside],
        )


def test_isr_runs_before_register_returns_for_an_already_signalled_source() -> None:
    returned = threading.Event()
    seen_before_return: list[bool] = []

    def isr_script(message_id: int) -> Any:
        seen_before_return.append(not returned.is_set())
        return ISR_QUEUE_DEFAULT_DPC

    m = RecordingMiniport(isr_script=isr_script)
    source = EventfdSource(ALL, pending=[1, 3])
    interrupt = register_interrupt(adapter(), None, m.characteristics(), source)
    returned.set()
    try:
        # Deterministic: registration returns after the dispatcher's first pass.
        assert sorted(c.message_id for c in m.calls("isr")) == [1, 3]
        assert seen_before_return == [True, True]
        m.wait_count("enable", 2)
    finally:
        interrupt.deregister()


def test_registration_rejects_bad_parameters() -> None:
    m = RecordingMiniport()
    for kwargs in ({"budget": 0}, {"time_bound": 0.0}, {"messages": 0}):
        with pytest.raises(InterruptError):
            register_interrupt(adapter(), None, m.characteristics(), EventfdSource(ALL), **kwargs)
