"""The measurement loop: open the ports, send from a worker thread, count in the DPC.

* The receiving port counts in its ``on_receive`` callback (DPC context: a
  few additions per batch, then ``release``), one counter set per queue so
  every counter has one writer.
* The sending port is fed by :class:`TxWorker` from a prebuilt
  :class:`~hwnic.bench.pool.FramePool`, one ``send`` (one tail write) per
  batch, paced per batch.
* The main thread samples the counters every ``SAMPLE_INTERVAL`` seconds for
  the live view and the rate-over-time plot, and is where Ctrl-C lands: the
  worker is stopped, what was measured so far is kept, the NICs are closed.
* When sending ends, a loopback run waits for the stragglers (until every
  frame arrived, or nothing arrived for ``SETTLE_IDLE`` s). Loss is frames
  sent minus frames received: QEMU counts no drops (docs/lab.md).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from hwnic import open as _GENUINE_OPEN
from hwnic import traffic
from hwnic.bench.options import BenchSettings
from hwnic.bench.pacing import Pacer
from hwnic.bench.pool import STREAMS, FramePool, count_streams
from hwnic.bench.remote import RemoteReceiver
from hwnic.ndis.stats import InterruptStats

SAMPLE_INTERVAL = 0.5  # s between samples (the live view refreshes at the same pace)
SEND_TIMEOUT = 1.0  # s one send() may wait for room in the TX ring
SETTLE_IDLE = 2.0  # s without a received frame after sending ends: the rest is lost
SETTLE_MAX = 15.0  # s to wait for stragglers at most
DRAIN_TIMEOUT = 3.0  # s a tx-only run waits for the NIC to finish what was posted
WINDOW_POLL = 0.0001  # s between two looks at the receiver's count while the window is full
WINDOW_STALL = 0.5  # s without a frame arriving before the frames in flight are given up
BROADCAST = "ff:ff:ff:ff:ff:ff"
IRQ_COUNTERS = ("interrupts", "dpc_runs", "more_pending", "time_cutoffs", "indicated")
INTERRUPT_TYPES = {"msix": "MSIX", "msi": "MSI", "line": "LINE_BASED"}

Opener = Callable[..., Any]


class ViewLike(Protocol):
    def update(self, progress: Progress) -> None: ...


class InterruptLike(Protocol):
    """What the bench reads of a NIC's interrupt (NdisInterrupt, or a fake's)."""

    @property
    def granted_type(self) -> object: ...
    @property
    def stats(self) -> InterruptStats: ...


class LinkLike(Protocol):
    @property
    def up(self) -> bool: ...
    @property
    def speed_mbps(self) -> int: ...


class BenchNic(Protocol):
    """What the bench uses of a port: hwnic.nic.base.Nic, or the fakes of bench.testing."""

    @property
    def mac(self) -> str: ...
    @property
    def family(self) -> str: ...
    @property
    def link(self) -> LinkLike: ...
    @property
    def interrupt(self) -> InterruptLike | None: ...
    def send(
        self,
        frames: np.ndarray,
        lengths: np.ndarray | None = None,
        *,
        queue: int = 0,
        timeout: float | None = 1.0,
    ) -> int: ...
    def flush(self, timeout: float = 1.0) -> bool: ...
    def stats(self) -> dict[str, Any]: ...


@dataclass
class Port:
    """One opened NIC and what the report says about it."""

    role: str  # "tx" or "rx"
    bdf: str
    nic: BenchNic | None  # None when the port lives in a receiver process (``remote``)
    model: str
    remote: RemoteReceiver | None = None

    @property
    def mac(self) -> str:
        return self.remote.mac if self.remote is not None else self.local.mac

    @property
    def local(self) -> BenchNic:
        """The NIC of a port opened in this process."""
        assert self.nic is not None, f"{self.role} port {self.bdf} lives in another process"
        return self.nic

    def irq_totals(self) -> dict[str, int]:
        return self.remote.irq_totals() if self.remote is not None else irq_totals(self.local)

    def stats(self) -> dict[str, Any]:
        return self.remote.stats() if self.remote is not None else dict(self.local.stats())

    def info(self) -> dict[str, Any]:
        if self.remote is not None:
            return dict(self.remote.info)
        nic = self.local
        link = nic.link
        return {
            "role": self.role,
            "bdf": self.bdf,
            "model": self.model,
            "family": nic.family,
            "mac": nic.mac,
            "interrupt_type": str(nic.interrupt.granted_type) if nic.interrupt else None,
            "link_up": bool(link.up),
            "speed_mbps": int(link.speed_mbps),
        }


class RxCounter:
    """The ``on_receive`` callback: counts frames and bytes per queue, then releases.

    With ``streams`` it also counts test frames per stream (the top bits of
    their sequence numbers, see :mod:`hwnic.bench.pool`), one row per queue,
    so a trial counts its own frames only.
    """

    def __init__(
        self,
        queues: int,
        *,
        verify: bool = False,
        flows: bool = False,
        streams: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.frames = [0] * queues
        self.bytes = [0] * queues
        self.batches = [0] * queues
        self.bad = [0] * queues
        self.verify = verify
        self.flows = flows
        self.clock = clock
        self.last_at = 0.0  # monotonic time of the latest batch (0: none yet)
        # One row per queue (one writer each); the receiver process maps it on shared memory.
        self.streams: np.ndarray | None = (
            np.zeros((queues, STREAMS), dtype=np.int64) if streams else None
        )
        self.seq_col = traffic.payload_offset(flows)
        self.ethertype = traffic.ETHERTYPE_IPV4 if flows else traffic.ETHERTYPE_EXPERIMENTAL

    def __call__(self, queue: int, batch: Any) -> None:
        try:
            n = batch.count
            self.frames[queue] += n
            self.bytes[queue] += int(batch.lengths.sum())
            self.batches[queue] += 1
            if self.verify and n:
                self.bad[queue] += traffic.check(batch.frames, batch.lengths, flows=self.flows).bad
            if self.streams is not None and n:
                count_streams(batch.frames, self.seq_col, self.ethertype, self.streams[queue])
            self.last_at = self.clock()
        finally:
            batch.release()

    def totals(self) -> tuple[int, int, int]:
        return sum(self.frames), sum(self.bytes), sum(self.bad)

    def stream_totals(self) -> np.ndarray:
        """Test frames received per stream, all queues together (a copy)."""
        if self.streams is None:
            return np.zeros(STREAMS, dtype=np.int64)
        return np.asarray(self.streams.sum(axis=0))


class TxWorker(threading.Thread):
    """Sends the pool's frames in batches until the count or time is reached, or stop."""

    def __init__(
        self,
        nic: BenchNic,
        pool: FramePool,
        settings: BenchSettings,
        stop: threading.Event,
        clock: Callable[[], float] = time.monotonic,
        cpus: set[int] | None = None,
        received: Callable[[], int] | None = None,
        seq_base: int = 0,
    ) -> None:
        super().__init__(name="hwnic-bench-tx", daemon=True)
        self.seq_base = seq_base  # the first frame's sequence number (a stream's base)
        self.cpus = cpus  # pin the sender here (None: wherever the scheduler likes)
        # The loopback window: frames counted by the receiver so far.
        self.window = settings.in_flight_limit if received is not None else None
        self.received = received
        self.written_off = 0  # frames given up as lost after a stall (window only)
        self.window_stalls = 0
        self.nic = nic
        self.pool = pool
        self.settings = settings
        self.stop = stop
        self.clock = clock
        self.frames = 0
        self.bytes = 0
        self.calls = 0
        self.stalls = 0  # send() calls that timed out with the ring still full
        self.started_at = clock()
        self.done_at: float | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        s = self.settings
        if self.cpus:
            os.sched_setaffinity(0, self.cpus)  # this thread only
        pacer = Pacer(s.rate, clock=self.clock, sleep=self.stop.wait)
        self.started_at = pacer.start
        deadline = None if s.time_limit is None else self.started_at + s.time_limit
        queue = 0
        try:
            while not self.stop.is_set():
                want = s.batch if s.count is None else min(s.batch, s.count - self.frames)
                if want <= 0 or (deadline is not None and self.clock() >= deadline):
                    break
                pacer.wait(self.frames)
                if self.window is not None:
                    want = min(want, self.window)
                    self._wait_for_room(want)
                rows, lengths = self.pool.take(self.seq_base + self.frames, want)
                k = self.nic.send(rows, lengths, queue=queue, timeout=SEND_TIMEOUT)
                self.calls += 1
                if k < len(rows):
                    self.stalls += 1
                self.bytes += int(lengths[:k].sum())
                self.frames += k
                queue = (queue + 1) % s.queues
        except BaseException as exc:  # re-raised by the main thread
            self.error = exc
        finally:
            self.done_at = self.clock()

    def _wait_for_room(self, want: int) -> None:
        """Wait until ``want`` more frames fit in the window (loopback).

        A frame lost on the way would hold the window forever: after
        ``WINDOW_STALL`` s without progress the frames in flight are written
        off (they still count as lost unless they arrive later).
        """
        assert self.window is not None and self.received is not None
        received = self.received
        seen = received()
        stalled_since: float | None = None
        while not self.stop.is_set():
            if self.frames - self.written_off - seen + want <= self.window:
                return
            time.sleep(WINDOW_POLL)
            now_seen = received()
            if now_seen != seen:
                seen, stalled_since = now_seen, None
                continue
            now = self.clock()
            if stalled_since is None:
                stalled_since = now
            elif now - stalled_since >= WINDOW_STALL:
                self.written_off = self.frames - seen
                self.window_stalls += 1


