"""The QMP client against a scripted QMP server on a local unix socket."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hwnic.errors import LabError
from hwnic.lab.qmp import Qmp, QmpError

GREETING = {"QMP": {"version": {"qemu": {"major": 10, "minor": 0, "micro": 2}}, "capabilities": []}}
EVENT = {"event": "NIC_RX_FILTER_CHANGED", "data": {"name": "nic0"}, "timestamp": {}}


class FakeQemu:
    """Answers like QEMU's monitor: a greeting, then one reply per command.

    Every reply is preceded by an event, as QEMU interleaves them; ``set_link``
    on an unknown device fails as QEMU's does; ``quit`` closes the connection
    without a reply, as a QEMU that dies does.
    """

    def __init__(self, path: Path) -> None:
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.requests: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        with conn, conn.makefile("rwb") as f:
            f.write(json.dumps(GREETING).encode() + b"\n")
            f.flush()
            for line in f:
                request = json.loads(line)
                self.requests.append(request)
                command = request["execute"]
                if command == "quit":
                    return
                if command == "set_link" and request["arguments"]["name"] != "nic0":
                    desc = f"Device '{request['arguments']['name']}' not found"
                    reply: dict[str, Any] = {"error": {"class": "DeviceNotFound", "desc": desc}}
                elif command == "query-status":
                    reply = {"return": {"status": "running", "running": True}}
                else:
                    reply = {"return": {}}
                f.write(json.dumps(EVENT).encode() + b"\n" + json.dumps(reply).encode() + b"\n")
                f.flush()

    def close(self) -> None:
        self.server.close()
        self.thread.join(timeout=5)


@pytest.fixture
def qemu(tmp_path: Path) -> Iterator[tuple[FakeQemu, Path]]:
    path = tmp_path / "qmp.sock"
    fake = FakeQemu(path)
    yield fake, path
    fake.close()


def test_negotiates_then_returns_results_past_events(qemu: tuple[FakeQemu, Path]) -> None:
    fake, path = qemu
    with Qmp(path, timeout=5) as qmp:
        qmp.connect(time.monotonic() + 5)
        assert qmp.execute("query-status") == {"status": "running", "running": True}
        assert qmp.execute("set_link", name="nic0", up=False) == {}
    assert fake.requests == [
        {"execute": "qmp_capabilities"},
        {"execute": "query-status"},
        {"execute": "set_link", "arguments": {"name": "nic0", "up": False}},
    ]


def test_errors_name_the_command_and_qemus_reason(qemu: tuple[FakeQemu, Path]) -> None:
    _, path = qemu
    with Qmp(path, timeout=5) as qmp:
        qmp.connect(time.monotonic() + 5)
        with pytest.raises(QmpError, match="QMP set_link: DeviceNotFound: Device 'x' not found"):
            qmp.execute("set_link", name="x", up=True)
        assert qmp.execute("query-status")["running"] is True  # the session goes on


def test_two_threads_each_get_their_own_replies(qemu: tuple[FakeQemu, Path]) -> None:
    # The control relay and the runner's freeze report share one session.
    _, path = qemu
    wrong: list[Any] = []
    with Qmp(path, timeout=5) as qmp:
        qmp.connect(time.monotonic() + 5)

        def ask(command: str, expected: Any, **arguments: Any) -> None:
            for _ in range(50):
                got = qmp.execute(command, **arguments)
                if got != expected:
                    wrong.append(got)

        threads = [
            threading.Thread(
                target=ask, args=("query-status", {"status": "running", "running": True})
            ),
            threading.Thread(
                target=ask, args=("set_link", {}), kwargs={"name": "nic0", "up": True}
            ),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert wrong == []


def test_a_qemu_that_went_away_is_a_lab_error_and_close_still_works(
    qemu: tuple[FakeQemu, Path],
) -> None:
    fake, path = qemu
    qmp = Qmp(path, timeout=5)
    qmp.connect(time.monotonic() + 5)
    with pytest.raises(LabError, match="closed the QMP connection"):
        qmp.execute("quit")
    fake.thread.join(timeout=5)
    with pytest.raises(LabError, match=r"QMP (write|read) failed|closed the QMP connection"):
        for _ in range(10):  # the first writes may still land in the socket buffer
            qmp.execute("query-status")
    qmp.close()  # a broken pipe while flushing is not an error here
    with pytest.raises(LabError, match="not connected"):
        qmp.execute("query-status")


def test_connect_gives_up_when_qemu_never_listens(tmp_path: Path) -> None:
    qmp = Qmp(tmp_path / "absent.sock")
    with pytest.raises(LabError, match="did not come up"):
        qmp.connect(time.monotonic() + 60, alive=lambda: False)  # QEMU already dead: no wait
