"""DPCs: batches and the single re-enable, throttling, time bound, early re-enable,
before_enable ordering, per-CPU exclusion, queue_dpc coalescing."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from typing import Any

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

CPUS = sorted(os.sched_getaffinity(0))
BOTH_MASK = sum(1 << c for c in CPUS)
MSIX = {InterruptType.MSIX: 2}


def register(m: RecordingMiniport, **kw: Any) -> NdisInterrupt:
    a = MiniportAdapter("dpc-test")
    a.set_miniport_attributes()
    return register_interrupt(a, None, m.characteristics(), EventfdSource(MSIX), **kw)


def fire(i: NdisInterrupt, message_id: int = 0) -> None:
    assert i.source.fire(message_id)  # type: ignore[attr-defined]


def test_more_pending_reruns_with_the_budget_then_reenables_once() -> None:
    backlog = {"n": 10}

    def drain(_m: int, _ctx: Any, t: ReceiveThrottleParameters) -> None:
        n = min(t.max_to_indicate, backlog["n"])
        backlog["n"] -= n
        t.indicated = n
        t.more_pending = backlog["n"] > 0

    m = RecordingMiniport(dpc_script=drain)
    with register(m, budget=3, time_bound=60.0) as i:
        fire(i)
        m.wait_count("enable", 1)
        assert i.wait_idle(20.0)
        dpcs = m.calls("dpc")
        assert len(dpcs) == 4  # 3 + 3 + 3 + 1
        assert {c.max_to_indicate for c in dpcs} == {3}
        assert len({c.thread for c in dpcs}) == 1 and {c.cpu for c in dpcs} == {CPUS[0]}
        assert m.count("enable") == 1
        kinds = [c.kind for c in m.log]
        assert kinds == ["isr", "dpc", "dpc", "dpc", "dpc", "before_enable", "enable"]
        s = i.stats[0]
        assert (s.dpc_runs, s.more_pending, s.indicated, s.time_cutoffs) == (4, 3, 10, 0)
        assert s.indicated_per_dpc.count == 4 and s.indicated_per_dpc.max == 3


def test_time_bound_cutoff_requeues_and_loses_no_work() -> None:
    backlog = {"n": 6}
    requests_after_cutoff: list[str] = []
    holder: dict[str, NdisInterrupt] = {}

    def drain(_m: int, ctx: Any, t: ReceiveThrottleParameters) -> None:
        # one item per call, each call longer than the bound: every re-run is cut off
        time.sleep(0.002)
        backlog["n"] -= 1
        t.indicated = 1
        t.more_pending = backlog["n"] > 0
        if backlog["n"] == 4 and not requests_after_cutoff:
            # a request from elsewhere while the DPC runs: queued behind the continuation?
            requests_after_cutoff.append("queued")
            holder["i"].queue_dpc(0, 1 << CPUS[0], "other")

    m = RecordingMiniport(dpc_script=drain)
    with register(m, budget=1, time_bound=0.001) as i:
        holder["i"] = i
        fire(i)
        m.wait_count("enable", 1)
        assert i.wait_idle(20.0)
        s = i.stats[0]
        assert backlog["n"] <= 0  # all drained: nothing lost by yielding
        assert s.time_cutoffs >= 1
        assert s.time_cutoffs + s.more_pending >= 5
        assert m.count("enable") == 1  # the message stayed disabled across the yields
        dpcs = m.calls("dpc")
        assert {c.cpu for c in dpcs} == {CPUS[0]}
        assert "other" in [c.dpc_context for c in dpcs]
        kinds = [c.kind for c in m.log]
        assert kinds[-2:] == ["before_enable", "enable"]


def test_early_self_reenable_suppresses_the_framework_reenable() -> None:
    def reenable_myself(_m: int, _ctx: Any, t: ReceiveThrottleParameters) -> None:
        t.reenabled = True

    m = RecordingMiniport(dpc_script=reenable_myself)
    with register(m) as i:
        for n in range(1, 4):
            fire(i)
            m.wait_count("dpc", n)
            assert i.wait_idle(20.0)
        assert m.count("enable") == 0 and m.count("before_enable") == 0
        s = i.stats[0]
        assert (s.batches, s.early_reenables, s.reenables) == (3, 3, 0)


def test_early_reenable_by_one_fanned_out_dpc_ends_the_batch() -> None:
    def first_cpu_reenables(_m: int, _ctx: Any, t: ReceiveThrottleParameters) -> None:
        from hwnic.ndis import current_processor

        t.reenabled = current_processor() == CPUS[0]

    m = RecordingMiniport(
        isr_script=lambda _m: IsrResult(True, False, BOTH_MASK), dpc_script=first_cpu_reenables
    )
    with register(m) as i:
        fire(i)
        m.wait_count("dpc", len(CPUS))
        assert i.wait_idle(20.0)
        assert m.count("enable") == 0
        assert i.stats[0].early_reenables == 1


def test_before_enable_runs_before_every_reenable() -> None:
    kept: list[int] = []  # buffers the "protocol" kept
    ring = {"fresh": 0}
    order: list[str] = []

    m = RecordingMiniport(isr_script=lambda _m: IsrResult(True, False, BOTH_MASK))

    def dpc_script(_m: int, _ctx: Any, t: ReceiveThrottleParameters) -> None:
        kept.append(1)
        t.indicated = 1

    def replenish(context: Any, message_id: int) -> None:
        order.append(f"replenish:{len(kept)}")
        ring["fresh"] += len(kept)
        kept.clear()
        m.before_enable(context, message_id)

    def enable(context: Any, message_id: int) -> None:
        order.append(f"enable:{len(kept)}")
        m.enable_message(context, message_id)

    m.dpc_script = dpc_script
    base = m.characteristics()
    ch = type(base)(**{**base.__dict__, "before_enable": replenish, "enable_message": enable})
    a = MiniportAdapter("replenish")
    a.set_miniport_attributes()
    with register_interrupt(a, None, ch, EventfdSource(MSIX)) as i:
        for n in range(1, 5):
            fire(i, n % 2)
            m.wait_count("enable", n)
        assert i.wait_idle(20.0)
    assert order == [f"replenish:{len(CPUS)}", "enable:0"] * 4
    assert ring["fresh"] == 4 * len(CPUS)


def test_failed_replenish_does_not_reenable() -> None:
    m = RecordingMiniport()
    base = m.characteristics()
    tried = threading.Event()

    def broken(context: Any, message_id: int) -> None:
        tried.set()
        raise MemoryError("pool empty")

    ch = type(base)(**{**base.__dict__, "before_enable": broken})
    a = MiniportAdapter("broken")
    a.set_miniport_attributes()
    with register_interrupt(a, None, ch, EventfdSource(MSIX)) as i:
        fire(i)
        assert tried.wait(20.0)
    # deregistration joined the worker, so its enable attempt is over
    assert m.count("enable") == 0
    assert i.stats[0].enable_errors == 1
    assert any(isinstance(e, MemoryError) for e in i.errors)


def test_a_dpc_never_runs_twice_at_once_on_one_cpu() -> None:
    running: Counter[tuple[int, int | None]] = Counter()
    worst: Counter[tuple[int, int | None]] = Counter()
    lock = threading.Lock()
    from hwnic.ndis import current_processor

    def dpc_script(message_id: int, _ctx: Any, t: ReceiveThrottleParameters) -> None:
        key = (message_id, current_processor())
        with lock:
            running[key] += 1
            worst[key] = max(worst[key], running[key])
        time.sleep(0.0005)  # widen the window for an overlap
        with lock:
            running[key] -= 1

    m = RecordingMiniport(
        isr_script=lambda _m: IsrResult(True, False, BOTH_MASK), dpc_script=dpc_script
    )
    with register(m) as i:
        hammer = [
            threading.Thread(target=lambda: [i.queue_dpc(k % 2, BOTH_MASK, k) for k in range(200)])
            for _ in range(3)
        ]
        for t in hammer:
            t.start()
        for k in range(100):
            fire(i, k % 2)
        for t in hammer:
            t.join()
        assert i.wait_idle(20.0)
    assert worst and max(worst.values()) == 1
    assert {cpu for (_m, cpu) in worst} == set(CPUS)


def test_queue_dpc_coalesces_while_one_waits_and_returns_the_queued_mask() -> None:
    started = threading.Event()
    release = threading.Event()

    def dpc_script(_m: int, ctx: Any, t: ReceiveThrottleParameters) -> None:
        if ctx == "first":
            started.set()
            release.wait(20.0)

    m = RecordingMiniport(dpc_script=dpc_script)
    with register(m, target_cpus=[CPUS[0], CPUS[0]]) as i:
        bit = 1 << CPUS[0]
        assert i.queue_dpc(0, bit, "first") == bit
        assert started.wait(20.0)
        assert i.queue_dpc(0, bit, "second") == bit  # running: may be queued again
        assert i.queue_dpc(0, bit, "third") == 0  # "second" waits: coalesced
        release.set()
        m.wait_count("enable", 1)
        assert i.wait_idle(20.0)
        assert [c.dpc_context for c in m.calls("dpc")] == ["first", "second"]
        s = i.stats[0]
        assert (s.dpcs_queued, s.dpcs_coalesced, s.batches, s.reenables) == (2, 1, 1, 1)


def test_dpc_exception_ends_the_dpc_and_the_batch_still_reenables() -> None:
    def dpc_script(_m: int, _ctx: Any, t: ReceiveThrottleParameters) -> None:
        t.more_pending = True
        raise ValueError("bad descriptor")

    m = RecordingMiniport(dpc_script=dpc_script)
    with register(m) as i:
        fire(i)
        m.wait_count("enable", 1)
        assert i.stats[0].dpc_errors == 1 and i.stats[0].more_pending == 0
        assert [type(e) for e in i.errors] == [ValueError]
        fire(i)
        m.wait_count("enable", 2)  # the worker survived


def test_isr_to_dpc_latency_is_recorded_per_isr_dpc() -> None:
    m = RecordingMiniport()
    with register(m) as i:
        for n in range(1, 6):
            fire(i)
            m.wait_count("enable", n)
        i.queue_dpc(0, 1 << i.messages[0].target_cpu)  # not from an ISR: no latency sample
        m.wait_count("enable", 6)
        h = i.stats[0].isr_to_dpc_ns
        assert h.count == 5
        assert 0 < h.min <= h.percentile(50) <= h.max
