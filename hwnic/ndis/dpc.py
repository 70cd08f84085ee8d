"""DPCs: per-(message, CPU) slots on the processors, and the interrupt DPC batch of a message.

A DPC runs on the :class:`~hwnic.ndis.processor.Processor` of its CPU, the
thread that also runs the ISRs of the messages affine to that CPU; a
:class:`DpcSlot` is one message's DPC object on one CPU. Queuing follows
KeInsertQueueDpc: while a DPC for that message already waits on that CPU,
another request is coalesced into it (not queued again; its context is the
waiting one's). A DPC that is *running* can be queued again and runs once
more afterwards.

The interrupt DPC batch of a message is every DPC between an ISR and the
re-enable. ``outstanding`` counts the batch's DPCs that are waiting or
running; when it falls to zero the framework calls ``before_enable`` (replenish)
and the miniport's enable handler once, unless a DPC of the batch reported
that it re-enabled the message itself.

Receive throttling: each DPC call gets ``max_to_indicate`` (the budget). When a
call reports ``more_pending`` the slot calls it again on the same CPU instead
of ending the DPC. That loop is bounded in time: once a DPC has been re-run for
``time_bound`` seconds, it *yields*: it goes back to the tail of its
processor's queue (behind any DPC that arrived meanwhile) and counts a time
cut-off, so the ISRs and other DPCs of that CPU run. The DPC stays
outstanding, so the message stays disabled and nothing is lost; it resumes
with a fresh budget and a fresh time window. Re-enabling instead would rely on
the device to re-raise for work it already reported, which an edge-triggered
NIC whose cause was read in the ISR does not do.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from hwnic.ndis.processor import Processor
from hwnic.ndis.stats import BatchCounters, WorkerCounters
from hwnic.ndis.types import ReceiveThrottleParameters

_NS_PER_S = 1_000_000_000


class DpcSlot:
    """One message's DPC on one CPU: its waiting count, throttle and counters."""

    def __init__(self, batch: DpcBatch, processor: Processor) -> None:
        self.batch = batch
        self.processor = processor
        self.cpu = processor.cpu
        self.waiting = 0  # entries queued and not yet started; guarded by batch.lock
        self.counters = WorkerCounters()
        self.throttle = ReceiveThrottleParameters()

    def put(self, context: Any, t_isr: int) -> None:
        self.processor.queue((self, context, t_isr))

    def run(self, context: Any, t_isr: int) -> None:
        """Run one queued DPC on the processor's thread, re-running it while more is pending."""
        batch = self.batch
        c = self.counters
        with batch.lock:
            self.waiting -= 1
            closing = batch.closing
            epoch = batch.epoch
        if closing:
            c.dpcs_discarded += 1
            batch.complete()
            return
        dpc = batch.dpc
        throttle = self.throttle
        budget = batch.budget
        per_dpc = c.indicated_per_dpc
        start = time.perf_counter_ns()
        if t_isr:
            c.isr_to_dpc_ns.add(start - t_isr)
        deadline = start + batch.time_bound_ns
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
            if time.perf_counter_ns() >= deadline:
                c.time_cutoffs += 1
                with batch.lock:
                    self.waiting += 1
                self.put(context, 0)  # yield: to the back of this CPU's queue
                return
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
        processor_for: Callable[[int], Processor],
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
        self._idle_waiters = 0  # complete() notifies only when someone waits (a hot path)
        self.outstanding = 0  # DPCs of the current batch waiting or running
        self.needs_enable = False  # the batch still owes a re-enable
        self.epoch = 0  # bumped by every ISR that queues DPCs
        self.closing = False
        self.counters = BatchCounters()
        self._processor_for = processor_for
        self.slots: dict[int, DpcSlot] = {}
        self._slots_list: list[DpcSlot] = []
        self.default_slot = self._slot(default_cpu)

    def _slot(self, cpu: int) -> DpcSlot:
        slot = self.slots.get(cpu)
        if slot is None:
            slot = DpcSlot(self, self._processor_for(cpu))
            self.slots[cpu] = slot
            self._slots_list.append(slot)
        return slot

    def _queue_on(self, slot: DpcSlot, context: Any, t_isr: int) -> int:
        # Caller holds self.lock. Returns the CPU bit if a DPC was queued.
        if slot.waiting:
            self.counters.dpcs_coalesced += 1
            return 0
        slot.waiting += 1
        self.outstanding += 1
        self.counters.dpcs_queued += 1
        slot.put(context, t_isr)
        return 1 << slot.cpu

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
                queued = self._queue_on(self.default_slot, context, t_isr)
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
                        queued |= self._queue_on(self._slot(cpu), context, t_isr)
                    else:
                        self.counters.dpcs_redirected += 1
                        want_default = True
                if want_default:
                    queued |= self._queue_on(self.default_slot, context, t_isr)
            if from_isr:
                self.epoch += 1
            if (from_isr or idle) and self.outstanding and not self.needs_enable:
                self.needs_enable = True
                self.counters.batches += 1
            return queued

    def queue_default_from_isr(self, t_isr: int) -> None:
        """:meth:`queue` for an ISR that asks for the default DPC only (the hot path)."""
        with self.lock:
            if self.closing:
                return
            self._queue_on(self.default_slot, None, t_isr)
            self.epoch += 1
            if not self.needs_enable:  # outstanding > 0 here: a DPC waits or runs
                self.needs_enable = True
                self.counters.batches += 1

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
            if self._idle_waiters:
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
            self._idle_waiters += 1
            try:
                return self._idle.wait_for(lambda: not self.outstanding, timeout)
            finally:
                self._idle_waiters -= 1

    def worker_counters(self) -> list[WorkerCounters]:
        with self.lock:
            return [slot.counters for slot in self._slots_list]

    def begin_close(self) -> None:
        """Refuse new DPCs; waiting ones are discarded when their processor reaches them."""
        with self.lock:
            self.closing = True
