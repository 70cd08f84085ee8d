"""Option blocks and argument types shared by the subcommands (declared once)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from hwnic.bench import options
from hwnic.errors import UsageError

DEFAULT_WAIT_LINK = 10.0  # s; QEMU's models and real PHYs come up well within this


def arg(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type`` from an option parser: its UsageError becomes a one-line error."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__.removeprefix("parse_")
    return convert


def add_budget(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--budget",
        type=arg(options.parse_budget),
        default=options.DEFAULT_BUDGET,
        metavar="N",
        help="frames a DPC may indicate per run (MaxNblsToIndicate; default %(default)s)",
    )


def add_batch(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--batch",
        type=arg(options.parse_batch),
        default=options.DEFAULT_BATCH,
        metavar="N",
        help="frames per send (one tail write; default %(default)s)",
    )


def add_ring_size(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ring-size",
        type=arg(options.parse_ring),
        default=options.DEFAULT_RING,
        metavar="N",
        help="descriptors per ring (default %(default)s)",
    )


def add_interrupt_options(p: argparse.ArgumentParser) -> None:
    """--interrupt and --itr-us: which interrupt type, how much moderation."""
    p.add_argument(
        "--interrupt",
        choices=options.INTERRUPTS,
        help="interrupt type (default: the best the NIC offers)",
    )
    p.add_argument(
        "--itr-us",
        type=arg(options.parse_itr),
        metavar="US",
        help="interrupt moderation interval in µs (0: none; default: family's)",
    )


def add_wait_link(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--wait-link",
        type=float,
        default=DEFAULT_WAIT_LINK,
        metavar="S",
        help="seconds to wait for link up (default %(default)s)",
    )
