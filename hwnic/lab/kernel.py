"""Inside the lab: a port on its Linux kernel driver, and pktgen on it.

For comparisons and interoperability tests in the same guest, on the same
emulated NICs: :func:`to_kernel` gives a port back to its kernel driver and
brings its netdev up quietly (promiscuous, no addresses, IPv6 off, so it
sends nothing of its own); :func:`to_vfio` hands it back to vfio-pci;
:func:`pktgen` sends a counted burst of 64-byte frames with the kernel's
packet generator; :func:`rx_packets` reads the kernel's receive counter.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from hwnic import pci
from hwnic.errors import LabError

PKTGEN = Path("/proc/net/pktgen")
FCS_LEN = 4  # pktgen's pkt_size excludes the frame check sequence
NETDEV_TIMEOUT = 30.0  # s for a netdev to appear and see carrier under TCG
POLL = 0.1
PKTGEN_RESULT = re.compile(r"Result: OK: (\d+)\(c\d+\+d\d+\) usec, (\d+) \(")
PKTGEN_DST_IP = "10.255.0.2"  # any address: nothing routes it, the frames go by MAC
US_PER_S = 1e6


def _sh(*cmd: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise LabError(f"{' '.join(cmd)}: {proc.stderr.strip()}", "is this the lab guest?")


def to_kernel(bdf: str, timeout: float = NETDEV_TIMEOUT) -> str:
    """Give ``bdf`` to its kernel driver, bring its netdev up quietly; its name."""
    pci.unbind_vfio(bdf)
    net = Path(f"/sys/bus/pci/devices/{bdf}/net")
    deadline = time.monotonic() + timeout
    while not (net.exists() and any(net.iterdir())):
        if time.monotonic() > deadline:
            driver = pci.describe(bdf).driver
            raise LabError(f"{bdf} has no kernel netdev (driver {driver})", "check dmesg")
        time.sleep(POLL)
    _sh("udevadm", "settle")  # udev renames eth0 (to enpNs0): take the final name
    ifname = next(net.iterdir()).name
    Path(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6").write_text("1\n")
    _sh("ip", "link", "set", ifname, "promisc", "on", "up")
    carrier = Path(f"/sys/class/net/{ifname}/carrier")
    while carrier.read_text().strip() != "1":
        if time.monotonic() > deadline:
            raise LabError(f"{ifname} ({bdf}) has no carrier", "check the lab's hub")
        time.sleep(POLL)
    return ifname


def to_vfio(bdf: str) -> None:
    """Back on vfio-pci (if it is not already)."""
    if pci.describe(bdf).driver != "vfio-pci":
        pci.bind_vfio(bdf)


def rx_packets(ifname: str) -> int:
    return int(Path(f"/sys/class/net/{ifname}/statistics/rx_packets").read_text())


def mac_of(ifname: str) -> str:
    return Path(f"/sys/class/net/{ifname}/address").read_text().strip()


def pktgen(
    ifname: str, count: int, dst_mac: str, size: int = 64, delay_ns: int = 0
) -> tuple[int, float]:
    """Send ``count`` frames of ``size`` bytes (with FCS) from ``ifname``.

    ``delay_ns`` between frames (0: as fast as the kernel can). Returns
    (frames sent, seconds) as pktgen reports them.
    """
    _sh("modprobe", "pktgen")
    thread = PKTGEN / "kpktgend_0"
    thread.write_text("rem_device_all\n")
    thread.write_text(f"add_device {ifname}\n")
    dev = PKTGEN / ifname
    for line in (
        f"count {count}",
        f"pkt_size {size - FCS_LEN}",
        f"delay {delay_ns}",
        f"dst_mac {dst_mac}",
        f"dst {PKTGEN_DST_IP}",
        "clone_skb 0",
        "burst 1",
    ):
        dev.write_text(line + "\n")
    (PKTGEN / "pgctrl").write_text("start\n")  # returns when all were sent
    text = dev.read_text()
    thread.write_text("rem_device_all\n")
    m = PKTGEN_RESULT.search(text)
    if not m:
        raise LabError(f"no pktgen result for {ifname}", text.strip().splitlines()[-1])
    return int(m.group(2)), int(m.group(1)) / US_PER_S
