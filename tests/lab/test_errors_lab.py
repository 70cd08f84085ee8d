"""User-caused errors that need a device: a NIC not bound to vfio-pci, then bound again."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hwnic.pytest_plugin import Rig

pytestmark = pytest.mark.lab

CLI_TIMEOUT = 120


def hwnic_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hwnic.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )


def test_not_bound_to_vfio_is_one_line_and_bind_fixes_it(hwnic_rig: Rig) -> None:
    bdf = hwnic_rig.ports[-1].bdf
    assert hwnic_cli("unbind", bdf).returncode == 0
    try:
        proc = hwnic_cli("info", bdf)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert "not vfio-pci" in lines[0] and f"hwnic bind {bdf}" in lines[0]
    finally:
        bound = hwnic_cli("bind", bdf)
    assert bound.returncode == 0, bound.stderr
    assert "bound to vfio-pci" in bound.stdout
    assert hwnic_cli("info", bdf).returncode == 0
