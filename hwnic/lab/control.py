"""The guest -> QEMU-monitor control channel, so a test can flap links.

QEMU has a virtio-serial port ``org.hwnic.ctl`` (``/dev/virtio-ports/...``
in the guest) whose other end is a unix socket on the host. ``hwnic lab run``
relays each request line from it to QMP, if the command is in a short
whitelist, and writes the answer back. One JSON object per line both ways:

    guest -> host  {"id": 7, "op": "qmp", "command": "set_link",
                    "arguments": {"name": "nic0", "up": false}}
    host -> guest  {"id": 7, "ok": true, "return": {}}
                   {"id": 7, "ok": false, "error": "..."}

``op: "hello"`` is the bootstrap telling the host that the guest is ready.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hwnic.errors import LabError
from hwnic.lab.qemu import CONTROL_PORT_NAME
from hwnic.lab.qmp import Qmp

GUEST_PORT = Path("/dev/virtio-ports") / CONTROL_PORT_NAME
REPLY_TIMEOUT = 60.0  # s; QMP under TCG plus the relay, with margin
BUSY_RETRY = 0.05  # s between opens while another guest process holds the port
POLL_INTERVAL = 0.5  # s; how often the host relay checks whether to stop
READ_CHUNK = 4096
# HMP commands a guest may run: read-only views.
HMP_ALLOWED = frozenset({"info network", "info pci", "info status"})


def _check_set_link(args: dict[str, Any]) -> None:
    if set(args) != {"name", "up"}:
        raise ValueError("set_link takes exactly 'name' and 'up'")
    if not isinstance(args["name"], str) or not isinstance(args["up"], bool):
        raise ValueError("set_link wants name: str and up: bool")


def _check_no_args(args: dict[str, Any]) -> None:
    if args:
        raise ValueError("this command takes no arguments")


def _check_hmp(args: dict[str, Any]) -> None:
    if set(args) != {"command-line"} or args["command-line"] not in HMP_ALLOWED:
        raise ValueError(f"only {', '.join(sorted(HMP_ALLOWED))} are allowed")


# Whitelisted QMP commands and a check of their arguments.
ALLOWED: dict[str, Callable[[dict[str, Any]], None]] = {
    "set_link": _check_set_link,
    "query-status": _check_no_args,
    "query-pci": _check_no_args,
    "human-monitor-command": _check_hmp,
}


def handle_request(
    request: dict[str, Any],
    qmp: Qmp,
    on_hello: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Answer one guest request (host side); never raises for a bad request."""
    rid = request.get("id")
    op = request.get("op")
    try:
        if op == "hello":
            if on_hello is not None:
                on_hello(request)
            return {"id": rid, "ok": True, "return": {}}
        if op != "qmp":
            raise ValueError(f"unknown op {op!r}")
        command = request.get("command")
        arguments = request.get("arguments") or {}
        if not isinstance(command, str) or command not in ALLOWED:
            raise ValueError(f"QMP command {command!r} is not allowed from the guest")
        if not isinstance(arguments, dict):
            raise ValueError("arguments must be an object")
        ALLOWED[command](arguments)
        return {"id": rid, "ok": True, "return": qmp.execute(command, **arguments)}
    except (ValueError, LabError) as exc:
        return {"id": rid, "ok": False, "error": str(exc)}


class ControlRelay:
    """Host side: a thread relaying guest requests from the control socket to QMP."""

    def __init__(
        self,
        socket_path: Path,
        qmp: Qmp,
        on_hello: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.qmp = qmp
        self.on_hello = on_hello
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hwnic-lab-control", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _connect(self) -> socket.socket | None:
        while not self._stop.is_set():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.socket_path))
                sock.settimeout(POLL_INTERVAL)
                return sock
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                self._stop.wait(POLL_INTERVAL)
        return None

    def _run(self) -> None:
        try:
            sock = self._connect()
            if sock is None:
                return
            with sock:
                self._serve(sock)
        except BaseException as exc:  # reported by the runner, never lost in a thread
            self.error = exc

    def _serve(self, sock: socket.socket) -> None:
        buf = b""
        while not self._stop.is_set():
            try:
                chunk = sock.recv(READ_CHUNK)
            except TimeoutError:
                continue
            if not chunk:
                return  # QEMU went away
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if not line.strip():
                    continue
                try:
                    request = json.loads(line)
                    if not isinstance(request, dict):
                        raise ValueError("not an object")
                except ValueError:
                    reply: dict[str, Any] = {"id": None, "ok": False, "error": "bad JSON line"}
                else:
                    reply = handle_request(request, self.qmp, self.on_hello)
                sock.sendall(json.dumps(reply).encode() + b"\n")


class LabControl:
    """Guest side: ask the host to run (whitelisted) QMP commands.

    >>> ctl = LabControl()
    >>> ctl.set_link("nic0", False)   # the cable of nic0 is pulled
    """

    _ids = itertools.count(int(time.time() * 1000) % 1_000_000_000)

    def __init__(self, port: Path = GUEST_PORT, timeout: float = REPLY_TIMEOUT) -> None:
        if not port.exists():
            raise LabError(
                f"{port} does not exist",
                "this only works inside 'hwnic lab run' (and needs the virtio_console module)",
            )
        self.port = port
        self.timeout = timeout

    def _open(self, deadline: float) -> int:
        # The port admits one opener at a time: wait for other guest processes.
        while True:
            try:
                return os.open(self.port, os.O_RDWR | os.O_NOCTTY)
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                    raise LabError(f"cannot open {self.port}: {exc.strerror}") from exc
                time.sleep(BUSY_RETRY)

    def request(self, op: str, **fields: Any) -> Any:
        """Send one request and return the host's ``return`` value."""
        rid = next(self._ids)
        deadline = time.monotonic() + self.timeout
        fd = self._open(deadline)
        try:
            os.write(fd, json.dumps({"id": rid, "op": op, **fields}).encode() + b"\n")
            reply = self._await_reply(fd, rid, deadline)
        finally:
            os.close(fd)
        if not reply.get("ok"):
            raise LabError(f"the lab host refused '{op}': {reply.get('error')}")
        return reply.get("return")

    def _await_reply(self, fd: int, rid: int, deadline: float) -> dict[str, Any]:
        buf = b""
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                break
            chunk = os.read(fd, READ_CHUNK)
            if not chunk:
                time.sleep(BUSY_RETRY)  # host end not connected (yet)
                continue
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                try:
                    reply = json.loads(line)
                except ValueError:
                    continue  # a fragment left by an earlier, interrupted client
                # Replies meant for an earlier client that gave up are skipped.
                if isinstance(reply, dict) and reply.get("id") == rid:
                    return reply
        raise LabError(
            f"no answer from the lab host on {self.port} within {self.timeout:.0f} s",
            "is 'hwnic lab run' still relaying? see its messages",
        )

    def command(self, name: str, /, **arguments: Any) -> Any:
        """Run a whitelisted QMP command on the lab's QEMU; returns its result."""
        return self.request("qmp", command=name, arguments=arguments)

    def set_link(self, nic_id: str, up: bool) -> None:
        """Plug (``up``) or pull the cable of a NIC, by its QEMU id (``nic0``)."""
        self.command("set_link", name=nic_id, up=up)

    def info_network(self) -> str:
        """QEMU's ``info network`` text: hubs, ports and link states."""
        out = self.command("human-monitor-command", **{"command-line": "info network"})
        return str(out)

    def hello(self, **fields: Any) -> None:
        self.request("hello", **fields)
