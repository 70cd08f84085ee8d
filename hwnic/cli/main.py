"""Entry point of the ``hwnic`` command.

Each subcommand module exposes ``register(subparsers)``; it adds its parsers
and sets ``func`` (taking the parsed namespace, returning an exit code).
Errors a user can cause are :class:`hwnic.errors.HwnicError`: printed as one
line, no traceback unless ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Sequence

from hwnic import __version__
from hwnic.errors import HwnicError

# Subcommand modules, in the order --help lists them.
COMMAND_MODULES = ("devices", "lab", "bench", "capture", "selftest")


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with a one-line hint instead of the usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hwnic",
        description="Drive, test and benchmark Intel 1 GbE NICs (e1000, e1000e, igb) "
        "from Python through VFIO.",
    )
    parser.add_argument("--version", action="version", version=f"hwnic {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"hwnic.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"hwnic.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def _sigterm_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so `with` blocks unwind and the NIC is left quiet


def sigterm_as_ctrl_c() -> None:
    """Make SIGTERM do what Ctrl-C does (main thread only, as Python's signals are)."""
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)


def main(argv: Sequence[str] | None = None) -> int:
    sigterm_as_ctrl_c()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except HwnicError as exc:
        if args.debug:
            raise
        print(f"hwnic: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("hwnic: interrupted; the NIC was left quiet", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