@dataclass
class Sample:
    """Counters at one moment, ``t`` seconds after sending started."""

    t: float
    tx_frames: int = 0
    tx_bytes: int = 0
    rx_frames: int = 0
    rx_bytes: int = 0
    rx_bad: int = 0
    irq: dict[str, dict[str, int]] = field(default_factory=dict)  # role -> counter -> total

    def to_dict(self) -> dict[str, Any]:
        return {
            "t": round(self.t, 6),
            "tx_frames": self.tx_frames,
            "tx_bytes": self.tx_bytes,
            "rx_frames": self.rx_frames,
            "rx_bytes": self.rx_bytes,
            "rx_bad": self.rx_bad,
            "irq": self.irq,
        }


@dataclass
class Progress:
    """What the live view shows: totals and the rates over the last interval."""

    elapsed: float
    phase: str  # sending, settling, receiving, done
    tx_frames: int
    rx_frames: int
    tx_pps: float
    rx_pps: float
    tx_mbps: float
    rx_mbps: float
    loss: int | None
    irq: dict[str, dict[str, float]]  # role -> {interrupts_per_s, dpc_runs, more_pending, ...}


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


def mbps(nbytes: int, seconds: float) -> float:
    """Mbit/s of frame bytes (no FCS, preamble or gap)."""
    return nbytes * 8 / seconds / 1e6 if seconds > 0 else 0.0


