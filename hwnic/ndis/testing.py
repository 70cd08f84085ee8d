"""A scripted, recording miniport for exercising the interrupt framework without a NIC.

Host tests use it; NIC model authors can use it to see the order in which the
framework calls a miniport. Every handler call is appended to :attr:`log` with
the thread it ran on; :meth:`RecordingMiniport.wait_for` waits on a condition
(no sleeping) until the log satisfies a predicate.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hwnic.ndis.processor import current_processor
from hwnic.ndis.types import (
    ISR_QUEUE_DEFAULT_DPC,
    InterruptCharacteristics,
    IsrResult,
    ReceiveThrottleParameters,
)

DEFAULT_WAIT = 20.0  # generous: a loaded 2-core machine may stall a thread for seconds


@dataclass(frozen=True)
class Call:
    """One handler call: ``kind`` is isr, dpc, enable, disable or before_enable."""

    kind: str
    message_id: int
    thread: int
    dpc_context: Any = None
    cpu: int | None = None
    affinity: frozenset[int] = field(default_factory=frozenset)
    max_to_indicate: int = 0


IsrScript = Callable[[int], IsrResult | tuple[bool, bool, int]]
DpcScript = Callable[[int, Any, ReceiveThrottleParameters], None]


class RecordingMiniport:
    """Handlers that log each call and do what ``isr_script`` / ``dpc_script`` say.

    ``isr_script(message_id)`` gives the ISR result (default: mine, queue the
    default DPC); ``dpc_script(message_id, dpc_context, throttle)`` may set the
    throttle's outputs (default: nothing, so the batch ends).
    """

    def __init__(
        self, isr_script: IsrScript | None = None, dpc_script: DpcScript | None = None
    ) -> None:
        self.isr_script = isr_script or (lambda _m: ISR_QUEUE_DEFAULT_DPC)
        self.dpc_script = dpc_script
        self.log: list[Call] = []
        self.cond = threading.Condition()

    # -- the miniport's handlers --------------------------------------------

    def _record(self, call: Call) -> None:
        with self.cond:
            self.log.append(call)
            self.cond.notify_all()

    def message_isr(self, context: Any, message_id: int) -> IsrResult | tuple[bool, bool, int]:
        self._record(Call("isr", message_id, threading.get_ident()))
        return self.isr_script(message_id)

    def message_dpc(
        self, context: Any, message_id: int, dpc_context: Any, throttle: ReceiveThrottleParameters
    ) -> None:
        self._record(
            Call(
                "dpc",
                message_id,
                threading.get_ident(),
                dpc_context,
                current_processor(),
                frozenset(os.sched_getaffinity(0)),
                throttle.max_to_indicate,
            )
        )
        if self.dpc_script is not None:
            self.dpc_script(message_id, dpc_context, throttle)

    def enable_message(self, context: Any, message_id: int) -> None:
        self._record(Call("enable", message_id, threading.get_ident()))

    def disable_message(self, context: Any, message_id: int) -> None:
        self._record(Call("disable", message_id, threading.get_ident()))

    def before_enable(self, context: Any, message_id: int) -> None:
        self._record(Call("before_enable", message_id, threading.get_ident()))

    def isr(self, context: Any) -> IsrResult | tuple[bool, bool, int]:
        return self.message_isr(context, 0)

    def dpc(self, context: Any, dpc_context: Any, throttle: ReceiveThrottleParameters) -> None:
        self.message_dpc(context, 0, dpc_context, throttle)

    def enable(self, context: Any) -> None:
        self.enable_message(context, 0)

    def disable(self, context: Any) -> None:
        self.disable_message(context, 0)

    def characteristics(
        self, *, message_handlers: bool = True, before_enable: bool = True
    ) -> InterruptCharacteristics:
        return InterruptCharacteristics(
            isr=self.isr,
            dpc=self.dpc,
            enable=self.enable,
            disable=self.disable,
            message_isr=self.message_isr if message_handlers else None,
            message_dpc=self.message_dpc if message_handlers else None,
            enable_message=self.enable_message if message_handlers else None,
            disable_message=self.disable_message if message_handlers else None,
            before_enable=self.before_enable if before_enable else None,
        )

    # -- looking at the log ---------------------------------------------------

    def calls(self, kind: str | None = None, message_id: int | None = None) -> list[Call]:
        with self.cond:
            return [
                c
                for c in self.log
                if (kind is None or c.kind == kind)
                and (message_id is None or c.message_id == message_id)
            ]

    def count(self, kind: str, message_id: int | None = None) -> int:
        return len(self.calls(kind, message_id))

    def wait_for(
        self, predicate: Callable[[RecordingMiniport], bool], timeout: float = DEFAULT_WAIT
    ) -> None:
        """Wait until ``predicate(self)`` holds; TimeoutError if it does not in time."""
        with self.cond:
            if not self.cond.wait_for(lambda: predicate(self), timeout):
                raise TimeoutError(f"condition not met within {timeout} s; log: {self.log[-20:]}")

    def wait_count(
        self, kind: str, n: int, message_id: int | None = None, timeout: float = DEFAULT_WAIT
    ) -> None:
        self.wait_for(lambda m: m._count_locked(kind, message_id) >= n, timeout)

    def _count_locked(self, kind: str, message_id: int | None) -> int:
        return sum(
            1
            for c in self.log
            if c.kind == kind and (message_id is None or c.message_id == message_id)
        )
