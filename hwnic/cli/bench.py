"""``hwnic bench {tx,rx,loopback}``: packet rates, interrupts and loss, live and on file."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any

from hwnic import pci
from hwnic.bench import options
from hwnic.bench.options import BenchSettings, Sweep
from hwnic.cli.common import add_batch, add_budget, add_interrupt_options, add_ring_size, arg
from hwnic.errors import UsageError

INTERRUPTED_EXIT = 130  # what a shell reports for Ctrl-C


def in_lab() -> bool:
    return os.environ.get("HWNIC_LAB") == "1"


def lab_pair(model: str | None = None, near: str | None = None) -> tuple[str, str]:
    """Two lab ports on one hub (of ``model``, or the hub of port ``near``)."""
    from hwnic.lab.guest import lab_nics
    from hwnic.lab.topology import peers

    nics = [n for n in lab_nics() if n.bdf]
    for nic in nics:
        if model is not None and nic.model != model:
            continue
        if near is not None and nic.bdf != near:
            continue
        for peer in peers(nics, nic):
            if peer.bdf and (model is None or peer.model == model):
                return str(nic.bdf), str(peer.bdf)
    what = f"{model} ports" if model else "ports"
    if near:
        what += f" with {near}"
    raise UsageError(
        f"the lab has no two {what} on one hub",
        "boot it with two such NICs (hwnic lab run --nic M --nic M), or give --tx and --rx",
    )


def resolve_ports(
    mode: str, tx: str | None, rx: str | None, model: str | None = None
) -> tuple[str | None, str | None]:
    """The sending and receiving ports a mode needs; lab defaults when HWNIC_LAB=1."""
    tx = pci.normalize_bdf(tx) if tx else None
    rx = pci.normalize_bdf(rx) if rx else None
    need_tx = mode in ("tx", "loopback")
    need_rx = mode in ("rx", "loopback")
    if (need_tx and tx is None) or (need_rx and rx is None):
        if not in_lab():
            flags = " and ".join(f for f, n in (("--tx BDF", need_tx), ("--rx BDF", need_rx)) if n)
            raise UsageError(f"bench {mode} needs {flags}", "see 'hwnic list' for addresses")
        if tx is not None and rx is None:
            _, rx = lab_pair(model, near=tx)
        elif rx is not None and tx is None:
            _, tx = lab_pair(model, near=rx)
        else:
            tx, rx = lab_pair(model)
    if not need_tx:
        tx = None
    if not need_rx:
        rx = None
    if tx is not None and tx == rx:
        raise UsageError(f"--tx and --rx are both {tx}", "loopback needs two ports on one wire")
    return tx, rx


def settings_from(args: argparse.Namespace) -> BenchSettings:
    return BenchSettings(
        mode=args.mode,
        sizes=args.size,
        count=args.count,
        duration=args.duration,
        rate=args.rate,
        batch=args.batch,
        budget=args.budget,
        queues=args.queues,
        interrupt=args.interrupt,
        itr_us=args.itr_us,
        ring_size=args.ring_size,
        verify=args.verify,
        window=args.window,
    )


def _run_one(
    settings: BenchSettings, tx: str | None, rx: str | None, args: argparse.Namespace
) -> dict[str, Any]:
    from hwnic.bench import report
    from hwnic.bench.live import LiveView
    from hwnic.bench.runner import Bench

    route = " → ".join(p for p in (tx, rx) if p)
    title = f"hwnic bench {settings.mode} {route}: {settings.describe()}"
    with LiveView(title, quiet=args.quiet) as view:
        result = Bench(settings, tx=tx, rx=rx, view=view).run()
    data = report.to_dict(result, argv=["hwnic", *sys.argv[1:]])
    report.print_summary(data)
    return data


def cmd_bench(args: argparse.Namespace) -> int:
    from hwnic.bench import report

    settings = settings_from(args)
    tx, rx = resolve_ports(settings.mode, args.tx, args.rx, args.model)
    sweep: Sweep | None = args.sweep
    if sweep is None:
        data = _run_one(settings, tx, rx, args)
        interrupted = bool(data["summary"]["interrupted"])
        if args.json:
            print(f"JSON:  {report.write_json(args.json, data)}", flush=True)
        if args.plot:
            print(f"plot:  {report.plot(data, args.plot)}", flush=True)
        return INTERRUPTED_EXIT if interrupted else 0

    from hwnic.bench import sweep as sweeps

    results = sweeps.run_sweep(settings, sweep, lambda s: _run_one(s, tx, rx, args))
    sweeps.print_table(results)
    if args.json:
        print(f"JSON:  {report.write_json(args.json, results)}", flush=True)
    if args.plot:
        print(f"plot:  {sweeps.plot(results, args.plot)}", flush=True)
    interrupted = any(r["summary"]["interrupted"] for r in results["runs"])
    return INTERRUPTED_EXIT if interrupted else 0


MODE_HELP = {
    "tx": "only send (the receiver is elsewhere)",
    "rx": "only count what arrives",
    "loopback": "send on --tx, count on --rx (two ports on one wire)",
}
# More bench subcommands, each in hwnic/cli/bench_<name>.py with a register(modes).
BENCH_COMMANDS = ("throughput", "latency")
DESCRIPTION = (
    "Send test frames as fast as possible (or at --rate) and count what arrives, with a "
    "live table (frames/s and Mbit/s each way, loss, interrupts/s, DPC runs, budget "
    "exhaustions). loopback sends on --tx and receives on --rx (two ports cabled back to "
    "back, or on one QEMU hub); tx only sends; rx only counts. In the QEMU lab "
    "(HWNIC_LAB=1) the ports default to the first two on one hub. Loss is frames sent "
    "minus frames received. Ctrl-C stops and reports what was measured."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="measure packet rates: tx, rx, loopback, RFC 2544 throughput, latency",
        description="Packet-rate measurements. tx, rx and loopback: " + DESCRIPTION,
    )
    modes = p.add_subparsers(dest="mode", metavar="MODE", required=True, parser_class=type(p))
    for mode, text in MODE_HELP.items():
        m = modes.add_parser(mode, help=text, description=DESCRIPTION)
        add_rate_options(m)
        m.set_defaults(func=cmd_bench)
    for name in BENCH_COMMANDS:
        try:
            module = importlib.import_module(f"hwnic.cli.bench_{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"hwnic.cli.bench_{name}":
                raise
            continue
        module.register(modes)


def add_ports(p: argparse.ArgumentParser) -> None:
    """--tx, --rx and --model, as every bench subcommand takes them."""
    p.add_argument("--tx", metavar="BDF", help="sending port (lab default: first on a hub)")
    p.add_argument("--rx", metavar="BDF", help="receiving port (lab default: its hub peer)")
    p.add_argument(
        "--model",
        choices=("e1000", "e1000e", "igb"),
        help="in the lab: use two ports of this model",
    )


def add_rate_options(p: argparse.ArgumentParser) -> None:
    """The options of tx, rx and loopback."""
    add_ports(p)
    p.add_argument(
        "--size",
        type=arg(options.parse_sizes),
        default=options.parse_sizes("64"),
        metavar="N[,N...]|imix",
        help="frame lengths without FCS, 60-1514 (up to 9018: jumbo), sent in turn; "
        "imix = 7:4:1 of 64/594/1518 on the wire (default 64)",
    )
    p.add_argument(
        "--count",
        type=arg(options.parse_count),
        metavar="N",
        help="frames to send (rx: to receive)",
    )
    p.add_argument(
        "--duration",
        type=arg(options.parse_duration),
        metavar="S",
        help=f"seconds to send (default {options.DEFAULT_DURATION:g} without --count; "
        "with both, whichever comes first)",
    )
    p.add_argument(
        "--rate",
        type=arg(options.parse_rate),
        metavar="PPS",
        help="frames per second, paced per batch (default: as fast as possible)",
    )
    add_batch(p)
    add_budget(p)
    p.add_argument(
        "--queues",
        type=arg(options.parse_queues),
        default=1,
        metavar="N",
        help="RX/TX queue pairs (more than one: UDP flows spread by RSS)",
    )
    add_interrupt_options(p)
    add_ring_size(p)
    p.add_argument(
        "--window",
        type=arg(options.parse_window),
        metavar="N",
        help="loopback: at most N frames in flight, sent and not yet received (default: "
        "the RX ring's descriptors, so no frame waits outside the receiver's ring and "
        "the rate is what the pair sustains without loss; 0: open loop, the sender never "
        "waits and loss shows how far the receiver falls behind)",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="check every received frame's contents (slower receive)",
    )
    p.add_argument(
        "--sweep",
        type=arg(options.parse_sweep),
        metavar="KEY=V1,V2,...",
        help=f"one run per value; KEY: {', '.join(options.SWEEP_KEYS)} "
        "(e.g. budget=16,64,256); --plot then draws rate against the value",
    )
    p.add_argument("--json", metavar="FILE", help="write every figure and the settings as JSON")
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        help="write a PNG: rate over time, frames per DPC, ISR→DPC latency",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no live table, only the summary")
