"""``hwnic capture`` (receive to a pcap/pcapng file) and ``hwnic send`` (replay one)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from hwnic import capture, pci, traffic
from hwnic.bench import options
from hwnic.bench.pacing import Pacer
from hwnic.cli.common import add_batch, add_budget, add_wait_link, arg
from hwnic.errors import NicError, UsageError

POLL = 0.2  # s a receive() waits before the loop looks at the clock again
SEND_TIMEOUT = 1.0  # s one send() waits for room in the TX ring
STALL_LIMIT = 5  # consecutive send() calls that post nothing: the NIC is stuck
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
        hwnic.open(bdf, budget=args.budget, wait_link=args.wait_link) as nic,
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


def send_all(nic: Any, frames: Any, lengths: Any, pacer: Pacer, sent: int, batch: int) -> int:
    """Post every frame (in batches, paced); returns the running count of frames sent."""
    stalls = 0
    done = 0
    total = len(lengths)
    while done < total:
        pacer.wait(sent)
        end = min(done + batch, total)
        k = nic.send(frames[done:end], lengths[done:end], timeout=SEND_TIMEOUT)
        stalls = 0 if k else stalls + 1
        if stalls >= STALL_LIMIT:
            raise NicError(
                f"the TX ring of {nic.mac} made no progress for {STALL_LIMIT} s",
                "check the link ('hwnic info') and the NIC",
            )
        done += k
        sent += k
    return sent


def cmd_send(args: argparse.Namespace) -> int:
    import hwnic

    bdf = pci.normalize_bdf(args.bdf)
    data = capture.read(args.file)
    if not data.count:
        raise UsageError(f"{args.file} holds no frames", "capture some first")
    too_long = data.lengths > traffic.MAX_FRAME
    if too_long.any():
        i = int(too_long.argmax())
        raise UsageError(
            f"frame {i + 1} of {args.file} is {int(data.lengths[i])} bytes",
            f"hwnic sends Ethernet frames of at most {traffic.MAX_FRAME} bytes (no FCS)",
        )
    sent = 0
    passes = 0
    started = time.monotonic()
    with hwnic.open(bdf, wait_link=args.wait_link) as nic:
        _say(f"sending {data.count:,} frames from {args.file} on {bdf} ({nic.family}, {nic.mac})")
        pacer = Pacer(args.rate)
        started = pacer.start
        try:
            while args.loop == 0 or passes < args.loop:
                sent = send_all(nic, data.frames, data.lengths, pacer, sent, args.batch)
                passes += 1
            nic.flush(DRAIN_TIMEOUT)
        except KeyboardInterrupt:
            pass
    seconds = time.monotonic() - started
    pps = sent / seconds if seconds > 0 else 0.0
    _say(f"{sent:,} frames sent ({passes} passes) in {seconds:.2f} s, {pps:,.0f} frames/s")
    return 0


def _loop_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"--loop {text!r} is not a whole number", "give --loop N >= 0") from None
    if value < 0:
        raise UsageError(f"--loop {value} is negative", "give --loop N (0: until Ctrl-C)")
    return value


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
        help="replay the frames of a pcap/pcapng file on a port",
        description="Send every frame of FILE (pcap or pcapng, Ethernet) on the port, in "
        "batches of --batch frames (one tail write each), as fast as possible or at --rate "
        "frames/s (paced per batch), --loop times over.",
    )
    p.add_argument("bdf", metavar="BDF", help="PCI address of the port, e.g. 0000:01:00.0")
    p.add_argument("file", metavar="FILE", help="pcap or pcapng file")
    p.add_argument(
        "--rate",
        type=arg(options.parse_rate),
        metavar="PPS",
        help="frames per second (default: as fast as possible)",
    )
    p.add_argument(
        "--loop",
        type=arg(_loop_count),
        default=1,
        metavar="N",
        help="send the file N times (0: until Ctrl-C; default 1)",
    )
    add_batch(p)
    add_wait_link(p)
    p.set_defaults(func=cmd_send)
