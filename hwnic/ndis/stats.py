"""Per-message interrupt statistics: counters and log2 histograms.

Every counter has one writer (a message's processor thread, one DPC slot, or code
holding the message's batch lock), so the hot paths need no extra locking;
:class:`MessageStats` is a merged snapshot taken on demand.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

# Bucket k holds values v with v.bit_length() == k: 0, 1, 2-3, 4-7, ... up to 2**64.
_BUCKETS = 65
DEFAULT_PERCENTILES = (50.0, 90.0, 99.0, 99.9)


class Log2Histogram:
    """Counts of non-negative integers in power-of-two buckets."""

    __slots__ = ("count", "counts", "max", "min", "total", "unit")

    def __init__(self, unit: str = "") -> None:
        self.unit = unit
        self.counts = [0] * _BUCKETS
        self.count = 0
        self.total = 0
        self.min = 0
        self.max = 0

    def add(self, value: int) -> None:
        # A hot path (twice per DPC): as few attribute writes as possible.
        if value < 0:
            value = 0  # clocks are monotonic; guard anyway so a bucket index is valid
        self.counts[value.bit_length()] += 1
        count = self.count
        if value > self.max:
            self.max = value
        if value < self.min or not count:
            self.min = value
        self.count = count + 1
        self.total += value

    def merge(self, other: Log2Histogram) -> None:
        if not other.count:
            return
        counts = list(other.counts)  # one C-level copy: consistent enough while it grows
        for i, n in enumerate(counts):
            self.counts[i] += n
        self.min = other.min if not self.count else min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.count += other.count
        self.total += other.total

    @classmethod
    def merged(cls, histograms: Iterable[Log2Histogram], unit: str = "") -> Log2Histogram:
        out = cls(unit)
        for h in histograms:
            out.merge(h)
        return out

    @staticmethod
    def bucket_bounds(index: int) -> tuple[int, int]:
        """Smallest and largest value of bucket ``index``."""
        if index == 0:
            return 0, 0
        return 1 << (index - 1), (1 << index) - 1

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def percentile(self, q: float) -> float:
        """Estimate of the ``q``-th percentile (0..100), interpolated inside its bucket.

        Exact to within the bucket (a factor of two), clamped to the observed
        minimum and maximum; 0.0 when empty.
        """
        if not 0.0 <= q <= 100.0:
            raise ValueError(f"percentile {q} outside 0..100")
        counts = list(self.counts)
        n = sum(counts)
        if not n:
            return 0.0
        rank = q / 100.0 * n
        seen = 0
        for index, c in enumerate(counts):
            if c and seen + c >= rank:
                low, high = self.bucket_bounds(index)
                estimate = low + (high - low) * max(rank - seen, 0.0) / c
                return float(min(max(estimate, self.min), self.max))
            seen += c
        return float(self.max)

    def percentiles(self, qs: Iterable[float] = DEFAULT_PERCENTILES) -> dict[str, float]:
        return {f"p{q:g}": self.percentile(q) for q in qs}

    def to_dict(self) -> dict[str, Any]:
        buckets = {
            f"{self.bucket_bounds(i)[0]}-{self.bucket_bounds(i)[1]}": c
            for i, c in enumerate(self.counts)
            if c
        }
        return {
            "unit": self.unit,
            "count": self.count,
            "min": self.min,
            "max": self.max,
            "mean": self.mean,
            **self.percentiles(),
            "buckets": buckets,
        }


class IsrCounters:
    """Written only by the message's processor thread (its ISR)."""

    __slots__ = ("interrupts", "isr_errors", "not_mine")

    def __init__(self) -> None:
        self.interrupts = 0
        self.not_mine = 0
        self.isr_errors = 0


class BatchCounters:
    """Written only under a message's batch lock."""

    __slots__ = (
        "batches",
        "dpcs_coalesced",
        "dpcs_queued",
        "dpcs_redirected",
        "early_reenables",
        "enable_errors",
        "reenables",
    )

    def __init__(self) -> None:
        self.dpcs_queued = 0
        self.dpcs_coalesced = 0
        self.dpcs_redirected = 0
        self.batches = 0
        self.reenables = 0
        self.early_reenables = 0
        self.enable_errors = 0


