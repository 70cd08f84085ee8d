"""The receiving port of a loopback run, in a process of its own.

A sender and a receiver in one process share one GIL: every MMIO call in
either releases it, and the other thread may then keep it for the
interpreter's whole switch interval (5 ms). In the QEMU lab that showed as an
ISR-to-DPC p99 of 5-7 ms and a receiver at half the rate it reaches alone
(igb, TCG, 64 B: one process TX 34k / RX 21k frames/s, two processes TX 61k /
RX 41k). DPDK's testpmd runs two ports as two processes for the same reason.

The child (``python -m hwnic.bench.remote``, a fresh interpreter: no fork of
a process that has threads, and no re-import of the caller's main module)
opens the port with the same settings, counts in its DPC
(:class:`~hwnic.bench.runner.RxCounter`) and writes a snapshot of its totals
as one JSON line every :data:`PUBLISH_INTERVAL`; the parent keeps the latest
for the live view and gets the final ``Nic.stats()`` as the last line. The
child ignores Ctrl-C (the terminal sends it to the whole process group): it
stops when the parent writes "stop" or closes its stdin (the parent died),
and in both cases closes the NIC the quiet way.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
from typing import IO, Any

from hwnic.errors import HwnicError

PUBLISH_INTERVAL = 0.05  # s between two snapshots of the child's counters
OPEN_TIMEOUT = 300.0  # s for the child to start Python, open the port and see link
STOP_TIMEOUT = 60.0  # s for the child to close the port and report
IRQ_FIELDS = ("interrupts", "dpc_runs", "more_pending", "time_cutoffs", "indicated")


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
    counter = RxCounter(**request["counter"])
    try:
        nic = hwnic.open(bdf, on_receive=counter, **kwargs)
    except BaseException as exc:  # the parent raises it as a ReceiverError
        _send(out, "error", message=f"{type(exc).__name__}: {exc}")
        return 1

    def publish(kind: str = "totals", **extra: Any) -> None:
        frames, nbytes, bad = counter.totals()
        _send(out, kind, frames=frames, bytes=nbytes, bad=bad, last_at=counter.last_at,
              irq=irq_totals(nic), **extra)  # fmt: skip

    with nic:
        port = Port("rx", bdf, nic, describe_model(bdf, nic))
        cpus = sorted({m.target_cpu for m in nic.interrupt.messages} if nic.interrupt else set())
        _send(out, "ready", info=port.info(), cpus=cpus)
        while not stop.is_set():
            readable, _, _ = select.select([stdin], [], [], PUBLISH_INTERVAL)
            if readable:
                break  # "stop", or EOF: the parent is gone
            publish()
        publish("stats", stats=nic.stats())
    return 0


class RemoteReceiver:
    """The parent's handle on the receiving process; a context manager."""

    def __init__(self, bdf: str, kwargs: dict[str, Any], counter_args: dict[str, Any]) -> None:
        self.bdf = bdf
        plain = dict(kwargs)
        if plain.get("interrupt") is not None:
            plain["interrupt"] = plain["interrupt"].name
        self._process = subprocess.Popen(
            [sys.executable, "-m", "hwnic.bench.remote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        self._stdin = self._process.stdin
        self._stdout = self._process.stdout
        self._latest: dict[str, Any] = {"frames": 0, "bytes": 0, "bad": 0, "last_at": 0.0}
        self._final: dict[str, Any] | None = None
        self._lines = threading.Condition()
        self.info: dict[str, Any] = {}
        self.cpus: list[int] = []  # where the receiver's DPCs run
        try:
            self._stdin.write(json.dumps({"bdf": bdf, "kwargs": plain, "counter": counter_args}))
            self._stdin.write("\n")
            self._stdin.flush()
            first = self._next_line(OPEN_TIMEOUT, "open its port")
            if first["kind"] == "error":
                raise ReceiverError(f"receiving on {bdf}: {first['message']}")
            self.info, self.cpus = first["info"], first["cpus"]
        except BaseException:
            self.close()
            raise
        self._reader = threading.Thread(target=self._read, name="hwnic-rx-reports", daemon=True)
        self._reader.start()

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

    def _read(self) -> None:
        for line in self._stdout:
            report = json.loads(line)
            with self._lines:
                self._latest = report
                if report["kind"] == "stats":
                    self._final = report["stats"]
                self._lines.notify_all()
        with self._lines:
            self._lines.notify_all()  # EOF: whoever waits for the stats gives up

    # -- what the bench reads (RxCounter's interface) --------------------------------

    def totals(self) -> tuple[int, int, int]:
        r = self._latest
        return int(r["frames"]), int(r["bytes"]), int(r["bad"])

    @property
    def last_at(self) -> float:
        return float(self._latest["last_at"])

    def irq_totals(self) -> dict[str, int]:
        irq = self._latest.get("irq", {})
        return {name: int(irq.get(name, 0)) for name in IRQ_FIELDS}

    @property
    def mac(self) -> str:
        return str(self.info["mac"])

    def stats(self) -> dict[str, Any]:
        """Stop receiving and return the port's final ``Nic.stats()`` (then cached)."""
        if self._final is None:
            self._say_stop()
            with self._lines:
                self._lines.wait_for(
                    lambda: self._final is not None or not self._reader.is_alive(), STOP_TIMEOUT
                )
            if self._final is None:
                raise ReceiverError(
                    f"the receiver process for {self.bdf} ended without its statistics",
                    "its error is printed above",
                )
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
