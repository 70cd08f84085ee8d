"""The QEMU options of the lab and the virtme-ng command line that carries them.

virtme-ng builds most of QEMU's command line (kernel, 9p root, its own
virtio-serial ports for the guest's stdio and exit code); the lab adds the
machine options, the vIOMMU, the NICs and two sockets: QMP, and a
virtio-serial port that the guest uses to ask the host for QMP commands.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from hwnic.lab import watch
from hwnic.lab.topology import LabNic

CONTROL_PORT_NAME = "org.hwnic.ctl"
CONTROL_CHARDEV = "hwnicctl"
CONTROL_SERIAL_BUS = "hwnicser"
# kernel-irqchip=split is what intel-iommu's interrupt remapping needs under KVM.
MACHINE = "q35,kernel-irqchip=split"
# caching-mode=on: the guest reports every IOMMU map, which is what lets an
# emulated device behind the vIOMMU be assigned to a guest user (vfio-pci).
IOMMU = "intel-iommu,intremap=on,caching-mode=on"
# Modules udev would load for QEMU's default q35 devices (SATA, CD-ROM, chipset
# watchdog, SMBus), for KVM inside the guest and for CPU crypto: none is used
# by the lab, and loading them over 9p under TCG costs about 5 s per boot.
GUEST_MODULE_BLACKLIST = (
    "kvm", "kvm_amd", "kvm_intel",
    "ahci", "libahci", "libata", "scsi_mod", "sr_mod", "cdrom", "sg",
    "iTCO_wdt", "iTCO_vendor_support", "lpc_ich", "i2c_i801", "i2c_smbus",
    "pcspkr", "snd_pcsp", "serio_raw", "psmouse", "evdev", "joydev", "button",
    "aesni_intel", "ghash_clmulni_intel", "crc32_pclmul", "crc32c_intel",
    "polyval_clmulni", "polyval_generic", "gf128mul", "crypto_simd", "cryptd",
    "sha1_ssse3", "sha256_ssse3", "sha512_ssse3",
)  # fmt: skip
# The guest's clock under TCG. Linux picks the HPET there, whose every read is
# an MMIO trap that takes QEMU's global lock (2 us idle, 13-86 us while the
# other vCPU moves traffic). "tsc" trusts TCG's TSC (one host-derived counter
# for every vCPU) so clock_gettime stays in the vDSO: faster, but the guest
# froze (every vCPU idle, no timer firing) three times in a few hours of
# heavy lab use with it, and never with the HPET, so it is not the default.
GUEST_CLOCKS = {"hpet": (), "tsc": ("tsc=reliable", "clocksource=tsc")}
DEFAULT_GUEST_CLOCK = "hpet"
GUEST_KERNEL_ARGS = (
    "intel_iommu=on",
    "nokaslr",
    f"module_blacklist={','.join(GUEST_MODULE_BLACKLIST)}",
)


@dataclass(frozen=True)
class LabPaths:
    """Host paths of one run; ``run_dir`` is shared with the guest (same path)."""

    run_dir: Path

    @property
    def qmp_socket(self) -> Path:
        return self.run_dir / "qmp.sock"

    @property
    def control_socket(self) -> Path:
        return self.run_dir / "ctl.sock"

    @property
    def spec_file(self) -> Path:
        return self.run_dir / "spec.json"

    @property
    def status_file(self) -> Path:
        return self.run_dir / "status.json"

    @property
    def heartbeat_file(self) -> Path:
        return self.run_dir / "heartbeat"

    @property
    def symbols_file(self) -> Path:
        """The guest kernel's text symbols, written next to the heartbeat."""
        return self.run_dir / watch.SYMBOLS_NAME


def nic_options(nics: list[LabNic]) -> list[str]:
    """One root port, one hubport netdev and one NIC device per NIC."""
    opts: list[str] = []
    for nic in nics:
        opts += [
            "-device",
            f"pcie-root-port,id={nic.root_port},chassis={nic.index + 1},"
            f"bus=pcie.0,addr={nic.slot:#x}",
            "-netdev",
            f"hubport,id={nic.netdev},hubid={nic.hub}",
            "-device",
            f"{nic.model},id={nic.qemu_id},netdev={nic.netdev},mac={nic.mac},bus={nic.root_port}",
        ]
    return opts


def control_options(paths: LabPaths) -> list[str]:
    """QMP on a unix socket, and the guest's control port on another one."""
    return [
        "-qmp", f"unix:{paths.qmp_socket},server=on,wait=off",
        "-chardev", f"socket,id={CONTROL_CHARDEV},path={paths.control_socket},server=on,wait=off",
        "-device", f"virtio-serial-pci,id={CONTROL_SERIAL_BUS}",
        "-device",
        f"virtserialport,bus={CONTROL_SERIAL_BUS}.0,chardev={CONTROL_CHARDEV},"
        f"name={CONTROL_PORT_NAME}",
    ]  # fmt: skip


def qemu_options(nics: list[LabNic], paths: LabPaths) -> list[str]:
    """Everything the lab adds to virtme-ng's QEMU command line."""
    return [
        "-machine", MACHINE,
        "-device", IOMMU,
        *control_options(paths),
        *nic_options(nics),
    ]  # fmt: skip


@dataclass(frozen=True)
class VngOptions:
    vng: Path
    kernel: Path
    qemu: Path
    busybox: Path
    kvm: bool
    cpus: int
    memory: str
    guest_command: list[str]
    cwd: Path
    rwdirs: list[Path] = field(default_factory=list)
    overlay_dirs: list[Path] = field(default_factory=list)
    clock: str = DEFAULT_GUEST_CLOCK  # under TCG; KVM guests use the host's TSC anyway


def vng_command(opts: VngOptions, nics: list[LabNic], paths: LabPaths) -> list[str]:
    """The ``vng --run`` command that boots the lab and runs ``guest_command``."""
    cmd = [
        str(opts.vng),
        "--run", str(opts.kernel),
        "--qemu", str(opts.qemu),
        "--busybox", str(opts.busybox),
        # virtiofs needs a virtiofsd matching this QEMU; 9p always works.
        "--force-9p",
        # microvm has no PCIe, hence no root ports and no vIOMMU.
        "--disable-microvm",
        "--cpus", str(opts.cpus),
        "--memory", opts.memory,
        "--cwd", str(opts.cwd),
        "--rwdir", str(paths.run_dir),
    ]  # fmt: skip
    if not opts.kvm:
        cmd.append("--disable-kvm")
    clock_args = () if opts.kvm else GUEST_CLOCKS[opts.clock]
    for arg in (*GUEST_KERNEL_ARGS, *clock_args):
        cmd.append(f"--append={arg}")
    for rwdir in opts.rwdirs:
        cmd += ["--rwdir", str(rwdir)]
    for overlay in opts.overlay_dirs:
        cmd += ["--overlay-rwdir", str(overlay)]
    # "--opt=value": the values start with '-', which argparse would take for options.
    cmd.append(f"--exec={shlex.join(opts.guest_command)}")
    # vng pastes --qemu-opts into a shell command line, so quote it as one,
    # and it must come last (it takes the rest of the line).
    cmd.append(f"--qemu-opts={shlex.join(qemu_options(nics, paths))}")
    return cmd
