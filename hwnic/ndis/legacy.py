"""The NDIS 5 style: MiniportISR / MiniportHandleInterrupt with Disable/EnableInterrupt.

The same engine with a single message. ``handle_interrupt`` runs as the DPC;
after it returns the framework calls ``before_enable`` (replenish receive
buffers the consumer kept) and then ``enable_interrupt``, unless the handler
re-enabled the NIC itself, which it says by returning True (the faster path
of the seeds).

Without an ``isr`` (NdisMRegisterInterrupt with RequestIsr = FALSE) the
framework acts as the ISR: it calls ``disable_interrupt`` and always queues
``handle_interrupt``. A shared line needs an ``isr`` that can answer "not mine".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hwnic.errors import InterruptError
from hwnic.ndis.interrupt import DEFAULT_TIME_BOUND, NdisInterrupt, register_interrupt
from hwnic.ndis.source import InterruptSource, InterruptType
from hwnic.ndis.types import (
    ISR_QUEUE_DEFAULT_DPC,
    InterruptCharacteristics,
    IsrResult,
    MiniportAdapter,
    ReceiveThrottleParameters,
)

# An NDIS 5 handler indicates as much as it likes; the budget is not used.
_UNTHROTTLED = 1 << 31


@dataclass(frozen=True)
class LegacyInterruptCharacteristics:
    """The interrupt part of NDIS 5 NDIS_MINIPORT_CHARACTERISTICS.

    * ``handle_interrupt(context) -> bool | None``: MiniportHandleInterrupt;
      True means "I re-enabled interrupts myself".
    * ``disable_interrupt(context)``, ``enable_interrupt(context)``.
    * ``isr(context) -> (interrupt_recognized, queue_handle_interrupt)``, optional.
    * ``before_enable(context)``: replenish before each re-enable, optional.
    """

    handle_interrupt: Callable[[Any], bool | None]
    disable_interrupt: Callable[[Any], None]
    enable_interrupt: Callable[[Any], None]
    isr: Callable[[Any], tuple[bool, bool]] | None = None
    before_enable: Callable[[Any], None] | None = None
    shared: bool = False


def _to_ndis6(ch: LegacyInterruptCharacteristics) -> InterruptCharacteristics:
    legacy_isr = ch.isr
    disable = ch.disable_interrupt
    handle = ch.handle_interrupt

    if legacy_isr is None:

        def isr(context: Any) -> IsrResult:
            disable(context)  # the framework's own ISR: quiet the NIC, always defer
            return ISR_QUEUE_DEFAULT_DPC

    else:

        def isr(context: Any) -> IsrResult:
            recognized, queue_handle_interrupt = legacy_isr(context)
            return IsrResult(bool(recognized), bool(queue_handle_interrupt))

    def dpc(context: Any, _dpc_context: Any, throttle: ReceiveThrottleParameters) -> None:
        if handle(context):
            throttle.reenabled = True

    before = ch.before_enable
    return InterruptCharacteristics(
        isr=isr,
        dpc=dpc,
        enable=ch.enable_interrupt,
        disable=disable,
        before_enable=(lambda context, _message_id: before(context)) if before else None,
    )


def register_legacy_interrupt(
    adapter: MiniportAdapter,
    context: Any,
    characteristics: LegacyInterruptCharacteristics,
    source: InterruptSource,
    *,
    prefer: InterruptType | None = None,
    target_cpu: int | None = None,
    time_bound: float = DEFAULT_TIME_BOUND,
) -> NdisInterrupt:
    """NdisMRegisterInterrupt: one message, MSI if the source has it, else the line.

    MSI-X is never granted (NDIS 5 has no per-message handlers).
    """
    if characteristics.shared and characteristics.isr is None:
        raise InterruptError(
            "a shared interrupt needs an ISR", "give isr=... that answers 'not mine'"
        )
    if prefer is InterruptType.MSIX:
        raise InterruptError("NDIS 5 style interrupts cannot use MSI-X", "use register_interrupt")
    return register_interrupt(
        adapter,
        context,
        _to_ndis6(characteristics),
        source,
        prefer=prefer,
        messages=1,
        target_cpus=None if target_cpu is None else [target_cpu],
        budget=_UNTHROTTLED,
        time_bound=time_bound,
    )
