"""The NDIS miniport interrupt model, independent of any NIC.

Registration (:func:`register_interrupt`, NdisMRegisterInterruptEx), one
pinned processor thread per target CPU that takes the interrupts affine to it
and runs the DPCs queued to it (per-(message, CPU) DPC objects) with receive
throttling, interrupt DPC batches re-enabled once, synchronize and
deregister, statistics, and the NDIS 5 style (:func:`register_legacy_interrupt`).
Devices plug in through :class:`InterruptSource`.
"""

from hwnic.ndis.interrupt import (
    DEFAULT_BUDGET,
    DEFAULT_TIME_BOUND,
    NdisInterrupt,
    deregister_interrupt,
    register_interrupt,
)
from hwnic.ndis.legacy import LegacyInterruptCharacteristics, register_legacy_interrupt
from hwnic.ndis.processor import current_processor
from hwnic.ndis.source import EventfdSource, InterruptSource, InterruptType
from hwnic.ndis.stats import InterruptStats, Log2Histogram, MessageStats
from hwnic.ndis.types import (
    ISR_HANDLED,
    ISR_NOT_MINE,
    ISR_QUEUE_DEFAULT_DPC,
    InterruptCharacteristics,
    IsrResult,
    MessageInfo,
    MiniportAdapter,
    ReceiveThrottleParameters,
)

__all__ = [
    "DEFAULT_BUDGET",
    "DEFAULT_TIME_BOUND",
    "ISR_HANDLED",
    "ISR_NOT_MINE",
    "ISR_QUEUE_DEFAULT_DPC",
    "EventfdSource",
    "InterruptCharacteristics",
    "InterruptSource",
    "InterruptStats",
    "InterruptType",
    "IsrResult",
    "LegacyInterruptCharacteristics",
    "Log2Histogram",
    "MessageInfo",
    "MessageStats",
    "MiniportAdapter",
    "NdisInterrupt",
    "ReceiveThrottleParameters",
    "current_processor",
    "deregister_interrupt",
    "register_interrupt",
    "register_legacy_interrupt",
]
