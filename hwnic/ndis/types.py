"""The miniport-facing records: adapter handle, interrupt characteristics, ISR result,
message table entries and receive-throttle parameters.

Callback signatures (``context`` is the MiniportInterruptContext handed to
:func:`~hwnic.ndis.interrupt.register_interrupt`):

* ``isr(context) -> IsrResult | (recognized, queue_default_dpc, target_processors)``
* ``dpc(context, dpc_context, throttle) -> None``
* ``enable(context)``, ``disable(context)``
* ``message_isr(context, message_id) -> IsrResult | tuple``
* ``message_dpc(context, message_id, dpc_context, throttle) -> None``
* ``enable_message(context, message_id)``, ``disable_message(context, message_id)``
* ``before_enable(context, message_id)``: replenish receive buffers the consumer
  kept; runs before every re-enable the framework does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from hwnic.errors import InterruptError


class IsrResult(NamedTuple):
    """What an ISR returns: MiniportInterrupt's return value and its two out-parameters.

    ``recognized``: this NIC raised the interrupt (False: "not mine" on a shared
    line). ``queue_default_dpc``: queue a DPC on the message's target CPU (the
    "current" CPU); when True, ``target_processors`` is ignored. Otherwise
    ``target_processors`` is a CPU bitmask (bit n = CPU n), 0 for no DPC. DPCs
    are queued from these outputs whatever ``recognized`` says.
    """

    recognized: bool
    queue_default_dpc: bool = False
    target_processors: int = 0


# Ready-made results, so a hot ISR need not build one per interrupt.
ISR_NOT_MINE = IsrResult(recognized=False)
ISR_QUEUE_DEFAULT_DPC = IsrResult(recognized=True, queue_default_dpc=True)
ISR_HANDLED = IsrResult(recognized=True)  # mine, nothing deferred


class ReceiveThrottleParameters:
    """NDIS_RECEIVE_THROTTLE_PARAMETERS, one per DPC worker, reset before each call.

    In: ``max_to_indicate`` (MaxNblsToIndicate, the receive budget).
    Out: ``more_pending`` (MoreNblsPending: run me again before re-enabling),
    ``indicated`` (how many the DPC indicated, for the statistics) and
    ``reenabled`` (the DPC re-enabled its message itself, the faster path; the
    framework then does not re-enable this batch).
    """

    __slots__ = ("indicated", "max_to_indicate", "more_pending", "reenabled")

    def __init__(self, max_to_indicate: int = 0) -> None:
        self.max_to_indicate = max_to_indicate
        self.more_pending = False
        self.indicated = 0
        self.reenabled = False

    def __repr__(self) -> str:
        return (
            f"ReceiveThrottleParameters(max_to_indicate={self.max_to_indicate}, "
            f"more_pending={self.more_pending}, indicated={self.indicated}, "
            f"reenabled={self.reenabled})"
        )


class MessageInfo(NamedTuple):
    """One entry of the message table (IO_INTERRUPT_MESSAGE_INFO_ENTRY)."""

    message_id: int
    vector: int  # the vector index within the granted interrupt type
    target_cpu: int  # where the message's default DPC runs


Callback = Callable[..., Any]


@dataclass(frozen=True)
class InterruptCharacteristics:
    """NDIS_MINIPORT_INTERRUPT_CHARACTERISTICS.

    ``isr``, ``dpc``, ``enable`` and ``disable`` are required (NDIS asks for the
    line-based set even from MSI-capable miniports). The message set
    (``message_isr``, ``message_dpc``, ``enable_message``, ``disable_message``)
    is all or nothing; without it MSI-X is never granted.
    """

    isr: Callback
    dpc: Callback
    enable: Callback
    disable: Callback
    message_isr: Callback | None = None
    message_dpc: Callback | None = None
    enable_message: Callback | None = None
    disable_message: Callback | None = None
    before_enable: Callback | None = None

    @property
    def has_message_handlers(self) -> bool:
        return self.message_isr is not None

    def validate(self) -> None:
        for name in ("isr", "dpc", "enable", "disable"):
            if not callable(getattr(self, name)):
                raise InterruptError(
                    f"interrupt characteristics lack a callable {name!r}",
                    "NDIS requires the ISR, DPC, enable and disable handlers",
                )
        message_set = ("message_isr", "message_dpc", "enable_message", "disable_message")
        given = [name for name in message_set if getattr(self, name) is not None]
        if given and len(given) != len(message_set):
            missing = sorted(set(message_set) - set(given))
            raise InterruptError(
                f"incomplete message-signalled handlers: {', '.join(missing)} missing",
                "give all four message handlers or none",
            )
        if self.before_enable is not None and not callable(self.before_enable):
            raise InterruptError("before_enable is not callable")


@dataclass
class MiniportAdapter:
    """The MiniportAdapterHandle: the order NDIS enforces during initialization.

    :meth:`set_miniport_attributes` (NdisMSetMiniportAttributes) must come before
    interrupt registration; an adapter holds at most one registered interrupt.
    """

    name: str = "miniport"
    attributes: dict[str, Any] | None = field(default=None, init=False)
    adapter_context: Any = field(default=None, init=False)
    _interrupt: Any = field(default=None, init=False, repr=False)

    def set_miniport_attributes(self, adapter_context: Any = None, **attributes: Any) -> None:
        """Record the registration attributes (the MiniportAdapterContext and friends)."""
        self.adapter_context = adapter_context
        self.attributes = dict(attributes)

    @property
    def attributes_set(self) -> bool:
        return self.attributes is not None

    @property
    def interrupt(self) -> Any:
        """The interrupt registered on this adapter, or None."""
        return self._interrupt
