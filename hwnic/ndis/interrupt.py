"""Interrupt registration (NdisMRegisterInterruptEx) and the registered interrupt object.

:func:`register_interrupt` picks the interrupt type (MSI-X, then MSI, then
line-based, or the one the miniport insists on), has the source wire one
eventfd per message, builds the message table, starts one processor thread
per target CPU (it takes the interrupts of the messages affine to that CPU
and runs the DPCs queued to it, see :mod:`hwnic.ndis.processor`), and
returns a :class:`NdisInterrupt`. The ISR may run before it returns.

Handlers per type: MSI-X always uses the message set; MSI uses the message set
when the miniport gave one (NDIS treats every message-signalled interrupt
alike) and the line-based set otherwise; line-based uses the line-based set and
re-arms the line through the source after every ISR.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from hwnic.errors import HwnicError, InterruptError
from hwnic.ndis.dpc import DpcBatch
from hwnic.ndis.processor import Processor, this_processor
from hwnic.ndis.source import InterruptSource, InterruptType
from hwnic.ndis.stats import InterruptStats, IsrCounters, MessageStats
from hwnic.ndis.types import InterruptCharacteristics, MessageInfo, MiniportAdapter

T = TypeVar("T")

# MaxNblsToIndicate when the miniport does not say: a NAPI-like batch of receives.
DEFAULT_BUDGET = 64
# How long one DPC may keep re-running before it yields. Windows asks DPCs for
# ~100 us; Python does the same work ~20x slower, hence milliseconds.
DEFAULT_TIME_BOUND = 0.002
# How long deregistration waits for an ISR or DPC in progress to return.
DEFAULT_STOP_TIMEOUT = 30.0
_FALLBACK_ORDER = (InterruptType.MSIX, InterruptType.MSI, InterruptType.LINE_BASED)
_MAX_KEPT_ERRORS = 32


def _default_cpus(count: int, allowed: Sequence[int]) -> list[int]:
    """Spread messages round-robin over the CPUs this process may use."""
    return [allowed[i % len(allowed)] for i in range(count)]


class _Message:
    """One message at run time: its ISR lock, ISR call and DPC batch."""

    __slots__ = ("batch", "counters", "info", "isr", "isr_lock", "owner", "unmask_line")

    def __init__(
        self,
        owner: NdisInterrupt,
        info: MessageInfo,
        isr: Callable[[], Any],
        batch: DpcBatch,
        unmask_line: Callable[[], None] | None,
    ) -> None:
        self.owner = owner
        self.info = info
        self.isr = isr
        self.batch = batch
        self.unmask_line = unmask_line
        self.isr_lock = threading.Lock()
        self.counters = IsrCounters()

    def service(self, t_ns: int) -> None:
        """Called by the message's processor when its eventfd fires."""
        counters = self.counters
        counters.interrupts += 1
        try:
            with self.isr_lock:  # counted and queued under it, so wait_idle sees a whole ISR
                try:
                    recognized, queue_default, targets = self.isr()
                except Exception as exc:
                    counters.isr_errors += 1
                    self.owner._report(exc)
                    recognized, queue_default, targets = False, False, 0
                if not recognized:
                    counters.not_mine += 1
                if queue_default and not targets:
                    self.batch.queue_default_from_isr(t_ns)  # the common case, kept short
                elif queue_default or targets:
                    # Queued whatever the ISR returned, as NDIS does.
                    self.batch.queue(queue_default, targets, None, t_ns, True)
        finally:
            if self.unmask_line is not None:
                self.unmask_line()  # VFIO masked the line on delivery; the ISR has quieted it


