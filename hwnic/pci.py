"""PCI discovery and driver binding through sysfs (and pyudev for live events).

Everything reads from a sysfs root that tests may point at a fixture tree.
Binding follows the kernel's documented sequence: ``driver_override``, unbind
from the current driver, ``drivers_probe``; then wait for ``/dev/vfio/N``.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hwnic.errors import (
    BadAddress,
    DeviceNotFound,
    HwnicError,
    NotBoundToVfio,
    PermissionDenied,
    UnsupportedDevice,
)

SYSFS = Path("/sys")
DEV_VFIO = Path("/dev/vfio")
VFIO_DRIVER = "vfio-pci"
INTEL_VENDOR = 0x8086
PCI_CLASS_ETHERNET = 0x0200

# Domain:bus:device.function, e.g. 0000:01:00.0; the domain may be omitted.
_BDF_RE = re.compile(
    r"^(?:(?P<domain>[0-9a-fA-F]{4}):)?(?P<bus>[0-9a-fA-F]{2}):"
    r"(?P<dev>[0-1][0-9a-fA-F])\.(?P<fn>[0-7])$"
)


@dataclass(frozen=True)
class NicModel:
    """A supported controller: its marketing name and the hwnic family driving it."""

    name: str
    family: str  # "e1000", "e1000e" or "igb": the module in hwnic.nic


# PCI device ids (vendor 8086) hwnic drives, from the Intel datasheets and the
# Linux drivers' id tables.
SUPPORTED: dict[int, NicModel] = {
    0x100E: NicModel("82540EM", "e1000"),
    0x1015: NicModel("82540EM LOM", "e1000"),
    0x100F: NicModel("82545EM", "e1000"),
    0x10D3: NicModel("82574L", "e1000e"),
    0x10F6: NicModel("82574LA", "e1000e"),
    0x10C9: NicModel("82576", "igb"),
    0x10E6: NicModel("82576 fiber", "igb"),
    0x10E7: NicModel("82576 serdes", "igb"),
    0x10E8: NicModel("82576 quad copper", "igb"),
    0x1526: NicModel("82576 quad copper ET2", "igb"),
    0x150A: NicModel("82576NS", "igb"),
    0x1518: NicModel("82576NS serdes", "igb"),
    0x150D: NicModel("82576 serdes quad", "igb"),
    0x1521: NicModel("I350 copper", "igb"),
    0x1522: NicModel("I350 fiber", "igb"),
    0x1523: NicModel("I350 serdes", "igb"),
    0x1524: NicModel("I350 SGMII", "igb"),
    0x1533: NicModel("I210 copper", "igb"),
    0x1536: NicModel("I210 fiber", "igb"),
    0x1537: NicModel("I210 serdes", "igb"),
    0x1538: NicModel("I210 SGMII", "igb"),
    0x157B: NicModel("I210 copper flashless", "igb"),
    0x157C: NicModel("I210 serdes flashless", "igb"),
    0x1539: NicModel("I211 copper", "igb"),
}


def normalize_bdf(bdf: str) -> str:
    """Return the full ``DDDD:BB:DD.F`` form, or raise :class:`BadAddress`."""
    m = _BDF_RE.match(bdf.strip())
    if not m:
        raise BadAddress(
            f"'{bdf}' is not a PCI address",
            "give it as DDDD:BB:DD.F or BB:DD.F, e.g. 0000:01:00.0 (see 'hwnic list')",
        )
    domain = m.group("domain") or "0000"
    return f"{domain}:{m.group('bus')}:{m.group('dev')}.{m.group('fn')}".lower()


@dataclass(frozen=True)
class PciNic:
    """One PCI function as sysfs describes it."""

    bdf: str
    vendor: int
    device: int
    model: str
    family: str | None
    driver: str | None
    iommu_group: int | None
    numa_node: int
    vfio_ready: bool

    @property
    def supported(self) -> bool:
        return self.family is not None

    @property
    def pci_id(self) -> str:
        return f"{self.vendor:04x}:{self.device:04x}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["pci_id"] = self.pci_id
        d["vendor"] = f"{self.vendor:04x}"
        d["device"] = f"{self.device:04x}"
        return d


def _read(path: Path) -> str:
    return path.read_text().strip()


def _read_hex(path: Path) -> int:
    return int(_read(path), 16)


def device_path(bdf: str, sysfs: Path = SYSFS) -> Path:
    """The sysfs directory of ``bdf``; :class:`DeviceNotFound` if there is none."""
    bdf = normalize_bdf(bdf)
    path = sysfs / "bus/pci/devices" / bdf
    if not path.exists():
        raise DeviceNotFound(
            f"no PCI device at {bdf}", "check the address with 'hwnic list' or 'lspci -D'"
        )
    return path


def iommu_group_of(path: Path) -> int | None:
    link = path / "iommu_group"
    if not link.exists():
        return None
    return int(os.path.basename(os.readlink(link)))


def driver_of(path: Path) -> str | None:
    link = path / "driver"
    if not link.exists():
        return None
    return os.path.basename(os.readlink(link))


def describe(bdf: str, sysfs: Path = SYSFS, dev_vfio: Path = DEV_VFIO) -> PciNic:
    """Read one PCI function's identity, driver and IOMMU group from sysfs."""
    path = device_path(bdf, sysfs)
    vendor = _read_hex(path / "vendor")
    device = _read_hex(path / "device")
    model = SUPPORTED.get(device) if vendor == INTEL_VENDOR else None
    driver = driver_of(path)
    group = iommu_group_of(path)
    numa = int(_read(path / "numa_node")) if (path / "numa_node").exists() else -1
    ready = driver == VFIO_DRIVER and group is not None and (dev_vfio / str(group)).exists()
    return PciNic(
        bdf=path.name,
        vendor=vendor,
        device=device,
        model=model.name if model else f"unknown {vendor:04x}:{device:04x}",
        family=model.family if model else None,
        driver=driver,
        iommu_group=group,
        numa_node=numa,
        vfio_ready=ready,
    )


