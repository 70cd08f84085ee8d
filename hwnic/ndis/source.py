"""Interrupt sources: what the framework needs from a device, and a plain-eventfd one.

The framework never talks to VFIO. It asks an :class:`InterruptSource` how many
vectors each interrupt type has, has it wire eventfds for the granted type, and
tells it to re-arm a line after each line-based ISR (VFIO masks INTx on
delivery). :mod:`hwnic.ndis.vfio_source` adapts a VFIO device; the
:class:`EventfdSource` here stands in for a device in host tests and the
benchmark.
"""

from __future__ import annotations

import enum
import os
import threading
from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

from hwnic.errors import InterruptError

# Each eventfd write adds this much; one write = one interrupt message.
_ONE_SIGNAL = 1
_EVENTFD_FLAGS = os.EFD_NONBLOCK | os.EFD_CLOEXEC


class InterruptType(enum.Enum):
    """The interrupt types NDIS can grant (``InterruptType`` after registration)."""

    LINE_BASED = "line-based"
    MSI = "MSI"
    MSIX = "MSI-X"

    @property
    def message_signaled(self) -> bool:
        return self is not InterruptType.LINE_BASED

    def __str__(self) -> str:
        return self.value


@runtime_checkable
class InterruptSource(Protocol):
    """What a device offers the interrupt framework."""

    def message_counts(self) -> Mapping[InterruptType, int]:
        """Vectors available per type; 0 (or absent) means that type is unavailable."""
        ...

    def connect(self, kind: InterruptType, count: int) -> list[int]:
        """Wire ``count`` vectors of ``kind`` to new non-blocking eventfds; return them."""
        ...

    def disconnect(self, kind: InterruptType) -> None:
        """Stop signalling and close the eventfds that :meth:`connect` returned."""
        ...

    def unmask_line(self) -> None:
        """Re-arm the line after a line-based ISR (VFIO auto-masks INTx on delivery)."""
        ...


class EventfdSource:
    """A software interrupt source: one eventfd per vector, signalled by :meth:`fire`.

    Line-based behaves like VFIO INTx: delivering the interrupt masks the line,
    a :meth:`fire` while masked stays pending, and :meth:`unmask_line` delivers
    a pending one. ``pending`` names messages that are already asserted when
    they are connected (a device with a cause latched), so they signal as soon
    as :meth:`connect` returns.
    """

    def __init__(self, counts: Mapping[InterruptType, int], *, pending: Iterable[int] = ()) -> None:
        self._counts = {kind: int(counts.get(kind, 0)) for kind in InterruptType}
        self._pending_at_connect = frozenset(pending)
        self._lock = threading.Lock()
        self._fds: list[int] = []
        self._kind: InterruptType | None = None
        self._line_masked = False
        self._line_pending = False
        self.unmasks = 0  # how often unmask_line() was called

    # -- InterruptSource ----------------------------------------------------

    def message_counts(self) -> Mapping[InterruptType, int]:
        return dict(self._counts)

    def connect(self, kind: InterruptType, count: int) -> list[int]:
        with self._lock:
            if self._kind is not None:
                raise InterruptError(f"{self._kind} interrupts are already connected")
            if not 0 < count <= self._counts[kind]:
                raise InterruptError(
                    f"cannot connect {count} {kind} vectors", f"{self._counts[kind]} available"
                )
            self._fds = [os.eventfd(0, _EVENTFD_FLAGS) for _ in range(count)]
            self._kind = kind
            self._line_masked = self._line_pending = False
            fds = list(self._fds)
        for message_id in sorted(self._pending_at_connect):
            if message_id < count:
                self.fire(message_id)
        return fds

    def disconnect(self, kind: InterruptType) -> None:
        with self._lock:
            if self._kind is not kind:
                raise InterruptError(f"{kind} interrupts are not connected")
            for fd in self._fds:
                os.close(fd)
            self._fds = []
            self._kind = None

    def unmask_line(self) -> None:
        with self._lock:
            self.unmasks += 1
            if self._line_pending and self._fds:
                self._line_pending = False
                os.eventfd_write(self._fds[0], _ONE_SIGNAL)  # stays masked: delivered again
            else:
                self._line_masked = False

    # -- the "device" side ----------------------------------------------------

    @property
    def connected(self) -> InterruptType | None:
        return self._kind

    @property
    def line_masked(self) -> bool:
        return self._line_masked

    def fire(self, message_id: int = 0) -> bool:
        """Raise ``message_id``; False if nothing is connected (the signal goes nowhere)."""
        with self._lock:
            if not self._fds:
                return False
            fd = self._fds[message_id]
            if self._kind is InterruptType.LINE_BASED:
                if self._line_masked:
                    self._line_pending = True
                    return True
                self._line_masked = True
            os.eventfd_write(fd, _ONE_SIGNAL)
            return True
