"""Find what the lab needs on the host, or say in one line how to get it."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from hwnic.errors import LabDependencyMissing
from hwnic.lab.topology import MODELS

SETUP_HINT = "run tools/setup-host.sh (as root)"
QEMU_BINARY = "qemu-system-x86_64"
MIN_QEMU = (10, 0)  # first packaged version here that has the igb model
BOOT_DIR = Path("/boot")
# Debian's generic kernel: has 9p and the Intel NIC drivers as modules. The
# -cloud- flavour lacks both, so it must never be picked.
KERNEL_RE = re.compile(r"^vmlinuz-(?P<version>\d+\.\d+[\w.+~-]*)-amd64$")
QUERY_TIMEOUT = 30.0  # seconds for `qemu --version` / `-device help`


@dataclass(frozen=True)
class LabTools:
    qemu: Path
    qemu_version: tuple[int, int, int]
    kernel: Path
    vng: Path
    busybox: Path


def _which(name: str, path: str | None = None) -> Path | None:
    found = shutil.which(name, path=path)
    return Path(found) if found else None


def find_qemu(path: str | None = None) -> tuple[Path, tuple[int, int, int]]:
    """The QEMU binary, checked to be 10.x or newer and to have every NIC model."""
    qemu = _which(QEMU_BINARY, path)
    if qemu is None:
        raise LabDependencyMissing(f"{QEMU_BINARY} not found on PATH", SETUP_HINT)
    version = qemu_version(qemu)
    if version[:2] < MIN_QEMU:
        have = ".".join(map(str, version))
        raise LabDependencyMissing(
            f"{qemu} is QEMU {have}, the lab needs {MIN_QEMU[0]}.x (for igb)", SETUP_HINT
        )
    missing = [m for m in MODELS if m not in qemu_nic_models(qemu)]
    if missing:
        raise LabDependencyMissing(f"{qemu} has no {', '.join(missing)} device model", SETUP_HINT)
    return qemu, version


@functools.cache
def qemu_version(qemu: Path) -> tuple[int, int, int]:
    out = _query(qemu, "--version")
    m = re.search(r"version (\d+)\.(\d+)(?:\.(\d+))?", out)
    if not m:
        raise LabDependencyMissing(f"cannot read the version of {qemu}", SETUP_HINT)
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


@functools.cache
def qemu_nic_models(qemu: Path) -> frozenset[str]:
    out = _query(qemu, "-device", "help")
    return frozenset(re.findall(r'^name "([^"]+)"', out, re.MULTILINE))


def _query(qemu: Path, *args: str) -> str:
    try:
        done = subprocess.run(
            [str(qemu), *args],
            capture_output=True,
            text=True,
            timeout=QUERY_TIMEOUT,
            check=False,
        )
    except OSError as exc:
        raise LabDependencyMissing(f"cannot run {qemu}: {exc.strerror}", SETUP_HINT) from exc
    return done.stdout + done.stderr


def _version_key(version: str) -> list[int | str]:
    return [int(p) if p.isdigit() else p for p in re.split(r"[.\-+~]", version)]


def find_kernel(boot: Path = BOOT_DIR) -> Path:
    """The newest Debian generic ``/boot/vmlinuz-*-amd64`` (never the cloud one)."""
    found = []
    for entry in boot.glob("vmlinuz-*-amd64") if boot.is_dir() else []:
        m = KERNEL_RE.match(entry.name)
        if m and "cloud" not in entry.name and os.access(entry, os.R_OK):
            found.append((_version_key(m.group("version")), entry))
    if not found:
        raise LabDependencyMissing(
            f"no guest kernel {boot}/vmlinuz-*-amd64 (linux-image-amd64)", SETUP_HINT
        )
    return max(found, key=lambda item: item[0])[1]


def find_vng(path: str | None = None) -> Path:
    """virtme-ng's ``vng``: next to this Python first (the venv), then on PATH."""
    beside = Path(sys.executable).parent / "vng"
    if path is None and beside.is_file() and os.access(beside, os.X_OK):
        return beside
    vng = _which("vng", path)
    if vng is None:
        raise LabDependencyMissing(
            "vng (virtme-ng) not found", "install the project's dev environment (pip install .)"
        )
    return vng


def find_busybox(path: str | None = None) -> Path:
    busybox = _which("busybox", path)
    if busybox is None:
        raise LabDependencyMissing("busybox not found (busybox-static)", SETUP_HINT)
    return busybox


def find_tools(path: str | None = None, boot: Path = BOOT_DIR) -> LabTools:
    """Check every dependency; the first missing one raises LabDependencyMissing."""
    qemu, version = find_qemu(path)
    return LabTools(
        qemu=qemu,
        qemu_version=version,
        kernel=find_kernel(boot),
        vng=find_vng(path),
        busybox=find_busybox(path),
    )