def progress(prev: Sample, cur: Sample, phase: str, loopback: bool) -> Progress:
    dt = cur.t - prev.t
    irq: dict[str, dict[str, float]] = {}
    for role, counters in cur.irq.items():
        before = prev.irq.get(role, {})
        irq[role] = {
            "interrupts_per_s": rate(counters["interrupts"] - before.get("interrupts", 0), dt),
            **{name: float(counters[name]) for name in IRQ_COUNTERS},
        }
    return Progress(
        elapsed=cur.t,
        phase=phase,
        tx_frames=cur.tx_frames,
        rx_frames=cur.rx_frames,
        tx_pps=rate(cur.tx_frames - prev.tx_frames, dt),
        rx_pps=rate(cur.rx_frames - prev.rx_frames, dt),
        tx_mbps=mbps(cur.tx_bytes - prev.tx_bytes, dt),
        rx_mbps=mbps(cur.rx_bytes - prev.rx_bytes, dt),
        loss=cur.tx_frames - cur.rx_frames if loopback else None,
        irq=irq,
    )


@dataclass
class BenchResult:
    """A finished (or interrupted) run: settings, ports, samples and final statistics."""

    settings: BenchSettings
    ports: list[dict[str, Any]]
    samples: list[Sample]
    tx_frames: int
    tx_bytes: int
    tx_seconds: float  # from the first send to the last
    tx_calls: int
    tx_stalls: int
    rx_frames: int
    rx_bytes: int
    rx_bad: int
    rx_seconds: float  # from the first send (rx mode: first sample) to the last batch
    stats: dict[str, dict[str, Any]]  # role -> Nic.stats()
    interrupted: bool = False
    tx_window_stalls: int = 0  # times the loopback window gave frames in flight up as lost

    @property
    def loopback(self) -> bool:
        return self.settings.mode == "loopback"

    @property
    def loss(self) -> int | None:
        return self.tx_frames - self.rx_frames if self.loopback else None


def irq_totals(nic: BenchNic) -> dict[str, int]:
    if nic.interrupt is None:
        return dict.fromkeys(IRQ_COUNTERS, 0)
    stats = nic.interrupt.stats
    return {name: int(stats.total(name)) for name in IRQ_COUNTERS}


