"""A fake pair of ports cabled back to back, for host tests of the benchmark tools.

:class:`FakeWire` hands out :class:`FakeNic` objects through :meth:`FakeWire.open`
(same signature as ``hwnic.open``). A frame sent on one arrives on the other:
to its ``on_receive`` callback, or queued for ``receive()``; the wire can drop
a share of what it carries (``drop_every``). Interrupt statistics are the
real :class:`~hwnic.ndis.stats.InterruptStats`, updated once per batch.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from hwnic.bench.runner import BenchNic
from hwnic.ndis.stats import InterruptStats, MessageStats

FAKE_LATENCY_NS = 20_000


@dataclass
class FakeLink:
    up: bool = True
    speed_mbps: int = 1000


class FakeBatch:
    """What RxBatch offers: count, lengths, frames, release()."""

    def __init__(self, frames: np.ndarray, lengths: np.ndarray) -> None:
        self.frames = frames
        self.lengths = lengths
        self.released = False

    @property
    def count(self) -> int:
        return len(self.lengths)

    def release(self) -> None:
        self.released = True


class FakeInterrupt:
    def __init__(self) -> None:
        self.granted_type = "MSI-X"
        self._message = MessageStats(0)
        self._lock = threading.Lock()

    def record(self, frames: int, budget: int) -> None:
        with self._lock:
            m = self._message
            m.interrupts += 1
            runs = max(1, -(-frames // budget))
            m.dpc_runs += runs
            m.more_pending += runs - 1
            m.indicated += frames
            m.isr_to_dpc_ns.add(FAKE_LATENCY_NS)
            left = frames
            for _ in range(runs):  # a few DPC runs per batch: test data, not a hot path
                m.indicated_per_dpc.add(min(left, budget))
                left -= budget

    @property
    def stats(self) -> InterruptStats:
        with self._lock:
            m = MessageStats(0)
            for name, value in self._message.counters().items():
                setattr(m, name, value)
            m.isr_to_dpc_ns.merge(self._message.isr_to_dpc_ns)
            m.indicated_per_dpc.merge(self._message.indicated_per_dpc)
            return InterruptStats(self.granted_type, [m])


class FakeNic:
    family = "igb"

    def __init__(
        self,
        wire: FakeWire,
        index: int,
        bdf: str,
        config: dict[str, Any],
        on_receive: Callable[[int, Any], None] | None,
    ) -> None:
        self.wire = wire
        self.index = index
        self.bdf = bdf
        self.config = config
        self.budget = int(config.get("budget", 64))
        self.on_receive = on_receive
        self.mac = f"02:00:00:00:00:{index + 1:02x}"
        self.link = FakeLink()
        self.interrupt = FakeInterrupt()
        self.closed = False
        self.sent = 0
        self.sent_bytes = 0
        self.received = 0
        self.queue: collections.deque[FakeBatch] = collections.deque()
        self.cond = threading.Condition()

    def send(
        self,
        frames: np.ndarray,
        lengths: np.ndarray | None = None,
        *,
        queue: int = 0,
        timeout: float | None = 1.0,
    ) -> int:
        if self.closed:
            raise RuntimeError("send on a closed fake NIC")
        if lengths is None:
            lengths = np.full(len(frames), frames.shape[1])
        n = len(lengths)
        self.sent += n
        self.sent_bytes += int(np.asarray(lengths).sum())
        self.interrupt.record(n, self.budget)
        self.wire.carry(self, np.array(frames[:n], copy=True), np.array(lengths[:n], copy=True))
        return n

    def deliver(self, frames: np.ndarray, lengths: np.ndarray) -> None:
        if self.closed or not len(lengths):
            return
        self.received += len(lengths)
        self.interrupt.record(len(lengths), self.budget)
        batch = FakeBatch(frames, lengths)
        if self.on_receive is not None:
            self.on_receive(0, batch)
            return
        with self.cond:
            self.queue.append(batch)
            self.cond.notify_all()

    def receive(self, timeout: float | None = None, queue: int | None = None) -> FakeBatch | None:
        with self.cond:
            if not self.queue and timeout != 0:
                self.cond.wait_for(lambda: bool(self.queue), timeout)
            return self.queue.popleft() if self.queue else None

    def stats(self) -> dict[str, Any]:
        return {
            "bdf": self.bdf,
            "family": self.family,
            "interrupt_type": self.interrupt.granted_type,
            "rx": [{"frames": self.received}],
            "tx": [{"frames": self.sent, "bytes": self.sent_bytes}],
            "backlog_drops": 0,
            "link_changes": 0,
            "hw": {"gprc": self.received, "gptc": self.sent, "mpc": 0, "rnbc": 0},
            "interrupts": self.interrupt.stats.to_dict(),
        }

    def flush(self, timeout: float = 1.0) -> bool:
        """The fake wire carries frames at once: nothing is ever in flight."""
        return True

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> FakeNic:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FakeWire:
    """Two (or more) fake ports on one hub; ``drop_every=k`` loses every k-th frame.

    ``reflect``: a reflector at the far end, every frame also comes back to its sender.
    """

    def __init__(self, drop_every: int = 0, *, reflect: bool = False) -> None:
        self.nics: dict[str, FakeNic] = {}
        self.drop_every = drop_every
        self.reflect = reflect
        self.carried = 0
        self.opened: list[tuple[str, dict[str, Any]]] = []

    def open(
        self, bdf: str, *, on_receive: Callable[[int, Any], None] | None = None, **config: Any
    ) -> FakeNic:
        nic = FakeNic(self, len(self.nics), bdf, config, on_receive)
        self.nics[bdf] = nic
        self.opened.append((bdf, config))
        return nic

    def carry(self, sender: FakeNic, frames: np.ndarray, lengths: np.ndarray) -> None:
        keep = np.ones(len(lengths), dtype=bool)
        if self.drop_every:
            index = self.carried + np.arange(len(lengths))
            keep = (index + 1) % self.drop_every != 0
        self.carried += len(lengths)
        for nic in list(self.nics.values()):
            if nic is not sender or self.reflect:
                nic.deliver(frames[keep], lengths[keep])


def as_bench_nic(nic: FakeNic) -> BenchNic:
    """A FakeNic is a port for the bench (mypy checks it here)."""
    return nic
