"""hwnic.vfio without a device: sysfs checks on a fixture tree, and the whole
open/use/close sequence against a fake kernel that stands in for the ioctls
(real file descriptors, real pread/pwrite/mmap on a memfd "device")."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import hwnic.vfio as vfio
from hwnic._vfio import lib
from hwnic.dma import DmaPool
from hwnic.errors import (
    BadAddress,
    DeviceNotFound,
    DmaError,
    GroupNotViable,
    InterruptError,
    NoIommu,
    NotBoundToVfio,
    PermissionDenied,
    VfioError,
)
from hwnic.vfio import IrqIndex, RegionIndex, open_device

BDF = "0000:01:00.0"
GROUP = 7
REGION_STRIDE = 0x40000  # where the fake kernel puts region N in the device fd
BAR0_SIZE = 0x20000
CONFIG_SIZE = 0x1000
INITIAL_COMMAND = 0x0400  # INTx-disable set: must survive set_bus_master
IRQ_COUNTS = {IrqIndex.INTX: 1, IrqIndex.MSI: 1, IrqIndex.MSIX: 5}


def make_sysfs(root: Path, driver: str | None = "vfio-pci", group: int | None = GROUP) -> Path:
    """A minimal /sys: the device, its driver and IOMMU group links, the group's members."""
    dev = root / "sys/bus/pci/devices" / BDF
    dev.mkdir(parents=True)
    (dev / "vendor").write_text("0x8086\n")
    (dev / "device").write_text("0x10d3\n")
    drivers = root / "sys/bus/pci/drivers"
    if driver:
        (drivers / driver).mkdir(parents=True)
        (dev / "driver").symlink_to(drivers / driver)
    if group is not None:
        gdir = root / "sys/kernel/iommu_groups" / str(group)
        (gdir / "devices").mkdir(parents=True)
        (dev / "iommu_group").symlink_to(gdir)
        (gdir / "devices" / BDF).symlink_to(dev)
    return root / "sys"


def add_group_member(sysfs: Path, bdf: str, driver: str) -> None:
    dev = sysfs / "bus/pci/devices" / bdf
    dev.mkdir(parents=True)
    (sysfs / "bus/pci/drivers" / driver).mkdir(parents=True, exist_ok=True)
    (dev / "driver").symlink_to(sysfs / "bus/pci/drivers" / driver)
    (sysfs / "kernel/iommu_groups" / str(GROUP) / "devices" / bdf).symlink_to(dev)


@pytest.fixture
def roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    sysfs = make_sysfs(tmp_path)
    dev = tmp_path / "dev/vfio"
    dev.mkdir(parents=True)
    monkeypatch.setattr(vfio, "SYSFS_ROOT", sysfs)
    monkeypatch.setattr(vfio, "VFIO_DEV_DIR", dev)
    return sysfs, dev


def open_fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


# ---------------------------------------------------------------------------
# sysfs checks (fixture tree only)
# ---------------------------------------------------------------------------


def test_bad_address(roots: tuple[Path, Path]) -> None:
    with pytest.raises(BadAddress):
        open_device("01:00")


def test_device_absent(roots: tuple[Path, Path]) -> None:
    with pytest.raises(DeviceNotFound, match=r"0000:02:00\.0"):
        open_device("02:00.0")


def test_not_bound_to_vfio_names_the_driver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vfio, "SYSFS_ROOT", make_sysfs(tmp_path, driver="e1000e"))
    with pytest.raises(NotBoundToVfio, match="bound to e1000e") as info:
        open_device("01:00.0")  # short form: the domain is filled in
    assert f"hwnic bind {BDF}" in info.value.hint


def test_no_driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vfio, "SYSFS_ROOT", make_sysfs(tmp_path, driver=None))
    with pytest.raises(NotBoundToVfio, match="no driver"):
        open_device(BDF)


def test_no_iommu_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vfio, "SYSFS_ROOT", make_sysfs(tmp_path, group=None))
    with pytest.raises(NoIommu, match="no IOMMU group") as info:
        open_device(BDF)
    assert "intel_iommu=on" in info.value.hint


