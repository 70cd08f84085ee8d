"""The receiving port of a loopback run, in a process of its own.

A sender and a receiver in one process share one GIL: every MMIO call in
either releases it, and the other thread may then keep it for the
interpreter's whole switch interval (5 ms). In the QEMU lab that showed as an
ISR-to-DPC p99 of 5-7 ms and a receiver at half the rate it reaches alone
(igb, TCG, 64 B: one process TX 34k / RX 21k frames/s, two processes TX 61k /
RX 41k). DPDK's testpmd runs two ports as two processes for the same reason.

The child (``python -m hwnic.bench.remote``, a fresh interpreter: no fork of
a process that has threads, and no re-import of the caller's main module)
opens the port with the same settings and counts in its DPC
(:class:`~hwnic.bench.runner.RxCounter`). After every batch it stores its
totals in a page of shared memory (a memfd both processes map), so the
parent's sender sees what arrived within one batch (the loopback window
needs that); the interrupt counters follow every :data:`PUBLISH_INTERVAL`.
With ``streams`` the counter's per-stream counts (RFC 2544 trials) live in the
same page, written by the child's DPC, read by the parent.
The final ``Nic.stats()`` comes back as one JSON line on the child's stdout.
The child ignores Ctrl-C (the terminal sends it to the whole process group):
it stops when the parent writes "stop" or closes its stdin (the parent
died), and in both cases closes the NIC the quiet way.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import select
import signal
import subprocess
import sys
import threading
from typing import IO, Any

import numpy as np

from hwnic.bench.pool import STREAMS
from hwnic.errors import HwnicError

PUBLISH_INTERVAL = 0.05  # s between two copies of the child's interrupt counters
OPEN_TIMEOUT = 300.0  # s for the child to start Python, open the port and see link
STOP_TIMEOUT = 60.0  # s for the child to close the port and report
IRQ_FIELDS = ("interrupts", "dpc_runs", "more_pending", "time_cutoffs", "indicated")
# The shared page: one int64 per field (last_at in ns of time.monotonic).
FIELDS = ("frames", "bytes", "bad", "last_at_ns", *IRQ_FIELDS)
SLOT = {name: i for i, name in enumerate(FIELDS)}
SHARED_BYTES = 4096
INT64_BYTES = 8
NS_PER_S = 1_000_000_000
# After the fields: the per-stream counts, one row of STREAMS per queue.
MAX_STREAM_QUEUES = (SHARED_BYTES // INT64_BYTES - len(FIELDS)) // STREAMS


def _map_counters(fd: int) -> tuple[mmap.mmap, np.ndarray]:
    page = mmap.mmap(fd, SHARED_BYTES)
    return page, np.frombuffer(page, dtype=np.int64)


def _streams(shared: np.ndarray, queues: int) -> np.ndarray:
    """The per-queue stream counts in the shared page (a view)."""
    if queues > MAX_STREAM_QUEUES:
        raise ValueError(f"stream counts fit {MAX_STREAM_QUEUES} queues, not {queues}")
    start = len(FIELDS)
    return shared[start : start + queues * STREAMS].reshape(queues, STREAMS)


class ReceiverError(HwnicError):
    """The receiving process failed to open its port or died."""


def _send(out: IO[str], kind: str, **fields: Any) -> None:
    out.write(json.dumps({"kind": kind, **fields}) + "\n")
    out.flush()


def _read_line(fd: int) -> str:
    """One line from ``fd``, unbuffered: what follows it stays for select()."""
    data = bytearray()
    while not data.endswith(b"\n"):
        byte = os.read(fd, 1)
        if not byte:
            break
        data += byte
    return data.decode()


def child_main() -> int:
    """The receiving process: settings as one JSON line on stdin, reports on stdout."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop = threading.Event()
    # SIGTERM ends the loop below like "stop": the NIC is closed on the way out.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # Reports go to a private copy of stdout; anything else printed goes to stderr.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    stdin = sys.stdin.fileno()
    request = json.loads(_read_line(stdin))

    import hwnic
    from hwnic.bench.runner import Port, RxCounter, describe_model, irq_totals
    from hwnic.ndis import InterruptType

    kwargs = dict(request["kwargs"])
    if kwargs.get("interrupt") is not None:
        kwargs["interrupt"] = InterruptType[kwargs["interrupt"]]
    bdf = request["bdf"]
    _page, shared = _map_counters(request["counters_fd"])
    counter = RxCounter(**request["counter"])
    if counter.streams is not None:
        counter.streams = _streams(shared, len(counter.frames))

    def on_receive(queue: int, batch: Any) -> None:
        try:
            counter(queue, batch)
        finally:
            frames, nbytes, bad = counter.totals()
            shared[SLOT["bytes"]] = nbytes
            shared[SLOT["bad"]] = bad
            shared[SLOT["last_at_ns"]] = int(counter.last_at * NS_PER_S)
            shared[SLOT["frames"]] = frames  # last: the sender's window reads it

    try:
        nic = hwnic.open(bdf, on_receive=on_receive, **kwargs)
    except BaseException as exc:  # the parent raises it as a ReceiverError
        _send(out, "error", message=f"{type(exc).__name__}: {exc}")
        return 1

    def publish_irq() -> None:
        for name, value in irq_totals(nic).items():
            shared[SLOT[name]] = value

    with nic:
        port = Port("rx", bdf, nic, describe_model(bdf, nic))
        # Where the RX DPCs run (the "other" message is idle): the sender goes elsewhere.
        messages = nic.interrupt.messages if nic.interrupt else ()
        cpus = sorted({messages[m].target_cpu for m in nic.rx_messages()})
        _send(out, "ready", info=port.info(), cpus=cpus)
        while not stop.is_set():
            readable, _, _ = select.select([stdin], [], [], PUBLISH_INTERVAL)
            if readable:
                break  # "stop", or EOF: the parent is gone
            publish_irq()
        publish_irq()
        _send(out, "stats", stats=nic.stats())
    return 0


