"""Decide between KVM and TCG.

``/dev/kvm`` existing is not enough: on some hosts QEMU aborts (MSR 0x10a with
``-cpu host``) or the guest hangs right after the kernel is decompressed. So
``auto`` boots the guest kernel once under KVM with no root file system and
waits, briefly, for it to reach the point where it looks for one.
"""

from __future__ import annotations

import os
import select
import subprocess
import time
from pathlib import Path

from hwnic.errors import LabError, UsageError

KVM_DEVICE = Path("/dev/kvm")
KVM_MODES = ("auto", "on", "off")
PROBE_TIMEOUT = 10.0  # s; a working KVM gets there in about one
PROBE_MEMORY = "256M"
# Printed once the kernel has booted far enough to mount a root file system.
PROBE_REACHED = (b"VFS: Unable to mount root", b"Kernel panic")
READ_CHUNK = 4096

_cache: dict[tuple[Path, Path], bool] = {}


def probe_command(qemu: Path, kernel: Path) -> list[str]:
    # -cpu host is what virtme-ng asks for under KVM, so probe that.
    return [
        str(qemu),
        "-accel", "kvm",
        "-machine", "q35",
        "-cpu", "host",
        "-m", PROBE_MEMORY,
        "-smp", "1",
        "-nodefaults",
        "-display", "none",
        "-monitor", "none",
        "-no-reboot",
        "-serial", "stdio",
        "-kernel", str(kernel),
        "-append", "console=ttyS0 earlyprintk=serial,ttyS0 panic=-1",
    ]  # fmt: skip


def kvm_works(qemu: Path, kernel: Path, timeout: float = PROBE_TIMEOUT) -> bool:
    """Boot ``kernel`` under KVM with no root; True if it got that far in time."""
    key = (qemu, kernel)
    if key in _cache:
        return _cache[key]
    if not os.access(KVM_DEVICE, os.R_OK | os.W_OK):
        _cache[key] = False
        return False
    proc = subprocess.Popen(
        probe_command(qemu, kernel),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    seen = b""
    ok = False
    deadline = time.monotonic() + timeout
    try:
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([proc.stdout], [], [], left)
            if not ready:
                break
            chunk = os.read(proc.stdout.fileno(), READ_CHUNK)
            if not chunk:
                break  # QEMU quit (e.g. aborted on an MSR) before the kernel got there
            seen += chunk
            if any(marker in seen for marker in PROBE_REACHED):
                ok = True
                break
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    _cache[key] = ok
    return ok


def resolve(mode: str, qemu: Path, kernel: Path) -> bool:
    """True to use KVM. ``on`` insists (LabError if the probe fails), ``off`` never."""
    if mode not in KVM_MODES:
        raise UsageError(f"--kvm must be one of {', '.join(KVM_MODES)}, not '{mode}'")
    if mode == "off":
        return False
    works = kvm_works(qemu, kernel)
    if mode == "on" and not works:
        raise LabError(
            "KVM was required but a test boot under KVM did not get past the kernel start",
            "use --kvm auto or --kvm off (TCG)",
        )
    return works
