"""Property tests: random mixes of interrupts, DPC requests and receive backlogs keep
the batch invariants (one re-enable per batch, replenish before each, no lost work)."""

from __future__ import annotations

import os
import threading
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hwnic.ndis import (
    EventfdSource,
    InterruptType,
    IsrResult,
    MiniportAdapter,
    ReceiveThrottleParameters,
    register_interrupt,
)
from hwnic.ndis.testing import RecordingMiniport

CPUS = sorted(os.sched_getaffinity(0))
FOREIGN = max(CPUS) + 3
MESSAGES = 2

# ISR behaviours: (recognized, queue_default_dpc, target mask)
ISR_MODES = [
    IsrResult(False, False, 0),  # not mine, no DPC
    IsrResult(True, True, 0),
    IsrResult(False, True, 0),  # not mine, DPC requested anyway
    IsrResult(True, False, sum(1 << c for c in CPUS)),
    IsrResult(True, False, 1 << FOREIGN),  # a CPU we may not use
]

op = st.one_of(
    st.tuples(
        st.just("fire"),
        st.integers(0, MESSAGES - 1),
        st.integers(0, len(ISR_MODES) - 1),
        st.integers(0, 20),
    ),
    st.tuples(
        st.just("queue"),
        st.integers(0, MESSAGES - 1),
        st.sampled_from([1 << c for c in CPUS] + [1 << FOREIGN, sum(1 << c for c in CPUS)]),
        st.integers(0, 20),
    ),
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    ops=st.lists(op, min_size=1, max_size=25),
    budget=st.integers(1, 8),
    tiny_time_bound=st.booleans(),
    self_reenable=st.booleans(),
)
def test_batch_invariants(
    ops: list[tuple[str, int, int, int]], budget: int, tiny_time_bound: bool, self_reenable: bool
) -> None:
    lock = threading.Lock()
    backlog = [0] * MESSAGES
    drained = [0] * MESSAGES
    mode = [0] * MESSAGES

    def isr(message_id: int) -> IsrResult:
        return ISR_MODES[mode[message_id]]

    def dpc(message_id: int, _ctx: Any, t: ReceiveThrottleParameters) -> None:
        with lock:
            n = min(t.max_to_indicate, backlog[message_id])
            backlog[message_id] -= n
            drained[message_id] += n
            t.more_pending = backlog[message_id] > 0
        t.indicated = n
        t.reenabled = self_reenable and not t.more_pending

    m = RecordingMiniport(isr_script=isr, dpc_script=dpc)
    source = EventfdSource({InterruptType.MSIX: MESSAGES})
    adapter = MiniportAdapter("prop")
    adapter.set_miniport_attributes()
    added = [0] * MESSAGES
    fires = [0] * MESSAGES
    with register_interrupt(
        adapter,
        None,
        m.characteristics(),
        source,
        budget=budget,
        time_bound=1e-6 if tiny_time_bound else 10.0,
    ) as i:
        for kind, message_id, arg, items in ops:
            if kind == "fire":
                if ISR_MODES[arg] == ISR_MODES[0]:
                    items = 0  # nobody would drain it
                with lock:
                    backlog[message_id] += items
                added[message_id] += items
                # the ISR reads mode[] after the fire; wait for it so modes do not race
                mode[message_id] = arg
                fires[message_id] += 1
                source.fire(message_id)
                m.wait_count("isr", fires[message_id], message_id=message_id)
            else:
                with lock:
                    backlog[message_id] += items
                added[message_id] += items
                assert (
                    i.queue_dpc(message_id, arg, ("req", items)) & ~sum(1 << c for c in CPUS) == 0
                )
        assert i.wait_idle(30.0)
    # deregistration joined every thread: the counters are final
    stats = i.stats
    assert i.errors == []
    for s in stats.messages:
        mid = s.message_id
        assert s.interrupts == fires[mid]
        assert s.reenables + s.early_reenables == s.batches
        assert m.count("enable", mid) == s.reenables
        assert m.count("before_enable", mid) == s.reenables
        assert s.dpc_runs == s.dpcs_queued + s.more_pending
        assert s.dpcs_discarded == 0
        assert drained[mid] == added[mid] and backlog[mid] == 0  # no work lost
        assert s.indicated == added[mid]
        assert s.indicated_per_dpc.max <= budget
        if not tiny_time_bound:
            assert s.time_cutoffs == 0
        assert s.time_cutoffs <= s.more_pending
    for c in m.calls("dpc"):
        assert c.cpu in CPUS and c.affinity == {c.cpu}
        assert c.max_to_indicate == budget
    # every enable follows a before_enable of the same message on the same thread
    log = m.log
    for k, c in enumerate(log):
        if c.kind == "enable":
            prior = [p for p in log[:k] if p.thread == c.thread and p.message_id == c.message_id]
            assert prior and prior[-1].kind == "before_enable"
