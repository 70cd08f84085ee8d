"""DPCs: per-(message, CPU) worker threads and the interrupt DPC batch of a message.

A DPC worker is one thread pinned to one CPU serving one message, so a DPC for
a message never runs twice at once on a CPU. Queuing follows KeInsertQueueDpc:
while a DPC for that message already waits on that CPU, another request is
coalesced into it (not queued again; its context is the waiting one's). A DPC
that is *running* can be queued again and runs once more afterwards.

The interrupt DPC batch of a message is every DPC between an ISR and the
re-enable. ``outstanding`` counts the batch's DPCs that are waiting or
running; when it falls to zero the framework calls ``before_enable`` (replenish)
and the miniport's enable handler once, unless a DPC of the batch reported
that it re-enabled the message itself.

Receive throttling: each DPC call gets ``max_to_indicate`` (the budget). When a
call reports ``more_pending`` the worker calls it again on the same CPU instead
of ending the DPC. That loop is bounded in time: once a DPC has been re-run for
``time_bound`` seconds on one worker, the worker *yields*: it puts the DPC back
at the tail of its own queue (behind any request that arrived meanwhile),
counts a time cut-off and gives up the CPU (``sched_yield``, which also drops
the GIL) so the dispatcher and the other DPCs pinned there run. The DPC stays
outstanding, so the message stays disabled and nothing is lost; it resumes
with a fresh budget and a fresh time window. Re-enabling instead would rely on
the device to re-raise for work it already reported, which an edge-triggered
NIC whose cause was read in the ISR does not do.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any

from hwnic.errors import InterruptError
from hwnic.ndis.stats import BatchCounters, WorkerCounters
from hwnic.ndis.types import ReceiveThrottleParameters

_NS_PER_S = 1_000_000_000
_local = threading.local()

# A queue entry: (dpc_context, ISR start in perf_counter_ns, or 0 if not from an ISR).
_Entry = tuple[Any, int]


def current_processor() -> int | None:
    """The CPU the calling DPC runs on (KeGetCurrentProcessorNumber), None outside a DPC."""
    return getattr(_local, "cpu", None)


class DpcWorker:
    """One thread running one message's DPCs on one CPU."""

    def __init__(self, batch: DpcBatch, cpu: int) -> None:
        self.batch = batch
        self.cpu = cpu
        self.waiting = 0  # entries queued and not yet started; guarded by batch.lock
        self.counters = WorkerCounters()
        self.throttle = ReceiveThrottleParameters()
        self.affinity: frozenset[int] = frozenset()  # as seen by the thread once pinned
        self._queue: SimpleQueue[_Entry | None] = SimpleQueue()
        self.put = self._queue.put
        self._started = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"ndis-dpc-{batch.message_id}-cpu{cpu}", daemon=True
        )

    @property
    def ident(self) -> int | None:
        return self._thread.ident

    def start(self) -> None:
        self._thread.start()
        self._started.wait()  # pinned before the first DPC can run

    def stop(self, timeout: float) -> None:
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise InterruptError(
                f"DPC of message {self.batch.message_id} on CPU {self.cpu} did not return "
                f"within {timeout} s",
                "a DPC must not block; check the miniport's DPC handler",
            )

    def _run(self) -> None:
        try:
            os.sched_setaffinity(0, {self.cpu})  # Linux applies this to this thread only
        except OSError as exc:
            self.batch.report(exc)
        self.affinity = frozenset(os.sched_getaffinity(0))
        _local.cpu = self.cpu
        self._started.set()

        batch = self.batch
        lock = batch.lock
        dpc = batch.dpc
        budget = batch.budget
        bound_ns = batch.time_bound_ns
        throttle = self.throttle
        c = self.counters
        latency = c.isr_to_dpc_ns
        per_dpc = c.indicated_per_dpc
        get = self._queue.get
        put = self._queue.put
        now = time.perf_counter_ns

        while True:
            entry = get()
            if entry is None:
                return
            context, t_isr = entry
            with lock:
                self.waiting -= 1
                closing = batch.closing
                epoch = batch.epoch
            if closing:
                c.dpcs_discarded += 1
                batch.complete()
                continue
            start = now()
            if t_isr:
                latency.add(start - t_isr)
            deadline = start + bound_ns
            requeued = False
            while True:
                throttle.max_to_indicate = budget
                throttle.more_pending = False
                throttle.indicated = 0
                throttle.reenabled = False
                try:
                    dpc(context, throttle)
                except Exception as exc:
                    c.dpc_errors += 1
                    throttle.more_pending = False  # a failing DPC ends; its batch must too
                    batch.report(exc)
                c.dpc_runs += 1
                indicated = throttle.indicated
                c.indicated += indicated
                per_dpc.add(indicated)
                if throttle.reenabled:
                    batch.reenabled_by_dpc(epoch)
                if not throttle.more_pending or batch.closing:
                    break
                c.more_pending += 1
                if now() >= deadline:
                    c.time_cutoffs += 1
                    with lock:
                        self.waiting += 1
                        put((context, 0))
                    requeued = True
                    break
            if requeued:
                os.sched_yield()
            else:
                batch.complete()


