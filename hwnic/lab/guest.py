"""The in-guest bootstrap: bind the lab's NICs to vfio-pci, then run COMMAND.

``hwnic lab run`` writes a spec into the run directory it shares with the
guest and boots ``python -m hwnic.lab.guest SPEC``. This module then finds
each NIC (by the root-bus slot of its root port), binds it to vfio-pci, tells
the host it is ready, and runs the command with the host's working directory
and the project's virtualenv first on PATH. The command's exit status goes to
a status file the host reads back (and is also this process's exit status).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hwnic.errors import HwnicError, LabError
from hwnic.lab import topology
from hwnic.lab.topology import LabNic

SYSFS_PCI = Path("/sys/bus/pci/devices")
INTEL_VENDOR = 0x8086
GUEST_MODULES = ("vfio-pci", "vfio_iommu_type1", "virtio_console")
BIND_TIMEOUT = 30.0  # s per NIC; udev is slow under TCG
FIND_TIMEOUT = 30.0  # s for the NICs to show up in sysfs
FIND_POLL = 0.2
EXIT_SETUP_FAILED = 125  # like `env`/`timeout`: the command itself never ran
EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126
EXIT_TIMED_OUT = 124
SIGNAL_EXIT_BASE = 128


@dataclass
class GuestSpec:
    """What the host asks of the guest (JSON in the shared run directory)."""

    command: list[str]
    cwd: str
    nics: list[dict[str, Any]]
    status_file: str
    path_prefix: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None  # the guest's own limit, should the host vanish
    heartbeat_file: str | None = None  # see hwnic.lab.watch

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__))

    @classmethod
    def load(cls, path: Path) -> GuestSpec:
        return cls(**json.loads(path.read_text()))


def lab_nics() -> list[LabNic]:
    """Inside the lab: the NICs, with their guest PCI addresses (HWNIC_LAB_NICS)."""
    return topology.loads(os.environ.get("HWNIC_LAB_NICS", "[]"))


def lab_pairs() -> dict[str, tuple[LabNic, LabNic]]:
    """Inside the lab: for each model, two ports on one hub (sender first)."""
    return topology.pairs(lab_nics())


def _read_hex(path: Path) -> int:
    return int(path.read_text().strip(), 16)


def locate(nics: list[LabNic], sysfs_pci: Path = SYSFS_PCI) -> list[LabNic]:
    """Fill in each NIC's guest PCI address from the slot of its root port.

    Each NIC is the only function below its root port, whose slot on the
    root bus is fixed, so the sysfs path ``.../0000:00:SS.0/<bdf>`` names it.
    """
    by_slot: dict[int, str] = {}
    for dev in sysfs_pci.iterdir():
        parent = dev.resolve().parent.name  # the bridge above it
        bus_dev = parent.rsplit(":", 1)[-1]  # "SS.F"
        if not parent.startswith("0000:00:") or "." not in bus_dev:
            continue
        try:
            if _read_hex(dev / "vendor") != INTEL_VENDOR:
                continue
        except OSError:
            continue
        by_slot[int(bus_dev.split(".")[0], 16)] = dev.name
    located = []
    for nic in nics:
        bdf = by_slot.get(nic.slot)
        if bdf is None:
            raise LabError(
                f"{nic.qemu_id} ({nic.model}) not found below root port slot {nic.slot:#x}"
            )
        device = _read_hex(sysfs_pci / bdf / "device")
        if device != nic.pci_device_id:
            raise LabError(
                f"{bdf} is 8086:{device:04x}, expected {nic.model} "
                f"8086:{nic.pci_device_id:04x} for {nic.qemu_id}"
            )
        located.append(replace(nic, bdf=bdf))
    return located


def locate_when_ready(nics: list[LabNic], timeout: float = FIND_TIMEOUT) -> list[LabNic]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return locate(nics)
        except LabError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(FIND_POLL)


def bind_to_vfio(bdf: str, timeout: float = BIND_TIMEOUT) -> None:
    """Bind one NIC to vfio-pci and wait for /dev/vfio/N (hwnic.pci does the work)."""
    from hwnic import pci

    pci.bind_vfio(bdf, timeout=timeout)


def load_modules() -> None:
    for module in GUEST_MODULES:
        done = subprocess.run(["modprobe", module], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise LabError(f"modprobe {module} failed: {done.stderr.strip()}")


def command_env(spec: GuestSpec, nics: list[LabNic]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(spec.env)
    path = env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    env["PATH"] = os.pathsep.join([*spec.path_prefix, path])
    env["HWNIC_LAB"] = "1"
    env["HWNIC_LAB_NICS"] = topology.dumps(nics)
    return env


def _write_status(spec: GuestSpec, **status: Any) -> None:
    tmp = Path(spec.status_file + ".tmp")
    tmp.write_text(json.dumps(status))
    tmp.replace(spec.status_file)  # the host never sees half a file


def _say(message: str) -> None:
    print(f"hwnic lab (guest): {message}", file=sys.stderr, flush=True)


def run_command(spec: GuestSpec, env: dict[str, str]) -> int:
    try:
        proc = subprocess.Popen(spec.command, cwd=spec.cwd, env=env)
    except FileNotFoundError:
        _say(f"{spec.command[0]}: command not found")
        return EXIT_NOT_FOUND
    except PermissionError:
        _say(f"{spec.command[0]}: not executable")
        return EXIT_NOT_EXECUTABLE
    try:
        status = proc.wait(timeout=spec.timeout)
    except subprocess.TimeoutExpired:
        _say(f"the command ran over {spec.timeout:.0f} s, killing it")
        proc.kill()
        proc.wait()
        return EXIT_TIMED_OUT
    # Killed by a signal: report it the way a shell does.
    return SIGNAL_EXIT_BASE - status if status < 0 else status


def uptime() -> float:
    """Seconds since the guest kernel started."""
    return float(Path("/proc/uptime").read_text().split()[0])


def main(argv: list[str]) -> int:
    setup_started = uptime()
    spec = GuestSpec.load(Path(argv[1]))
    try:
        load_modules()
        nics = locate_when_ready([LabNic.from_dict(d) for d in spec.nics])
        for nic in nics:
            assert nic.bdf is not None
            bind_to_vfio(nic.bdf)
        env = command_env(spec, nics)
        from hwnic.lab.control import LabControl

        LabControl().hello(
            nics=[n.to_dict() for n in nics], setup_started=setup_started, ready=uptime()
        )
    except (HwnicError, OSError) as exc:
        _say(f"setup failed: {exc}")
        _write_status(spec, error=str(exc))
        return EXIT_SETUP_FAILED
    watch = None
    if spec.heartbeat_file is not None:
        from hwnic.lab.watch import GuestWatch

        watch = GuestWatch(Path(spec.heartbeat_file))
        watch.start()
    status = run_command(spec, env)
    if watch is not None:
        watch.stop()
    _write_status(spec, status=status)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
