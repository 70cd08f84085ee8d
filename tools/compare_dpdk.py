"""hwnic against DPDK's testpmd, on the same two emulated NICs of one hub.

Run inside the lab with hugepages room (``tools/compare_dpdk.sh`` does all of
this, DPDK's installation included; not part of tools/test.sh):
    mkdir -p results; hwnic lab run --memory 3G --rwdir "$PWD/results" \\
        --nic e1000 --nic e1000 --nic e1000e --nic e1000e --nic igb --nic igb \\
        -- python tools/compare_dpdk.py --runs 3 --json results/compare_dpdk.json

For each model with two ports on one hub (A sends, B receives), four modes:
  dpdk  -> dpdk    testpmd txonly on A, testpmd rxonly on B
  dpdk  -> hwnic   testpmd txonly on A (to B's MAC); hwnic counts on B (DPC callback)
  hwnic -> dpdk    ``hwnic.bench`` tx on A (as fast as it can); testpmd rxonly on B
  hwnic -> hwnic   ``hwnic.bench`` loopback (the ``hwnic bench loopback`` code)
for each frame length of ``--sizes`` (without FCS, as hwnic and testpmd's
``txpkts`` count it), each trial sending for ``--duration`` s, ``--runs``
times. A trial's figures: frames the sender got out (testpmd's TX-packets,
or hwnic's own count) per sending second ("offered"), frames that arrived
at the receiver per sending second, and loss (sent - received, counted after
the receiver has been quiet for a while; QEMU's hub drops without counting).
The table has medians, and the ratios hwnic / DPDK as receiver and as sender.

testpmd runs with two lcores: the sender polls on vCPU 0, the receiver on
vCPU 1 (the other lcore of each runs its command line and sleeps). Both
ports stay on vfio-pci throughout; a testpmd is quit before hwnic opens its
port. Hugepages are reserved (and a hugetlbfs mounted) for the run and given
back at the end, also after an error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import hwnic
from hwnic import traffic
from hwnic.bench.options import (
    BenchSettings,
    parse_batch,
    parse_budget,
    parse_sizes,
    parse_window,
)
from hwnic.bench.report import machine
from hwnic.bench.runner import Bench, RxCounter, open_kwargs
from hwnic.errors import HwnicError, UsageError
from hwnic.lab.dpdk import DEFAULT_HUGEPAGES, Hugepages, TestPmd, testpmd_argv
from hwnic.lab.guest import lab_pairs
from hwnic.lab.topology import LabNic

DPDK_DPDK, DPDK_HWNIC, HWNIC_DPDK, HWNIC_HWNIC = MODES = (
    "dpdk->dpdk",
    "dpdk->hwnic",
    "hwnic->dpdk",
    "hwnic->hwnic",
)
DEFAULT_SIZES = "64,1514"
DEFAULT_DURATION = 5.0  # s per trial: long enough to hide a command's latency under TCG
QUIET = 1.0  # s without a new frame after which the receiver has everything
QUIET_POLL = 0.1
LINK_WAIT = 30.0
# The sender's testpmd busy-polls on vCPU 0, the receiver's on vCPU 1 (the
# main lcore runs the command line and sleeps in read()).
TX_MAIN_LCORE = 1
RX_MAIN_LCORE = 0
# hwnic takes the same places: its sender on vCPU 0, its RX DPCs on vCPU 1 (a
# receiver sharing a vCPU with a busy-polling testpmd got half its rate).
HWNIC_TX_CPU = 0
HWNIC_RX_CPU = 1
MAX_MESSAGES = 16  # more than any supported NIC's MSI-X vectors
FIGURES = ("tx_pps", "rx_pps", "loss_pct")
TRIAL_MARGIN = 120.0  # s beyond --duration before a trial counts as hung (opening, settling)
EXIT_HUNG = 3
OPEN_LOOP = 0  # --window 0: hwnic's loopback sender does not wait for the receiver

Figures = dict[str, float]
Runs = dict[str, dict[str, list[Figures]]]  # size -> mode -> one entry per run


@contextlib.contextmanager
def on_cpu(cpu: int) -> Iterator[None]:
    """Run the calling thread (and the threads it starts) on ``cpu`` meanwhile."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def wait_quiet(read: Callable[[], int]) -> int:
    """Until ``read()`` stops changing for QUIET s; its last value."""
    last, since = read(), time.monotonic()
    while time.monotonic() - since < QUIET:
        time.sleep(QUIET_POLL)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
    return last


