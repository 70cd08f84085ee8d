"""``hwnic capture`` and ``hwnic send`` in the lab, per model: the peer port sends a
known number of frames, the capture file reads in tshark with exactly those
frames; replaying it delivers them again."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import hwnic
from hwnic import capture, traffic
from hwnic.cli.main import main
from hwnic.pytest_plugin import Pair, receive_checked

pytestmark = pytest.mark.lab

FRAMES = 120
LENGTHS = np.resize(np.array([60, 128, 590, 1514]), FRAMES)
READY_TIMEOUT = 120.0  # s for the capture process to open its port under TCG
CAPTURE_TIMEOUT = 120.0
RECEIVE_TIMEOUT = 60.0
TSHARK_TIMEOUT = 180.0


def _wait_for_line(stream: object, text: str, timeout: float) -> list[str]:
    """Lines read from ``stream`` until one contains ``text`` (in a thread: no blocking)."""
    seen: list[str] = []
    found = threading.Event()

    def read() -> None:
        for line in stream:  # type: ignore[attr-defined]
            seen.append(line)
            if text in line:
                found.set()
                return

    threading.Thread(target=read, daemon=True).start()
    assert found.wait(timeout), f"no {text!r} within {timeout} s: {''.join(seen)}"
    return seen


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_capture_then_replay(pair: Pair, tmp_path: Path) -> None:
    a, b = pair[0].bdf, pair[1].bdf
    path = tmp_path / "capture.pcap"
    with hwnic.open(b) as peer:
        frames = traffic.build(np.arange(FRAMES), LENGTHS, peer.mac, "ff:ff:ff:ff:ff:ff")
        proc = subprocess.Popen(
            [sys.executable, "-m", "hwnic.cli.main", "capture", a, "-w", str(path),
             "--count", str(FRAMES), "--duration", str(CAPTURE_TIMEOUT)],
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            _wait_for_line(proc.stderr, "capturing on", READY_TIMEOUT)
            assert peer.send(frames, LENGTHS, timeout=RECEIVE_TIMEOUT) == FRAMES
            assert proc.wait(CAPTURE_TIMEOUT) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    out = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-T", "fields", "-e", "frame.len"],
        capture_output=True, text=True, timeout=TSHARK_TIMEOUT, check=True,
    ).stdout.split()  # fmt: skip
    assert [int(n) for n in out] == LENGTHS.tolist()
    back = capture.read(path)
    assert traffic.check(back.frames, back.lengths).good.all()

    # Replay the file from port a; port b receives the same frames, in order.
    with hwnic.open(b) as receiver:
        assert main(["send", a, str(path), "--batch", "32"]) == 0
        got = receive_checked(receiver, FRAMES, RECEIVE_TIMEOUT)
    assert got == list(range(FRAMES))
