"""``hwnic bench throughput`` and ``hwnic bench burst``: RFC 2544 §26.1 and §26.4."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hwnic.bench import options, rfc2544
from hwnic.bench.trials import DEFAULT_TRIAL_SECONDS, DEFAULT_WAIT
from hwnic.cli.bench import INTERRUPTED_EXIT, add_ports, resolve_ports
from hwnic.cli.common import add_batch, add_budget, add_interrupt_options, add_ring_size, arg
from hwnic.errors import UsageError

if TYPE_CHECKING:
    from hwnic.bench.trials import TrialPorts

Say = Callable[[str], None]

DEFAULT_BURST_RINGS = 4  # the longest burst tried: this many TX rings' worth of frames

COUNTING = (
    "Sent = frames posted on the TX ring and reclaimed (the NIC sent them); received = "
    "frames of this trial's stream counted by the receiver (every trial numbers its frames "
    "apart, so late frames of an earlier trial are ignored and reported as stale). After "
    "sending, a trial waits until every frame arrived or none arrived for --wait seconds "
    "(RFC 2544: 2 s). Between two ports (--tx, --rx: cabled back to back or on one QEMU "
    "hub) the receiver runs in a process of its own; with --reflector one port sends and "
    "receives, and something at the far end (a loopback plug, a reflector) sends every "
    "frame back. Sending is open loop: no window, the offered rate is paced per --batch. "
    "Sizes are on the wire with the FCS (64 = 60 bytes handed to the NIC); line rate comes "
    "from the link speed the sending port reports, with 20 bytes per frame for preamble, "
    "SFD and inter-frame gap."
)
THROUGHPUT_HELP = (
    "RFC 2544 throughput (§26.1): per frame size, the highest offered rate at which a "
    "trial loses no more than --loss-tolerance. The first trial sends as fast as the "
    "sender can; if it loses frames, a binary search between 0 and what it really sent "
    "(at most line rate) narrows to --resolution. The result is the offered rate of the "
    "best passing trial; limit says why the search stopped (loss: the step above lost "
    "frames; sender: the sender's top speed lost nothing; line: that was line rate). "
)
BURST_HELP = (
    "RFC 2544 back-to-back (§26.4): per frame size, the longest burst sent as fast as the "
    "sender can (no pacing) that arrives within --loss-tolerance. The first trial is "
    "--max-burst frames; if it loses frames, a binary search over burst lengths narrows "
    "to --resolution frames. The table shows the burst in frames and how long it lasts at "
    "line rate. "
)


def parse_repeat(text: str) -> int:
    return options.positive_int("--repeat", text)


def parse_max_burst(text: str) -> int:
    return options.positive_int("--max-burst", text)


def register(modes: argparse._SubParsersAction) -> None:
    t = modes.add_parser(
        "throughput",
        help="RFC 2544 throughput: no-drop rate per frame size",
        description=THROUGHPUT_HELP + COUNTING,
    )
    _common(t, resolution_default=f"{rfc2544.DEFAULT_RESOLUTION_PCT:g}%")
    t.add_argument(
        "--trial",
        type=arg(options.parse_duration),
        default=DEFAULT_TRIAL_SECONDS,
        metavar="S",
        dest="trial_seconds",
        help="seconds per trial (default %(default)s; RFC 2544 says 60)",
    )
    t.set_defaults(func=cmd_rfc2544, test="throughput")
    b = modes.add_parser(
        "burst",
        help="RFC 2544 back-to-back: longest burst without loss per frame size",
        description=BURST_HELP + COUNTING,
    )
    _common(b, resolution_default=str(rfc2544.DEFAULT_BURST_RESOLUTION))
    b.add_argument(
        "--max-burst",
        type=arg(parse_max_burst),
        metavar="N",
        help=f"the longest burst tried (default {DEFAULT_BURST_RINGS} x --ring-size)",
    )
    b.set_defaults(func=cmd_rfc2544, test="burst", trial_seconds=None)


def _common(p: argparse.ArgumentParser, resolution_default: str) -> None:
    add_ports(p)
    p.add_argument(
        "--reflector",
        action="store_true",
        help="one port (--tx): send on it and count what comes back on it",
    )
    p.add_argument(
        "--size",
        type=arg(rfc2544.parse_wire_sizes),
        default=rfc2544.RFC_SIZES,
        metavar="N[,N...]|rfc",
        help="frame sizes on the wire, FCS included, 64-1518 (default: RFC 2544's "
        + ",".join(map(str, rfc2544.RFC_SIZES))
        + ")",
    )
    p.add_argument(
        "--loss-tolerance",
        type=arg(rfc2544.parse_loss_tolerance),
        default=rfc2544.Amount(0),
        metavar="N|N%",
        help="frames (or %% of those sent) a trial may lose and still pass (default 0)",
    )
    p.add_argument(
        "--resolution",
        type=arg(rfc2544.parse_resolution),
        default=rfc2544.parse_resolution(resolution_default),
        metavar="N|N%",
        help="stop the search when the interval is this narrow: frames/s (throughput) or "
        "frames (burst), or %% of the upper bound (default "
        + resolution_default.replace("%", "%%")
        + ")",
    )
    p.add_argument(
        "--repeat",
        type=arg(parse_repeat),
        default=1,
        metavar="N",
        help="searches per size; the table shows their mean, and min-max (default 1)",
    )
    p.add_argument(
        "--wait",
        type=arg(rfc2544.parse_wait),
        default=DEFAULT_WAIT,
        metavar="S",
        help="after sending: seconds without a frame arriving before the rest counts as "
        "lost (default %(default)s, as RFC 2544)",
    )
    add_batch(p)
    add_budget(p)
    add_ring_size(p)
    add_interrupt_options(p)
    p.add_argument("--json", metavar="FILE", help="write the table and every trial as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="write a PNG: the result against frame size")
    p.add_argument("-q", "--quiet", action="store_true", help="no line per trial, only the table")


def _ports(args: argparse.Namespace) -> tuple[str, str | None]:
    if args.reflector:
        if args.rx:
            raise UsageError("--reflector uses one port", "give --tx only")
        tx, _ = resolve_ports("tx", args.tx, None, args.model)
        assert tx is not None
        return tx, None
    tx, rx = resolve_ports("loopback", args.tx, args.rx, args.model)
    assert tx is not None and rx is not None
    return tx, rx


def _trial_line(trial: rfc2544.Trial) -> str:
    what = (
        f"burst {trial.burst:,}"
        if trial.burst is not None
        else "unpaced"
        if trial.target_fps is None
        else f"target {trial.target_fps:,.0f} fps"
    )
    stale = f", {trial.stale:,} stale" if trial.stale else ""
    verdict = "pass" if trial.passed else "FAIL"
    return (
        f"  {trial.size} B {what}: offered {trial.offered_fps:,.0f} fps, sent {trial.sent:,}, "
        f"received {trial.received:,}, lost {trial.lost:,} ({trial.loss_pct:.3f} %){stale}"
        f" -> {verdict}"
    )


def cmd_rfc2544(args: argparse.Namespace) -> int:
    from hwnic.bench import rfc2544_report
    from hwnic.bench.report import write_json
    from hwnic.bench.trials import TrialPorts, TrialSettings

    tx, rx = _ports(args)
    settings = TrialSettings(
        trial_seconds=args.trial_seconds or DEFAULT_TRIAL_SECONDS,
        wait=args.wait,
        batch=args.batch,
        budget=args.budget,
        ring_size=args.ring_size,
        interrupt=args.interrupt,
        itr_us=args.itr_us,
        reflector=args.reflector,
    )
    say: Say = (lambda text: None) if args.quiet else (lambda text: print(text, flush=True))
    max_burst = args.max_burst if args.test == "burst" else None
    if args.test == "burst" and max_burst is None:
        max_burst = DEFAULT_BURST_RINGS * args.ring_size
    searches: dict[int, list[rfc2544.Search]] = {size: [] for size in args.size}
    interrupted = False
    with TrialPorts(settings, tx=tx, rx=rx, progress=say) as ports:
        speed = ports.speed_mbps
        route = f"{tx} (reflector)" if args.reflector else f"{tx} → {rx}"
        say(f"hwnic bench {args.test} {route}, link {speed} Mbit/s")
        try:
            for size in args.size:
                for k in range(args.repeat):
                    say(f"{size} B, search {k + 1}/{args.repeat}")
                    searches[size].append(_search(args, ports, size, speed, max_burst, say))
        except KeyboardInterrupt:
            interrupted = True
        info = ports.info()
    saved: dict[str, Any] = {
        **vars(settings),
        "test": args.test,
        "sizes": list(args.size),
        "loss_tolerance": str(args.loss_tolerance),
        "resolution": str(args.resolution),
        "repeat": args.repeat,
        "max_burst": max_burst,
    }
    if args.test == "burst":
        saved["trial_seconds"] = None
    data = rfc2544_report.to_dict(
        args.test,
        searches,
        speed_mbps=speed,
        settings=saved,
        ports=info,
        interrupted=interrupted,
        argv=["hwnic", *sys.argv[1:]],
    )
    rfc2544_report.print_table(data)
    if args.json:
        print(f"JSON:  {write_json(args.json, data)}", flush=True)
    if args.plot:
        print(f"plot:  {rfc2544_report.plot(data, args.plot)}", flush=True)
    return INTERRUPTED_EXIT if interrupted else 0


def _search(
    args: argparse.Namespace,
    ports: TrialPorts,
    size: int,
    speed: int,
    max_burst: int | None,
    say: Say,
) -> rfc2544.Search:
    def on_trial(trial: rfc2544.Trial) -> None:
        say(_trial_line(trial))

    if args.test == "burst":
        assert max_burst is not None
        return rfc2544.search_burst(
            size,
            ports.burst_trial,
            max_burst=max_burst,
            resolution=args.resolution,
            tolerance=args.loss_tolerance,
            on_trial=on_trial,
        )
    return rfc2544.search_throughput(
        size,
        ports.rate_trial,
        line_fps=rfc2544.line_rate_fps(size, speed),
        resolution=args.resolution,
        tolerance=args.loss_tolerance,
        on_trial=on_trial,
    )