def frames(count: RxCounter) -> int:
    """Frames hwnic's receiver has counted so far."""
    return count.totals()[0]


def figures(sent: int, seconds: float, received: int, **extra: float) -> Figures:
    return {
        "tx_frames": sent,
        "tx_seconds": seconds,
        "rx_frames": received,
        "tx_pps": sent / seconds if seconds else 0.0,
        "rx_pps": received / seconds if seconds else 0.0,  # arrived per sending second
        "loss_pct": 100.0 * (sent - received) / sent if sent else 0.0,
        **extra,
    }


# -- one trial per mode ---------------------------------------------------------------


def dpdk_sends(tx: TestPmd, size: int, duration: float, received: Callable[[], int]) -> Figures:
    """testpmd txonly on A for ``duration`` s; ``received()`` counts at the receiver."""
    tx.set_txpkts(size)
    before_rx, before_tx = received(), tx.stats()
    t0 = time.monotonic()
    tx.start()
    t1 = time.monotonic()
    time.sleep(duration)
    t2 = time.monotonic()
    tx.stop()
    t3 = time.monotonic()
    # A command's own latency is unknown within [before, after]: take the middle.
    seconds = (t2 + t3) / 2 - (t0 + t1) / 2
    sent = (tx.stats() - before_tx).tx_packets
    return figures(sent, seconds, wait_quiet(received) - before_rx)


def hwnic_sends(a: str, size: int, args: argparse.Namespace, rx: TestPmd) -> Figures:
    """``hwnic.bench`` tx on A for the duration; testpmd rxonly counts on B."""
    before = rx.stats()
    with on_cpu(HWNIC_TX_CPU):  # the sender thread inherits this thread's affinity
        r = Bench(settings(args, "tx", size), tx=a).run()
    got = wait_quiet(rx.rx_packets) - before.rx_packets
    dropped = rx.stats() - before
    return figures(
        r.tx_frames, r.tx_seconds, got, rx_missed=dropped.rx_missed, rx_nombuf=dropped.rx_nombuf
    )


def hwnic_loopback(a: str, b: str, size: int, args: argparse.Namespace) -> Figures:
    r = Bench(settings(args, "loopback", size), tx=a, rx=b).run()
    return figures(r.tx_frames, r.tx_seconds, r.rx_frames)


def settings(args: argparse.Namespace, mode: str, size: int) -> BenchSettings:
    return BenchSettings(
        mode=mode,
        sizes=parse_sizes(str(size)),
        duration=args.duration,
        batch=args.batch,
        budget=args.budget,
        window=args.window if mode == "loopback" else None,
    )


# -- one model: four modes, ports handed between testpmd and hwnic ------------------------


