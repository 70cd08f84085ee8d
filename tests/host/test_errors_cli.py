"""User-caused errors at the command line: one line, what to do, non-zero, no traceback.

Complements test_cli.py with the cases a user meets on a real machine: a
device hwnic does not drive (unbinding it is refused: it may be the disk),
option values out of range, the no-IOMMU warning, and SIGTERM behaving like
Ctrl-C. Binding and permission cases need a device and run in the lab
(tests/lab/test_errors_lab.py, test_security_lab.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

CLI_TIMEOUT = 60
# The child replaces `hwnic list` with a command that waits, then runs the CLI.
SLOW_LIST = (
    "import sys, time\n"
    "import hwnic.cli.devices as d\n"
    "from hwnic.cli.main import main\n"
    "def slow(args):\n"
    "    print('ready', flush=True)\n"
    "    time.sleep(60)\n"
    "d.cmd_list = slow\n"
    "sys.exit(main(['list']))\n"
)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hwnic.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def a_host_device_hwnic_does_not_drive() -> str:
    from hwnic import pci

    for path in sorted(Path("/sys/bus/pci/devices").iterdir()):
        if pci.describe(path.name).family is None:
            return path.name
    raise AssertionError("this machine has no PCI device at all")


def test_unsupported_device_is_refused_by_info_bind_and_unbind() -> None:
    bdf = a_host_device_hwnic_does_not_drive()
    for command in ("info", "bind", "unbind"):
        line = one_line_error(run(command, bdf))
        assert "which hwnic has no model for" in line and "hwnic list" in line


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["bind", "0000:7f:1f.7", "--timeout", "0"], "--timeout 0.0"),
        (["lab", "run", "--cpus", "0", "--", "true"], "--cpus"),
        (["lab", "run", "--memory", "lots", "--", "true"], "not a size"),
        (["lab", "run", "--nic", "rtl8139", "--", "true"], "invalid choice"),
        (["lab", "run"], "no command to run"),
        (["info"], "required"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_option_values(args: list[str], expect: str) -> None:
    proc = run(*args)
    assert proc.returncode == 2
    assert expect in one_line_error(proc)


def test_allow_noiommu_warns_what_it_means() -> None:
    proc = run("info", "0000:7f:1f.7", "--allow-noiommu")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "no-IOMMU" in lines[0] and "all memory" in lines[0]
    assert "no PCI device" in lines[1] and len(lines) == 2


def test_lab_dependencies_missing_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # no qemu, no vng, nothing
    proc = subprocess.run(
        [sys.executable, "-m", "hwnic.cli.main", "lab", "run", "-q", "--", "true"],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        env=env,
    )
    line = one_line_error(proc)
    assert "not found" in line or "missing" in line or "install" in line, line


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_sigterm_unwinds_like_ctrl_c(sig: signal.Signals) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", SLOW_LIST],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        child.send_signal(sig)
        _, err = child.communicate(timeout=CLI_TIMEOUT)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 130
    assert "Traceback" not in err
    assert err.strip() == "hwnic: interrupted; the NIC was left quiet"
