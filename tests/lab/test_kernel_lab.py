"""hwnic and the Linux kernel driver on one wire: frames cross both ways, all counted.

Port A of a pair goes to its kernel driver (``hwnic.lab.kernel``); the
kernel's pktgen sends a counted, paced burst to hwnic on port B, then hwnic
sends a counted burst back that the kernel's rx_packets must show. Port A
is back on vfio-pci afterwards for the tests that follow. One model (igb if
the lab has it) keeps the test short; tools/compare_kernel.py measures all.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import hwnic
from hwnic import traffic
from hwnic.bench.runner import RxCounter
from hwnic.lab.kernel import mac_of, pktgen, rx_packets, to_kernel, to_vfio
from hwnic.pytest_plugin import Rig

pytestmark = pytest.mark.lab

COUNT = 2000
FRAME_LEN = 60  # hwnic lengths exclude the FCS (64 bytes on the wire)
PKTGEN_GAP_NS = 200_000  # 5,000 frames/s: below the rate at which QEMU's models drop
CHUNK = 100  # hwnic -> kernel: frames per send, then wait for the NIC ...
CHUNK_GAP = 0.02  # ... and pause (5,000 frames/s, within the kernel's 256-entry ring)
LINK_TIMEOUT = 30.0
SETTLE_TIMEOUT = 30.0
PREFERRED = ("igb", "e1000e", "e1000")


def wait_for(read: object, want: int) -> int:
    """Poll ``read()`` until it reaches ``want`` or SETTLE_TIMEOUT passes; its last value."""
    assert callable(read)
    deadline = time.monotonic() + SETTLE_TIMEOUT
    value = int(read())
    while value < want and time.monotonic() < deadline:
        time.sleep(0.05)
        value = int(read())
    return value


def test_kernel_pktgen_to_hwnic_and_hwnic_to_kernel(hwnic_rig: Rig) -> None:
    pairs = hwnic_rig.pairs()
    model = next((m for m in PREFERRED if m in pairs), None)
    if model is None:
        pytest.skip("the lab has no two ports of one model on one hub")
    a, b = pairs[model]
    try:
        a_if = to_kernel(a.address)
        counter = RxCounter(1)
        with hwnic.open(b.address, on_receive=counter, wait_link=LINK_TIMEOUT) as nic:
            sent, _ = pktgen(a_if, COUNT, nic.mac, delay_ns=PKTGEN_GAP_NS)
            assert sent == COUNT
            got = wait_for(lambda: counter.totals()[0], COUNT)
            assert got == COUNT, f"{model}: hwnic received {got} of pktgen's {COUNT}"

            before = rx_packets(a_if)
            lengths = np.full(COUNT, FRAME_LEN)
            frames = traffic.build(np.arange(COUNT), lengths, nic.mac, mac_of(a_if))
            for i in range(0, COUNT, CHUNK):
                assert nic.send(frames[i : i + CHUNK], lengths[i : i + CHUNK]) == CHUNK
                assert nic.flush(SETTLE_TIMEOUT)
                time.sleep(CHUNK_GAP)
            arrived = wait_for(lambda: rx_packets(a_if) - before, COUNT)
            assert arrived == COUNT, f"{model}: the kernel counted {arrived} of hwnic's {COUNT}"
    finally:
        to_vfio(a.address)
