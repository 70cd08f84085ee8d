"""ISR semantics: recognition, DPC requests, the processor threads, lines, synchronize."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest

from hwnic.ndis import (
    ISR_HANDLED,
    ISR_NOT_MINE,
    EventfdSource,
    InterruptType,
    IsrResult,
    MiniportAdapter,
    NdisInterrupt,
    current_processor,
    register_interrupt,
)
from hwnic.ndis.testing import RecordingMiniport

CPUS = sorted(os.sched_getaffinity(0))
BOTH_MASK = sum(1 << c for c in CPUS)
MSIX = {InterruptType.MSIX: 2, InterruptType.MSI: 1, InterruptType.LINE_BASED: 1}
LINE = {InterruptType.LINE_BASED: 1}


def register(m: RecordingMiniport, counts: dict[InterruptType, int], **kw: Any) -> NdisInterrupt:
    a = MiniportAdapter("isr-test")
    a.set_miniport_attributes()
    return register_interrupt(a, "ctx", m.characteristics(), EventfdSource(counts), **kw)


def quiesce(i: NdisInterrupt) -> None:
    assert i.wait_idle(20.0)


def test_not_mine_on_a_shared_line_queues_no_dpc() -> None:
    m = RecordingMiniport(isr_script=lambda _m: ISR_NOT_MINE)
    with register(m, LINE) as i:
        source = i.source
        assert isinstance(source, EventfdSource)
        for n in range(1, 4):
            # a fire while the line is still masked stays pending until the unmask,
            # so n ISRs prove the line was re-armed after each "not mine" too
            source.fire()
            m.wait_count("isr", n)
        quiesce(i)
        assert m.count("dpc") == 0 and m.count("enable") == 0
        s = i.stats[0]
        assert (s.interrupts, s.not_mine, s.dpc_runs, s.batches) == (3, 3, 0, 0)
    assert source.unmasks == 3


def test_not_mine_with_a_default_dpc_request_still_runs_the_dpc() -> None:
    m = RecordingMiniport(isr_script=lambda _m: IsrResult(False, True, 0))
    with register(m, LINE) as i:
        i.source.fire()  # type: ignore[attr-defined]
        m.wait_count("enable", 1)
        assert m.count("dpc") == 1
        assert i.stats[0].not_mine == 1


def test_not_mine_with_target_processors_still_runs_the_dpcs() -> None:
    m = RecordingMiniport(isr_script=lambda _m: IsrResult(False, False, BOTH_MASK))
    with register(m, MSIX) as i:
        i.source.fire(1)  # type: ignore[attr-defined]
        m.wait_count("enable", 1)
        assert sorted(c.cpu for c in m.calls("dpc")) == CPUS


def test_recognized_without_dpc_request_queues_nothing() -> None:
    m = RecordingMiniport(isr_script=lambda _m: ISR_HANDLED)
    with register(m, MSIX) as i:
        i.source.fire(0)  # type: ignore[attr-defined]
        m.wait_count("isr", 1)
        quiesce(i)
        assert m.count("dpc") == 0 and m.count("enable") == 0 and i.stats[0].not_mine == 0


def test_queue_default_dpc_ignores_target_processors() -> None:
    m = RecordingMiniport(isr_script=lambda _m: IsrResult(True, True, BOTH_MASK))
    with register(m, MSIX, target_cpus=[CPUS[-1], CPUS[0]]) as i:
        i.source.fire(0)  # type: ignore[attr-defined]
        m.wait_count("enable", 1)
        (dpc,) = m.calls("dpc")
        assert dpc.cpu == CPUS[-1] and dpc.affinity == {CPUS[-1]}


def test_target_processors_fan_out_to_pinned_workers_and_reenable_once() -> None:
    m = RecordingMiniport(isr_script=lambda _m: IsrResult(True, False, BOTH_MASK))
    with register(m, MSIX) as i:
        i.source.fire(0)  # type: ignore[attr-defined]
        m.wait_count("enable", 1)
        quiesce(i)
        dpcs = m.calls("dpc")
        assert sorted(c.cpu for c in dpcs) == CPUS
        for c in dpcs:
            assert c.affinity == {c.cpu}  # the worker thread is pinned to that CPU
            assert c.dpc_context is None  # DPCs from the ISR's mask get no context
        assert len({c.thread for c in dpcs}) == len(CPUS)
        assert m.count("enable") == 1  # once, after the last DPC of the batch
        log = [c.kind for c in m.log]
        assert log.index("enable") > max(k for k, kind in enumerate(log) if kind == "dpc")


def test_mask_naming_cpus_outside_affinity_runs_on_the_message_cpu() -> None:
    outside = 1 << (max(CPUS) + 1) | 1 << (max(CPUS) + 7)
    m = RecordingMiniport(isr_script=lambda _m: IsrResult(True, False, outside))
    with register(m, MSIX, target_cpus=[CPUS[-1], CPUS[0]]) as i:
        i.source.fire(0)  # type: ignore[attr-defined]
        m.wait_count("enable", 1)
        quiesce(i)
        (dpc,) = m.calls("dpc")  # two foreign bits fold onto one DPC on the target CPU
        assert dpc.cpu == CPUS[-1]
        assert i.stats[0].dpcs_redirected == 2
        # NdisMQueueDpcEx reports the CPU that actually got the DPC
        assert i.queue_dpc(0, outside, "x") == 1 << CPUS[-1]
        m.wait_count("enable", 2)


def test_isrs_run_on_their_message_cpu_and_never_inside_a_dpc() -> None:
    in_dpc: set[int] = set()  # threads inside a DPC call right now
    nested: list[int] = []
    isr_cpus: list[tuple[int, int | None]] = []

    def isr_script(message_id: int) -> IsrResult:
        if threading.get_ident() in in_dpc:
            nested.append(message_id)
        isr_cpus.append((message_id, current_processor()))
        return IsrResult(True, False, BOTH_MASK)

    def dpc_script(_m: int, _ctx: Any, _t: Any) -> None:
        me = threading.get_ident()
        in_dpc.add(me)
        time.sleep(0.002)  # give an interrupt time to arrive during the DPC
        in_dpc.discard(me)

    m = RecordingMiniport(isr_script=isr_script, dpc_script=dpc_script)
    with register(m, MSIX) as i:
        for n in range(1, 11):
            i.source.fire(n % 2)  # type: ignore[attr-defined]
            m.wait_count("isr", n)
        quiesce(i)
        targets = {info.message_id: info.target_cpu for info in i.messages}
        assert all(cpu == targets[msg] for msg, cpu in isr_cpus)  # the message's processor
        assert nested == []  # an ISR waits for the DPC on its CPU, never runs inside it
        isr_threads = {c.thread for c in m.calls("isr")}
        assert len(isr_threads) == len(set(targets.values()))  # one thread per target CPU
        assert threading.get_ident() not in isr_threads


def test_framework_never_masks_messages_itself() -> None:
    m = RecordingMiniport()
    with register(m, MSIX) as i:
        i.source.fire(0)  # type: ignore[attr-defined]
        i.source.fire(1)  # type: ignore[attr-defined]
        m.wait_count("enable", 2)
        assert m.count("disable") == 0  # only the miniport's ISR masks, per message


def test_line_based_is_unmasked_after_each_isr() -> None:
    masked_in_isr: list[bool] = []
    source = EventfdSource(LINE)

    def isr_script(_m: int) -> IsrResult:
        masked_in_isr.append(source.line_masked)
        return IsrResult(True, True, 0)

    m = RecordingMiniport(isr_script=isr_script)
    a = MiniportAdapter("line")
    a.set_miniport_attributes()
    with register_interrupt(a, None, m.characteristics(), source) as i:
        assert i.granted_type is InterruptType.LINE_BASED
        for n in range(1, 4):
            source.fire()
            m.wait_count("enable", n)
        # each ISR saw the line masked (VFIO auto-mask) and the framework re-armed it
        assert masked_in_isr == [True, True, True]
        assert source.unmasks == 3
        assert not source.line_masked


def test_line_fired_while_masked_is_delivered_after_unmask() -> None:
    gate = threading.Event()
    source = EventfdSource(LINE)

    def isr_script(_m: int) -> IsrResult:
        if not gate.is_set():
            gate.set()
            source.fire()  # asserted again while VFIO holds the line masked
        return IsrResult(True, True, 0)

    m = RecordingMiniport(isr_script=isr_script)
    a = MiniportAdapter("line")
    a.set_miniport_attributes()
    with register_interrupt(a, None, m.characteristics(), source):
        source.fire()
        m.wait_count("isr", 2)


def test_ndis_6_20_isr_may_queue_dpcs_with_queue_dpc() -> None:
    holder: dict[str, NdisInterrupt] = {}
    ready = threading.Event()

    def isr_script(message_id: int) -> IsrResult:
        ready.wait(20.0)
        holder["i"].queue_dpc(message_id, BOTH_MASK, "from-isr")
        return IsrResult(True, False, 0)  # TargetProcessors zero, as 6.20 drivers do

    m = RecordingMiniport(isr_script=isr_script)
    with register(m, MSIX) as i:
        holder["i"] = i
        ready.set()
        i.source.fire(0)  # type: ignore[attr-defined]
        m.wait_count("enable", 1)
        quiesce(i)
        assert sorted(c.cpu for c in m.calls("dpc")) == CPUS
        assert {c.dpc_context for c in m.calls("dpc")} == {"from-isr"}
        assert m.count("enable") == 1
        assert i.stats[0].isr_to_dpc_ns.count == len(CPUS)  # latency measured from the ISR


def test_synchronize_is_serialized_with_the_isr() -> None:
    in_isr = threading.Event()
    release = threading.Event()
    overlap: list[str] = []
    state = {"isr_running": False}

    def isr_script(_m: int) -> IsrResult:
        state["isr_running"] = True
        in_isr.set()
        release.wait(20.0)
        state["isr_running"] = False
        return IsrResult(True, True, 0)

    m = RecordingMiniport(isr_script=isr_script)
    with register(m, MSIX) as i:
        i.source.fire(0)  # type: ignore[attr-defined]
        assert in_isr.wait(20.0)
        done = threading.Event()

        def sync_fn(tag: str) -> str:
            if state["isr_running"]:
                overlap.append(tag)
            return tag

        def caller() -> None:
            assert i.synchronize(0, sync_fn, "sync") == "sync"
            done.set()

        t = threading.Thread(target=caller)
        t.start()
        # the other message's ISR lock is free: not blocked by message 0's ISR
        assert i.synchronize(1, lambda: 42) == 42
        assert not done.is_set()  # still blocked behind message 0's ISR
        release.set()
        t.join(20.0)
        assert done.is_set() and overlap == []


def test_isr_exception_is_recorded_and_dispatch_continues() -> None:
    calls = {"n": 0}

    def isr_script(_m: int) -> IsrResult:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return IsrResult(True, True, 0)

    m = RecordingMiniport(isr_script=isr_script)
    with register(m, MSIX) as i:
        i.source.fire(0)  # type: ignore[attr-defined]
        m.wait_count("isr", 1)
        i.source.fire(0)  # type: ignore[attr-defined]
        m.wait_count("enable", 1)
        assert i.stats[0].isr_errors == 1
        assert [type(e) for e in i.errors] == [RuntimeError]


@pytest.mark.parametrize("kind", [InterruptType.MSI, InterruptType.LINE_BASED])
def test_plain_handlers_serve_msi_and_line(kind: InterruptType) -> None:
    m = RecordingMiniport()
    a = MiniportAdapter("plain")
    a.set_miniport_attributes()
    ch = m.characteristics(message_handlers=False)
    with register_interrupt(a, None, ch, EventfdSource(MSIX), prefer=kind) as i:
        i.source.fire(0)  # type: ignore[attr-defined]
        m.wait_count("enable", 1)
        assert [c.kind for c in m.log] == ["isr", "dpc", "before_enable", "enable"]
