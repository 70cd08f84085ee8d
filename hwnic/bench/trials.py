"""RFC 2544 trials on real (or fake) ports, opened once for a whole search.

:class:`TrialPorts` opens the sending port and the receiving one (two ports on
one wire: the receiver in a process of its own, as ``bench loopback`` does),
or a single port whose frames an external reflector sends back. Each trial:

1. takes the next *stream* (:mod:`hwnic.bench.pool`): its sequence numbers
   start at the stream's base, so the receiver counts them apart from late
   frames of earlier trials (those are reported as ``stale``, not counted);
2. sends open loop (no window): paced at the trial's rate for its duration,
   or a burst of N frames back to back;
3. waits until the NIC reclaimed every posted frame (``sent`` counts frames
   posted and reclaimed), then until every frame arrived or nothing arrived
   for ``wait`` seconds (RFC 2544 waits 2 s);
4. reads the stream's count: ``received``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import hwnic
from hwnic.bench import rfc2544
from hwnic.bench.options import (
    DEFAULT_BATCH,
    DEFAULT_BUDGET,
    DEFAULT_RING,
    BenchSettings,
    SizeMix,
    parse_sizes,
)
from hwnic.bench.pool import MAX_STREAM_FRAMES, STREAMS, FramePool, stream_base
from hwnic.bench.remote import RemoteReceiver
from hwnic.bench.runner import (
    Opener,
    Port,
    RxCounter,
    TxWorker,
    describe_model,
    open_kwargs,
)
from hwnic.errors import HwnicError

DEFAULT_TRIAL_SECONDS = 10.0  # RFC 2544 says 60 s; 10 s keeps a 7-size search in minutes
DEFAULT_WAIT = 2.0  # s without a frame arriving before the rest counts as lost (RFC: 2 s)
DRAIN_TIMEOUT = 5.0  # s for the NIC to send what was posted
POLL = 0.01  # s between two looks at the receiver's count while waiting
PROGRESS_INTERVAL = 1.0  # s between two progress reports during a trial


class LinkDown(HwnicError):
    """The sending port has no link: there is no line rate to measure against."""


@dataclass(frozen=True)
class TrialSettings:
    """How the ports are opened and trials sent (saved with the results)."""

    trial_seconds: float = DEFAULT_TRIAL_SECONDS
    wait: float = DEFAULT_WAIT
    batch: int = DEFAULT_BATCH
    budget: int = DEFAULT_BUDGET
    ring_size: int = DEFAULT_RING
    interrupt: str | None = None
    itr_us: float | None = None
    reflector: bool = False  # one port; an external reflector sends its frames back

    def bench(self, size: int, rate: float | None, count: int | None) -> BenchSettings:
        """The BenchSettings a TxWorker sends one trial with."""
        duration = None if count is not None else self.trial_seconds
        return BenchSettings(
            mode="tx",
            sizes=_mix(rfc2544.frame_length(size)),
            count=count if count is not None else MAX_STREAM_FRAMES,
            duration=duration,
            rate=rate,
            batch=self.batch,
            budget=self.budget,
            interrupt=self.interrupt,
            itr_us=self.itr_us,
            ring_size=self.ring_size,
        )


def _mix(length: int) -> SizeMix:
    return parse_sizes(str(length))


Progress = Callable[[str], None]  # a line of progress during a trial


def _genuine(opener: Opener) -> bool:
    """``hwnic.open`` itself (a stand-in, e.g. bench.testing's fake wire, is not)."""
    return getattr(opener, "__module__", None) == "hwnic" and opener.__name__ == "open"


class TrialPorts:
    """The ports of a search; a context manager. ``rate_trial``/``burst_trial`` run trials."""

    def __init__(
        self,
        settings: TrialSettings,
        *,
        tx: str,
        rx: str | None,
        opener: Opener | None = None,
        receiver_process: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        progress: Progress | None = None,
    ) -> None:
        if opener is None:
            opener = hwnic.open
        if receiver_process is None:  # real ports: the receiver in its own process
            receiver_process = _genuine(opener) and not settings.reflector
        self.settings = settings
        self.tx_bdf = tx
        self.rx_bdf = tx if settings.reflector else rx
        self.opener = opener
        self.receiver_process = receiver_process
        self.clock = clock
        self.progress = progress
        self.ports: dict[str, Port] = {}
        self.counter_args: dict[str, Any] = {"queues": 1, "streams": True}
        self.counter: RxCounter | RemoteReceiver = RxCounter(**self.counter_args, clock=clock)
        self.tx_cpus: set[int] | None = None
        self.stop = threading.Event()
        self._pools: dict[int, FramePool] = {}
        self._stream = 0
        self._stack = contextlib.ExitStack()

    # -- opening and closing -------------------------------------------------------------

    def __enter__(self) -> TrialPorts:
        try:
            self._open()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._stack.close()

    def _open(self) -> None:
        s = self.settings
        bench = replace(BenchSettings(), budget=s.budget, ring_size=s.ring_size)
        kwargs = open_kwargs(replace(bench, interrupt=s.interrupt, itr_us=s.itr_us))
        stack = self._stack
        if s.reflector:
            assert isinstance(self.counter, RxCounter)
            nic = stack.enter_context(self.opener(self.tx_bdf, on_receive=self.counter, **kwargs))
            model = describe_model(self.tx_bdf, nic)
            self.ports["tx"] = Port("tx", self.tx_bdf, nic, model)
            self.ports["rx"] = Port("rx", self.tx_bdf, nic, model)
        else:
            assert self.rx_bdf is not None
            if self.receiver_process:
                remote = stack.enter_context(RemoteReceiver(self.rx_bdf, kwargs, self.counter_args))
                self.counter = remote
                self.ports["rx"] = Port("rx", self.rx_bdf, None, remote.info["model"], remote)
                free = set(os.sched_getaffinity(0)) - set(remote.cpus)
                self.tx_cpus = free or None
            else:
                assert isinstance(self.counter, RxCounter)
                nic = stack.enter_context(
                    self.opener(self.rx_bdf, on_receive=self.counter, **kwargs)
                )
                self.ports["rx"] = Port("rx", self.rx_bdf, nic, describe_model(self.rx_bdf, nic))
            nic = stack.enter_context(self.opener(self.tx_bdf, **kwargs))
            self.ports["tx"] = Port("tx", self.tx_bdf, nic, describe_model(self.tx_bdf, nic))
        link = self.ports["tx"].local.link
        if not link.up or not link.speed_mbps:
            raise LinkDown(
                f"{self.tx_bdf} has no link (speed {link.speed_mbps} Mbit/s)",
                "connect the port (in the lab: the hub), or raise --wait-link",
            )

    @property
    def speed_mbps(self) -> int:
        """The sending port's link speed: what line rate means."""
        return int(self.ports["tx"].local.link.speed_mbps)

    def info(self) -> list[dict[str, Any]]:
        return [p.info() for p in self.ports.values()]

    def stats(self) -> dict[str, dict[str, Any]]:
        return {role: p.stats() for role, p in self.ports.items()}

    # -- trials --------------------------------------------------------------------------

    def rate_trial(self, size: int, rate: float | None) -> rfc2544.Trial:
        """Send at ``rate`` frames/s (None: as fast as possible) for the trial duration."""
        return self._trial(size, rate=rate, count=None)

    def burst_trial(self, size: int, frames: int) -> rfc2544.Trial:
        """Send ``frames`` back to back, as fast as the sender goes."""
        return self._trial(size, rate=None, count=frames)

    def _pool(self, size: int) -> FramePool:
        if size not in self._pools:
            length = rfc2544.frame_length(size)
            dst = self.ports["rx"].mac if not self.settings.reflector else self.ports["tx"].mac
            self._pools[size] = FramePool(_mix(length), self.ports["tx"].mac, dst)
        return self._pools[size]

    def _trial(self, size: int, *, rate: float | None, count: int | None) -> rfc2544.Trial:
        stream = self._stream
        self._stream = (stream + 1) % STREAMS
        before = self.counter.stream_totals()
        nic = self.ports["tx"].local
        worker = TxWorker(
            nic,
            self._pool(size),
            self.settings.bench(size, rate, count),
            self.stop,
            clock=self.clock,
            cpus=self.tx_cpus,
            seq_base=stream_base(stream),
        )
        worker.start()
        try:
            while worker.is_alive():
                worker.join(PROGRESS_INTERVAL)
                if worker.is_alive():
                    self._report(stream, before, worker.frames, "sending")
        except KeyboardInterrupt:
            self.stop.set()
            worker.join()
            raise
        if worker.error is not None:
            raise worker.error
        nic.flush(DRAIN_TIMEOUT)
        sent = worker.frames
        seconds = (worker.done_at or self.clock()) - worker.started_at
        self._wait_for(stream, before, sent)
        after = self.counter.stream_totals()
        received = int(after[stream] - before[stream])
        stale = int((after - before).sum()) - received
        return rfc2544.Trial(
            size=size,
            sent=sent,
            received=received,
            seconds=seconds,
            target_fps=rate,
            burst=count,
            stale=stale,
        )

    def _received(self, stream: int, before: Any) -> int:
        return int(self.counter.stream_totals()[stream] - before[stream])

    def _wait_for(self, stream: int, before: Any, sent: int) -> None:
        """Until every frame arrived, or none arrived for ``wait`` s."""
        seen = self._received(stream, before)
        quiet_since = self.clock()
        while seen < sent:
            time.sleep(POLL)
            now_seen = self._received(stream, before)
            now = self.clock()
            if now_seen != seen:
                seen, quiet_since = now_seen, now
            elif now - quiet_since >= self.settings.wait:
                return

    def _report(self, stream: int, before: Any, sent: int, phase: str) -> None:
        if self.progress is not None:
            got = self._received(stream, before)
            self.progress(f"    {phase}: sent {sent:,}, received {got:,}")
