"""``hwnic lab run`` argument handling and the runner's clean-up, without booting."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from hwnic.cli.main import main
from hwnic.errors import UsageError
from hwnic.lab import runner
from hwnic.lab.runner import LabConfig, _Pump, kill_group


def test_unknown_model_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["lab", "run", "--nic", "e100", "--", "true"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'e100'" in err and "e1000e" in err


def test_no_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "run", "--nic", "igb"]) == 2
    assert "no command to run in the lab" in capsys.readouterr().err


def test_bad_memory_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "run", "--memory", "lots", "--", "true"]) == 2
    assert "--memory 'lots' is not a size" in capsys.readouterr().err


def test_missing_qemu_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["lab", "run", "--", "true"]) == 1
    assert capsys.readouterr().err == (
        "hwnic: qemu-system-x86_64 not found on PATH; run tools/setup-host.sh (as root)\n"
    )


def test_config_checks(tmp_path: Path) -> None:
    LabConfig(command=["true"], rwdirs=[tmp_path]).check()
    with pytest.raises(UsageError, match="not a directory"):
        LabConfig(command=["true"], rwdirs=[tmp_path / "nope"]).check()
    spaced = tmp_path / "a b"
    spaced.mkdir()
    with pytest.raises(UsageError, match="spaces"):
        LabConfig(command=["true"], rwdirs=[spaced]).check()
    with pytest.raises(UsageError, match="at least 1"):
        LabConfig(command=["true"], cpus=0).check()
    with pytest.raises(UsageError, match="unknown NIC model"):
        LabConfig(command=["true"], nics=["rtl8139"]).check()


def test_kill_group_leaves_no_process() -> None:
    """vng -> virtme-run -> QEMU: the grandchildren must die with the group."""
    proc = subprocess.Popen(
        # Ignored signals are inherited: every process here shrugs off SIGTERM.
        ["sh", "-c", "trap '' TERM; sleep 300 & sleep 300 & while :; do sleep 1; done"],
        start_new_session=True,
    )
    time.sleep(0.3)  # let the children start
    started = time.monotonic()
    kill_group(proc)
    assert proc.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)
    # The TERM-ignoring leader needed the SIGKILL after the grace period.
    assert time.monotonic() - started >= runner.TERM_GRACE - 0.5


def test_pump_streams_and_drops_hub_warnings() -> None:
    src_r, src_w = os.pipe()
    dst_r, dst_w = os.pipe()
    with os.fdopen(src_r, "rb", buffering=0) as src:
        pump = _Pump(src, dst_w, keep_tail=True)
        pump.start()
        os.write(src_w, b"qemu-system-x86_64: warning: hub 0 is not connected to host network\n")
        os.write(src_w, b"test_a.py ..")  # no newline yet: must come out at once
        got = b""
        deadline = time.monotonic() + 5
        while b".." not in got and time.monotonic() < deadline:
            got += os.read(dst_r, 4096)
        assert got == b"test_a.py .."
        os.write(src_w, b". [100%]\nqemu-system-x86_64: real error\n")
        os.close(src_w)
        pump.join(timeout=5)
    os.close(dst_w)
    with os.fdopen(dst_r, "rb") as rest:
        got += rest.read()
    assert got == b"test_a.py ... [100%]\nqemu-system-x86_64: real error\n"
    assert list(pump.tail)[-1] == "qemu-system-x86_64: real error"
    assert not any("hub 0" in line for line in pump.tail)


def test_no_thread_left_by_pump() -> None:
    before = {t.name for t in threading.enumerate()}
    test_pump_streams_and_drops_hub_warnings()
    assert {t.name for t in threading.enumerate()} - before == set()
