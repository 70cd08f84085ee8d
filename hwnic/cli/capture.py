"""``hwnic capture`` (receive to a pcap/pcapng file) and ``hwnic send`` (replay one)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from hwnic import capture, pci, traffic
from hwnic.bench import options
from hwnic.bench.replay import CAPTURE, MBPS, PPS, TOPSPEED, Replayer, Sender, Timing
from hwnic.cli.common import add_batch, add_budget, add_wait_link, arg
from hwnic.errors import UsageError

POLL = 0.2  # s a receive() waits before the loop looks at the clock again
DRAIN_TIMEOUT = 3.0  # s to let the NIC finish what was posted before closing


def _say(text: str) -> None:
    print(f"hwnic: {text}", file=sys.stderr, flush=True)


def cmd_capture(args: argparse.Namespace) -> int:
    import hwnic

    bdf = pci.normalize_bdf(args.bdf)
    fmt = capture.format_for(args.write, args.format)
    limit = args.count
    deadline = None if args.duration is None else time.monotonic() + args.duration
    with (
        # Jumbo on: a capture keeps whatever arrives, up to 9018 bytes.
        hwnic.open(
            bdf, budget=args.budget, wait_link=args.wait_link, max_frame=traffic.MAX_JUMBO_FRAME
        ) as nic,
        capture.CaptureWriter(args.write, fmt, snaplen=args.snaplen) as out,
    ):
        _say(f"capturing on {bdf} ({nic.family}, {nic.mac}) to {args.write} ({fmt})")
        try:
            while limit is None or out.frames < limit:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                batch = nic.receive(timeout=POLL)
                if batch is None:
                    continue
                try:
                    n = batch.count if limit is None else min(batch.count, limit - out.frames)
                    out.write(batch.frames[:n], batch.lengths[:n], time.time_ns())
                finally:
                    batch.release()
        except KeyboardInterrupt:
            pass  # like tcpdump: Ctrl-C ends the capture, the file is complete
    _say(f"{out.frames:,} frames ({out.bytes:,} bytes) written to {args.write}")
    return 0


def timing_from(args: argparse.Namespace) -> Timing:
    """The replay timing the options ask for (argparse keeps them mutually exclusive)."""
    if args.topspeed:
        return Timing(TOPSPEED)
    if args.pps is not None:
        return Timing(PPS, rate=args.pps)
    if args.mbps is not None:
        return Timing(MBPS, rate=args.mbps)
    return Timing(CAPTURE, multiplier=args.multiplier or 1.0)


def send_all(
    nic: Sender,
    data: capture.Frames,
    timing: Timing,
    *,
    loops: int = 1,
    batch: int = options.DEFAULT_BATCH,
    keep_departures: bool = False,
) -> Replayer:
    """Replay ``data`` on ``nic`` (``loops`` passes, 0: until Ctrl-C); the replayer's
    ``report`` holds what went out, even after a Ctrl-C (tcpreplay prints its
    statistics then too)."""
    replayer = Replayer(
        nic,
        data.frames,
        data.lengths,
        data.ts_ns,
        timing,
        batch=batch,
        keep_departures=keep_departures,
    )
    with contextlib.suppress(KeyboardInterrupt):
        replayer.run(loops)
    return replayer


def cmd_send(args: argparse.Namespace) -> int:
    import hwnic

    bdf = pci.normalize_bdf(args.bdf)
    timing = timing_from(args)
    data = capture.read(args.file)
    if not data.count:
        raise UsageError(f"{args.file} holds no frames", "capture some first")
    too_long = data.lengths > traffic.MAX_JUMBO_FRAME
    if too_long.any():
        i = int(too_long.argmax())
        raise UsageError(
            f"frame {i + 1} of {args.file} is {int(data.lengths[i])} bytes",
            f"hwnic sends Ethernet frames of at most {traffic.MAX_JUMBO_FRAME} bytes (no FCS)",
        )
    with hwnic.open(bdf, wait_link=args.wait_link) as nic:  # TX: long frames span buffers
        _say(f"sending {data.count:,} frames from {args.file} on {bdf} ({nic.family}, {nic.mac})")
        report = send_all(nic, data, timing, loops=args.loop, batch=args.batch).report
        nic.flush(DRAIN_TIMEOUT)
    _say(report.summary())
    if args.json:
        result = {"file": str(args.file), "bdf": bdf, "loop": args.loop, **report.to_dict()}
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _loop_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"--loop {text!r} is not a whole number", "give --loop N >= 0") from None
    if value < 0:
        raise UsageError(f"--loop {value} is negative", "give --loop N (0: until Ctrl-C)")
    return value


def _positive(name: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise UsageError(f"{name} {text!r} is not a number", f"give {name} X > 0") from None
        if not value > 0 or value == float("inf"):
            raise UsageError(f"{name} {text} is not above 0", f"give {name} X > 0")
        return value

    parse.__name__ = name.lstrip("-")
    return parse


def _snaplen(text: str) -> int:
    value = options.positive_int("--snaplen", text)
    if value < traffic.ETH_HEADER:
        raise UsageError(f"--snaplen {value} is too small", f"give at least {traffic.ETH_HEADER}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "capture",
        help="receive frames on a port and write them to a pcap/pcapng file",
        description="Open the port (promiscuous) and write every frame it receives to FILE, "
        "a whole received batch at a time; the file opens in tshark and Wireshark. Stops "
        "after --count frames, --duration seconds or Ctrl-C. Timestamps are those of the "
        "batch's arrival in hwnic (µs).",
    )
    p.add_argument("bdf", metavar="BDF", help="PCI address of the port, e.g. 0000:01:00.0")
    p.add_argument("-w", "--write", required=True, metavar="FILE", help="capture file to write")
    p.add_argument("--count", type=arg(options.parse_count), metavar="N", help="stop after N")
    p.add_argument(
        "--duration", type=arg(options.parse_duration), metavar="S", help="stop after S seconds"
    )
    p.add_argument(
        "--format",
        choices=capture.FORMATS,
        help="file format (default: pcapng for *.pcapng, else pcap)",
    )
    p.add_argument(
        "--snaplen",
        type=arg(_snaplen),
        default=capture.DEFAULT_SNAPLEN,
        metavar="N",
        help="bytes kept of each frame (default %(default)s)",
    )
    add_budget(p)
    add_wait_link(p)
    p.set_defaults(func=cmd_capture)

    p = subparsers.add_parser(
        "send",
        help="replay the frames of a pcap/pcapng file on a port, with the capture's timing",
        description="Send every frame of FILE (pcap or pcapng, Ethernet) on the port. By "
        "default each frame leaves when the capture's timestamps say (relative to the first "
        "frame); the timing options are tcpreplay's and exclude each other. Frames due "
        "within ~50 µs of each other go in one send (at most --batch, one tail write). The "
        "summary gives the achieved against the wanted duration and rate, and how far each "
        "frame's departure was from its wanted time (mean, p50, p99, max µs).",
    )
    p.add_argument("bdf", metavar="BDF", help="PCI address of the port, e.g. 0000:01:00.0")
    p.add_argument("file", metavar="FILE", help="pcap or pcapng file")
    speed = p.add_mutually_exclusive_group()
    speed.add_argument(
        "-x",
        "--multiplier",
        type=arg(_positive("--multiplier")),
        metavar="X",
        help="replay X times as fast as captured (the gaps divided by X; 0.5: half speed)",
    )
    speed.add_argument(
        "-p",
        "--pps",
        "--rate",
        dest="pps",
        type=arg(_positive("--pps")),
        metavar="N",
        help="N frames per second, ignoring the timestamps (--rate: the old name)",
    )
    speed.add_argument(
        "-M",
        "--mbps",
        type=arg(_positive("--mbps")),
        metavar="N",
        help="N Mbit/s of frame bytes, ignoring the timestamps (each gap: the frame's bits)",
    )
    speed.add_argument(
        "-t", "--topspeed", action="store_true", help="as fast as possible (no schedule)"
    )
    p.add_argument(
        "-l",
        "--loop",
        type=arg(_loop_count),
        default=1,
        metavar="N",
        help="send the file N times, each pass straight after the last (0: until Ctrl-C; "
        "default 1)",
    )
    p.add_argument("--json", metavar="FILE", help="write the settings and figures as JSON")
    add_batch(p)
    add_wait_link(p)
    p.set_defaults(func=cmd_send)