def tx_in_flight(nic: BenchNic) -> int:
    """Frames posted on the NIC's TX rings and not yet reclaimed."""
    return sum(int(q.get("in_flight", 0)) for q in nic.stats().get("tx", []))


def describe_model(bdf: str, nic: BenchNic) -> str:
    try:
        from hwnic import pci

        return pci.describe(bdf).model
    except Exception:  # a fake NIC, or sysfs gone: the family says enough
        return str(nic.family)


def open_kwargs(settings: BenchSettings) -> dict[str, Any]:
    """Keyword arguments for ``hwnic.open`` from the settings."""
    kwargs: dict[str, Any] = {
        "queues": settings.queues,
        "budget": settings.budget,
        "ring_size": settings.ring_size,
        "itr_us": settings.itr_us,
    }
    if max(settings.sizes.lengths) > traffic.MAX_FRAME:  # jumbo frames: LPE, spanning buffers
        kwargs["max_frame"] = traffic.MAX_JUMBO_FRAME
    if settings.interrupt is not None:
        from hwnic.ndis import InterruptType

        kwargs["interrupt"] = InterruptType[INTERRUPT_TYPES[settings.interrupt]]
    return kwargs


class Bench:
    """One run. ``run()`` returns a :class:`BenchResult`, also after Ctrl-C."""

    def __init__(
        self,
        settings: BenchSettings,
        *,
        tx: str | None = None,
        rx: str | None = None,
        opener: Opener | None = None,
        view: ViewLike | None = None,
        clock: Callable[[], float] = time.monotonic,
        describe: Callable[[str, BenchNic], str] = describe_model,
        receiver_process: bool | None = None,
    ) -> None:
        self.settings = settings
        self.tx_bdf = tx
        self.rx_bdf = rx
        if opener is None:
            import hwnic

            opener = hwnic.open
        # Real ports in loopback: the receiver in its own process (see bench.remote).
        # A stand-in for hwnic.open (fake ports) lives only in this process.
        if receiver_process is None:
            receiver_process = opener is _GENUINE_OPEN and settings.mode == "loopback"
        self.receiver_process = receiver_process
        self.opener = opener
        self.view = view
        self.clock = clock
        self.describe = describe
        self.stop = threading.Event()
        self.ports: dict[str, Port] = {}
        self.counter_args: dict[str, Any] = {
            "queues": settings.queues,
            "verify": settings.verify,
            "flows": settings.queues > 1,
        }
        self.counter: RxCounter | RemoteReceiver = RxCounter(**self.counter_args, clock=clock)
        self.tx_cpus: set[int] | None = None  # where the sender runs (away from the receiver)
        self.worker: TxWorker | None = None
        self.samples: list[Sample] = []
        self.t0 = clock()
        self.phase = "opening"
        self.interval = SAMPLE_INTERVAL

    # -- sampling ------------------------------------------------------------------

    def sample(self) -> Sample:
        w = self.worker
        rx_frames, rx_bytes, rx_bad = self.counter.totals()
        s = Sample(
            t=self.clock() - self.t0,
            tx_frames=w.frames if w else 0,
            tx_bytes=w.bytes if w else 0,
            rx_frames=rx_frames,
            rx_bytes=rx_bytes,
            rx_bad=rx_bad,
            irq={role: p.irq_totals() for role, p in self.ports.items()},
        )
        self.samples.append(s)
        return s

    def _tick(self) -> None:
        """Sleep one interval, sample, show."""
        time.sleep(self.interval)
        prev = self.samples[-1]
        cur = self.sample()
        if self.view is not None:
            self.view.update(progress(prev, cur, self.phase, self.settings.mode == "loopback"))

    # -- the run ------------------------------------------------------------------------

    def run(self) -> BenchResult:
        s = self.settings
        interrupted = False
        with contextlib.ExitStack() as stack:
            self._open(stack)
            try:
                self._measure()
            except KeyboardInterrupt:
                interrupted = True
            finally:
                self.stop.set()
                if self.worker is not None:
                    self.worker.join()
                self.phase = "done"
                self.sample()
                if self.view is not None and len(self.samples) > 1:
                    self.view.update(
                        progress(self.samples[-2], self.samples[-1], "done", s.mode == "loopback")
                    )
            if self.worker is not None and self.worker.error is not None:
                raise self.worker.error
            stats = {role: p.stats() for role, p in self.ports.items()}
            ports = [p.info() for p in self.ports.values()]
        w = self.worker
        start = w.started_at if w else self.t0
        tx_seconds = (w.done_at or self.clock()) - w.started_at if w else 0.0
        last = self.counter.last_at
        rx_seconds = max(last - start, 0.0) if last else 0.0
        rx_frames, rx_bytes, rx_bad = self.counter.totals()
        return BenchResult(
            settings=s,
            ports=ports,
            samples=self.samples,
            tx_frames=w.frames if w else 0,
            tx_bytes=w.bytes if w else 0,
            tx_seconds=tx_seconds,
            tx_calls=w.calls if w else 0,
            tx_stalls=w.stalls if w else 0,
            rx_frames=rx_frames,
            rx_bytes=rx_bytes,
            rx_bad=rx_bad,
            rx_seconds=rx_seconds,
            stats=stats,
            interrupted=interrupted,
            tx_window_stalls=w.window_stalls if w else 0,
        )

    def _open(self, stack: contextlib.ExitStack) -> None:
        s = self.settings
        kwargs = open_kwargs(s)
        # The receiver first, so it is listening when the sender starts.
        if s.mode in ("rx", "loopback") and self.receiver_process:
            assert self.rx_bdf is not None
            remote = stack.enter_context(RemoteReceiver(self.rx_bdf, kwargs, self.counter_args))
            self.counter = remote
            self.ports["rx"] = Port("rx", self.rx_bdf, None, remote.info["model"], remote)
            # The sender on the CPUs the receiver's DPCs leave free, if any.
            free = set(os.sched_getaffinity(0)) - set(remote.cpus)
            self.tx_cpus = free or None
        elif s.mode in ("rx", "loopback"):
            assert self.rx_bdf is not None
            assert isinstance(self.counter, RxCounter)
            nic = stack.enter_context(self.opener(self.rx_bdf, on_receive=self.counter, **kwargs))
            self.ports["rx"] = Port("rx", self.rx_bdf, nic, self.describe(self.rx_bdf, nic))
        if s.mode in ("tx", "loopback"):
            assert self.tx_bdf is not None
            nic = stack.enter_context(self.opener(self.tx_bdf, **kwargs))
            self.ports["tx"] = Port("tx", self.tx_bdf, nic, self.describe(self.tx_bdf, nic))

    def _measure(self) -> None:
        s = self.settings
        if "tx" not in self.ports:
            self.t0 = self.clock()
            self.sample()
            self._receive_only()
            return
        tx = self.ports["tx"].local
        dst = self.ports["rx"].mac if "rx" in self.ports else BROADCAST
        pool = FramePool(s.sizes, tx.mac, dst, flows=s.queues if s.queues > 1 else 0)
        received = self._received if "rx" in self.ports else None
        self.worker = TxWorker(
            tx, pool, s, self.stop, clock=self.clock, cpus=self.tx_cpus, received=received
        )
        self.t0 = self.clock()
        self.sample()
        self.phase = "sending"
        self.worker.start()
        while self.worker.is_alive():
            self._tick()
        if self.worker.error is not None:
            return
        if "rx" in self.ports:
            self._settle()
        else:
            self._drain(tx)

    def _settle(self) -> None:
        """After sending: wait for frames still on their way."""
        self.phase = "settling"
        ended = self.clock()
        while self.counter.totals()[0] < self.worker_frames():
            now = self.clock()
            last = max(self.counter.last_at, ended)
            if now - last >= SETTLE_IDLE or now - ended >= SETTLE_MAX:
                break
            self._tick()

    def _drain(self, nic: BenchNic) -> None:
        """A tx-only run: let the NIC send what is posted before it is closed."""
        self.phase = "draining"
        ended = self.clock()
        while tx_in_flight(nic) and self.clock() - ended < DRAIN_TIMEOUT:
            self._tick()

    def _received(self) -> int:
        return self.counter.totals()[0]

    def worker_frames(self) -> int:
        return self.worker.frames if self.worker else 0

    def _receive_only(self) -> None:
        s = self.settings
        self.phase = "receiving"
        limit = s.time_limit
        while not self.stop.is_set():
            if s.count is not None and self.counter.totals()[0] >= s.count:
                break
            if limit is not None and self.clock() - self.t0 >= limit:
                break
            self._tick()