class Model:
    """The trials of one model's port pair, recorded in ``runs`` as they finish."""

    def __init__(self, model: str, a: LabNic, b: LabNic, args: argparse.Namespace, huge: str):
        self.model, self.a, self.b, self.args, self.huge = model, a, b, args, huge
        self.runs: Runs = {str(s): {m: [] for m in MODES} for s in args.sizes}
        self.errors: list[str] = []  # modes cut short by a hung trial
        self.on_hang: Callable[[str], None] = lambda why: None

    def record(self, mode: str, size: int, run: int, result: Figures) -> None:
        self.runs[str(size)][mode].append(result)
        print(
            f"compare: {self.model} {size} B {mode} run {run + 1}: {json.dumps(result)}",
            file=sys.stderr,
            flush=True,
        )

    def trials(self) -> Iterator[tuple[int, int]]:
        """(run, size): sizes interleaved within each run, so drift hits both alike."""
        for run in range(self.args.runs):
            for size in self.args.sizes:
                yield run, size

    def sender(self) -> TestPmd:
        argv = testpmd_argv(
            self.a.address,
            prefix=f"hwnic-{self.model}-a",
            main_lcore=TX_MAIN_LCORE,
            forward_mode="txonly",
            huge_dir=self.huge,
            iova_mode=self.args.iova_mode,
            txpkts=self.args.sizes[0],
            eth_peer=self.b.mac,
        )
        return TestPmd(argv, name=f"testpmd txonly {self.a.address}")

    def receiver(self) -> TestPmd:
        argv = testpmd_argv(
            self.b.address,
            prefix=f"hwnic-{self.model}-b",
            main_lcore=RX_MAIN_LCORE,
            forward_mode="rxonly",
            huge_dir=self.huge,
            iova_mode=self.args.iova_mode,
        )
        return TestPmd(argv, name=f"testpmd rxonly {self.b.address}")

    def trial(self, mode: str, size: int, run: int, fn: Callable[[], Figures]) -> None:
        limit = self.args.duration + TRIAL_MARGIN
        with deadline(limit, f"{self.model} {size} B {mode} run {run + 1}", self.on_hang):
            result = fn()
        self.record(mode, size, run, result)

    def run(self) -> None:
        a, b, args = self.a.address, self.b.address, self.args
        with self.sender() as tx:
            with self.receiver() as rx:
                rx.start()
                with self.mode(DPDK_DPDK):
                    for run, size in self.trials():
                        fn = partial(dpdk_sends, tx, size, args.duration, rx.rx_packets)
                        self.trial(DPDK_DPDK, size, run, fn)
            # B's testpmd has quit: hwnic receives there, opened once for every trial.
            count = RxCounter(1)
            kwargs = open_kwargs(settings(args, "rx", args.sizes[0]))
            kwargs["target_cpus"] = [HWNIC_RX_CPU] * MAX_MESSAGES
            with (
                self.mode(DPDK_HWNIC),
                hwnic.open(b, on_receive=count, wait_link=LINK_WAIT, **kwargs),
            ):
                for run, size in self.trials():
                    fn = partial(dpdk_sends, tx, size, args.duration, partial(frames, count))
                    self.trial(DPDK_HWNIC, size, run, fn)
        with self.mode(HWNIC_HWNIC):
            for run, size in self.trials():
                self.trial(HWNIC_HWNIC, size, run, partial(hwnic_loopback, a, b, size, args))
        with self.receiver() as rx:
            rx.start()
            with self.mode(HWNIC_DPDK):
                for run, size in self.trials():
                    self.trial(HWNIC_DPDK, size, run, partial(hwnic_sends, a, size, args, rx))

    @contextlib.contextmanager
    def mode(self, mode: str) -> Iterator[None]:
        """A hung trial ends its mode (the rest would likely hang too), not the model."""
        try:
            yield
        except TrialTimeout as exc:
            self.errors.append(f"{mode}: {exc}")
            print(f"compare_dpdk: {exc}; the other modes go on", file=sys.stderr, flush=True)


class TrialTimeout(Exception):
    pass