class NdisInterrupt:
    """A registered interrupt (NdisInterruptHandle). Use :func:`register_interrupt`.

    A context manager: leaving the ``with`` block deregisters it.
    """

    def __init__(
        self,
        adapter: MiniportAdapter,
        context: Any,
        source: InterruptSource,
        granted_type: InterruptType,
    ) -> None:
        self.adapter = adapter
        self.context = context
        self.source = source
        self.granted_type = granted_type
        self.messages: tuple[MessageInfo, ...] = ()
        self.errors: list[BaseException] = []  # exceptions raised by the miniport's handlers
        self._errors_lock = threading.Lock()
        self._messages: list[_Message] = []
        self._processors: dict[int, Processor] = {}  # by CPU
        self._processors_lock = threading.Lock()
        self._running = False  # processors started (new ones start when created)
        self._start_timeout = DEFAULT_STOP_TIMEOUT
        self._state_lock = threading.Lock()
        self._deregistered = False

    # -- NDIS services -----------------------------------------------------------

    def queue_dpc(self, message_id: int, target_processors: int, context: Any = None) -> int:
        """NdisMQueueDpcEx: queue the message's DPC on every CPU of ``target_processors``.

        Returns the bitmask of CPUs on which a DPC was queued; a CPU that already
        has one waiting for this message is left out (the request is coalesced).
        CPUs this process may not run on are served by the message's target CPU.
        Called from the ISR, the DPCs join that interrupt's batch; otherwise a
        request on an idle message starts a batch that ends with a re-enable.
        Returns 0 once deregistration has begun.
        """
        message = self._message(message_id)
        here = this_processor()
        from_isr = here is not None and here.owner is self and here.in_isr
        t_isr = here.isr_t_ns if here is not None and from_isr else 0
        return message.batch.queue(False, target_processors, context, t_isr, from_isr)

    def synchronize(self, message_id: int, fn: Callable[..., T], *args: Any) -> T:
        """NdisMSynchronizeWithInterruptEx: run ``fn(*args)`` serialized with the ISR.

        Not from inside that message's ISR (the lock is not re-entrant).
        """
        with self._message(message_id).isr_lock:
            return fn(*args)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no ISR is in progress and no DPC is waiting or running; False on timeout."""
        for message in self._messages:
            with message.isr_lock:  # an ISR in progress has counted and queued its DPCs
                pass
        return all(m.batch.wait_idle(timeout) for m in self._messages)

    def deregister(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """NdisMDeregisterInterruptEx: stop the ISR and DPCs, then disconnect the source.

        When this returns, the ISR or DPC in progress has returned and none runs
        again; DPCs that were queued but not started are discarded (counted).
        Idempotent. Not from an ISR or DPC of this interrupt.
        """
        with self._state_lock:
            if self._deregistered:
                return
            here = this_processor()
            if here is not None and here.owner is self:
                raise InterruptError(
                    "deregister_interrupt called from this interrupt's own ISR or DPC",
                    "deregister from the miniport's halt path instead",
                )
            self._deregistered = True
            for message in self._messages:
                message.batch.begin_close()  # from now on nothing new is queued or started
        try:
            self._stop_processors(timeout)
        finally:
            try:
                self.source.disconnect(self.granted_type)
            finally:
                if self.adapter._interrupt is self:
                    self.adapter._interrupt = None

    close = deregister

    @property
    def deregistered(self) -> bool:
        return self._deregistered

    @property
    def stats(self) -> InterruptStats:
        """A snapshot of the per-message counters and histograms."""
        return InterruptStats(
            str(self.granted_type),
            [
                MessageStats.collect(
                    m.info.message_id, m.counters, m.batch.counters, m.batch.worker_counters()
                )
                for m in self._messages
            ],
        )

    def __enter__(self) -> NdisInterrupt:
        return self

    def __exit__(self, *exc: object) -> None:
        self.deregister()

    def __repr__(self) -> str:
        state = "deregistered" if self._deregistered else "registered"
        return (
            f"<NdisInterrupt {self.adapter.name} {self.granted_type} "
            f"{len(self.messages)} message(s) {state}>"
        )

    # -- internals -------------------------------------------------------------

    def _message(self, message_id: int) -> _Message:
        if not 0 <= message_id < len(self._messages):
            raise InterruptError(
                f"no message {message_id}",
                f"{self.granted_type} was granted with {len(self._messages)} message(s)",
            )
        return self._messages[message_id]

    def _processor(self, cpu: int) -> Processor:
        """The processor of ``cpu``, started on first use (a DPC aimed at a new CPU)."""
        with self._processors_lock:
            processor = self._processors.get(cpu)
            if processor is None:
                processor = Processor(self, f"ndis-{self.adapter.name}", cpu, self._report)
                self._processors[cpu] = processor
                if self._running:
                    processor.start(self._start_timeout)
            return processor

    def _start_processors(self, timeout: float) -> None:
        # Not under the lock: a first-pass ISR may aim a DPC at a CPU with no processor yet.
        with self._processors_lock:
            self._start_timeout = timeout
            self._running = True
            processors = list(self._processors.values())
        for processor in processors:
            processor.start(timeout)

    def _stop_processors(self, timeout: float) -> None:
        with self._processors_lock:
            processors = list(self._processors.values())
        for processor in processors:
            processor.stop(timeout)

    def _report(self, exc: BaseException) -> None:
        with self._errors_lock:
            if len(self.errors) < _MAX_KEPT_ERRORS:
                self.errors.append(exc)


def _choose_type(
    characteristics: InterruptCharacteristics,
    counts: Mapping[InterruptType, int],
    prefer: InterruptType | None,
) -> InterruptType:
    def usable(kind: InterruptType) -> bool:
        if counts.get(kind, 0) <= 0:
            return False
        return kind is not InterruptType.MSIX or characteristics.has_message_handlers

    if prefer is not None:
        if not usable(prefer):
            why = (
                "the miniport gave no message-signalled handlers"
                if counts.get(prefer, 0) > 0
                else "the device has no vectors of that type"
            )
            raise InterruptError(f"cannot grant {prefer} interrupts: {why}", _counts_hint(counts))
        return prefer
    for kind in _FALLBACK_ORDER:
        if usable(kind):
            return kind
    raise InterruptError("the device offers no usable interrupt", _counts_hint(counts))


def _counts_hint(counts: Mapping[InterruptType, int]) -> str:
    return "available: " + ", ".join(f"{k} {counts.get(k, 0)}" for k in _FALLBACK_ORDER)


def _target_cpus(
    count: int, override: Sequence[int] | Mapping[int, int] | None, allowed: Sequence[int]
) -> list[int]:
    cpus = _default_cpus(count, allowed)
    if override is None:
        return cpus
    pairs = override.items() if isinstance(override, Mapping) else enumerate(override)
    for message_id, cpu in pairs:
        if not 0 <= message_id < count:
            continue  # a table for more messages than granted: ignore the extra ones
        if cpu not in allowed:
            raise InterruptError(
                f"target CPU {cpu} for message {message_id} is outside this process's "
                f"affinity {sorted(allowed)}",
                "pick a CPU from os.sched_getaffinity(0)",
            )
        cpus[message_id] = cpu
    return cpus


def register_interrupt(
    adapter: MiniportAdapter,
    context: Any,
    characteristics: InterruptCharacteristics,
    source: InterruptSource,
    *,
    prefer: InterruptType | None = None,
    messages: int | None = None,
    target_cpus: Sequence[int] | Mapping[int, int] | None = None,
    budget: int = DEFAULT_BUDGET,
    time_bound: float = DEFAULT_TIME_BOUND,
    timeout: float = DEFAULT_STOP_TIMEOUT,
) -> NdisInterrupt:
    """NdisMRegisterInterruptEx.

    ``context`` is the MiniportInterruptContext passed to every handler.
    ``prefer`` insists on one type (no fallback). ``messages`` caps how many
    message-signalled vectors to use (default: all the source has).
    ``target_cpus`` overrides the per-message target CPU (a list by message id,
    or a mapping). ``budget`` is ``max_to_indicate`` for every DPC call and
    ``time_bound`` (seconds) how long a DPC may keep re-running before it
    yields. Raises :class:`InterruptError` if the adapter's attributes are not
    set, it already has an interrupt, or no type can be granted.
    """
    if not adapter.attributes_set:
        raise InterruptError(
            f"{adapter.name}: interrupt registration before set_miniport_attributes()",
            "call adapter.set_miniport_attributes(...) first, as NdisMSetMiniportAttributes "
            "must precede NdisMRegisterInterruptEx",
        )
    if adapter.interrupt is not None:
        raise InterruptError(
            f"{adapter.name} already has a registered interrupt", "deregister it first"
        )
    characteristics.validate()
    if budget < 1:
        raise InterruptError(f"budget {budget} must be at least 1")
    if time_bound <= 0:
        raise InterruptError(f"time bound {time_bound} s must be positive")
    if messages is not None and messages < 1:
        raise InterruptError(f"message count {messages} must be at least 1")

    counts = dict(source.message_counts())
    kind = _choose_type(characteristics, counts, prefer)
    count = 1 if kind is InterruptType.LINE_BASED else counts[kind]
    if messages is not None:
        count = min(count, messages)
    allowed = sorted(os.sched_getaffinity(0))
    cpus = _target_cpus(count, target_cpus, allowed)

    interrupt = NdisInterrupt(adapter, context, source, kind)
    adapter._interrupt = interrupt  # claim the adapter before anything can fire
    try:
        fds = source.connect(kind, count)
    except HwnicError:
        adapter._interrupt = None
        raise
    except OSError as exc:
        adapter._interrupt = None
        raise InterruptError(f"connecting {count} {kind} vectors failed: {exc}") from exc
    try:
        if len(fds) != count:
            raise InterruptError(f"the source wired {len(fds)} eventfds for {count} {kind} vectors")
        _build(interrupt, characteristics, kind, fds, cpus, frozenset(allowed), budget, time_bound)
        interrupt._start_processors(timeout)
    except BaseException:
        _abandon(interrupt, timeout)
        raise
    return interrupt


def _build(
    interrupt: NdisInterrupt,
    ch: InterruptCharacteristics,
    kind: InterruptType,
    fds: list[int],
    cpus: list[int],
    allowed: frozenset[int],
    budget: int,
    time_bound: float,
) -> None:
    context = interrupt.context
    use_messages = kind.message_signaled and ch.has_message_handlers
    unmask = interrupt.source.unmask_line if kind is InterruptType.LINE_BASED else None
    table = []
    for message_id, (fd, cpu) in enumerate(zip(fds, cpus, strict=True)):
        if use_messages:
            assert ch.message_isr and ch.message_dpc and ch.enable_message  # validated
            isr = functools.partial(ch.message_isr, context, message_id)
            dpc = functools.partial(ch.message_dpc, context, message_id)
            enable = functools.partial(ch.enable_message, context, message_id)
        else:
            isr = functools.partial(ch.isr, context)
            dpc = functools.partial(ch.dpc, context)
            enable = functools.partial(ch.enable, context)
        before = (
            functools.partial(ch.before_enable, context, message_id)
            if ch.before_enable is not None
            else None
        )
        batch = DpcBatch(
            message_id,
            cpu,
            allowed,
            dpc,
            enable,
            before,
            budget,
            time_bound,
            interrupt._report,
            interrupt._processor,
        )
        info = MessageInfo(message_id=message_id, vector=message_id, target_cpu=cpu)
        message = _Message(interrupt, info, isr, batch, unmask)
        interrupt._messages.append(message)
        table.append(info)
        interrupt._processor(cpu).add_interrupt(fd, message.service)
    interrupt.messages = tuple(table)


def _abandon(interrupt: NdisInterrupt, timeout: float) -> None:
    """Undo a registration that failed half-way."""
    try:
        for message in interrupt._messages:
            message.batch.begin_close()
        interrupt._stop_processors(timeout)
    finally:
        interrupt._deregistered = True
        if interrupt.adapter._interrupt is interrupt:
            interrupt.adapter._interrupt = None
        interrupt.source.disconnect(interrupt.granted_type)


def deregister_interrupt(interrupt: NdisInterrupt) -> None:
    """NdisMDeregisterInterruptEx, as a function."""
    interrupt.deregister()
