"""Processors: one thread per CPU that takes the interrupts affine to it and runs its DPCs.

Windows runs a DPC that an ISR queued for its own CPU on that CPU as soon as
the ISR returns, without waking anything. A :class:`Processor` does the same
in user space: it is one thread pinned to one CPU that waits (epoll) on the
eventfds of the messages whose target CPU it is, calls their ISRs, and then
runs the DPCs in its queue, in order. A DPC queued from this thread (its own
ISR, or a DPC re-queued by the time bound) costs a deque append; one queued
from another thread also writes the processor's wake-up eventfd.

Between two DPCs the processor looks (without blocking) for interrupts that
arrived meanwhile, so an ISR waits at most for one DPC entry, which the time
bound keeps short. An ISR never runs inside a DPC, and two DPCs of one
processor never run at once (Windows' per-CPU DPC queue is stricter than the
per-(message, CPU) rule NDIS needs).

:meth:`Processor.start` returns after a first, non-blocking pass over the
eventfds, so an interrupt already pending at registration is serviced before
registration returns (as NDIS allows).
"""

from __future__ import annotations

import collections
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from hwnic.errors import InterruptError

# An ISR handler gets the ISR start time in time.perf_counter_ns() units.
Handler = Callable[[int], None]


class DpcRunner(Protocol):
    """What a queued DPC names: the (message, CPU) slot that runs it."""

    def run(self, context: Any, t_isr: int) -> None: ...


# A queued DPC: its runner, its DPC context, and the ISR start (0 if not queued by an ISR).
Entry = tuple[DpcRunner, Any, int]
_WAKE = 1
_FOREVER = -1
_NO_WAIT = 0

_local = threading.local()


def current_processor() -> int | None:
    """The CPU the calling ISR or DPC runs on (KeGetCurrentProcessorNumber), None elsewhere."""
    here = this_processor()
    return None if here is None else here.cpu


def this_processor() -> Processor | None:
    """The processor whose thread is calling, None on any other thread."""
    return getattr(_local, "processor", None)


class Processor:
    """A thread pinned to ``cpu``: ISRs of the eventfds added to it, then its DPC queue."""

    def __init__(
        self, owner: object, name: str, cpu: int, report: Callable[[BaseException], None]
    ) -> None:
        self.owner = owner  # the registered interrupt this processor serves
        self.cpu = cpu
        self._report = report
        self._handlers: dict[int, Handler] = {}
        self._epoll = select.epoll()
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._wake_fd, select.EPOLLIN)
        self._dpcs: collections.deque[Entry] = collections.deque()
        self._stopping = False
        self._stopped = False
        self._ready = threading.Event()
        self.in_isr = False  # an ISR is running on this thread (queue_dpc joins its batch)
        self.isr_t_ns = 0  # start of the ISR in progress
        self.affinity: frozenset[int] = frozenset()  # as seen by the thread once pinned
        self._ident: int | None = None  # the thread's, once it runs
        self._thread = threading.Thread(target=self._run, name=f"{name}-cpu{cpu}", daemon=True)

    def add_interrupt(self, fd: int, handler: Handler) -> None:
        """Service eventfd ``fd`` with ``handler`` on this processor (before :meth:`start`)."""
        self._handlers[fd] = handler
        self._epoll.register(fd, select.EPOLLIN)

    def start(self, timeout: float) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop(timeout)
            raise InterruptError(
                f"the processor thread for CPU {self.cpu} did not start within {timeout} s",
                "an ISR that was already signalled may be blocking",
            )

    def queue(self, entry: Entry) -> None:
        """Append a DPC to this processor's queue (from any thread)."""
        self._dpcs.append(entry)
        if threading.get_ident() != self._ident:
            os.eventfd_write(self._wake_fd, _WAKE)

    def stop(self, timeout: float) -> None:
        """Stop after the ISR or DPC in progress; nothing runs here once this returns.

        DPCs still queued are given to their ``discard`` path: the caller has
        marked their batches closing, so running them only counts and completes.
        """
        if self._stopped:
            return
        if self._thread.ident is not None:
            self._stopping = True
            os.eventfd_write(self._wake_fd, _WAKE)
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise InterruptError(
                    f"an ISR or DPC on CPU {self.cpu} did not return within {timeout} s",
                    "ISRs and DPCs must not block; check the miniport's handlers",
                )
        self._stopped = True
        self._epoll.close()
        os.close(self._wake_fd)

    def _run(self) -> None:
        try:
            os.sched_setaffinity(0, {self.cpu})  # Linux applies this to this thread only
        except OSError as exc:
            self._report(exc)
        self.affinity = frozenset(os.sched_getaffinity(0))
        _local.processor = self
        self._ident = threading.get_ident()
        poll = self._epoll.poll
        handlers = self._handlers
        wake_fd = self._wake_fd
        dpcs = self._dpcs
        read = os.eventfd_read
        now = time.perf_counter_ns
        report = self._report
        first = True
        while True:
            try:
                events = poll(_NO_WAIT if first or dpcs else _FOREVER)
            except InterruptedError:
                continue
            for fd, _mask in events:
                try:
                    read(fd)  # the count may cover several signals: one ISR call for all
                except BlockingIOError:
                    continue
                if fd == wake_fd:
                    if self._stopping:
                        return self._discard()
                    continue
                self.isr_t_ns = now()
                self.in_isr = True
                try:
                    handlers[fd](self.isr_t_ns)
                except Exception as exc:
                    report(exc)
                finally:
                    self.in_isr = False
            if first:
                first = False
                self._ready.set()
            if self._stopping:
                return self._discard()
            if dpcs:
                self._run_next()

    def _discard(self) -> None:
        """At stop: hand every queued DPC to its runner, which discards it (closing)."""
        while self._dpcs:
            self._run_next()

    def _run_next(self) -> None:
        runner, context, t_isr = self._dpcs.popleft()
        try:
            runner.run(context, t_isr)
        except Exception as exc:  # the runner reports the miniport's own errors
            self._report(exc)