@contextlib.contextmanager
def deadline(seconds: float, what: str, on_hang: Callable[[str], None]) -> Iterator[None]:
    """Raise TrialTimeout in the main thread after ``seconds``; call ``on_hang`` after twice that.

    A trial stuck in a wait is interrupted by SIGALRM; if cleaning up after it
    hangs too, ``on_hang`` (write what was measured, then exit) is the way out.
    """

    def expired(signum: int, frame: Any) -> None:
        raise TrialTimeout(f"{what} took over {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    last_resort = threading.Timer(2 * seconds, on_hang, args=(f"{what}: hung, cleanup too",))
    last_resort.daemon = True
    last_resort.start()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        last_resort.cancel()


# -- summary ------------------------------------------------------------------------


def medians(models: dict[str, Runs]) -> list[dict[str, Any]]:
    """One row per (model, size, mode) with runs: the median of each figure."""
    rows = []
    for model, by_size in models.items():
        for size, by_mode in by_size.items():
            for mode, runs in by_mode.items():
                if not runs:
                    continue
                row: dict[str, Any] = {
                    "model": model,
                    "size": int(size),
                    "mode": mode,
                    "runs": len(runs),
                }
                for key in FIGURES:
                    row[key] = statistics.median(r[key] for r in runs)
                row["rx_pps_min"] = min(r["rx_pps"] for r in runs)
                row["rx_pps_max"] = max(r["rx_pps"] for r in runs)
                rows.append(row)
    return rows


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """hwnic / DPDK per (model, size), from the medians.

    receiver: dpdk->hwnic RX / dpdk->dpdk RX (the same sender, testpmd)
    sender offered: hwnic->dpdk TX / dpdk->dpdk TX (what each got out)
    sender received: hwnic->dpdk RX / dpdk->dpdk RX (the same receiver, testpmd)
    both ends: hwnic->hwnic RX / dpdk->dpdk RX
    A ratio is None when a mode is missing or its DPDK figure is zero.
    """
    cell = {(r["model"], r["size"], r["mode"]): r for r in rows}
    out = []
    for model, size in dict.fromkeys((r["model"], r["size"]) for r in rows):

        def get(mode: str, key: str, m: str = model, s: int = size) -> float | None:
            row = cell.get((m, s, mode))
            return None if row is None else float(row[key])

        dd_rx, dd_tx = get(DPDK_DPDK, "rx_pps"), get(DPDK_DPDK, "tx_pps")
        out.append(
            {
                "model": model,
                "size": size,
                "receiver_rx": _ratio(get(DPDK_HWNIC, "rx_pps"), dd_rx),
                "sender_tx": _ratio(get(HWNIC_DPDK, "tx_pps"), dd_tx),
                "sender_rx": _ratio(get(HWNIC_DPDK, "rx_pps"), dd_rx),
                "both_rx": _ratio(get(HWNIC_HWNIC, "rx_pps"), dd_rx),
            }
        )
    return out


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def show(rows: list[dict[str, Any]], ratio_rows: list[dict[str, Any]], title: str) -> None:
    console = Console(width=110)
    table = Table(title=f"hwnic vs DPDK testpmd: medians ({title})")
    left = ("model", "size B", "sender -> receiver")
    for col in (*left, "runs", "TX fps (offered)", "RX fps", "loss %", "RX fps min-max"):
        table.add_column(col, justify="left" if col in left else "right")
    for r in rows:
        table.add_row(
            r["model"],
            str(r["size"]),
            r["mode"],
            str(r["runs"]),
            f"{r['tx_pps']:,.0f}",
            f"{r['rx_pps']:,.0f}",
            f"{r['loss_pct']:.1f}",
            f"{r['rx_pps_min']:,.0f}-{r['rx_pps_max']:,.0f}",
        )
    console.print(table)
    table = Table(title="ratios of medians, hwnic / DPDK")
    for col in (
        "model",
        "size B",
        "receiver: RX",
        "sender: TX offered",
        "sender: RX",
        "both ends: RX",
    ):
        table.add_column(col, justify="left" if col in ("model", "size B") else "right")
    for q in ratio_rows:
        table.add_row(
            q["model"],
            str(q["size"]),
            _fmt_ratio(q["receiver_rx"]),
            _fmt_ratio(q["sender_tx"]),
            _fmt_ratio(q["sender_rx"]),
            _fmt_ratio(q["both_rx"]),
        )
    console.print(table)


# -- command line ---------------------------------------------------------------------


def parse_size_list(text: str) -> list[int]:
    """``64,1514``: frame lengths without FCS, each one a plain number."""
    sizes = []
    for part in text.split(","):
        mix = parse_sizes(part)  # checks the range, with hwnic's own message
        if mix.lengths[0] > traffic.MAX_FRAME:  # testpmd runs here without jumbo settings
            raise UsageError(
                f"--sizes {mix.lengths[0]} is out of range for testpmd",
                f"give frame lengths up to {traffic.MAX_FRAME}",
            )
        sizes.append(mix.lengths[0])
    return sizes


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    assert __doc__ is not None
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=positive_int, default=3, help="runs per cell (default 3)")
    parser.add_argument(
        "--duration",
        type=positive_float,
        default=DEFAULT_DURATION,
        help=f"seconds of sending per trial (default {DEFAULT_DURATION:g})",
    )
    parser.add_argument(
        "--sizes",
        type=parse_size_list,
        default=parse_size_list(DEFAULT_SIZES),
        help=f"frame lengths without FCS (default {DEFAULT_SIZES})",
    )
    parser.add_argument(
        "--model", action="append", help="only this model (repeat; default: every pair in the lab)"
    )
    parser.add_argument(
        "--batch",
        type=parse_batch,
        default=BenchSettings.batch,
        help=f"hwnic: frames per send (default {BenchSettings.batch})",
    )
    parser.add_argument(
        "--budget",
        type=parse_budget,
        default=BenchSettings.budget,
        help=f"hwnic: frames per DPC run (default {BenchSettings.budget})",
    )
    parser.add_argument(
        "--window",
        type=parse_window,
        default=OPEN_LOOP,
        help="hwnic->hwnic: frames in flight at most; 0 (default): open loop, as testpmd sends",
    )
    parser.add_argument(
        "--hugepages",
        type=positive_int,
        default=DEFAULT_HUGEPAGES,
        help=f"2 MiB hugepages to reserve (default {DEFAULT_HUGEPAGES})",
    )
    parser.add_argument(
        "--iova-mode",
        choices=("va", "pa"),
        help="testpmd's IOVA mode (default: EAL's choice; VA in the lab)",
    )
    parser.add_argument(
        "--host-load",
        default="",
        help="the host's `uptime`, recorded in the JSON (the guest cannot see it)",
    )
    parser.add_argument("--json", type=Path, help="write every run, the medians and the ratios")
    return parser.parse_args(argv)


