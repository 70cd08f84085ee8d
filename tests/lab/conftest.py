"""Lab tests run inside the guest that ``hwnic lab run`` boots (HWNIC_LAB=1).

Outside the lab every lab test is skipped with that reason. Inside it, the
tests are parametrised over the NICs the guest really has (from
``hwnic.pci.list_devices``), so no address is hard-coded; a family the lab
was asked for but that is missing or not bound to vfio-pci fails the run.
"""

from __future__ import annotations

import json
import os

import pytest

from hwnic import pci

IN_LAB = os.environ.get("HWNIC_LAB") == "1"


def lab_families() -> list[str]:
    """The NIC families the lab was booted with, in order (from HWNIC_LAB_NICS)."""
    raw = os.environ.get("HWNIC_LAB_NICS", "[]")
    return [nic["model"] for nic in json.loads(raw)]


def ports_by_family() -> dict[str, list[pci.PciNic]]:
    ports: dict[str, list[pci.PciNic]] = {}
    for nic in pci.list_devices():
        if nic.family:
            ports.setdefault(nic.family, []).append(nic)
    return ports


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if IN_LAB:
        return
    skip = pytest.mark.skip(
        reason="lab test: runs inside the QEMU lab (tools/test.sh, or "
        "'hwnic lab run --nic igb -- python -m pytest tests/lab')"
    )
    for item in items:
        item.add_marker(skip)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "port" in metafunc.fixturenames:
        ports = ports_by_family() if IN_LAB else {}
        firsts = [nics[0] for _, nics in sorted(ports.items())]
        metafunc.parametrize("port", firsts, ids=[p.family or p.bdf for p in firsts])


@pytest.fixture(scope="session", autouse=True)
def _lab_has_what_it_was_asked_for() -> None:
    if not IN_LAB:
        return
    ports = ports_by_family()
    for family in set(lab_families()):
        assert family in ports, f"the lab was booted with {family} but the guest has none"
        for nic in ports[family]:
            assert nic.vfio_ready, f"{nic.bdf} ({family}) is not bound to vfio-pci"
