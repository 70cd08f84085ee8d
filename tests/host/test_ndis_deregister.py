"""NdisMDeregisterInterruptEx: nothing runs afterwards, in-flight work finishes first."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from hwnic.errors import InterruptError
from hwnic.ndis import (
    EventfdSource,
    InterruptType,
    IsrResult,
    MiniportAdapter,
    NdisInterrupt,
    ReceiveThrottleParameters,
    register_interrupt,
)
from hwnic.ndis.testing import RecordingMiniport

MSIX = {InterruptType.MSIX: 3, InterruptType.LINE_BASED: 1}


def adapter() -> MiniportAdapter:
    a = MiniportAdapter("dereg")
    a.set_miniport_attributes()
    return a


@pytest.mark.parametrize("kind", [InterruptType.MSIX, InterruptType.LINE_BASED])
def test_no_isr_or_dpc_after_deregister_under_a_signal_storm(kind: InterruptType) -> None:
    active = {"n": 0}
    lock = threading.Lock()

    def busy(_m: int, _ctx: Any, t: ReceiveThrottleParameters) -> None:
        with lock:
            active["n"] += 1
        t.more_pending = False
        with lock:
            active["n"] -= 1

    m = RecordingMiniport(isr_script=lambda _m: IsrResult(True, False, 0b11), dpc_script=busy)
    source = EventfdSource(MSIX)
    interrupt = register_interrupt(adapter(), None, m.characteristics(), source, prefer=kind)
    n_messages = len(interrupt.messages)
    stop = threading.Event()
    fired_after = {"n": 0}
    deregistered = threading.Event()

    def storm() -> None:
        k = 0
        while not stop.is_set():
            source.fire(k % n_messages)
            if deregistered.is_set():
                fired_after["n"] += 1
                if fired_after["n"] >= 2000:
                    return
            k += 1

    signaller = threading.Thread(target=storm)
    signaller.start()
    try:
        m.wait_count("dpc", 50)
        interrupt.deregister()
        with m.cond:
            calls_at_return = len(m.log)
        with lock:
            assert active["n"] == 0  # in-flight DPCs had finished
        deregistered.set()
        signaller.join(60.0)
    finally:
        stop.set()
        signaller.join()
    assert fired_after["n"] >= 2000  # the storm went on after deregistration
    assert len(m.log) == calls_at_return  # ... and nothing was called
    assert source.connected is None
    assert not source.fire(0)  # eventfds released
    assert interrupt.deregistered
    s = interrupt.stats
    assert s.total("interrupts") >= 1


def test_deregister_waits_for_the_running_dpc() -> None:
    inside = threading.Event()
    release = threading.Event()
    finished = threading.Event()

    def slow(_m: int, _ctx: Any, t: ReceiveThrottleParameters) -> None:
        inside.set()
        release.wait(20.0)
        finished.set()
        t.more_pending = True  # would re-run, but deregistration stops the loop

    m = RecordingMiniport(dpc_script=slow)
    interrupt = register_interrupt(adapter(), None, m.characteristics(), EventfdSource(MSIX))
    interrupt.source.fire(0)  # type: ignore[attr-defined]
    assert inside.wait(20.0)
    done = threading.Event()
    t = threading.Thread(target=lambda: (interrupt.deregister(), done.set()))
    t.start()
    assert not done.wait(0.05)  # blocked behind the DPC (a short wait; no result is timed)
    release.set()
    t.join(30.0)
    assert done.is_set() and finished.is_set()
    assert m.count("dpc") == 1 and m.count("enable") == 0


def test_queued_dpcs_are_discarded_and_counted() -> None:
    inside = threading.Event()
    release = threading.Event()

    def slow(_m: int, ctx: Any, t: ReceiveThrottleParameters) -> None:
        if ctx == "first":
            inside.set()
            release.wait(20.0)

    m = RecordingMiniport(dpc_script=slow)
    interrupt = register_interrupt(adapter(), None, m.characteristics(), EventfdSource(MSIX))
    cpu_bit = 1 << interrupt.messages[0].target_cpu
    interrupt.queue_dpc(0, cpu_bit, "first")
    assert inside.wait(20.0)
    assert interrupt.queue_dpc(0, cpu_bit, "second") == cpu_bit
    t = threading.Thread(target=interrupt.deregister)
    t.start()
    observed = threading.Event()
    for _ in range(20_000):  # until deregistration has begun (bounded wait, not a timed result)
        if interrupt.deregistered:
            observed.set()
            break
        observed.wait(0.001)
    assert observed.is_set()
    release.set()
    t.join(30.0)
    assert [c.dpc_context for c in m.calls("dpc")] == ["first"]
    assert interrupt.stats[0].dpcs_discarded == 1
    assert interrupt.queue_dpc(0, cpu_bit, "late") == 0


def test_deregister_from_own_dpc_is_refused() -> None:
    holder: dict[str, NdisInterrupt] = {}
    errors: list[BaseException] = []
    got = threading.Event()

    def dpc_script(_m: int, _ctx: Any, t: ReceiveThrottleParameters) -> None:
        try:
            holder["i"].deregister()
        except InterruptError as exc:
            errors.append(exc)
        got.set()

    m = RecordingMiniport(dpc_script=dpc_script)
    with register_interrupt(adapter(), None, m.characteristics(), EventfdSource(MSIX)) as i:
        holder["i"] = i
        i.queue_dpc(0, 1 << i.messages[0].target_cpu)
        assert got.wait(20.0)
        assert len(errors) == 1 and "own ISR or DPC" in str(errors[0])
        assert not i.deregistered


def test_context_manager_deregisters_and_is_idempotent() -> None:
    source = EventfdSource(MSIX)
    with register_interrupt(adapter(), None, RecordingMiniport().characteristics(), source) as i:
        assert source.connected is InterruptType.MSIX
    assert i.deregistered and source.connected is None
    i.deregister()  # again: no error
    with pytest.raises(InterruptError, match="no message"):
        i.synchronize(7, lambda: None)