def checkout() -> str:
    """The commit this checkout is at (``+`` if edited): hwnic's figures depend on it."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--", ".."],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+" if dirty else "")


def report(args: argparse.Namespace, pairs: dict[str, Any], summary: dict[str, Any]) -> None:
    """Write the JSON (after each model, so a failure later keeps what was measured)."""
    if not args.json:
        return
    settings = {k: v for k, v in vars(args).items() if k not in ("json", "host_load")}
    settings["model"] = sorted(pairs)
    models = summary["models"]
    rows = medians(models)
    doc = {
        "machine": machine(),
        "host_load": args.host_load,
        "settings": settings,
        "ports": {m: [p.address for p in pairs[m]] for m in models},
        **summary,
        "medians": rows,
        "ratios": ratios(rows),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(args.json)


def main() -> int:
    args = arguments()
    pairs = {m: p for m, p in lab_pairs().items() if not args.model or m in args.model}
    if not pairs:
        raise SystemExit(
            "compare_dpdk: needs two lab NICs of one model on one hub; run it "
            "in `hwnic lab run --memory 3G --nic igb --nic igb -- ...`"
        )
    models: dict[str, Runs] = {}
    errors: dict[str, str] = {}
    # The commit at the start: others may commit while this runs.
    summary = {"checkout": checkout(), "interrupted": False, "errors": errors, "models": models}
    with Hugepages(args.hugepages) as huge:
        for model, (a, b) in sorted(pairs.items()):
            m = Model(model, a, b, args, huge.path)
            models[model] = m.runs

            def hung(why: str, model: str = model) -> None:
                errors[model] = why
                report(args, pairs, summary)
                print(f"compare_dpdk: {why}; exiting with what was measured", file=sys.stderr)
                os._exit(EXIT_HUNG)  # the main thread is stuck: nothing else would end it

            m.on_hang = hung
            try:
                m.run()
                if m.errors:
                    errors[model] = "; ".join(m.errors)
            except KeyboardInterrupt:
                summary["interrupted"] = True  # keep what was measured; testpmd has quit
                break
            except Exception as exc:  # one model failing still leaves the others' figures
                errors[model] = f"{type(exc).__name__}: {exc}"
                if not isinstance(exc, HwnicError):
                    traceback.print_exc()
                print(f"compare_dpdk: {model} stopped: {exc}", file=sys.stderr, flush=True)
            finally:
                report(args, pairs, summary)
    rows = medians(models)
    title = f"{args.duration:g} s per trial, hwnic batch {args.batch}, budget {args.budget}"
    show(rows, ratios(rows), title)
    return 1 if summary["interrupted"] or errors else 0


if __name__ == "__main__":
    sys.exit(main())
