"""Hardware tests: inside the QEMU lab (HWNIC_LAB=1) or on ports given by address.

The fixtures and the skipping live in hwnic's pytest plugin
(``hwnic.pytest_plugin``: ``--hwnic-ports A,B`` or ``HWNIC_PORTS``, ``port``,
``pair``, ``hwnic_rig``, ``hwnic_link``). Tests are parametrised over the
ports the rig really has, so no address is hard-coded. In the lab, a family
the lab was asked for but that is missing or not bound to vfio-pci fails the
run.
"""

from __future__ import annotations

import json
import os

import pytest

from hwnic import pci
from hwnic.pytest_plugin import rig_of


def lab_families() -> list[str]:
    """The NIC families the lab was booted with, in order (from HWNIC_LAB_NICS)."""
    raw = os.environ.get("HWNIC_LAB_NICS", "[]")
    return [nic["model"] for nic in json.loads(raw)]


@pytest.fixture(scope="session", autouse=True)
def _lab_has_what_it_was_asked_for(request: pytest.FixtureRequest) -> None:
    rig = rig_of(request.config)
    if rig is None or not rig.in_lab:
        return
    ports: dict[str, list[pci.PciNic]] = {}
    for nic in pci.list_devices():
        if nic.family:
            ports.setdefault(nic.family, []).append(nic)
    for family in set(lab_families()):
        assert family in ports, f"the lab was booted with {family} but the guest has none"
        for nic in ports[family]:
            assert nic.vfio_ready, f"{nic.bdf} ({family}) is not bound to vfio-pci"
