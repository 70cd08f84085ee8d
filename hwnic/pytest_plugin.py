"""pytest fixtures for hardware tests: in the QEMU lab, or on real ports given by address.

Installed with hwnic (entry point ``pytest11``), so a user's own tests get it
too. Where the ports come from, first match wins:

* ``--hwnic-ports A,B[,C,D]`` or ``HWNIC_PORTS=A,B``: real ports (or any
  ports bound to vfio-pci) by PCI address. Consecutive ports are cabled pairs
  (A-B, C-D), the first of each pair sends. Links are flapped through the
  receiving port's own PHY (MDIC), as on silicon there is no monitor to ask.
* inside the QEMU lab (``HWNIC_LAB=1``, set by ``hwnic lab run``): the lab's
  NICs, paired by hub; links are flapped with QEMU's ``set_link``.

Without either, tests marked ``lab`` are skipped with that reason. A test
marked ``needs_lab("why")`` runs only in the QEMU lab (it needs the emulator
or changes the machine) and is skipped with its reason elsewhere.

Fixtures: ``hwnic_rig`` (a :class:`Rig`), ``hwnic_link`` (its
:class:`LinkControl`). A test that names ``port`` is run once per NIC family
on the rig (its first port); one that names ``pair``, once per family with
a cabled pair.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import pytest

from hwnic import pci
from hwnic.errors import HwnicError

if TYPE_CHECKING:
    from hwnic.nic.base import Nic

PORTS_ENV = "HWNIC_PORTS"
LAB_ENV = "HWNIC_LAB"
SKIP_OUTSIDE = (
    "hardware test: give ports with --hwnic-ports A,B (or HWNIC_PORTS), or run it in the "
    "QEMU lab (tools/test.sh, or 'hwnic lab run --nic igb --nic igb -- python -m pytest tests/lab')"
)
PHY_SETTLE = 0.05  # s between the PHY writes of a flap


@dataclass(frozen=True)
class TestPort:
    """One port under test: its address, family and a short name for test ids."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    bdf: str
    family: str
    name: str  # QEMU's id (nic3) in the lab, else the address
    qemu_id: str | None = None

    @property
    def address(self) -> str:
        return self.bdf

    @property
    def model(self) -> str:
        return self.family


Pair = tuple[TestPort, TestPort]


class LinkControl(Protocol):
    """Takes a port's link down or up; ``nic`` is the port opened by the test, if any."""

    def set_link(self, port: TestPort, up: bool, nic: Nic | None = None) -> None: ...

    def changes_per_flap(self, nic: Nic) -> int:
        """Link changes ``nic`` reports (LSC) for one down-and-up."""
        ...


class QemuLink:
    """In the lab: QEMU's ``set_link`` through the lab's control channel."""

    def set_link(self, port: TestPort, up: bool, nic: Nic | None = None) -> None:
        from hwnic.lab.control import LabControl

        assert port.qemu_id is not None, f"{port.bdf} is not a lab NIC"
        LabControl().set_link(port.qemu_id, up)

    def changes_per_flap(self, nic: Nic) -> int:
        return 2  # QEMU raises LSC on set_link's down and on its up


class PhyLink:
    """On any port: its own PHY through MDIC, so no second machine is needed.

    Down: BMCR power-down with an autonegotiation restart. Silicon keeps the
    link down until the power-down bit is cleared; QEMU's models ignore the
    bit and only renegotiate (the link drops at once and returns about 0.5 s
    later), which is still a flap the driver must see. Up: power-down
    cleared, autonegotiation restarted.
    """

    def set_link(self, port: TestPort, up: bool, nic: Nic | None = None) -> None:
        from hwnic.nic import regs

        if nic is None:
            raise HwnicError(
                f"flapping {port.bdf}'s link on a real port needs the test's open Nic",
                "pass nic= to set_link",
            )
        autoneg = regs.BMCR_AUTONEG_ENABLE | regs.BMCR_AUTONEG_RESTART
        if up:
            nic.phy_write(regs.PHY_BMCR, autoneg | regs.BMCR_FULL_DUPLEX | regs.BMCR_SPEED_1000)
        else:
            nic.phy_write(regs.PHY_BMCR, autoneg | regs.BMCR_POWER_DOWN)
        time.sleep(PHY_SETTLE)

    def changes_per_flap(self, nic: Nic) -> int:
        from hwnic.nic.quirks import Flag

        return 1 if Flag.EMU_NO_LSC_ON_AUTONEG_RESTART in nic.quirks else 2


@dataclass
class Rig:
    """The ports a test run has, how they are cabled, and how to flap their links."""

    mode: str  # "lab" (QEMU, HWNIC_LAB=1) or "ports" (given by address)
    ports: list[TestPort]
    cabled: list[Pair] = field(default_factory=list)
    link: LinkControl = field(default_factory=PhyLink)

    @property
    def in_lab(self) -> bool:
        return self.mode == "lab"

    def families(self) -> list[str]:
        return sorted({p.family for p in self.ports})

    def first_ports(self) -> list[TestPort]:
        """One port per family (the first given), sorted by family."""
        firsts: dict[str, TestPort] = {}
        for port in self.ports:
            firsts.setdefault(port.family, port)
        return [firsts[f] for f in sorted(firsts)]

    def pairs(self) -> dict[str, Pair]:
        """One cabled pair per family (the first), sender first."""
        found: dict[str, Pair] = {}
        for a, b in self.cabled:
            found.setdefault(a.family, (a, b))
        return dict(sorted(found.items()))


