"""A small synchronous QMP client over QEMU's unix socket (host side)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hwnic.errors import LabError

CONNECT_POLL = 0.1  # s between attempts while QEMU is starting
REPLY_TIMEOUT = 30.0  # s; TCG QEMU can be slow to answer while it is busy


class QmpError(LabError):
    """QEMU answered a QMP command with an error."""


class Qmp:
    """One QMP session. ``execute`` is thread-safe; events are dropped."""

    def __init__(self, path: Path, timeout: float = REPLY_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._file: Any = None
        self._lock = threading.Lock()

    def connect(self, deadline: float, alive: Callable[[], bool] | None = None) -> None:
        """Connect (retrying until ``deadline``, a monotonic time) and negotiate.

        ``alive`` is an optional callable; when it returns False (QEMU died)
        connecting stops early.
        """
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() >= deadline or (alive is not None and not alive()):
                    raise LabError(
                        f"QEMU's QMP socket {self.path} did not come up",
                        "QEMU probably failed to start: see its messages above",
                    ) from None
                time.sleep(CONNECT_POLL)
        sock.settimeout(self.timeout)
        self._sock = sock
        self._file = sock.makefile("rwb")
        greeting = self._read()
        if "QMP" not in greeting:
            raise LabError(f"unexpected QMP greeting: {greeting}")
        self.execute("qmp_capabilities")

    def close(self) -> None:
        if self._file is not None:
            # QEMU already gone: flushing a half-sent request fails (broken pipe).
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Qmp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self) -> dict[str, Any]:
        try:
            line = self._file.readline()
        except OSError as exc:
            raise LabError(f"QMP read failed: {exc}") from exc
        if not line:
            raise LabError("QEMU closed the QMP connection", "the guest has probably ended")
        msg: dict[str, Any] = json.loads(line)
        return msg

    def execute(self, command: str, **arguments: Any) -> Any:
        """Run one QMP command and return its ``return`` value (QmpError on error)."""
        if self._file is None:
            raise LabError("QMP is not connected")
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        with self._lock:
            try:
                self._file.write(json.dumps(request).encode() + b"\n")
                self._file.flush()
            except OSError as exc:
                raise LabError(f"QMP write failed: {exc}") from exc
            while True:
                reply = self._read()
                if "event" in reply:
                    continue
                if "error" in reply:
                    err = reply["error"]
                    raise QmpError(f"QMP {command}: {err.get('class')}: {err.get('desc')}")
                return reply.get("return")
