"""The dispatcher: the one thread that waits on an interrupt's eventfds and runs its ISRs.

It plays the CPU taking the interrupt at DIRQL: it reads the eventfd (which
also acknowledges it) and calls the message's ISR at once. Nothing slow runs
here; DPCs run on their own workers. Its first pass services the eventfds that
are already signalled, and :meth:`Dispatcher.start` returns only after that
pass, so an interrupt pending at registration is handled before registration
returns (as NDIS allows).
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable, Mapping

from hwnic.errors import InterruptError

# The handler gets the ISR start time in time.perf_counter_ns() units.
Handler = Callable[[int], None]
_WAKE = 1
_FOREVER = -1
_NO_WAIT = 0


class Dispatcher:
    """Runs ``handlers[fd](t_ns)`` on one thread whenever eventfd ``fd`` is signalled."""

    def __init__(
        self, name: str, handlers: Mapping[int, Handler], report: Callable[[BaseException], None]
    ) -> None:
        self._handlers = dict(handlers)
        self._report = report
        self._epoll = select.epoll()
        self._stop_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._stop_fd, select.EPOLLIN)
        for fd in self._handlers:
            self._epoll.register(fd, select.EPOLLIN)
        self._ready = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def ident(self) -> int | None:
        return self._thread.ident

    def start(self, timeout: float) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop(timeout)
            raise InterruptError(
                f"the interrupt dispatcher did not start within {timeout} s",
                "an ISR that was already signalled may be blocking",
            )

    def stop(self, timeout: float) -> None:
        """Stop after the ISR in progress (if any); no ISR runs once this returns."""
        if self._stopped:
            return
        if self._thread.ident is not None:
            os.eventfd_write(self._stop_fd, _WAKE)
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise InterruptError(
                    f"an ISR did not return within {timeout} s", "an ISR must not block"
                )
        self._stopped = True
        self._epoll.close()
        os.close(self._stop_fd)

    def _run(self) -> None:
        poll = self._epoll.poll
        handlers = self._handlers
        stop_fd = self._stop_fd
        read = os.eventfd_read
        now = time.perf_counter_ns
        timeout = _NO_WAIT  # first pass: whatever is signalled already
        while True:
            try:
                events = poll(timeout)
            except InterruptedError:
                continue
            for fd, _mask in events:
                if fd == stop_fd:
                    return
                try:
                    read(fd)  # the count may cover several signals: one ISR call for all
                except BlockingIOError:
                    continue
                try:
                    handlers[fd](now())
                except Exception as exc:
                    self._report(exc)
            if timeout == _NO_WAIT:
                timeout = _FOREVER
                self._ready.set()
