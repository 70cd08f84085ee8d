"""PCI discovery against fixture sysfs trees: parsing, readiness, errors."""

from __future__ import annotations

import pytest

from hwnic import pci
from hwnic.errors import BadAddress, DeviceNotFound, NotBoundToVfio, UnsupportedDevice


@pytest.mark.parametrize(
    ("text", "full"),
    [
        ("0000:01:00.0", "0000:01:00.0"),
        ("01:00.0", "0000:01:00.0"),
        ("0000:AB:1F.7", "0000:ab:1f.7"),
        (" 02:00.1 ", "0000:02:00.1"),
    ],
)
def test_normalize_bdf_accepts(text: str, full: str) -> None:
    assert pci.normalize_bdf(text) == full


@pytest.mark.parametrize("text", ["", "zz", "1:0.0", "0000:01:20.0", "0000:01:00.8", "01:00"])
def test_normalize_bdf_rejects(text: str) -> None:
    with pytest.raises(BadAddress) as info:
        pci.normalize_bdf(text)
    assert "hwnic list" in str(info.value)


def test_list_finds_supported_and_readiness(fake_sysfs) -> None:
    fake_sysfs("0000:01:00.0", device=0x10C9, driver="vfio-pci", group=7, vfio_node=True)
    fake_sysfs("0000:02:00.0", device=0x100E, driver="e1000", group=8)
    fake_sysfs("0000:03:00.0", vendor=0x1AF4, device=0x1041)  # virtio: not Intel
    fake_sysfs("0000:04:00.0", device=0x1234)  # Intel Ethernet, unsupported
    root, dev_vfio = fake_sysfs.root, fake_sysfs.dev_vfio
    nics = pci.list_devices(root, dev_vfio)
    assert [n.bdf for n in nics] == ["0000:01:00.0", "0000:02:00.0"]
    igb, e1000 = nics
    assert (igb.model, igb.family, igb.driver, igb.iommu_group) == ("82576", "igb", "vfio-pci", 7)
    assert igb.vfio_ready and not e1000.vfio_ready
    assert e1000.family == "e1000" and e1000.driver == "e1000"
    everything = pci.list_devices(root, dev_vfio, all_intel_ethernet=True)
    assert [n.bdf for n in everything][-1] == "0000:04:00.0"
    assert not everything[-1].supported
    assert igb.to_dict()["pci_id"] == "8086:10c9"


def test_vfio_bound_but_node_missing_is_not_ready(fake_sysfs) -> None:
    fake_sysfs("0000:01:00.0", driver="vfio-pci", group=3, vfio_node=False)
    nic = pci.describe("01:00.0", fake_sysfs.root, fake_sysfs.dev_vfio)
    assert nic.driver == "vfio-pci" and not nic.vfio_ready
    with pytest.raises(NotBoundToVfio, match="does not exist"):
        pci.require_vfio("01:00.0", fake_sysfs.root, fake_sysfs.dev_vfio)


def test_require_vfio_names_current_driver(fake_sysfs) -> None:
    fake_sysfs("0000:01:00.0", driver="e1000e", group=3)
    with pytest.raises(NotBoundToVfio) as info:
        pci.require_vfio("0000:01:00.0", fake_sysfs.root, fake_sysfs.dev_vfio)
    assert "bound to e1000e" in str(info.value)
    assert "hwnic bind 0000:01:00.0" in str(info.value)


def test_require_vfio_without_driver(fake_sysfs) -> None:
    fake_sysfs("0000:01:00.0", group=3)
    with pytest.raises(NotBoundToVfio, match="no driver"):
        pci.require_vfio("0000:01:00.0", fake_sysfs.root, fake_sysfs.dev_vfio)


def test_absent_device(fake_sysfs) -> None:
    fake_sysfs("0000:01:00.0")
    with pytest.raises(DeviceNotFound, match=r"no PCI device at 0000:05:00\.0"):
        pci.describe("05:00.0", fake_sysfs.root)


def test_unsupported_device(fake_sysfs) -> None:
    fake_sysfs("0000:01:00.0", vendor=0x10EC, device=0x8168)
    nic = pci.describe("01:00.0", fake_sysfs.root, fake_sysfs.dev_vfio)
    with pytest.raises(UnsupportedDevice, match="10ec:8168"):
        pci.require_supported(nic)


def test_bind_is_a_no_op_when_ready(fake_sysfs) -> None:
    root = fake_sysfs("0000:01:00.0", device=0x10C9, driver="vfio-pci", group=7, vfio_node=True)
    nic = pci.bind_vfio("01:00.0", sysfs=root, dev_vfio=fake_sysfs.dev_vfio)
    assert nic.vfio_ready
    assert (root / "bus/pci/devices/0000:01:00.0/driver_override").read_text() == "(null)\n"


def test_bind_writes_the_kernel_sequence(fake_sysfs) -> None:
    root = fake_sysfs("0000:01:00.0", device=0x10D3, driver="e1000e", group=4)
    (root / "bus/pci/drivers/vfio-pci").mkdir()
    dev = root / "bus/pci/devices/0000:01:00.0"
    # The fixture tree has no kernel behind it, so the device never moves to
    # vfio-pci: bind must notice and say so rather than wait forever.
    with pytest.raises(NotBoundToVfio, match="did not bind"):
        pci.bind_vfio("01:00.0", timeout=0.1, sysfs=root, dev_vfio=fake_sysfs.dev_vfio)
    assert (dev / "driver_override").read_text() == "vfio-pci"
    assert (root / "bus/pci/drivers/e1000e/unbind").read_text() == "0000:01:00.0"
    assert (root / "bus/pci/drivers_probe").read_text() == "0000:01:00.0"


def test_bind_refuses_unsupported(fake_sysfs) -> None:
    root = fake_sysfs("0000:01:00.0", vendor=0x10EC, device=0x8168, driver="r8169", group=4)
    with pytest.raises(UnsupportedDevice):
        pci.bind_vfio("01:00.0", sysfs=root, dev_vfio=fake_sysfs.dev_vfio)
    assert (root / "bus/pci/devices/0000:01:00.0/driver_override").read_text() == "(null)\n"


def test_supported_table_covers_the_three_families() -> None:
    families = {m.family for m in pci.SUPPORTED.values()}
    assert families == {"e1000", "e1000e", "igb"}
    for dev_id in (0x100E, 0x10D3, 0x10C9, 0x1533, 0x1521):
        assert dev_id in pci.SUPPORTED