def _given_ports(text: str) -> Rig:
    ports = []
    for raw in text.split(","):
        if not raw.strip():
            continue
        try:
            nic = pci.describe(pci.normalize_bdf(raw))
        except HwnicError as exc:
            raise pytest.UsageError(f"--hwnic-ports: {exc}") from None
        if not nic.family:
            raise pytest.UsageError(f"--hwnic-ports: {nic.bdf} is not a NIC hwnic drives")
        if not nic.vfio_ready:
            raise pytest.UsageError(
                f"--hwnic-ports: {nic.bdf} is not bound to vfio-pci (run 'hwnic bind {nic.bdf}')"
            )
        ports.append(TestPort(nic.bdf, nic.family, nic.bdf))
    cabled = [(ports[i], ports[i + 1]) for i in range(0, len(ports) - 1, 2)]
    for a, b in cabled:
        if a.family != b.family:
            raise pytest.UsageError(
                f"--hwnic-ports: {a.bdf} ({a.family}) and {b.bdf} ({b.family}) are given as a "
                "cabled pair but are different families; give pairs of one family"
            )
    return Rig("ports", ports, cabled, PhyLink())


def _lab_rig() -> Rig:
    from hwnic.lab.guest import lab_nics
    from hwnic.lab.topology import pairs

    nics = [n for n in lab_nics() if n.bdf]
    ports = {n.bdf: TestPort(n.address, n.model, n.qemu_id, n.qemu_id) for n in nics}
    cabled = [(ports[a.address], ports[b.address]) for a, b in pairs(nics).values()]
    return Rig("lab", list(ports.values()), cabled, QemuLink())


def make_rig(given: str | None) -> Rig | None:
    """The rig from ``--hwnic-ports``/HWNIC_PORTS, else the QEMU lab's, else None."""
    text = given or os.environ.get(PORTS_ENV)
    if text:
        return _given_ports(text)
    if os.environ.get(LAB_ENV) == "1":
        return _lab_rig()
    return None


def receive_checked(nic: Nic, count: int, timeout: float) -> list[int]:
    """Receive until ``count`` frames came (or ``timeout`` s passed); their sequence numbers.

    Every batch is checked with :func:`hwnic.traffic.check` (a corrupted frame
    fails the test) and released.
    """
    from hwnic import traffic

    got: list[int] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        batch = nic.receive(timeout=1.0)
        if batch is None:
            continue
        with batch:
            checked = traffic.check(batch.frames, batch.lengths)
            assert checked.good.all(), "corrupted frames"
            got += checked.seqs.tolist()
    return got


_RIG_KEY = pytest.StashKey["Rig | None"]()


def rig_of(config: pytest.Config) -> Rig | None:
    """The rig of this pytest run (None: no hardware, lab tests are skipped)."""
    return config.stash.get(_RIG_KEY, None)


# -- pytest hooks ---------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hwnic", "hwnic hardware tests")
    group.addoption(
        "--hwnic-ports",
        metavar="A,B[,C,D]",
        help="run hardware tests on these ports (PCI addresses, bound to vfio-pci); "
        "consecutive ports are cabled pairs. Default: $HWNIC_PORTS, or the QEMU lab's NICs",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab: a hardware test (QEMU lab or --hwnic-ports)")
    config.addinivalue_line(
        "markers", "needs_lab(reason): runs only in the QEMU lab; skipped elsewhere with reason"
    )
    config.stash[_RIG_KEY] = make_rig(config.getoption("--hwnic-ports", None))


def pytest_report_header(config: pytest.Config) -> str | None:
    rig = rig_of(config)
    if rig is None:
        return None
    pairs = ", ".join(f"{a.name}->{b.name}" for a, b in rig.cabled) or "none"
    return f"hwnic: {rig.mode} rig, ports {', '.join(p.bdf for p in rig.ports)}; pairs {pairs}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rig = rig_of(config)
    for item in items:
        if rig is None and item.get_closest_marker("lab"):
            item.add_marker(pytest.mark.skip(reason=SKIP_OUTSIDE))
        marker = item.get_closest_marker("needs_lab")
        if marker and (rig is None or not rig.in_lab):
            why = marker.args[0] if marker.args else "needs the QEMU lab"
            item.add_marker(pytest.mark.skip(reason=f"QEMU lab only: {why}"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``port``: once per family; ``pair``: once per family with a cabled pair.

    A test module that parametrises these itself (with more axes) does so in
    its own ``pytest_generate_tests`` with :func:`rig_of`.
    """
    if hasattr(metafunc.module, "pytest_generate_tests"):
        return  # the module parametrises its own
    rig = rig_of(metafunc.config)
    names = metafunc.fixturenames
    if "port" in names:
        ports = rig.first_ports() if rig else []
        metafunc.parametrize("port", ports, ids=[p.family for p in ports])
    if "pair" in names:
        pairs = list(rig.pairs().items()) if rig else []
        metafunc.parametrize("pair", [p for _, p in pairs], ids=[f for f, _ in pairs])


@pytest.fixture(scope="session")
def hwnic_rig(request: pytest.FixtureRequest) -> Rig:
    rig = rig_of(request.config)
    if rig is None:
        pytest.skip(SKIP_OUTSIDE)
    return rig


@pytest.fixture(scope="session")
def hwnic_link(hwnic_rig: Rig) -> LinkControl:
    return hwnic_rig.link