class WorkerCounters:
    """Written only by one DPC slot, on its processor's thread."""

    __slots__ = (
        "dpc_errors",
        "dpc_runs",
        "dpcs_discarded",
        "indicated",
        "indicated_per_dpc",
        "isr_to_dpc_ns",
        "more_pending",
        "time_cutoffs",
    )

    def __init__(self) -> None:
        self.dpc_runs = 0
        self.dpc_errors = 0
        self.more_pending = 0
        self.time_cutoffs = 0
        self.dpcs_discarded = 0
        self.indicated = 0
        self.isr_to_dpc_ns = Log2Histogram("ns")
        self.indicated_per_dpc = Log2Histogram("items")


@dataclass
class MessageStats:
    """A snapshot of one message's counters.

    ``interrupts``: ISR calls; ``not_mine``: ISR answered "not mine";
    ``dpcs_queued``/``dpcs_coalesced``: DPC requests that queued a DPC / found
    one already waiting on that CPU; ``dpcs_redirected``: requests for CPUs
    outside the affinity set, run on the message's target CPU instead;
    ``dpc_runs``: DPC calls (re-runs included); ``more_pending``: calls that
    used up the budget and asked to run again; ``time_cutoffs``: re-run loops
    cut by the time bound (the DPC yielded and was re-queued); ``batches``:
    interrupt DPC batches started; ``reenables``: re-enables by the framework;
    ``early_reenables``: batches the DPC re-enabled itself; ``dpcs_discarded``:
    DPCs dropped unrun at deregistration.
    """

    message_id: int
    interrupts: int = 0
    not_mine: int = 0
    isr_errors: int = 0
    dpcs_queued: int = 0
    dpcs_coalesced: int = 0
    dpcs_redirected: int = 0
    dpc_runs: int = 0
    dpc_errors: int = 0
    more_pending: int = 0
    time_cutoffs: int = 0
    batches: int = 0
    reenables: int = 0
    early_reenables: int = 0
    enable_errors: int = 0
    dpcs_discarded: int = 0
    indicated: int = 0
    isr_to_dpc_ns: Log2Histogram = field(default_factory=lambda: Log2Histogram("ns"))
    indicated_per_dpc: Log2Histogram = field(default_factory=lambda: Log2Histogram("items"))

    @classmethod
    def collect(
        cls,
        message_id: int,
        isr: IsrCounters,
        batch: BatchCounters,
        workers: Iterable[WorkerCounters],
    ) -> MessageStats:
        s = cls(message_id)
        for name in IsrCounters.__slots__:
            setattr(s, name, getattr(isr, name))
        for name in BatchCounters.__slots__:
            setattr(s, name, getattr(batch, name))
        for w in workers:
            s.dpc_runs += w.dpc_runs
            s.dpc_errors += w.dpc_errors
            s.more_pending += w.more_pending
            s.time_cutoffs += w.time_cutoffs
            s.dpcs_discarded += w.dpcs_discarded
            s.indicated += w.indicated
            s.isr_to_dpc_ns.merge(w.isr_to_dpc_ns)
            s.indicated_per_dpc.merge(w.indicated_per_dpc)
        return s

    def counters(self) -> dict[str, int]:
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if isinstance(getattr(self, f.name), int)
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.counters(),
            "isr_to_dpc_ns": self.isr_to_dpc_ns.to_dict(),
            "indicated_per_dpc": self.indicated_per_dpc.to_dict(),
        }


@dataclass
class InterruptStats:
    """A snapshot of every message of one registered interrupt."""

    granted_type: str
    messages: list[MessageStats]

    def total(self, counter: str) -> int:
        return sum(int(getattr(m, counter)) for m in self.messages)

    def __getitem__(self, message_id: int) -> MessageStats:
        return self.messages[message_id]

    @property
    def isr_to_dpc_ns(self) -> Log2Histogram:
        return Log2Histogram.merged((m.isr_to_dpc_ns for m in self.messages), "ns")

    @property
    def indicated_per_dpc(self) -> Log2Histogram:
        return Log2Histogram.merged((m.indicated_per_dpc for m in self.messages), "items")

    def to_dict(self) -> dict[str, Any]:
        first = self.messages[0].counters() if self.messages else {}
        names = [n for n in first if n != "message_id"]
        return {
            "granted_type": self.granted_type,
            "totals": {n: self.total(n) for n in names},
            "isr_to_dpc_ns": self.isr_to_dpc_ns.to_dict(),
            "indicated_per_dpc": self.indicated_per_dpc.to_dict(),
            "messages": [m.to_dict() for m in self.messages],
        }
