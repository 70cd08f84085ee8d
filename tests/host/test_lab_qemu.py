"""The lab's topology and QEMU/vng command lines, built without booting anything."""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from hwnic.errors import LabDependencyMissing, LabError, UsageError
from hwnic.lab import deps, qemu, topology
from hwnic.lab.qemu import LabPaths, VngOptions, qemu_options, vng_command
from hwnic.lab.topology import plan_nics


def _devices(opts: list[str], kind: str) -> list[dict[str, str]]:
    """Parse every ``-device KIND,k=v,...`` (or ``-netdev``) into a dict."""
    flag, _, name = kind.partition(":")
    found = []
    for i, opt in enumerate(opts[:-1]):
        if opt != flag:
            continue
        first, *rest = opts[i + 1].split(",")
        if name and first != name:
            continue
        fields = dict(kv.split("=", 1) for kv in rest)
        fields["_type"] = first
        found.append(fields)
    return found


@pytest.fixture
def paths(tmp_path: Path) -> LabPaths:
    return LabPaths(tmp_path)


def test_six_nics_pair_on_three_hubs() -> None:
    nics = plan_nics(["e1000", "e1000", "e1000e", "e1000e", "igb", "igb"])
    assert [n.hub for n in nics] == [0, 0, 1, 1, 2, 2]
    assert [n.qemu_id for n in nics] == ["nic0", "nic1", "nic2", "nic3", "nic4", "nic5"]
    assert [n.netdev for n in nics] == ["hp0", "hp1", "hp2", "hp3", "hp4", "hp5"]
    assert [n.mac for n in nics] == [f"52:54:00:12:34:0{i}" for i in range(1, 7)]
    assert [topology.peers(nics, n)[0].qemu_id for n in nics] == [
        "nic1", "nic0", "nic3", "nic2", "nic5", "nic4",
    ]  # fmt: skip


def test_pairs_are_same_model_on_one_hub() -> None:
    nics = plan_nics(["igb", "e1000", "e1000e", "e1000e", "igb"])
    pairs = topology.pairs(nics)
    # igb+e1000 share hub 0 (different models), the two e1000e share hub 1.
    assert list(pairs) == ["e1000e"]
    assert [n.qemu_id for n in pairs["e1000e"]] == ["nic2", "nic3"]


def test_address_needs_the_guest() -> None:
    nic = plan_nics(["igb"])[0]
    with pytest.raises(LabError):
        _ = nic.address
    assert replace(nic, bdf="0000:01:00.0").address == "0000:01:00.0"


def test_odd_last_nic_gets_its_own_hub() -> None:
    nics = plan_nics(["igb", "igb", "e1000"])
    assert [n.hub for n in nics] == [0, 0, 1]
    assert topology.peers(nics, nics[2]) == []


def test_default_is_two_igb_on_one_hub() -> None:
    nics = plan_nics(topology.DEFAULT_NICS)
    assert [(n.model, n.hub) for n in nics] == [("igb", 0), ("igb", 0)]


def test_unknown_model_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"unknown NIC model 'e100'.*e1000, e1000e, igb"):
        plan_nics(["igb", "e100"])


def test_too_many_or_no_nics() -> None:
    with pytest.raises(UsageError, match="slots for 8"):
        plan_nics(["e1000"] * (topology.MAX_NICS + 1))
    with pytest.raises(UsageError, match="at least one NIC"):
        plan_nics([])


def test_each_nic_behind_its_own_root_port(paths: LabPaths) -> None:
    nics = plan_nics(["igb", "igb", "e1000e"])
    opts = qemu_options(nics, paths)
    ports = _devices(opts, "-device:pcie-root-port")
    devs = [d for d in _devices(opts, "-device") if d["_type"] in topology.MODELS]
    assert [d["_type"] for d in devs] == ["igb", "igb", "e1000e"]
    assert len({p["id"] for p in ports}) == len(nics)
    assert len({p["chassis"] for p in ports}) == len(nics)  # QEMU wants them unique
    assert len({p["addr"] for p in ports}) == len(nics)
    for dev, port, nic in zip(devs, ports, nics, strict=True):
        assert dev["bus"] == port["id"] == nic.root_port
        assert port["bus"] == "pcie.0"
        assert int(port["addr"], 16) == nic.slot
        assert dev["id"] == nic.qemu_id
        assert dev["mac"] == nic.mac
        assert dev["netdev"] == nic.netdev


def test_hubports_carry_the_hub_ids(paths: LabPaths) -> None:
    nics = plan_nics(["e1000", "e1000e", "igb"])
    hubports = _devices(qemu_options(nics, paths), "-netdev:hubport")
    assert [(h["id"], h["hubid"]) for h in hubports] == [("hp0", "0"), ("hp1", "0"), ("hp2", "1")]


