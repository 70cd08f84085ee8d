"""``hwnic lab run``: boot the QEMU lab and run a command inside it."""

from __future__ import annotations

import argparse
from pathlib import Path

from hwnic.errors import UsageError
from hwnic.lab import runner
from hwnic.lab.kvm import KVM_MODES
from hwnic.lab.qemu import DEFAULT_GUEST_CLOCK, GUEST_CLOCKS
from hwnic.lab.topology import DEFAULT_NICS, MODELS


def cmd_run(args: argparse.Namespace) -> int:
    command = list(args.cmd)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError("no command to run in the lab", "e.g. 'hwnic lab run -- hwnic list'")
    config = runner.LabConfig(
        command=command,
        nics=args.nic or list(DEFAULT_NICS),
        timeout=args.timeout,
        boot_timeout=args.boot_timeout,
        kvm=args.kvm,
        memory=args.memory,
        cpus=args.cpus,
        rwdirs=[Path(d).resolve() for d in args.rwdir],
        quiet=args.quiet,
        clock=args.clock,
    )
    return runner.run(config)


def register(subparsers: argparse._SubParsersAction) -> None:
    lab = subparsers.add_parser(
        "lab",
        help="the QEMU lab: emulated e1000/e1000e/igb behind a vIOMMU",
        description="Boot a QEMU guest (virtme-ng, host root over 9p) with emulated Intel "
        "NICs bound to vfio-pci, and run commands in it.",
    )
    sub = lab.add_subparsers(dest="lab_command", metavar="ACTION", required=True)
    run = sub.add_parser(
        "run",
        help="boot the lab, run COMMAND inside, exit with its status",
        description="NICs are paired on QEMU hubs in the order given (1+2 on hub 0, 3+4 on "
        "hub 1, ...), named nic0, nic1, ... with MACs 52:54:00:12:34:01, ... Inside, "
        "HWNIC_LAB=1 and HWNIC_LAB_NICS (JSON) describe them; "
        "hwnic.lab.control.LabControl flaps their links. The guest writes a heartbeat; "
        "if it stops for 120 s (the whole guest stalled), the run ends at once with where "
        "each vCPU was, exit status 75 (worth a retry). Guest kernel warnings and hung "
        "tasks are shown as 'guest kernel:' lines.",
    )
    run.add_argument(
        "--nic",
        action="append",
        choices=sorted(MODELS),
        metavar="MODEL",
        help=f"add a NIC: {', '.join(MODELS)} (repeat; default: {' '.join(DEFAULT_NICS)})",
    )
    run.add_argument(
        "--timeout",
        type=float,
        default=runner.DEFAULT_TIMEOUT,
        metavar="S",
        help="kill the lab after S seconds in all (default %(default).0f)",
    )
    run.add_argument(
        "--boot-timeout",
        type=float,
        default=runner.DEFAULT_BOOT_TIMEOUT,
        metavar="S",
        help="kill the lab if the guest is not ready after S seconds (default %(default).0f)",
    )
    run.add_argument(
        "--kvm",
        choices=KVM_MODES,
        default="auto",
        help="auto: use KVM if a quick test boot works, else TCG (default)",
    )
    run.add_argument("--memory", default=runner.DEFAULT_MEMORY, help="guest RAM (default 2G)")
    run.add_argument("--cpus", type=int, default=runner.DEFAULT_CPUS, help="vCPUs (default 2)")
    run.add_argument(
        "--rwdir",
        action="append",
        default=[],
        metavar="DIR",
        help="share host directory DIR writable with the guest, at the same path (repeat)",
    )
    run.add_argument(
        "--clock",
        choices=tuple(GUEST_CLOCKS),
        default=DEFAULT_GUEST_CLOCK,
        help="the TCG guest's clocksource: hpet (default; every clock read traps into "
        "QEMU) or tsc (reads stay in the guest: faster for benchmarks, but guests "
        "froze with it a few times in hours of heavy use)",
    )
    run.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- COMMAND ...")
    run.set_defaults(func=cmd_run)
