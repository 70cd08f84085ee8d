"""``run_selftest``: the offline tests of one port, in order, one Result each.

Order: the register-level tests on the bare device first (register, eeprom,
interrupt), then a reset, then the tests through an opened Nic (link,
loopback-mac, loopback-phy), then the pair with ``peer``. The port is taken
offline: nothing else may use it meanwhile. Every step leaves it quiet
(``with`` blocks), also on Ctrl-C.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from hwnic import pci, vfio
from hwnic.diag import interrupts, loopback, nvm, phy, registers
from hwnic.diag.result import Result, Status, TestFailed, TestSkipped, timed
from hwnic.errors import HwnicError, NicError, UsageError
from hwnic.nic import quirks, regs
from hwnic.nic import regs_igb as r_igb
from hwnic.nic.quirks import Flag

# In run order. "loopback" names both loopback tests.
TESTS = ("register", "eeprom", "interrupt", "link", "loopback-mac", "loopback-phy", "peer")
GROUPS = {"loopback": ("loopback-mac", "loopback-phy")}
DEVICE_TESTS = ("register", "eeprom", "interrupt")
NIC_TESTS = ("link", "loopback-mac", "loopback-phy")
DEFAULT_LINK_TIMEOUT = 10.0  # s
RESET_TIMEOUT = 1.0  # s for CTRL.RST to self-clear
ALL = 0xFFFFFFFF
PHY_AUTONEG = (
    regs.BMCR_AUTONEG_ENABLE
    | regs.BMCR_AUTONEG_RESTART
    | regs.BMCR_FULL_DUPLEX
    | regs.BMCR_SPEED_1000
)


def parse_tests(text: str | Iterable[str] | None, peer: str | None = None) -> list[str]:
    """Test names (comma-separated or a list) in run order; None: all that apply."""
    if text is None:
        return [t for t in TESTS if t != "peer" or peer]
    names = text.split(",") if isinstance(text, str) else list(text)
    chosen: set[str] = set()
    for raw in names:
        name = raw.strip()
        if name in GROUPS:
            chosen.update(GROUPS[name])
        elif name in TESTS:
            chosen.add(name)
        else:
            known = ", ".join((*TESTS, *GROUPS))
            raise UsageError(f"no self-test named {name!r}", f"choose from {known}")
    if "peer" in chosen and not peer:
        raise UsageError("the peer test needs a second port", "give --peer BDF")
    return [t for t in TESTS if t in chosen]


def _quirks(device: vfio.Device, family: str) -> quirks.Quirks:
    return quirks.for_ids(
        device.config_read(quirks.PCI_DEVICE_ID, 2),
        device.config_read(quirks.PCI_SUBSYSTEM_VENDOR_ID, 2),
        family,
    )


def _quiet(bar: vfio.Bar, family: str) -> None:
    bar.write32(regs.IMC, ALL)
    if family == "igb":
        bar.write32(r_igb.EIMC, ALL)
    bar.write32(regs.RCTL, 0)
    bar.write32(regs.TCTL, 0)


def reset_port(device: vfio.Device, family: str, q: quirks.Quirks) -> None:
    """Masked, stopped, CTRL.RST; the link restarted where a reset drops it."""
    device.set_bus_master(False)
    bar = device.bar(0)
    _quiet(bar, family)
    bar.write32(regs.CTRL, bar.read32(regs.CTRL) | regs.Ctrl.RST)
    deadline = time.monotonic() + RESET_TIMEOUT
    while bar.read32(regs.CTRL) & regs.Ctrl.RST:
        if time.monotonic() > deadline:
            raise NicError(f"{device.bdf}: CTRL.RST did not clear", "power-cycle the NIC")
        time.sleep(phy.POLL)
    _quiet(bar, family)
    bar.read32(regs.ICR)
    if Flag.PHY_RESTART_AUTONEG in q:
        phy.write(bar, regs.PHY_BMCR, PHY_AUTONEG)


def _device_tests(
    bdf: str, family: str, chosen: Sequence[str], results: list[Result], allow_noiommu: bool
) -> None:
    with vfio.open_device(bdf, allow_noiommu=allow_noiommu) as device:
        q = _quirks(device, family)
        bar = device.bar(0)
        try:
            device.set_bus_master(False)  # no DMA may follow from test patterns
            _quiet(bar, family)
            if "register" in chosen:
                with timed("register", results) as res:
                    toggle, table = registers.table_for(family, q.part.max_queues)
                    try:
                        checked = registers.run_table(bar, toggle, table)
                    except registers.RegisterMismatch as exc:
                        raise TestFailed(str(exc)) from None
                    res.detail = f"STATUS and {checked} register entries kept what was written"
            if "eeprom" in chosen:
                with timed("eeprom", results) as res:
                    if Flag.NVM_FLASHLESS in q:
                        raise TestSkipped(
                            f"{q.part.name} is flash-less: its words live in iNVM, "
                            "which has no checksum word"
                        )
                    words = nvm.read_words(bar, regs.NVM_CHECKSUM_WORDS, Flag.EERD_8254X in q)
                    total = nvm.checksum(words)
                    res.data = {"sum": total, "checksum_word": int(words[-1])}
                    if total != regs.NVM_SUM:
                        raise TestFailed(
                            f"words 0x00-0x3F add up to 0x{total:04X}, not 0x{regs.NVM_SUM:04X}"
                        )
                    res.detail = f"words 0x00-0x3F add up to 0x{total:04X}"
            if "interrupt" in chosen:
                with timed("interrupt", results) as res:
                    device.set_bus_master(True)  # MSI/MSI-X messages are memory writes
                    res.detail = interrupts.run(device, family)
        finally:
            reset_port(device, family, q)


def _nic_tests(
    bdf: str,
    chosen: Sequence[str],
    results: list[Result],
    link_timeout: float,
    allow_noiommu: bool,
) -> None:
    import hwnic

    try:
        nic = hwnic.open(
            bdf, allow_noiommu=allow_noiommu, ring_size=loopback.RING_SIZE, wait_link=0
        )
    except HwnicError as exc:  # each test it would have run fails with the reason
        for name in (t for t in NIC_TESTS if t in chosen):
            results.append(Result(name, Status.FAIL, f"could not open the port: {exc}"))
        return
    with nic:
        if "link" in chosen:
            with timed("link", results) as res:
                res.detail = loopback.link(nic, link_timeout)
        if "loopback-mac" in chosen:
            with timed("loopback-mac", results) as res:
                if Flag.EMU_NO_MAC_LOOPBACK in nic.quirks:
                    raise TestSkipped(
                        "QEMU's e1000 ignores RCTL.LBM (frames go out on the wire); "
                        "loopback-phy covers this port"
                    )
                res.detail = loopback.mac_loopback(nic)
        if "loopback-phy" in chosen:
            with timed("loopback-phy", results) as res:
                res.detail = loopback.phy_loopback(nic)


def _peer_test(
    bdf: str, peer: str, results: list[Result], link_timeout: float, allow_noiommu: bool
) -> None:
    import hwnic

    opts = {"allow_noiommu": allow_noiommu, "ring_size": loopback.RING_SIZE, "wait_link": 0}
    with timed("peer", results) as res, hwnic.open(bdf, **opts) as a, hwnic.open(peer, **opts) as b:
        res.detail = loopback.pair(a, b, link_timeout)


def run_selftest(
    bdf: str,
    peer: str | None = None,
    tests: str | Iterable[str] | None = None,
    *,
    link_timeout: float = DEFAULT_LINK_TIMEOUT,
    allow_noiommu: bool = False,
) -> list[Result]:
    """Run the chosen tests (default: all that apply) on ``bdf``; one Result per test.

    Raises a HwnicError before any test if a port cannot be used at all (not
    found, unsupported, not on vfio-pci); a failing test is a Result.
    """
    chosen = parse_tests(tests, peer)
    family = pci.require_supported(pci.describe(bdf)).family
    pci.require_vfio(bdf)
    if peer:
        pci.require_supported(pci.describe(peer))
        pci.require_vfio(peer)
        if pci.normalize_bdf(peer) == pci.normalize_bdf(bdf):
            raise UsageError(f"--peer {peer} is the port under test", "give the other port")
    results: list[Result] = []
    if any(t in chosen for t in DEVICE_TESTS):
        _device_tests(bdf, family, chosen, results, allow_noiommu)
    if any(t in chosen for t in NIC_TESTS):
        _nic_tests(bdf, chosen, results, link_timeout, allow_noiommu)
    if "peer" in chosen and peer:
        _peer_test(bdf, peer, results, link_timeout, allow_noiommu)
    return results
