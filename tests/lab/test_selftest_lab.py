"""``hwnic selftest`` on one port of each family, and ``--peer`` on one cabled pair.

The command runs in-process (``hwnic.cli.main.main``) to spare a Python
start-up under TCG. Each port must pass with exactly the skips its quirks
state (QEMU's e1000: loopback-mac), and be left as found: same MAC (the
register test overwrote RAL/RAH), every cause masked, RX and TX off.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hwnic import vfio
from hwnic.cli.main import main
from hwnic.diag import TESTS
from hwnic.nic import quirks, regs
from hwnic.nic.info import read_info
from hwnic.nic.quirks import Flag
from hwnic.pytest_plugin import Rig, TestPort

pytestmark = pytest.mark.lab


def _expected_skips(bdf: str, family: str) -> set[str]:
    with vfio.open_device(bdf) as dev:
        q = quirks.for_ids(
            dev.config_read(quirks.PCI_DEVICE_ID, 2),
            dev.config_read(quirks.PCI_SUBSYSTEM_VENDOR_ID, 2),
            family,
        )
    skips = set()
    if Flag.EMU_NO_MAC_LOOPBACK in q:
        skips.add("loopback-mac")
    if Flag.NVM_FLASHLESS in q:
        skips.add("eeprom")
    return skips


def _run(args: list[str], out: Path) -> tuple[int, dict[str, dict[str, object]]]:
    rc = main(["selftest", *args, "--json", str(out)])
    doc = json.loads(out.read_text())
    return rc, {r["name"]: r for r in doc["results"]}


def test_selftest_passes_with_stated_skips(port: TestPort, tmp_path: Path) -> None:
    mac_before = read_info(port.bdf).mac
    expected_skips = _expected_skips(port.bdf, port.family)
    rc, results = _run([port.bdf], tmp_path / "selftest.json")
    assert set(results) == set(TESTS) - {"peer"}
    failed = {n: r["detail"] for n, r in results.items() if r["status"] == "fail"}
    assert not failed
    skipped = {n for n, r in results.items() if r["status"] == "skip"}
    assert skipped == expected_skips
    assert all(results[n]["detail"] for n in skipped), "every skip gives its reason"
    assert rc == 0
    assert results["eeprom"]["status"] == "skip" or results["eeprom"]["data"] == {
        "sum": regs.NVM_SUM,
        "checksum_word": results["eeprom"]["data"]["checksum_word"],  # type: ignore[index]
    }
    # Left as found, and quiet.
    assert read_info(port.bdf).mac == mac_before
    with vfio.open_device(port.bdf) as dev:
        bar = dev.bar(0)
        assert bar.read32(regs.IMS) == 0
        assert not bar.read32(regs.RCTL) & regs.Rctl.EN
        assert not bar.read32(regs.TCTL) & regs.Tctl.EN


def test_selftest_peer(hwnic_rig: Rig, tmp_path: Path) -> None:
    """One cabled pair is enough (igb if the rig has one): the exchange is model-independent."""
    pairs = hwnic_rig.pairs()
    if not pairs:
        pytest.skip("no cabled pair on this rig")
    a, b = pairs.get("igb") or next(iter(sorted(pairs.items())))[1]
    rc, results = _run([a.bdf, "--peer", b.bdf, "--test", "peer"], tmp_path / "peer.json")
    assert list(results) == ["peer"]
    assert results["peer"]["status"] == "pass", results["peer"]["detail"]
    assert rc == 0
