"""The lab's self-healing: a vCPU stall the guest kernel reports gets every vCPU kicked.

The test writes the line RCU's stall detector would write into the kernel
log; the lab's watch (hwnic/lab/watch.py) forwards it, the host sees the
stall count on the heartbeat and injects an NMI, which x86 Linux takes on
the boot CPU (LINT1 is NMI there only) and counts in /proc/interrupts.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.needs_lab("the kick comes from the lab's host side")]

KICK_TIMEOUT = 60.0  # s: the report, the next host poll, QMP under TCG
BOOT_CPU = 0
FAKE_STALL = "<4>rcu: INFO: rcu_preempt detected stalls on CPUs/tasks: (a hwnic lab test)\n"


def nmis() -> list[int]:
    """NMIs each CPU took so far."""
    for line in Path("/proc/interrupts").read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == "NMI:":
            return [int(f) for f in fields[1:] if f.isdigit()]
    raise AssertionError("no NMI line in /proc/interrupts")


def test_a_reported_stall_gets_the_vcpus_kicked() -> None:
    before = nmis()[BOOT_CPU]
    with open("/dev/kmsg", "w") as kmsg:
        kmsg.write(FAKE_STALL)
    deadline = time.monotonic() + KICK_TIMEOUT
    while time.monotonic() < deadline:
        if nmis()[BOOT_CPU] > before:
            return
        time.sleep(0.5)
    raise AssertionError(f"no NMI on the boot CPU within {KICK_TIMEOUT} s: {before} -> {nmis()}")
