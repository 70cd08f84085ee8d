"""Is the guest alive? A heartbeat, the guest kernel's complaints, and a report.

A lab run that stops making progress must fail soon and say why, not sit until
``--timeout``. Two ways a run stops, told apart here:

- a task stuck in the guest kernel (D state): the guest still runs, so its
  heartbeat goes on; the kernel's hung-task detector prints the stuck stack to
  the kernel log, which the guest forwards to the lab's stderr;
- the whole guest stops (no vCPU runs guest code, or no timer fires): the
  heartbeat stops; the host then asks QEMU where each vCPU is (its RIP, named
  with the guest's own ``/proc/kallsyms``, copied out at the start) and ends
  the run with that report.

Under TCG a halted vCPU sometimes never sees its next timer interrupt (seen:
vCPU 0 idle in ``native_safe_halt`` for minutes, the guest's RCU detector
reporting "timer wakeup didn't happen" from the other vCPU, then the whole
guest stopping). So the watch also heals: when the guest kernel reports such
a stall, or the heartbeat is late by :data:`KICK_AFTER`, the host kicks the
vCPUs (an NMI, which x86 Linux takes on the boot CPU only, and a register read
that makes QEMU wake every vCPU thread), and the guest itself moves a thread
onto the CPU the report names, which makes the kernel send it a reschedule
IPI: a woken vCPU re-enters its idle loop and re-arms its timer. The guest asks for a kick
through the heartbeat file: its second field counts the stalls it saw.

Guest side: :class:`GuestWatch`. Host side: :func:`heartbeat_age` and
:func:`freeze_report`.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

HEARTBEAT_INTERVAL = 5.0  # s between heartbeats written by the guest
# No heartbeat for this long means the guest stopped. TCG under a loaded host
# delays a guest thread by seconds, never by minutes.
STALL_AFTER = 120.0
KICK_AFTER = 30.0  # s of heartbeat silence before the host kicks the vCPUs
# Guest kernel reports of a vCPU that stopped taking interrupts (RCU's detector).
STALL_REPORT = re.compile(r"detected stalls on CPUs|self-detected stall|timer wakeup didn't happen")
# The stalled CPU in those reports: "\t0-...!: (0 ticks this GP)", "issue on cpu=0".
STALLED_CPU = re.compile(r"(?:^|\s)(\d+)-\.\.\.|\bcpu=(\d+)")
HUNG_TASK_TIMEOUT = 60  # s in D state before the guest kernel prints the task's stack
HUNG_TASK_SYSCTL = Path("/proc/sys/kernel/hung_task_timeout_secs")
KMSG = Path("/dev/kmsg")
KALLSYMS = Path("/proc/kallsyms")
SYMBOLS_NAME = "kallsyms"  # next to the heartbeat file
KMSG_FORWARD_LEVEL = 4  # forward warning (4) and worse; kmsg lines start "<prio>,<seq>,..."
# Kernel lines worth seeing even below that level (continuations of a report).
KMSG_ALWAYS = re.compile(r"blocked for more than|Call Trace|\? |<TASK>|</TASK>|^ [a-z_]")


class GuestWatch:
    """Guest side: heartbeat file and kernel-log forwarder, as daemon threads."""

    def __init__(self, heartbeat_file: Path, out: Callable[[str], None] | None = None) -> None:
        self.heartbeat_file = heartbeat_file
        self.out = out or (lambda line: print(line, file=sys.stderr, flush=True))
        self._stop = threading.Event()
        self.stalls = 0  # stall reports seen in the kernel log: each asks for a kick
        self._beat_now = threading.Event()

    def start(self) -> None:
        with contextlib.suppress(OSError):  # not every kernel has the detector
            HUNG_TASK_SYSCTL.write_text(str(HUNG_TASK_TIMEOUT))
        threading.Thread(target=self._beat, name="lab-heartbeat", daemon=True).start()
        threading.Thread(target=self._kmsg, name="lab-kmsg", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._beat_now.set()

    def _beat(self) -> None:
        with contextlib.suppress(OSError):  # for naming RIPs should the guest freeze
            text = [ln for ln in KALLSYMS.read_text().splitlines() if ln[17:19] in ("t ", "T ")]
            (self.heartbeat_file.parent / SYMBOLS_NAME).write_text("\n".join(text) + "\n")
        tmp = self.heartbeat_file.with_suffix(".tmp")
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                tmp.write_text(f"{time.monotonic():.1f} {self.stalls}\n")
                tmp.replace(self.heartbeat_file)  # a new mtime the host can see
            self._beat_now.wait(HEARTBEAT_INTERVAL)
            self._beat_now.clear()

    def _kmsg(self) -> None:
        try:
            fd = os.open(KMSG, os.O_RDONLY)
        except OSError:
            return
        try:
            os.lseek(fd, 0, os.SEEK_END)  # only what happens from now on
            while not self._stop.is_set():
                try:
                    record = os.read(fd, 8192).decode(errors="replace")
                except BrokenPipeError:  # overwritten before we read it: go on
                    continue
                line = kmsg_line(record)
                if line is not None:
                    self.out(f"guest kernel: {line}")
                    if STALL_REPORT.search(line):
                        self.stalls += 1
                        self._beat_now.set()  # ask for a kick now, not at the next beat
                    cpu = stalled_cpu(line)
                    if cpu is not None:
                        wake_cpu(cpu)
        except OSError:
            return
        finally:
            os.close(fd)


def kmsg_line(record: str) -> str | None:
    """The message of one /dev/kmsg record if it is worth forwarding, else None."""
    head, sep, message = record.partition(";")
    if not sep:
        return None
    message = message.split("\n", 1)[0]
    try:
        level = int(head.split(",", 1)[0]) & 7  # the facility sits in the higher bits
    except ValueError:
        return None
    if level <= KMSG_FORWARD_LEVEL or KMSG_ALWAYS.search(message):
        return message
    return None


def stalled_cpu(line: str) -> int | None:
    """The CPU a kernel stall report line names, if it names one."""
    m = STALLED_CPU.search(line.replace("\\x09", "\t"))  # /dev/kmsg escapes tabs
    if m is None:
        return None
    return int(m.group(1) or m.group(2))


def wake_cpu(cpu: int) -> None:
    """Make the kernel IPI ``cpu``: a short-lived thread is moved onto it."""

    def visit() -> None:
        with contextlib.suppress(OSError):  # the CPU may be offline or not ours
            os.sched_setaffinity(0, {cpu})

    threading.Thread(target=visit, name=f"lab-wake-cpu{cpu}", daemon=True).start()


def stall_reports(heartbeat_file: Path) -> int:
    """How many vCPU stalls the guest kernel has reported (the heartbeat's second field)."""
    try:
        fields = heartbeat_file.read_text().split()
        return int(fields[1]) if len(fields) > 1 else 0
    except (OSError, ValueError):
        return 0


def heartbeat_age(heartbeat_file: Path, now: float | None = None) -> float | None:
    """Seconds since the guest's last heartbeat (host clock), None before the first."""
    try:
        mtime = heartbeat_file.stat().st_mtime
    except OSError:
        return None
    return (time.time() if now is None else now) - mtime


class KernelSymbols:
    """Addresses to ``symbol+offset`` with a System.map or kallsyms listing."""

    def __init__(self, system_map: Path) -> None:
        self.addrs: list[int] = []
        self.names: list[str] = []
        with contextlib.suppress(OSError):
            for line in system_map.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 3 and parts[1] in ("t", "T", "w", "W"):
                    self.addrs.append(int(parts[0], 16))
                    self.names.append(parts[2])
        order = sorted(range(len(self.addrs)), key=self.addrs.__getitem__)
        self.addrs = [self.addrs[i] for i in order]
        self.names = [self.names[i] for i in order]

    def name(self, addr: int) -> str:
        i = bisect.bisect_right(self.addrs, addr) - 1
        if addr < KERNEL_SPACE:
            return f"{addr:#x} (user space)"
        if i < 0:
            return f"{addr:#x}"
        return f"{self.names[i]}+{addr - self.addrs[i]:#x}"


KERNEL_SPACE = 0xFFFF800000000000  # x86-64: higher half
RIP_RE = re.compile(r"RIP=([0-9a-f]{16})")
HALTED_RE = re.compile(r"HLT=(\d)")


def freeze_report(registers: str, symbols: KernelSymbols) -> list[str]:
    """One line per vCPU from HMP ``info registers -a``: where it is, halted or not."""
    lines = []
    for cpu, block in enumerate(re.split(r"\n(?=CPU#)", registers.strip())):
        rip = RIP_RE.search(block)
        hlt = HALTED_RE.search(block)
        where = symbols.name(int(rip.group(1), 16)) if rip else "no RIP"
        state = "halted" if hlt and hlt.group(1) == "1" else "running"
        lines.append(f"vCPU {cpu}: {state} at {where}")
    return lines
