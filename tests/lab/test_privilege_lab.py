"""udev rules and least privilege, for real: the rules in udev/ installed in the guest.

One port (the lab's last NIC) is given back to its kernel driver; the rules,
selecting it by slot, are installed and triggered; udev must hand it to
vfio-pci and make its /dev/vfio/N ``root:hwnic 0660``. Then an unprivileged
uid in the ``hwnic`` group opens it (``hwnic info``, and ``hwnic.open`` with
DMA and traffic), and a uid outside the group gets hwnic's one-line
permission error. Everything is put back for the tests that follow.

The guest is virtme-ng's: / is the host's (read-only), /etc an overlay that
dies with the guest. The venv's interpreter lives under /root (mode 0700 on
the host), so the test lays a traversable directory over /root holding only
``.pyenv`` (bind mounts, guest only) for the unprivileged uids to exec it.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hwnic import pci
from hwnic.lab.guest import lab_nics

pytestmark = [
    pytest.mark.lab,
    pytest.mark.needs_lab(
        "installs udev rules and switches users in the guest; "
        "on a lab machine follow the README's steps instead"
    ),
]

REPO = Path(__file__).resolve().parents[2]
RULES_DIR = Path("/etc/udev/rules.d")
RULE_FILES = ("69-hwnic-select.rules", "70-hwnic-vfio.rules")
GROUP_FILE = Path("/etc/group")
HWNIC_GID = 4242  # the guest's hwnic group (no such gid on the host image)
MEMBER_UID = 4243
OUTSIDER_UID = 4244
UDEV_TIMEOUT = 30.0  # seconds for udev to rebind the port and set the node's group
CLI_TIMEOUT = 120
LOCKED_MEMORY = 256 << 20  # RLIMIT_MEMLOCK for DMA, as limits.d would give the group
ROOT_OVERLAY = Path("/run/hwnic-root")

OPEN_AND_SEND = """
import sys, numpy as np, hwnic
from hwnic import traffic
with hwnic.open(sys.argv[1], wait_link=30) as nic:
    lengths = np.full(8, 64)
    sent = nic.send(traffic.build(np.arange(8), lengths, nic.mac, nic.mac), lengths)
    print("sent", sent)
"""


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CLI_TIMEOUT)
    if check:
        assert proc.returncode == 0, f"{cmd}: {proc.stderr}"
    return proc


def as_user(uid: int, groups: list[int], *cmd: str) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` as ``uid`` with exactly ``groups``, locked memory raised as root first."""
    group_opt = ["--groups", ",".join(map(str, groups))] if groups else ["--clear-groups"]
    env = {**os.environ, "HOME": "/tmp"}
    return subprocess.run(
        ["prlimit", f"--memlock={LOCKED_MEMORY}", "setpriv", f"--reuid={uid}",
         f"--regid={uid}", *group_opt, "--", *cmd],
        capture_output=True, text=True, timeout=CLI_TIMEOUT, env=env, cwd=REPO,
    )  # fmt: skip


@pytest.fixture
def guest_users() -> Iterator[None]:
    """The hwnic group in /etc/group, and /root traversable (guest only)."""
    original = GROUP_FILE.read_text()
    GROUP_FILE.write_text(original + f"hwnic:x:{HWNIC_GID}:\n")
    mounted = False
    if not os.stat("/root").st_mode & stat.S_IXOTH:
        pyenv = ROOT_OVERLAY / ".pyenv"
        pyenv.mkdir(parents=True, exist_ok=True)
        ROOT_OVERLAY.chmod(0o711)
        run("mount", "--bind", "/root/.pyenv", str(pyenv))
        run("mount", "--rbind", str(ROOT_OVERLAY), "/root")
        mounted = True
    try:
        yield
    finally:
        if mounted:
            run("umount", "-R", "/root", check=False)
            run("umount", str(ROOT_OVERLAY / ".pyenv"), check=False)
        GROUP_FILE.write_text(original)


@pytest.fixture
def kernel_bound_port() -> Iterator[str]:
    """The lab's last port, given back to its kernel driver; vfio-pci again afterwards."""
    bdf = lab_nics()[-1].address
    nic = pci.unbind_vfio(bdf)
    assert nic.driver != "vfio-pci", f"{bdf} stayed on vfio-pci"
    try:
        yield bdf
    finally:
        for name in RULE_FILES:
            (RULES_DIR / name).unlink(missing_ok=True)
        run("udevadm", "control", "--reload", check=False)
        if pci.describe(bdf).driver != "vfio-pci":
            pci.bind_vfio(bdf)
        group = pci.describe(bdf).iommu_group
        node = Path(f"/dev/vfio/{group}")
        if node.exists():
            os.chown(node, 0, 0)
            node.chmod(0o600)


def install_rules(bdf: str) -> None:
    """The repository's rules, with the select file naming ``bdf`` by slot."""
    select = (REPO / "udev" / RULE_FILES[0]).read_text()
    slot_line = f'ACTION=="add", SUBSYSTEM=="pci", KERNEL=="{bdf}", ENV{{HWNIC_BIND}}="1"\n'
    (RULES_DIR / RULE_FILES[0]).write_text(select + slot_line)
    (RULES_DIR / RULE_FILES[1]).write_text((REPO / "udev" / RULE_FILES[1]).read_text())
    run("udevadm", "control", "--reload")


def wait_for_udev(bdf: str) -> Path:
    """Until udev bound ``bdf`` to vfio-pci and gave its group node to hwnic."""
    deadline = time.monotonic() + UDEV_TIMEOUT
    while True:
        nic = pci.describe(bdf)
        node = Path(f"/dev/vfio/{nic.iommu_group}")
        if nic.driver == "vfio-pci" and node.exists():
            st = node.stat()
            if st.st_gid == HWNIC_GID and stat.S_IMODE(st.st_mode) == 0o660:
                return node
        if time.monotonic() > deadline:
            mode = oct(node.stat().st_mode) if node.exists() else "absent"
            raise AssertionError(f"udev did not finish: driver {nic.driver}, {node} {mode}")
        time.sleep(0.2)


def test_udev_rules_bind_by_slot_and_only_the_group_may_open(
    guest_users: None, kernel_bound_port: str
) -> None:
    bdf = kernel_bound_port
    install_rules(bdf)
    run("udevadm", "trigger", "--action=add", "--subsystem-match=pci", f"--sysname-match={bdf}")
    run("udevadm", "settle", f"--timeout={int(UDEV_TIMEOUT)}")
    node = wait_for_udev(bdf)
    assert node.stat().st_uid == 0

    hwnic_cmd = [sys.executable, "-m", "hwnic.cli.main"]
    member = as_user(MEMBER_UID, [HWNIC_GID], *hwnic_cmd, "info", bdf)
    assert member.returncode == 0, member.stderr
    assert bdf in member.stdout

    traffic = as_user(MEMBER_UID, [HWNIC_GID], sys.executable, "-c", OPEN_AND_SEND, bdf)
    assert traffic.returncode == 0, traffic.stderr
    assert traffic.stdout.split() == ["sent", "8"]

    outsider = as_user(OUTSIDER_UID, [], *hwnic_cmd, "info", bdf)
    assert outsider.returncode != 0
    assert "Traceback" not in outsider.stderr
    lines = outsider.stderr.strip().splitlines()
    assert len(lines) == 1, outsider.stderr
    assert "no permission" in lines[0] and str(node) in lines[0] and "hwnic" in lines[0]