def list_devices(
    sysfs: Path = SYSFS, dev_vfio: Path = DEV_VFIO, *, all_intel_ethernet: bool = False
) -> list[PciNic]:
    """Every supported Intel NIC (or every Intel Ethernet function), sorted by address.

    On the live system the PCI devices are enumerated with pyudev; on a
    fixture tree (tests) the directory is read directly.
    """
    if sysfs == SYSFS:
        import pyudev

        names = [d.sys_name for d in pyudev.Context().list_devices(subsystem="pci")]
    else:
        names = [p.name for p in (sysfs / "bus/pci/devices").iterdir()]
    found = []
    for name in sorted(names):
        path = sysfs / "bus/pci/devices" / name
        try:
            vendor = _read_hex(path / "vendor")
            device = _read_hex(path / "device")
            klass = _read_hex(path / "class") >> 8
        except (OSError, ValueError):
            continue  # a function that vanished or has no readable ids
        if vendor != INTEL_VENDOR:
            continue
        if device in SUPPORTED or (all_intel_ethernet and klass == PCI_CLASS_ETHERNET):
            found.append(describe(name, sysfs, dev_vfio))
    return found


def require_supported(nic: PciNic) -> NicModel:
    model = SUPPORTED.get(nic.device) if nic.vendor == INTEL_VENDOR else None
    if model is None:
        raise UnsupportedDevice(
            f"{nic.bdf} is a {nic.pci_id} device, which hwnic has no model for",
            "hwnic drives 82540EM (e1000), 82574L (e1000e), 82576/I210/I350 (igb): "
            "see 'hwnic list'",
        )
    return model


