"""The guest -> QMP control channel, both ends, over local sockets and a pty."""

from __future__ import annotations

import json
import os
import socket
import threading
import tty
from pathlib import Path
from typing import Any

import pytest

from hwnic.errors import LabError
from hwnic.lab.control import ControlRelay, LabControl, handle_request
from hwnic.lab.qmp import Qmp, QmpError


class FakeQmp(Qmp):
    """Records commands; answers like QEMU does for the few the lab uses."""

    def __init__(self) -> None:
        super().__init__(Path("/nonexistent"))
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def execute(self, command: str, **arguments: Any) -> Any:
        self.calls.append((command, arguments))
        if command == "set_link" and arguments["name"] not in {"nic0", "hp0"}:
            raise QmpError(f"QMP set_link: DeviceNotFound: Device '{arguments['name']}' not found")
        if command == "query-status":
            return {"status": "running", "running": True}
        return {}


def test_set_link_is_forwarded() -> None:
    qmp = FakeQmp()
    req = {"id": 4, "op": "qmp", "command": "set_link", "arguments": {"name": "nic0", "up": False}}
    assert handle_request(req, qmp) == {"id": 4, "ok": True, "return": {}}
    assert qmp.calls == [("set_link", {"name": "nic0", "up": False})]


@pytest.mark.parametrize(
    ("command", "arguments", "why"),
    [
        ("quit", {}, "not allowed"),
        ("system_reset", {}, "not allowed"),
        ("set_link", {"name": "nic0"}, "exactly 'name' and 'up'"),
        ("set_link", {"name": "nic0", "up": "no"}, "up: bool"),
        ("query-status", {"x": 1}, "no arguments"),
        ("human-monitor-command", {"command-line": "quit"}, "only info"),
    ],
)
def test_refused_requests_never_reach_qmp(
    command: str, arguments: dict[str, Any], why: str
) -> None:
    qmp = FakeQmp()
    reply = handle_request({"id": 1, "op": "qmp", "command": command, "arguments": arguments}, qmp)
    assert reply["ok"] is False and why in reply["error"]
    assert qmp.calls == []


def test_qmp_errors_come_back_as_replies() -> None:
    reply = handle_request(
        {"id": 2, "op": "qmp", "command": "set_link", "arguments": {"name": "x", "up": True}},
        FakeQmp(),
    )
    assert reply == {
        "id": 2,
        "ok": False,
        "error": "QMP set_link: DeviceNotFound: Device 'x' not found",
    }


def test_hello_calls_back() -> None:
    seen: list[dict[str, Any]] = []
    reply = handle_request({"id": 3, "op": "hello", "nics": []}, FakeQmp(), seen.append)
    assert reply["ok"] is True and seen == [{"id": 3, "op": "hello", "nics": []}]


def test_relay_over_the_chardev_socket(tmp_path: Path) -> None:
    """The test plays QEMU's chardev server: guest lines in, replies out."""
    path = tmp_path / "ctl.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    qmp = FakeQmp()
    relay = ControlRelay(path, qmp)
    relay.start()
    try:
        conn, _ = server.accept()
        conn.settimeout(10)
        with conn:
            requests = [
                {"id": 1, "op": "qmp", "command": "query-status"},
                {"id": 2, "op": "qmp", "command": "set_link",
                 "arguments": {"name": "hp0", "up": True}},
            ]  # fmt: skip
            wire = b"".join(json.dumps(r).encode() + b"\n" for r in requests)
            # Split mid-line: the relay must reassemble lines.
            conn.sendall(wire[:10])
            conn.sendall(wire[10:] + b"not json\n")
            replies = []
            buf = b""
            while len(replies) < 3:
                buf += conn.recv(4096)
                *lines, buf = buf.split(b"\n")
                replies += [json.loads(line) for line in lines]
    finally:
        relay.stop()
        server.close()
    assert relay.error is None
    assert replies[0] == {"id": 1, "ok": True, "return": {"status": "running", "running": True}}
    assert replies[1] == {"id": 2, "ok": True, "return": {}}
    assert replies[2]["ok"] is False and replies[2]["id"] is None
    assert qmp.calls == [("query-status", {}), ("set_link", {"name": "hp0", "up": True})]


def test_guest_client_skips_stale_replies_and_raises_refusals() -> None:
    """A raw pty stands in for /dev/virtio-ports/org.hwnic.ctl."""
    master, slave = os.openpty()
    tty.setraw(slave)
    port = Path(os.ttyname(slave))
    requests: list[dict[str, Any]] = []

    def host() -> None:
        buf = b""
        while len(requests) < 2:
            buf += os.read(master, 4096)
            *lines, buf = buf.split(b"\n")
            for line in lines:
                req = json.loads(line)
                requests.append(req)
                # First a leftover reply meant for an earlier client, then the real one.
                stale = {"id": -1, "ok": True, "return": "stale"}
                if req["arguments"].get("name") == "nic0":
                    real = {"id": req["id"], "ok": True, "return": {}}
                else:
                    real = {"id": req["id"], "ok": False, "error": "not allowed"}
                os.write(master, json.dumps(stale).encode() + b"\n{half\n")
                os.write(master, json.dumps(real).encode() + b"\n")

    thread = threading.Thread(target=host, daemon=True)
    thread.start()
    try:
        ctl = LabControl(port=port, timeout=10)
        ctl.set_link("nic0", False)
        with pytest.raises(LabError, match="refused 'qmp': not allowed"):
            ctl.command("set_link", name="nosuch", up=True)
    finally:
        thread.join(timeout=10)
        os.close(master)
        os.close(slave)
    assert requests[0]["command"] == "set_link"
    assert requests[0]["arguments"] == {"name": "nic0", "up": False}
    assert requests[0]["id"] != requests[1]["id"]


def test_guest_client_outside_the_lab(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="only works inside 'hwnic lab run'"):
        LabControl(port=tmp_path / "org.hwnic.ctl")


def test_guest_client_times_out_without_host() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        ctl = LabControl(port=Path(os.ttyname(slave)), timeout=0.3)
        with pytest.raises(LabError, match="no answer from the lab host"):
            ctl.command("query-status")
    finally:
        os.close(master)
        os.close(slave)