def test_group_node_missing(roots: tuple[Path, Path]) -> None:
    before = open_fds()
    with pytest.raises(NotBoundToVfio, match=f"/dev/vfio/{GROUP} does not exist") as info:
        open_device(BDF)
    assert "hwnic bind" in info.value.hint
    assert open_fds() == before


def test_container_node_missing(roots: tuple[Path, Path]) -> None:
    _, dev = roots
    (dev / str(GROUP)).touch()
    with pytest.raises(VfioError, match="vfio module is not loaded") as info:
        open_device(BDF)
    assert "modprobe vfio-pci" in info.value.hint


def test_nodes_that_are_not_vfio(roots: tuple[Path, Path]) -> None:
    """Regular files instead of VFIO nodes: the first ioctl fails, and no fd leaks."""
    _, dev = roots
    (dev / "vfio").touch()
    (dev / str(GROUP)).touch()
    before = open_fds()
    with pytest.raises(VfioError, match="ENOTTY"):
        open_device(BDF)
    with pytest.raises(VfioError, match="ENOTTY"):
        vfio.Group(GROUP, bdf=BDF)
    assert open_fds() == before


def test_permission_denied(roots: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    _, dev = roots
    (dev / "vfio").touch()
    (dev / str(GROUP)).touch()

    def refuse(path: Any, flags: int, mode: int = 0o777) -> int:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(vfio.os, "open", refuse)
    with pytest.raises(PermissionDenied, match="/dev/vfio/vfio") as info:
        open_device(BDF)
    assert "udev" in info.value.hint and "hwnic" in info.value.hint


def test_group_members_lists_drivers(roots: tuple[Path, Path]) -> None:
    sysfs, _ = roots
    add_group_member(sysfs, "0000:01:00.1", "snd_hda_intel")
    assert vfio.group_members(GROUP) == [(BDF, "vfio-pci"), ("0000:01:00.1", "snd_hda_intel")]
    assert vfio.group_members(99) == []


# ---------------------------------------------------------------------------
# A fake kernel behind the shim's ioctl helpers
# ---------------------------------------------------------------------------


class FakeKernel:
    """Implements the shim's hv_* ioctl helpers in Python; the rest is the real lib.

    The device fd is a memfd laid out like vfio-pci's: region N at N *
    REGION_STRIDE, so pread/pwrite/mmap through it behave as on a device.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.viable = True
        self.device_flags = lib.VFIO_DEVICE_FLAGS_RESET | lib.VFIO_DEVICE_FLAGS_PCI
        self.device_fd = -1
        self.noiommu_ext = False

    def __getattr__(self, name: str) -> Any:
        return getattr(lib, name)

    # container
    def hv_get_api_version(self, fd: int) -> int:
        self.calls.append(("api_version",))
        return int(lib.VFIO_API_VERSION)

    def hv_check_extension(self, fd: int, ext: int) -> int:
        if ext == lib.VFIO_NOIOMMU_IOMMU:
            return int(self.noiommu_ext)
        return int(ext in (lib.VFIO_TYPE1_IOMMU, lib.VFIO_TYPE1v2_IOMMU))

    def hv_set_iommu(self, fd: int, kind: int) -> int:
        self.calls.append(("set_iommu", kind))
        return 0

    def hv_map_dma(self, fd: int, vaddr: int, iova: int, size: int, flags: int) -> int:
        self.calls.append(("map_dma", vaddr, iova, size, flags))
        return 0

    def hv_unmap_dma(self, fd: int, iova: int, size: int, unmapped: Any) -> int:
        self.calls.append(("unmap_dma", iova, size))
        unmapped[0] = size
        return 0

    # group
    def hv_group_get_status(self, fd: int, flags: Any) -> int:
        flags[0] = lib.VFIO_GROUP_FLAGS_VIABLE if self.viable else 0
        self.calls.append(("group_status",))
        return 0

    def hv_group_set_container(self, gfd: int, cfd: int) -> int:
        self.calls.append(("set_container",))
        return 0

    def hv_group_unset_container(self, gfd: int) -> int:
        self.calls.append(("unset_container",))
        return 0

    def hv_group_get_device_fd(self, gfd: int, name: Any) -> int:
        self.calls.append(("get_device_fd", name.decode()))  # bytes, as cffi receives it
        fd = os.memfd_create("fake-vfio-device")
        os.ftruncate(fd, REGION_STRIDE * (RegionIndex.VGA + 1))
        cfg = RegionIndex.CONFIG * REGION_STRIDE
        os.pwrite(fd, INITIAL_COMMAND.to_bytes(2, "little"), cfg + vfio.PCI_COMMAND)
        self.device_fd = fd
        return fd

    # device
    def hv_device_get_info(self, fd: int, flags: Any, nreg: Any, nirq: Any) -> int:
        flags[0], nreg[0], nirq[0] = self.device_flags, lib.VFIO_PCI_NUM_REGIONS, 5
        return 0

    def hv_device_get_region_info(
        self, fd: int, index: int, flags: Any, size: Any, offset: Any
    ) -> int:
        rw = lib.VFIO_REGION_INFO_FLAG_READ | lib.VFIO_REGION_INFO_FLAG_WRITE
        table = {
            RegionIndex.BAR0: (BAR0_SIZE, rw | lib.VFIO_REGION_INFO_FLAG_MMAP),
            RegionIndex.BAR2: (32, rw),  # an I/O-port BAR: no MMAP flag
            RegionIndex.CONFIG: (CONFIG_SIZE, rw),
        }
        size[0], flags[0] = table.get(RegionIndex(index), (0, 0))
        offset[0] = index * REGION_STRIDE
        return 0

    def hv_device_get_irq_info(self, fd: int, index: int, flags: Any, count: Any) -> int:
        count[0] = IRQ_COUNTS.get(IrqIndex(index), 0)
        flags[0] = lib.VFIO_IRQ_INFO_EVENTFD | (
            lib.VFIO_IRQ_INFO_MASKABLE | lib.VFIO_IRQ_INFO_AUTOMASKED
            if index == IrqIndex.INTX
            else lib.VFIO_IRQ_INFO_NORESIZE
        )
        return 0

    def hv_device_set_irq_eventfds(
        self, fd: int, index: int, start: int, count: int, fds: Any
    ) -> int:
        self.calls.append(("set_irqs", index, start, count, [fds[i] for i in range(count)]))
        return 0

    def hv_device_disable_irq(self, fd: int, index: int) -> int:
        self.calls.append(("disable_irq", index))
        return 0

    def hv_device_unmask_intx(self, fd: int) -> int:
        self.calls.append(("unmask_intx",))
        return 0

    def hv_device_mask_intx(self, fd: int) -> int:
        self.calls.append(("mask_intx",))
        return 0

    def hv_device_reset(self, fd: int) -> int:
        self.calls.append(("reset",))
        return 0

    def names(self) -> list[Any]:
        return [c[0] for c in self.calls]


@pytest.fixture
def kernel(roots: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKernel]:
    _, dev = roots
    (dev / "vfio").touch()
    (dev / str(GROUP)).touch()
    fake = FakeKernel()
    monkeypatch.setattr(vfio, "lib", fake)
    yield fake


def test_open_follows_the_kernel_sequence(kernel: FakeKernel) -> None:
    with open_device("01:00.0") as dev:
        assert dev.bdf == BDF
        assert kernel.names() == [
            "api_version", "group_status", "set_container", "set_iommu", "get_device_fd",
        ]  # fmt: skip
        assert kernel.calls[3] == ("set_iommu", lib.VFIO_TYPE1v2_IOMMU)
        assert kernel.calls[4] == ("get_device_fd", BDF)
        assert dev.info.num_regions == lib.VFIO_PCI_NUM_REGIONS and dev.info.can_reset


def test_config_space_and_bus_master(kernel: FakeKernel) -> None:
    with open_device(BDF) as dev:
        cfg = RegionIndex.CONFIG * REGION_STRIDE
        assert not dev.bus_master
        dev.set_bus_master(True)
        cmd = int.from_bytes(os.pread(kernel.device_fd, 2, cfg + vfio.PCI_COMMAND), "little")
        assert cmd == INITIAL_COMMAND | vfio.PCI_COMMAND_MEMORY | vfio.PCI_COMMAND_MASTER
        assert dev.bus_master
        dev.set_bus_master(False)
        assert dev.config_read(vfio.PCI_COMMAND, 2) == INITIAL_COMMAND | vfio.PCI_COMMAND_MEMORY
        dev.config_write(0x40, 0xA1B2C3D4, 4)
        assert os.pread(kernel.device_fd, 4, cfg + 0x40) == b"\xd4\xc3\xb2\xa1"
        assert dev.config_read(0x42, 2) == 0xA1B2
        with pytest.raises(ValueError, match="misaligned or outside"):
            dev.config_read(0x41, 2)
        with pytest.raises(ValueError, match="misaligned or outside"):
            dev.config_read(CONFIG_SIZE, 1)
        with pytest.raises(ValueError, match="access size"):
            dev.config_read(0, 3)
        with pytest.raises(ValueError, match="does not fit"):
            dev.config_write(0, 0x1FF, 1)


def test_bars(kernel: FakeKernel) -> None:
    with open_device(BDF) as dev:
        bar0 = dev.bar(0)
        assert bar0 is dev.bar(0) and bar0.size == BAR0_SIZE
        bar0.write32(0x3818, 0x12345678)  # lands at the region offset in the device fd
        got = os.pread(kernel.device_fd, 4, RegionIndex.BAR0 * REGION_STRIDE + 0x3818)
        assert got == b"\x78\x56\x34\x12"
        with pytest.raises(VfioError, match="cannot be mmapped"):
            dev.bar(2)
        assert dev.region_read(RegionIndex.BAR2, 4, 4) == 0  # the pread path works for it
        with pytest.raises(VfioError, match="has no BAR1"):
            dev.bar(1)
        with pytest.raises(ValueError):
            dev.bar(6)
    assert bar0.closed


def test_interrupts(kernel: FakeKernel) -> None:
    with open_device(BDF) as dev:
        intx = dev.irq_info(IrqIndex.INTX)
        assert intx.count == 1 and intx.automasked and intx.maskable
        fds = dev.enable_irq(IrqIndex.MSIX)
        assert len(fds) == 5
        assert kernel.calls[-1] == ("set_irqs", IrqIndex.MSIX, 0, 5, fds)
        for fd in fds:  # real, non-blocking eventfds
            os.eventfd_write(fd, 1)
            assert os.eventfd_read(fd) == 1
            with pytest.raises(BlockingIOError):
                os.eventfd_read(fd)
        again = dev.enable_irq(IrqIndex.MSIX, 2, start=3)
        assert kernel.calls[-1] == ("set_irqs", IrqIndex.MSIX, 3, 2, again)
        for old in fds[3:]:  # replaced vectors' old eventfds are closed
            with pytest.raises(OSError):
                os.fstat(old)
        assert dev.irq_eventfds(IrqIndex.MSIX) == {
            0: fds[0],
            1: fds[1],
            2: fds[2],
            3: again[0],
            4: again[1],
        }
        with pytest.raises(InterruptError, match="do not exist"):
            dev.enable_irq(IrqIndex.MSI, 2)
        with pytest.raises(InterruptError, match="no ERR"):
            dev.enable_irq(IrqIndex.ERR)
        dev.disable_irq(IrqIndex.MSIX)
        assert kernel.calls[-1] == ("disable_irq", IrqIndex.MSIX)
        assert dev.irq_eventfds(IrqIndex.MSIX) == {}
        dev.enable_irq(IrqIndex.INTX)
        dev.unmask_intx()
        dev.mask_intx()
        assert kernel.names()[-2:] == ["unmask_intx", "mask_intx"]
        assert dev.reset() is True and kernel.calls[-1] == ("reset",)


def test_reset_unsupported(kernel: FakeKernel) -> None:
    kernel.device_flags = lib.VFIO_DEVICE_FLAGS_PCI
    with open_device(BDF) as dev:
        assert dev.reset() is False
    assert "reset" not in kernel.names()


def test_close_releases_everything_in_reverse_order(kernel: FakeKernel) -> None:
    before = open_fds()
    dev = open_device(BDF)
    bar = dev.bar(0)
    fds = dev.enable_irq(IrqIndex.MSIX)
    dev.map_dma(0x7F0000000000, 1 << 32, 0x200000)
    assert dev.container.mappings == {1 << 32: 0x200000}
    kernel.calls.clear()
    dev.close()
    assert kernel.names() == ["disable_irq", "unmap_dma"]
    assert bar.closed and dev.closed and dev.container.closed
    assert open_fds() == before  # eventfds, device, group and container fds all closed
    dev.close()  # idempotent
    assert kernel.names() == ["disable_irq", "unmap_dma"]
    with pytest.raises(VfioError, match="closed"):
        dev.irq_info(IrqIndex.INTX)
    assert fds


def test_close_on_exception(kernel: FakeKernel) -> None:
    before = open_fds()
    with pytest.raises(RuntimeError), open_device(BDF) as dev:
        dev.enable_irq(IrqIndex.INTX)
        raise RuntimeError("boom")
    assert dev.closed and open_fds() == before


def test_shared_container_outlives_the_device(kernel: FakeKernel) -> None:
    with vfio.Container() as container:
        with open_device(BDF, container=container) as dev:
            assert dev.container is container
        assert not container.closed
    assert container.closed


def test_dma_pool_over_a_device(kernel: FakeKernel) -> None:
    with open_device(BDF) as dev, DmaPool(dev, use_hugepages=False) as pool:
        buf = pool.allocate(4096)
        buf.array(np.uint8)[:4] = [1, 2, 3, 4]
        maps = [c for c in kernel.calls if c[0] == "map_dma"]
        assert len(maps) == 1
        _, vaddr, iova, size, flags = maps[0]
        assert flags == lib.VFIO_DMA_MAP_FLAG_READ | lib.VFIO_DMA_MAP_FLAG_WRITE
        assert iova <= buf.iova < iova + size and buf.vaddr - vaddr == buf.iova - iova
    assert [c[0] for c in kernel.calls].count("unmap_dma") == 1  # the pool's, not twice


def test_map_dma_rejects_unaligned(kernel: FakeKernel) -> None:
    with open_device(BDF) as dev, pytest.raises(DmaError, match="aligned"):
        dev.map_dma(0x1000, 0x1800, 0x1000)


def test_group_not_viable_names_the_culprits(kernel: FakeKernel, roots: tuple[Path, Path]) -> None:
    sysfs, _ = roots
    add_group_member(sysfs, "0000:01:00.1", "snd_hda_intel")
    kernel.viable = False
    before = open_fds()
    with pytest.raises(GroupNotViable, match=r"0000:01:00\.1 \(snd_hda_intel\)") as info:
        open_device(BDF)
    assert BDF not in info.value.what  # our own device is not a culprit
    assert open_fds() == before


def test_noiommu_is_refused_unless_allowed(kernel: FakeKernel, roots: tuple[Path, Path]) -> None:
    _, dev_dir = roots
    (dev_dir / str(GROUP)).unlink()
    (dev_dir / f"noiommu-{GROUP}").touch()
    kernel.noiommu_ext = True
    before = open_fds()
    with pytest.raises(NoIommu, match="no-IOMMU"):
        open_device(BDF)
    assert open_fds() == before
    with open_device(BDF, allow_noiommu=True) as dev:
        assert dev.container.noiommu and dev.group.noiommu
        assert ("set_iommu", lib.VFIO_NOIOMMU_IOMMU) in kernel.calls
        with pytest.raises(DmaError, match="no-IOMMU"):
            dev.map_dma(0x1000, 0x1000, 0x1000)
