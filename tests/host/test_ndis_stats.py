"""Statistics: log2 histograms, percentiles, JSON-ready snapshots."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from hwnic.ndis import (
    EventfdSource,
    InterruptType,
    IsrResult,
    Log2Histogram,
    MiniportAdapter,
    ReceiveThrottleParameters,
    register_interrupt,
)
from hwnic.ndis.testing import RecordingMiniport


def test_histogram_buckets_by_bit_length() -> None:
    h = Log2Histogram("ns")
    for v in (0, 1, 2, 3, 4, 7, 8, 1000):
        h.add(v)
    assert h.counts[0] == 1 and h.counts[1] == 1 and h.counts[2] == 2 and h.counts[3] == 2
    assert h.counts[4] == 1 and h.counts[10] == 1
    assert (h.count, h.min, h.max, h.total) == (8, 0, 1000, 1025)
    d = h.to_dict()
    assert d["buckets"] == {"0-0": 1, "1-1": 1, "2-3": 2, "4-7": 2, "8-15": 1, "512-1023": 1}
    assert json.loads(json.dumps(d)) == d


@given(st.lists(st.integers(min_value=0, max_value=10**12), min_size=1, max_size=300))
def test_percentiles_are_within_a_factor_of_two_and_ordered(values: list[int]) -> None:
    h = Log2Histogram()
    for v in values:
        h.add(v)
    ordered = sorted(values)
    previous = -1.0
    for q in (0.0, 10.0, 50.0, 90.0, 99.0, 99.9, 100.0):
        estimate = h.percentile(q)
        assert min(values) <= estimate <= max(values)
        assert estimate >= previous
        previous = estimate
        # the true value at that rank lies in the same power-of-two bucket
        rank = max(1, -(-int(q * len(values)) // 100)) if q else 1
        true = ordered[min(rank, len(values)) - 1]
        assert true // 2 <= estimate <= max(2 * true + 1, 1)


@given(st.lists(st.integers(0, 10**6), max_size=50), st.lists(st.integers(0, 10**6), max_size=50))
def test_merge_equals_adding_everything(a: list[int], b: list[int]) -> None:
    ha, hb, hall = Log2Histogram(), Log2Histogram(), Log2Histogram()
    for v in a:
        ha.add(v)
        hall.add(v)
    for v in b:
        hb.add(v)
        hall.add(v)
    ha.merge(hb)
    assert (ha.counts, ha.count, ha.total) == (hall.counts, hall.count, hall.total)
    if a or b:
        assert (ha.min, ha.max) == (min(a + b), max(a + b))


def test_interrupt_stats_snapshot_counts_and_serializes() -> None:
    def isr(message_id: int) -> IsrResult:
        return IsrResult(message_id == 0, True, 0)  # message 1 answers "not mine"

    def dpc(_m: int, _ctx: Any, t: ReceiveThrottleParameters) -> None:
        t.indicated = 5

    m = RecordingMiniport(isr_script=isr, dpc_script=dpc)
    a = MiniportAdapter("stats")
    a.set_miniport_attributes()
    with register_interrupt(
        a, None, m.characteristics(), EventfdSource({InterruptType.MSIX: 2})
    ) as i:
        for n in range(1, 4):
            i.source.fire(0)  # type: ignore[attr-defined]
            m.wait_count("enable", n, message_id=0)
        i.source.fire(1)  # type: ignore[attr-defined]
        m.wait_count("enable", 1, message_id=1)
        assert i.wait_idle(20.0)
        s = i.stats
    m0, m1 = s[0], s[1]
    assert (m0.interrupts, m0.not_mine, m0.dpc_runs, m0.reenables, m0.indicated) == (3, 0, 3, 3, 15)
    assert (m1.interrupts, m1.not_mine, m1.dpc_runs) == (1, 1, 1)
    assert s.total("interrupts") == 4 and s.total("indicated") == 20
    assert s.indicated_per_dpc.count == 4 and s.indicated_per_dpc.percentile(50) == 5
    assert s.isr_to_dpc_ns.count == 4
    d = json.loads(json.dumps(s.to_dict()))
    assert d["granted_type"] == "MSI-X"
    assert d["totals"]["not_mine"] == 1
    assert d["messages"][0]["isr_to_dpc_ns"]["count"] == 3
    assert set(d["isr_to_dpc_ns"]) >= {"p50", "p90", "p99", "p99.9", "buckets"}