def require_vfio(bdf: str, sysfs: Path = SYSFS, dev_vfio: Path = DEV_VFIO) -> PciNic:
    """Check that ``bdf`` is bound to vfio-pci and its group node exists."""
    nic = describe(bdf, sysfs, dev_vfio)
    if nic.driver != VFIO_DRIVER:
        bound = f"bound to {nic.driver}" if nic.driver else "bound to no driver"
        raise NotBoundToVfio(
            f"{nic.bdf} is {bound}, not {VFIO_DRIVER}",
            f"run 'hwnic bind {nic.bdf}' (as root) first",
        )
    if nic.iommu_group is None:
        raise NotBoundToVfio(
            f"{nic.bdf} has no IOMMU group",
            "enable the IOMMU (intel_iommu=on or amd_iommu=on on the kernel command line)",
        )
    if not (dev_vfio / str(nic.iommu_group)).exists():
        raise NotBoundToVfio(
            f"{dev_vfio / str(nic.iommu_group)} does not exist for {nic.bdf}",
            f"rebind with 'hwnic bind {nic.bdf}'",
        )
    return nic


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except PermissionError as exc:
        raise PermissionDenied(
            f"cannot write {path}: permission denied", "run 'hwnic bind/unbind' as root"
        ) from exc
    except OSError as exc:
        if exc.errno == errno.ENODEV or exc.errno == errno.EINVAL:
            raise HwnicError(
                f"the kernel refused '{value.strip()}' in {path}: {exc.strerror}",
                "check 'dmesg' for the reason",
            ) from exc
        raise


def _ensure_vfio_module(sysfs: Path) -> None:
    if (sysfs / "bus/pci/drivers" / VFIO_DRIVER).exists():
        return
    # modprobe is the only way to load it; its absence is reported below.
    subprocess.run(["modprobe", "vfio-pci"], check=False, capture_output=True)
    if not (sysfs / "bus/pci/drivers" / VFIO_DRIVER).exists():
        raise HwnicError(
            "the vfio-pci driver is not loaded and 'modprobe vfio-pci' did not load it",
            "install the kernel's vfio-pci module (CONFIG_VFIO_PCI) and load it as root",
        )


def wait_for_group_node(group: int, timeout: float, dev_vfio: Path = DEV_VFIO) -> Path:
    """Wait for ``/dev/vfio/<group>`` using kernel uevents (no blind sleeping)."""
    node = dev_vfio / str(group)
    if node.exists():
        return node
    import pyudev

    monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source="kernel")
    monitor.filter_by("vfio")
    monitor.start()
    deadline = time.monotonic() + timeout
    # Check again after subscribing: the node may have appeared in between.
    while not node.exists():
        left = deadline - time.monotonic()
        if left <= 0:
            raise NotBoundToVfio(
                f"{node} did not appear within {timeout:.0f} s",
                "check 'dmesg' for vfio-pci errors and that the IOMMU is on",
            )
        monitor.poll(timeout=min(left, 0.5))
    return node


def bind_vfio(
    bdf: str, timeout: float = 10.0, sysfs: Path = SYSFS, dev_vfio: Path = DEV_VFIO
) -> PciNic:
    """Bind ``bdf`` to vfio-pci and wait for its group node; returns the new state."""
    nic = describe(bdf, sysfs, dev_vfio)
    require_supported(nic)
    if nic.vfio_ready:
        return nic
    path = device_path(bdf, sysfs)
    _ensure_vfio_module(sysfs)
    _write(path / "driver_override", VFIO_DRIVER)
    if nic.driver and nic.driver != VFIO_DRIVER:
        _write(path / "driver" / "unbind", nic.bdf)
    if driver_of(path) != VFIO_DRIVER:
        _write(sysfs / "bus/pci/drivers_probe", nic.bdf)
    after = describe(bdf, sysfs, dev_vfio)
    if after.driver != VFIO_DRIVER or after.iommu_group is None:
        raise NotBoundToVfio(
            f"{nic.bdf} did not bind to {VFIO_DRIVER} (driver now: {after.driver})",
            "check that the IOMMU is enabled and see 'dmesg'",
        )
    wait_for_group_node(after.iommu_group, timeout, dev_vfio)
    return describe(bdf, sysfs, dev_vfio)


def unbind_vfio(bdf: str, sysfs: Path = SYSFS) -> PciNic:
    """Give ``bdf`` back to its kernel driver (clears driver_override, reprobes)."""
    nic = describe(bdf, sysfs)
    require_supported(nic)  # never unbind a device hwnic does not drive (a disk, a GPU)
    path = device_path(bdf, sysfs)
    _write(path / "driver_override", "\n")
    if nic.driver:
        _write(path / "driver" / "unbind", nic.bdf)
    _write(sysfs / "bus/pci/drivers_probe", nic.bdf)
    return describe(bdf, sysfs)