class RemoteReceiver:
    """The parent's handle on the receiving process; a context manager."""

    def __init__(self, bdf: str, kwargs: dict[str, Any], counter_args: dict[str, Any]) -> None:
        self.bdf = bdf
        self._queues = int(counter_args.get("queues", 1))
        self._with_streams = bool(counter_args.get("streams", False))
        plain = dict(kwargs)
        if plain.get("interrupt") is not None:
            plain["interrupt"] = plain["interrupt"].name
        memfd = os.memfd_create("hwnic-rx-counters")
        try:
            os.ftruncate(memfd, SHARED_BYTES)
            self._page, self._shared = _map_counters(memfd)
            self._process = subprocess.Popen(
                [sys.executable, "-m", "hwnic.bench.remote"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                pass_fds=(memfd,),
            )
        finally:
            os.close(memfd)  # both mappings (and the child's copy of the fd) keep it
        assert self._process.stdin is not None and self._process.stdout is not None
        self._stdin = self._process.stdin
        self._stdout = self._process.stdout
        self._final: dict[str, Any] | None = None
        self.info: dict[str, Any] = {}
        self.cpus: list[int] = []  # where the receiver's RX DPCs run
        try:
            request = {"bdf": bdf, "kwargs": plain, "counter": counter_args, "counters_fd": memfd}
            self._stdin.write(json.dumps(request) + "\n")
            self._stdin.flush()
            first = self._next_line(OPEN_TIMEOUT, "open its port")
            if first["kind"] == "error":
                raise ReceiverError(f"receiving on {bdf}: {first['message']}")
            self.info, self.cpus = first["info"], first["cpus"]
        except BaseException:
            self.close()
            raise

    def _next_line(self, timeout: float, what: str) -> dict[str, Any]:
        readable, _, _ = select.select([self._stdout], [], [], timeout)
        line = self._stdout.readline() if readable else None
        if line is None:
            raise ReceiverError(
                f"the receiver process for {self.bdf} did not {what} within {timeout:.0f} s",
                "check the port with `hwnic info`",
            )
        if not line:
            raise ReceiverError(
                f"the receiver process for {self.bdf} died (exit code {self._process.poll()})",
                "its error is printed above",
            )
        report: dict[str, Any] = json.loads(line)
        return report

    # -- what the bench reads (RxCounter's interface) --------------------------------

    def totals(self) -> tuple[int, int, int]:
        s = self._shared
        return int(s[SLOT["frames"]]), int(s[SLOT["bytes"]]), int(s[SLOT["bad"]])

    def stream_totals(self) -> np.ndarray:
        """Test frames received per stream, all queues together (a copy)."""
        if not self._with_streams:
            return np.zeros(STREAMS, dtype=np.int64)
        return np.asarray(_streams(self._shared, self._queues).sum(axis=0))

    @property
    def last_at(self) -> float:
        return int(self._shared[SLOT["last_at_ns"]]) / NS_PER_S

    def irq_totals(self) -> dict[str, int]:
        return {name: int(self._shared[SLOT[name]]) for name in IRQ_FIELDS}

    @property
    def mac(self) -> str:
        return str(self.info["mac"])

    def stats(self) -> dict[str, Any]:
        """Stop receiving and return the port's final ``Nic.stats()`` (then cached)."""
        if self._final is None:
            self._say_stop()
            report = self._next_line(STOP_TIMEOUT, "report its statistics")
            self._final = report["stats"]
        return self._final

    def _say_stop(self) -> None:
        try:
            self._stdin.write("stop\n")
            self._stdin.flush()
        except (BrokenPipeError, ValueError):
            pass  # already gone, or already told

    def close(self) -> None:
        """Stop the process (it closes the port quietly); idempotent."""
        self._say_stop()
        with contextlib.suppress(BrokenPipeError):
            self._stdin.close()
        try:
            self._process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._process.terminate()
            self._process.wait(STOP_TIMEOUT)

    def __enter__(self) -> RemoteReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    raise SystemExit(child_main())
