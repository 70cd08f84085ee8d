"""Fixtures for host-side tests: fake sysfs trees for PCI discovery."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

FakeSysfs = Callable[..., Path]


@pytest.fixture
def fake_sysfs(tmp_path: Path) -> FakeSysfs:
    """Build a sysfs-like tree; returns a function adding one PCI function to it."""
    root = tmp_path / "sys"
    (root / "bus/pci/devices").mkdir(parents=True)
    (root / "bus/pci/drivers").mkdir(parents=True)
    (root / "kernel/iommu_groups").mkdir(parents=True)
    (tmp_path / "dev_vfio").mkdir()

    def add(
        bdf: str,
        vendor: int = 0x8086,
        device: int = 0x10D3,
        klass: int = 0x020000,
        driver: str | None = None,
        group: int | None = None,
        vfio_node: bool = False,
    ) -> Path:
        dev = root / "bus/pci/devices" / bdf
        dev.mkdir()
        (dev / "vendor").write_text(f"0x{vendor:04x}\n")
        (dev / "device").write_text(f"0x{device:04x}\n")
        (dev / "class").write_text(f"0x{klass:06x}\n")
        (dev / "numa_node").write_text("-1\n")
        (dev / "driver_override").write_text("(null)\n")
        if driver:
            drv = root / "bus/pci/drivers" / driver
            drv.mkdir(exist_ok=True)
            os.symlink(os.path.relpath(drv, dev), dev / "driver")
        if group is not None:
            grp = root / "kernel/iommu_groups" / str(group)
            (grp / "devices").mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(grp, dev), dev / "iommu_group")
            os.symlink(os.path.relpath(dev, grp / "devices"), grp / "devices" / bdf)
            if vfio_node:
                (tmp_path / "dev_vfio" / str(group)).write_text("")
        return root

    add.root = root  # type: ignore[attr-defined]
    add.dev_vfio = tmp_path / "dev_vfio"  # type: ignore[attr-defined]
    return add