def test_machine_iommu_and_control_channel(paths: LabPaths) -> None:
    opts = qemu_options(plan_nics(["igb"]), paths)
    assert opts[opts.index("-machine") + 1] == "q35,kernel-irqchip=split"
    iommu = _devices(opts, "-device:intel-iommu")[0]
    assert iommu["intremap"] == "on" and iommu["caching-mode"] == "on"
    # intel-iommu must be created before the NICs it translates for.
    first_nic = next(i for i, o in enumerate(opts) if o.startswith("igb,"))
    assert opts.index("intel-iommu,intremap=on,caching-mode=on") < first_nic
    assert opts[opts.index("-qmp") + 1] == f"unix:{paths.qmp_socket},server=on,wait=off"
    port = _devices(opts, "-device:virtserialport")[0]
    assert port["name"] == qemu.CONTROL_PORT_NAME == "org.hwnic.ctl"
    chardev = _devices(opts, "-chardev:socket")[0]
    assert chardev["id"] == port["chardev"]
    assert chardev["path"] == str(paths.control_socket)


def _vng_opts(**over: object) -> VngOptions:
    base: dict[str, object] = dict(
        vng=Path("/v/bin/vng"), kernel=Path("/boot/vmlinuz-6.1.0-56-amd64"),
        qemu=Path("/usr/bin/qemu-system-x86_64"), busybox=Path("/usr/bin/busybox"),
        kvm=False, cpus=2, memory="2G", guest_command=["python", "-m", "x", "a b"],
        cwd=Path("/work/main"),
    )  # fmt: skip
    base.update(over)
    return VngOptions(**base)  # type: ignore[arg-type]


def test_vng_command_tcg(paths: LabPaths) -> None:
    nics = plan_nics(["igb", "igb"])
    cmd = vng_command(_vng_opts(rwdirs=[Path("/res")]), nics, paths)
    assert cmd[:3] == ["/v/bin/vng", "--run", "/boot/vmlinuz-6.1.0-56-amd64"]
    for flag in ("--disable-kvm", "--force-9p", "--disable-microvm"):
        assert flag in cmd
    assert cmd[cmd.index("--cpus") + 1] == "2"
    assert cmd[cmd.index("--memory") + 1] == "2G"
    appended = [a.removeprefix("--append=") for a in cmd if a.startswith("--append=")]
    assert appended[0] == "intel_iommu=on"
    blacklist = appended[1].removeprefix("module_blacklist=").split(",")
    # The lab's own modules must never be kept out.
    for needed in ("vfio_pci", "vfio_pci_core", "irqbypass", "vfio_iommu_type1", "virtio_console"):
        assert needed not in blacklist
    rwdirs = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--rwdir"]
    assert rwdirs == [str(paths.run_dir), "/res"]
    execs = [a for a in cmd if a.startswith("--exec=")]
    assert [shlex.split(e.removeprefix("--exec=")) for e in execs] == [["python", "-m", "x", "a b"]]
    # --qemu-opts is last and re-splits (vng pastes it into a shell line) to our options.
    assert cmd[-1].startswith("--qemu-opts=")
    assert shlex.split(cmd[-1].removeprefix("--qemu-opts=")) == qemu_options(nics, paths)


def test_vng_command_kvm_keeps_acceleration(paths: LabPaths) -> None:
    cmd = vng_command(_vng_opts(kvm=True), plan_nics(["igb"]), paths)
    assert "--disable-kvm" not in cmd


def test_lab_nic_roundtrips_through_json() -> None:
    nics = plan_nics(["e1000", "igb"])
    assert topology.loads(topology.dumps(nics)) == nics
    assert nics[1].pci_device_id == 0x10C9


LAB_MODULES = ("vfio-pci", "vfio_iommu_type1", "virtio_console", "e1000", "e1000e", "igb", "9p")


def _module_closure(release: str, names: tuple[str, ...]) -> set[str]:
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop().replace("-", "_")
        if name in seen:
            continue
        seen.add(name)
        out = subprocess.run(
            ["modinfo", "-k", release, "-F", "depends", name],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        todo += [d for d in out.strip().split(",") if d]
    return seen


def test_blacklist_spares_what_the_lab_loads() -> None:
    """vfio-pci needs irqbypass, which KVM also uses: blacklisting it broke binding once."""
    try:
        kernel = deps.find_kernel()
    except LabDependencyMissing:
        pytest.skip("no guest kernel installed here (tools/setup-host.sh) to read modules from")
    release = kernel.name.removeprefix("vmlinuz-")
    needed = _module_closure(release, LAB_MODULES)
    assert {"vfio_pci", "vfio", "irqbypass", "virtio_console"} <= needed
    assert needed.isdisjoint(qemu.GUEST_MODULE_BLACKLIST)


def test_guest_clock_is_hpet_unless_tsc_is_asked_for(paths: LabPaths) -> None:
    nics = plan_nics(["igb"])
    tsc_args = {"--append=tsc=reliable", "--append=clocksource=tsc"}
    assert not tsc_args & set(vng_command(_vng_opts(kvm=False), nics, paths))
    tsc = vng_command(replace(_vng_opts(kvm=False), clock="tsc"), nics, paths)
    assert tsc_args <= set(tsc)
    kvm = vng_command(replace(_vng_opts(kvm=True), clock="tsc"), nics, paths)
    assert not tsc_args & set(kvm)  # a KVM guest has the host's TSC anyway