class DpcBatch:
    """One message's DPC workers and its interrupt DPC batch accounting."""

    def __init__(
        self,
        message_id: int,
        default_cpu: int,
        allowed_cpus: frozenset[int],
        dpc: Callable[[Any, ReceiveThrottleParameters], None],
        enable: Callable[[], None],
        before_enable: Callable[[], None] | None,
        budget: int,
        time_bound: float,
        report: Callable[[BaseException], None],
    ) -> None:
        self.message_id = message_id
        self.default_cpu = default_cpu
        self.allowed_cpus = allowed_cpus
        self.dpc = dpc
        self.budget = budget
        self.time_bound_ns = int(time_bound * _NS_PER_S)
        self.report = report
        self._enable = enable
        self._before_enable = before_enable
        self.lock = threading.Lock()
        self._idle = threading.Condition(self.lock)
        self.outstanding = 0  # DPCs of the current batch waiting or running
        self.needs_enable = False  # the batch still owes a re-enable
        self.epoch = 0  # bumped by every ISR that queues DPCs
        self.closing = False
        self.counters = BatchCounters()
        self.workers: dict[int, DpcWorker] = {}
        self._workers_list: list[DpcWorker] = []
        self.default_worker = self._worker(default_cpu)

    def _worker(self, cpu: int) -> DpcWorker:
        worker = self.workers.get(cpu)
        if worker is None:
            worker = DpcWorker(self, cpu)
            worker.start()
            self.workers[cpu] = worker
            self._workers_list.append(worker)
        return worker

    def _queue_on(self, worker: DpcWorker, context: Any, t_isr: int) -> int:
        # Caller holds self.lock. Returns the CPU bit if a DPC was queued.
        if worker.waiting:
            self.counters.dpcs_coalesced += 1
            return 0
        worker.waiting += 1
        self.outstanding += 1
        self.counters.dpcs_queued += 1
        worker.put((context, t_isr))
        return 1 << worker.cpu

    def queue(
        self, default: bool, target_processors: int, context: Any, t_isr: int, from_isr: bool
    ) -> int:
        """Queue DPCs; returns the bitmask of CPUs on which a DPC was newly queued.

        CPUs outside the allowed set are redirected to the message's target CPU.
        """
        with self.lock:
            if self.closing:
                return 0
            idle = not self.outstanding
            if default:
                queued = self._queue_on(self.default_worker, context, t_isr)
            else:
                queued = 0
                want_default = False
                mask = target_processors
                while mask:
                    low = mask & -mask
                    mask ^= low
                    cpu = low.bit_length() - 1
                    if cpu == self.default_cpu:
                        want_default = True
                    elif cpu in self.allowed_cpus:
                        queued |= self._queue_on(self._worker(cpu), context, t_isr)
                    else:
                        self.counters.dpcs_redirected += 1
                        want_default = True
                if want_default:
                    queued |= self._queue_on(self.default_worker, context, t_isr)
            if from_isr:
                self.epoch += 1
            if (from_isr or idle) and self.outstanding and not self.needs_enable:
                self.needs_enable = True
                self.counters.batches += 1
            return queued

    def reenabled_by_dpc(self, epoch: int) -> None:
        """A DPC re-enabled its message; it closes the batch unless an ISR ran since."""
        with self.lock:
            if self.needs_enable and self.epoch == epoch:
                self.needs_enable = False
                self.counters.early_reenables += 1

    def complete(self) -> None:
        """One DPC of the batch finished: re-enable after the last one."""
        with self.lock:
            self.outstanding -= 1
            if self.outstanding:
                return
            self._idle.notify_all()
            if not self.needs_enable or self.closing:
                return
            self.needs_enable = False
            self.counters.reenables += 1
        try:
            if self._before_enable is not None:
                self._before_enable()  # replenish kept receive buffers first
            self._enable()
        except Exception as exc:
            # A failed replenish must not re-enable: the NIC would DMA into kept buffers.
            with self.lock:
                self.counters.enable_errors += 1
            self.report(exc)

    def wait_idle(self, timeout: float | None) -> bool:
        with self.lock:
            return self._idle.wait_for(lambda: not self.outstanding, timeout)

    def worker_counters(self) -> list[WorkerCounters]:
        with self.lock:
            return [w.counters for w in self._workers_list]

    def worker_idents(self) -> set[int]:
        with self.lock:
            return {w.ident for w in self._workers_list if w.ident is not None}

    def begin_close(self) -> None:
        """Refuse new DPCs and drop waiting ones; a running DPC finishes its call."""
        with self.lock:
            self.closing = True

    def close(self, timeout: float) -> None:
        """:meth:`begin_close`, then stop every worker."""
        self.begin_close()
        with self.lock:
            workers = list(self._workers_list)
        for worker in workers:
            worker.stop(timeout)
