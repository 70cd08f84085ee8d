"""The lab's liveness watch: kernel-log filtering, heartbeat age, freeze report."""

from __future__ import annotations

import os
import time
from pathlib import Path

from hwnic.lab import watch


def test_kmsg_forwards_warnings_and_hung_task_reports_only() -> None:
    assert watch.kmsg_line("6,120,5000,-;eth0: link up\n") is None
    assert watch.kmsg_line("4,121,5001,-;vfio-pci 0000:05:00.0: reset failed\n") == (
        "vfio-pci 0000:05:00.0: reset failed"
    )
    # Facility bits above the level do not hide an error.
    assert watch.kmsg_line(f"{(1 << 3) | 3},1,2,-;boom") == "boom"
    assert watch.kmsg_line("6,9,9,-;INFO: task python3:77 blocked for more than 60 seconds.")
    assert watch.kmsg_line("no separator") is None
    assert watch.kmsg_line("x,1,2,-;bad level") is None


def test_heartbeat_age_from_mtime(tmp_path: Path) -> None:
    beat = tmp_path / "heartbeat"
    assert watch.heartbeat_age(beat) is None
    beat.write_text("1\n")
    past = time.time() - 300
    os.utime(beat, (past, past))
    age = watch.heartbeat_age(beat)
    assert age is not None and 299 < age < 400


def test_guest_watch_beats(tmp_path: Path) -> None:
    beat = tmp_path / "heartbeat"
    w = watch.GuestWatch(beat, out=lambda line: None)
    w.start()
    try:
        deadline = time.monotonic() + 5
        while not beat.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert beat.exists()
    finally:
        w.stop()


def test_freeze_report_names_symbols(tmp_path: Path) -> None:
    system_map = tmp_path / "System.map"
    system_map.write_text(
        "ffffffff81000000 T _stext\nffffffff81a00000 T default_idle\n"
        "ffffffff81a00100 t mutex_lock\nffffffff82000000 D some_data\n"
    )
    symbols = watch.KernelSymbols(system_map)
    registers = (
        "CPU#0\nRAX=0\nRIP=ffffffff81a00010 RFL=00000246 CPL=0 II=0 A20=1 SMM=0 HLT=1\n"
        "CPU#1\nRIP=ffffffff81a00180 RFL=00000246 CPL=0 II=0 A20=1 SMM=0 HLT=0\n"
        "CPU#2\nRIP=00007f0000001000 RFL=00000246 CPL=3 HLT=0\n"
    )
    assert watch.freeze_report(registers, symbols) == [
        "vCPU 0: halted at default_idle+0x10",
        "vCPU 1: running at mutex_lock+0x80",
        "vCPU 2: running at 0x7f0000001000 (user space)",
    ]


def test_a_qemu_crash_is_an_emulator_failure_worth_a_retry(tmp_path: Path) -> None:
    import pytest

    from hwnic.errors import EmulatorFailed, LabError
    from hwnic.lab.qemu import LabPaths
    from hwnic.lab.runner import LabConfig, LabRun

    run = LabRun(LabConfig(command=["true"], nics=["igb"]))
    crash = [
        "qemu-system-x86_64: system/physmem.c:2678: iotlb_to_section: "
        "Assertion `section_index < d->map.sections_nb' failed."
    ]
    with pytest.raises(EmulatorFailed) as info:
        run._result(LabPaths(tmp_path), 255, crash)
    assert info.value.exit_code == 75
    # Any other early end is the command's or the guest's problem: no retry.
    with pytest.raises(LabError) as other:
        run._result(LabPaths(tmp_path), 1, ["Kernel panic - not syncing"])
    assert not isinstance(other.value, EmulatorFailed)


def test_stall_reports_ride_on_the_heartbeat(tmp_path: Path) -> None:
    beat = tmp_path / "heartbeat"
    assert watch.stall_reports(beat) == 0
    beat.write_text("12.5\n")  # a guest from before stall counting
    assert watch.stall_reports(beat) == 0
    beat.write_text("12.5 3\n")
    assert watch.stall_reports(beat) == 3
    assert watch.STALL_REPORT.search("rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:")
    assert watch.STALL_REPORT.search("rcu: rcu_preempt kthread timer wakeup didn't happen for 5")
    assert not watch.STALL_REPORT.search("e1000e: link up")


class KickQmp:
    def __init__(self) -> None:
        self.commands: list[str] = []

    def execute(self, command: str, **arguments: object) -> object:
        self.commands.append(command if not arguments else f"{command} {arguments}")
        return ""


def test_the_host_kicks_on_a_stall_report_and_on_silence(tmp_path: Path) -> None:
    import pytest

    from hwnic.errors import GuestFroze
    from hwnic.lab.qemu import LabPaths
    from hwnic.lab.runner import LabConfig, LabRun

    paths = LabPaths(tmp_path)
    run = LabRun(LabConfig(command=["true"], nics=["igb"], quiet=True))
    qmp = KickQmp()
    paths.heartbeat_file.write_text("1.0 0\n")
    run._watch(qmp, paths)  # type: ignore[arg-type]
    assert qmp.commands == [] and run.kicks == 0
    paths.heartbeat_file.write_text("2.0 2\n")  # the guest saw a stall
    run._watched = 0.0
    run._watch(qmp, paths)  # type: ignore[arg-type]
    assert run.kicks == 1 and qmp.commands[0] == "inject-nmi"
    # Silence: a kick after KICK_AFTER, the freeze report after STALL_AFTER.
    past = time.time() - (watch.KICK_AFTER + 5)
    os.utime(paths.heartbeat_file, (past, past))
    run._watched = run._kicked = 0.0
    run._watch(qmp, paths)  # type: ignore[arg-type]
    assert run.kicks == 2
    past = time.time() - (watch.STALL_AFTER + 5)
    os.utime(paths.heartbeat_file, (past, past))
    run._watched = 0.0
    with pytest.raises(GuestFroze):
        run._watch(qmp, paths)  # type: ignore[arg-type]


def test_the_stalled_cpu_is_read_from_the_report() -> None:
    assert watch.stalled_cpu("rcu: \t1-...!: (0 ticks this GP) idle=35a8/0/0x0") == 1
    assert watch.stalled_cpu("rcu: \\x090-...!: (0 ticks this GP) idle=35a8/0/0x0") == 0
    assert watch.stalled_cpu("rcu: \tPossible timer handling issue on cpu=0 timer-softirq=1") == 0
    assert watch.stalled_cpu("rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:") is None
