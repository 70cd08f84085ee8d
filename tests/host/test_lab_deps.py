"""Dependency checks of the lab: each missing piece is one LabDependencyMissing line."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hwnic.errors import LabDependencyMissing, LabError
from hwnic.lab import deps, kvm


def _script(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _fake_qemu(tmp_path: Path, version: str, models: list[str]) -> str:
    """A directory on PATH holding a fake qemu-system-x86_64."""
    bin_dir = tmp_path / f"bin-{version}-{'-'.join(models)}"
    bin_dir.mkdir()
    listing = "\\n".join(f'name "{m}", bus PCI' for m in models)
    _script(
        bin_dir,
        deps.QEMU_BINARY,
        f'case "$1" in --version) echo "QEMU emulator version {version}";; '
        f"*) printf '{listing}\\n';; esac",
    )
    return str(bin_dir)


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    deps.qemu_version.cache_clear()
    deps.qemu_nic_models.cache_clear()


def test_no_qemu_on_path(tmp_path: Path) -> None:
    with pytest.raises(LabDependencyMissing) as info:
        deps.find_qemu(path=str(tmp_path))
    assert str(info.value) == (
        "qemu-system-x86_64 not found on PATH; run tools/setup-host.sh (as root)"
    )
    assert "\n" not in str(info.value)


def test_qemu_7_is_too_old(tmp_path: Path) -> None:
    path = _fake_qemu(tmp_path, "7.2.15", ["e1000", "e1000e"])
    with pytest.raises(LabDependencyMissing, match=r"QEMU 7\.2\.15, the lab needs 10.*setup-host"):
        deps.find_qemu(path=path)


def test_qemu_without_igb(tmp_path: Path) -> None:
    path = _fake_qemu(tmp_path, "10.0.2", ["e1000", "e1000e"])
    with pytest.raises(LabDependencyMissing, match="has no igb device model"):
        deps.find_qemu(path=path)


def test_qemu_10_with_all_models(tmp_path: Path) -> None:
    path = _fake_qemu(tmp_path, "10.0.2", ["e1000", "e1000e", "igb", "virtio-net-pci"])
    qemu, version = deps.find_qemu(path=path)
    assert version == (10, 0, 2)
    assert qemu == Path(path) / deps.QEMU_BINARY


def test_kernel_skips_cloud_and_takes_newest(tmp_path: Path) -> None:
    for name in (
        "vmlinuz-6.1.0-56-cloud-amd64",
        "vmlinuz-6.1.0-9-amd64",
        "vmlinuz-6.1.0-56-amd64",
        "vmlinuz-6.1.0-60-cloud-amd64",
        "config-6.1.0-70-amd64",
    ):
        (tmp_path / name).write_text("")
    assert deps.find_kernel(tmp_path) == tmp_path / "vmlinuz-6.1.0-56-amd64"


def test_only_cloud_kernel_is_missing(tmp_path: Path) -> None:
    (tmp_path / "vmlinuz-6.1.0-56-cloud-amd64").write_text("")
    with pytest.raises(LabDependencyMissing, match=r"no guest kernel .*linux-image-amd64"):
        deps.find_kernel(tmp_path)


def test_no_busybox_or_vng(tmp_path: Path) -> None:
    with pytest.raises(LabDependencyMissing, match=r"busybox-static.*setup-host"):
        deps.find_busybox(path=str(tmp_path))
    with pytest.raises(LabDependencyMissing, match="vng"):
        deps.find_vng(path=str(tmp_path))


def test_find_tools_reports_the_first_missing(tmp_path: Path) -> None:
    with pytest.raises(LabDependencyMissing, match="qemu-system-x86_64 not found"):
        deps.find_tools(path=str(tmp_path), boot=tmp_path)
    path = _fake_qemu(tmp_path, "10.0.2", ["e1000", "e1000e", "igb"])
    with pytest.raises(LabDependencyMissing, match="no guest kernel"):
        deps.find_tools(path=path, boot=tmp_path)


def test_kvm_probe_false_when_qemu_dies_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failure seen here: QEMU aborts on MSR 0x10a before the kernel prints anything."""
    fake = _script(tmp_path, "qemu", "echo 'error: failed to set MSR 0x10a' >&2; exit 134")
    monkeypatch.setattr(kvm, "KVM_DEVICE", Path(os.devnull))  # readable and writable
    monkeypatch.setattr(kvm, "_cache", {})
    assert kvm.kvm_works(fake, tmp_path / "k") is False


def test_kvm_probe_false_on_hang_and_true_when_kernel_gets_far(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kvm, "KVM_DEVICE", Path(os.devnull))
    monkeypatch.setattr(kvm, "_cache", {})
    hang = _script(tmp_path, "hang", "echo 'Probing EDD'; exec sleep 30")
    assert kvm.kvm_works(hang, tmp_path / "k", timeout=0.5) is False
    good = _script(
        tmp_path,
        "good",
        "echo '[0.9] VFS: Unable to mount root fs on unknown-block(0,0)'; sleep 30",
    )
    assert kvm.kvm_works(good, tmp_path / "k", timeout=10) is True
    # Cached for the run: a second call does not boot again.
    assert kvm._cache[(good, tmp_path / "k")] is True


def test_kvm_modes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kvm, "kvm_works", lambda q, k: False)
    assert kvm.resolve("off", tmp_path, tmp_path) is False
    assert kvm.resolve("auto", tmp_path, tmp_path) is False
    with pytest.raises(LabError, match="KVM was required"):
        kvm.resolve("on", tmp_path, tmp_path)
    monkeypatch.setattr(kvm, "kvm_works", lambda q, k: True)
    assert kvm.resolve("auto", tmp_path, tmp_path) is True
