"""``hwnic selftest BDF``: offline tests of one port, the ``ethtool -t`` of hwnic."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from hwnic.diag import Result, Status, passed, report

DESCRIPTION = """\
Offline tests of one port, each with a pass/fail/skip line and a reason for
every skip. The port is taken OFFLINE: it is reset, its registers are
overwritten (and restored) and frames are looped through it, so nothing else
may use it meanwhile. It is left masked, stopped and quiet afterwards, also
on Ctrl-C.

tests, in run order:
  register      write/read patterns on registers safe to test (Linux's
                e1000/e1000e/igb tables, kept to what QEMU's models also
                implement); STATUS must ignore writes; all restored after
  eeprom        NVM words 0x00-0x3F read through EERD add up to 0xBABA
                (skipped on flash-less I210/I211)
  interrupt     each cause raised with ICS (INTx, MSI) and each MSI-X
                message (ICS on the 82574L, EICS on the 82576): silent while
                masked, seen when unmasked, on its own message
  link          STATUS.LU within --link-timeout after open
  loopback-mac  256 frames (60/128/512/1514 B) through MAC loopback
                (RCTL.LBM), all back in order and intact (skipped on QEMU's
                e1000, which ignores LBM)
  loopback-phy  the same through PHY loopback (BMCR bit 14 via MDIC)
  peer          with --peer: 256 frames A to B and B to A over the cable

exit status: 0 when no test failed (skips do not fail), 1 when one did,
2 for a usage error.
"""


def _table(bdf: str, peer: str | None, results: Sequence[Result]) -> None:
    from rich.console import Console
    from rich.table import Table

    title = f"hwnic selftest {bdf}" + (f" --peer {peer}" if peer else "")
    table = Table(title=title, title_justify="left")
    table.add_column("test")
    table.add_column("result")
    table.add_column("time", justify="right")
    table.add_column("detail", overflow="fold")
    style = {Status.PASS: "green", Status.FAIL: "bold red", Status.SKIP: "yellow"}
    for r in results:
        table.add_row(
            r.name, f"[{style[r.status]}]{r.status.upper()}[/]", f"{r.duration_s:.2f} s", r.detail
        )
    console = Console(highlight=False)
    console.print(table)
    failed = sum(1 for r in results if r.status is Status.FAIL)
    skipped = sum(1 for r in results if r.status is Status.SKIP)
    verdict = "FAILED" if failed else "passed"
    console.print(f"{verdict}: {len(results)} tests, {failed} failed, {skipped} skipped")


def cmd_selftest(args: argparse.Namespace) -> int:
    from hwnic.diag import parse_tests, run_selftest

    parse_tests(args.test, args.peer)  # a bad name is a usage error before the port is touched
    results = run_selftest(
        args.bdf,
        args.peer,
        args.test,
        link_timeout=args.link_timeout,
        allow_noiommu=args.allow_noiommu,
    )
    if args.json == "-":
        json.dump(report(args.bdf, args.peer, results), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _table(args.bdf, args.peer, results)
        if args.json:
            Path(args.json).write_text(
                json.dumps(report(args.bdf, args.peer, results), indent=2) + "\n"
            )
    return 0 if passed(results) else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "selftest",
        help="offline self-test of a port (registers, EEPROM, interrupts, link, loopback)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("bdf", help="PCI address of the port under test, e.g. 0000:01:00.0")
    p.add_argument("--peer", metavar="BDF", help="a second port cabled to BDF: adds the peer test")
    p.add_argument(
        "--test",
        metavar="NAME[,NAME]",
        help="run only these tests (names above; 'loopback' is both loopback tests)",
    )
    p.add_argument(
        "--json",
        metavar="FILE",
        help="also write the results as JSON to FILE ('-': JSON on stdout instead of the table)",
    )
    p.add_argument(
        "--link-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds the link test waits for link up (default %(default)s)",
    )
    p.add_argument(
        "--allow-noiommu",
        action="store_true",
        help="accept VFIO's unsafe no-IOMMU mode (the NIC can then DMA anywhere)",
    )
    p.set_defaults(func=cmd_selftest)
