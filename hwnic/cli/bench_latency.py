"""``hwnic bench latency``: probe latency under a fixed load (RFC 2544 §26.2)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hwnic.bench import latency, options
from hwnic.cli.bench import INTERRUPTED_EXIT, add_ports, resolve_ports
from hwnic.cli.common import add_batch, add_budget, add_ring_size, add_wait_link, arg
from hwnic.errors import UsageError

MS_PER_S = 1000
DEFAULT_INTERVAL_MS = latency.DEFAULT_PROBE_INTERVAL * MS_PER_S

DESCRIPTION = (
    "Offer a fixed load (--rate frames/s) from --tx to --rx and send one timestamped "
    "probe among it every --probe-interval ms, as RFC 2544 §26.2 and MoonGen do. Each "
    "probe's software latency is CLOCK_MONOTONIC from right before the send() that posts "
    "it to the receiver's DPC seeing it; on two igb ports also its hardware latency, from "
    "the IEEE 1588 TX and RX stamps the ports latched (their clocks' offset is measured "
    "before and after). Prints min, mean, p50/p90/p99/p99.9, max and lost probes; "
    "--json keeps every probe, --plot draws histogram and CDF."
)


def parse_size(text: str) -> int:
    size = options.positive_int("size", text)
    if not 60 <= size <= 1514:
        raise UsageError(f"--size {text}", "use a frame length of 60-1514 bytes (without FCS)")
    return size


def parse_interval_ms(text: str) -> float:
    try:
        ms = float(text)
    except ValueError:
        ms = 0.0
    if ms <= 0:
        raise UsageError(f"--probe-interval {text}", "give milliseconds, more than 0")
    return ms / MS_PER_S


def register(modes: argparse._SubParsersAction) -> None:
    p = modes.add_parser("latency", help="probe latency under load (1588 stamps on igb)",
                         description=DESCRIPTION)  # fmt: skip
    add_ports(p)
    p.add_argument("--rate", type=arg(options.parse_rate), default=latency.DEFAULT_RATE,
                   metavar="PPS", help="load in frames/s (default %(default)g: well below "
                   "what every model sustains in the QEMU lab)")  # fmt: skip
    p.add_argument("--duration", type=arg(options.parse_duration),
                   default=latency.DEFAULT_DURATION, metavar="S",
                   help="seconds of load (default %(default)g)")  # fmt: skip
    p.add_argument("--size", type=arg(parse_size), default=latency.DEFAULT_SIZE, metavar="N",
                   help="frame length without FCS, load and probes (probes at least "
                   f"{latency.PROBE_MIN_LENGTH}; default %(default)s)")  # fmt: skip
    p.add_argument("--probe-interval", type=arg(parse_interval_ms),
                   default=latency.DEFAULT_PROBE_INTERVAL, metavar="MS",
                   help=f"ms between probes (default {DEFAULT_INTERVAL_MS:g})")  # fmt: skip
    add_batch(p)
    p.set_defaults(batch=latency.DEFAULT_BATCH)
    add_budget(p)
    add_ring_size(p)
    add_wait_link(p)
    p.add_argument("--software-only", action="store_true",
                   help="no IEEE 1588 stamps, even on igb")  # fmt: skip
    p.add_argument("--json", metavar="FILE", help="write settings, figures and every probe")
    p.add_argument("--plot", metavar="FILE.png", help="write a PNG: histogram and CDF")
    p.add_argument("-q", "--quiet", action="store_true", help="only the summary")
    p.set_defaults(func=cmd_latency)


def cmd_latency(args: argparse.Namespace) -> int:
    tx, rx = resolve_ports("loopback", args.tx, args.rx, args.model)
    assert tx is not None and rx is not None
    settings = latency.LatencySettings(
        rate=args.rate,
        duration=args.duration,
        size=args.size,
        probe_interval=args.probe_interval,
        batch=args.batch,
        budget=args.budget,
        ring_size=args.ring_size,
        hardware=not args.software_only,
        wait_link=args.wait_link,
    )
    if not args.quiet:
        print(f"hwnic bench latency {tx} → {rx}: {settings.rate:,.0f} frames/s of "
              f"{settings.size} B for {settings.duration:g} s, a probe every "
              f"{settings.probe_interval * MS_PER_S:g} ms", flush=True)  # fmt: skip
    data = latency.LatencyRun(settings, tx, rx).run()
    data["argv"] = ["hwnic", *sys.argv[1:]]
    for line in latency.summary_lines(data):
        print(line)
    if args.json:
        path = Path(args.json)
        if path.parent != Path():
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1) + "\n")
        print(f"JSON:  {path}", flush=True)
    if args.plot:
        print(f"plot:  {latency.plot(data, args.plot)}", flush=True)
    return INTERRUPTED_EXIT if data["interrupted"] else 0
