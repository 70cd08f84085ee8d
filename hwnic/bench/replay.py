"""Replay timing for ``hwnic send``: when each frame should leave, and how far off it left.

The modes are tcpreplay's. ``capture``: the file's own gaps (divided by
``--multiplier``); ``pps``: a constant frame rate; ``mbps``: a constant bit
rate, each frame's gap being the time its bytes take; ``topspeed``: no
schedule at all. The wanted departure time of every frame of a pass is
computed with numpy up front; the send loop then posts *runs*: every frame
already due, plus those due within ``window_ns`` (about what one send()
costs: sending them separately would make them later, not more punctual),
at most ``batch`` of them. Between runs it sleeps, then spins on the clock
for the last ``spin_ns`` (sleep overshoots by tens of µs). The clock is
read once after each send(): every frame of the run gets that time as its
departure (the tail write has handed it to the NIC).

Passes follow each other without a gap: the first frame of the next pass is
due when the last of this one was (``capture``), or one frame time later
(``pps``, ``mbps``). A sender that falls behind sends back to back until it
is on time again, as tcpreplay does; timestamps that go backwards in the
file are treated as "at once", as tcpreplay does too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from hwnic.errors import NicError, UsageError

CAPTURE, PPS, MBPS, TOPSPEED = "capture", "pps", "mbps", "topspeed"
MODES = (CAPTURE, PPS, MBPS, TOPSPEED)
NS_PER_S = 1_000_000_000
NS_PER_US = 1_000
BITS_PER_BYTE = 8
BITS_PER_MBIT = 1_000_000
RUN_WINDOW_NS = 50_000  # frames due this soon join the current send(): about one send's cost
SPIN_NS = 200_000  # the end of a wait is spent reading the clock (sleep overshoots ~70 µs)
SEND_TIMEOUT = 1.0  # s one send() waits for room in the TX ring
STALL_LIMIT = 5  # consecutive send() calls that post nothing: the NIC is stuck

# Absolute errors are kept as a histogram (a replay may loop forever): bins 1 % wide
# from 0.1 µs to 100 s, so p50/p99 are exact to 1 %; mean and max are exact.
HIST_LO_NS = 100.0
HIST_HI_NS = 100.0 * NS_PER_S
HIST_BINS = 2100
HIST_EDGES = np.concatenate(([0.0], np.geomspace(HIST_LO_NS, HIST_HI_NS, HIST_BINS)))

ClockNs = Callable[[], int]
Sleeper = Callable[[float], object]


class Sender(Protocol):
    """What the replay needs of a port (hwnic.nic.base.Nic, or a fake)."""

    @property
    def mac(self) -> str: ...

    def send(
        self, frames: np.ndarray, lengths: np.ndarray | None = None, *, timeout: float | None = ...
    ) -> int: ...


@dataclass(frozen=True)
class Timing:
    """How a pass is timed: ``mode`` one of MODES; ``rate`` is pps or Mbit/s."""

    mode: str = CAPTURE
    multiplier: float = 1.0
    rate: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UsageError(f"timing mode {self.mode!r}", f"use one of {', '.join(MODES)}")
        if self.mode == CAPTURE and not self.multiplier > 0:
            raise UsageError(f"--multiplier {self.multiplier}", "give a multiplier above 0")
        if self.mode in (PPS, MBPS) and not self.rate > 0:
            raise UsageError(f"--{self.mode} {self.rate}", f"give --{self.mode} above 0")

    @property
    def timed(self) -> bool:
        return self.mode != TOPSPEED

    def offsets(self, ts_ns: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Wanted departure of each frame of a pass, ns after the pass's start (float64)."""
        n = len(lengths)
        if self.mode == CAPTURE:
            if n == 0:
                return np.zeros(0)
            since = np.maximum.accumulate(np.asarray(ts_ns, dtype=np.int64) - int(ts_ns[0]))
            return since.astype(np.float64) / self.multiplier
        if self.mode == PPS:
            return np.arange(n, dtype=np.float64) * (NS_PER_S / self.rate)
        if self.mode == MBPS:
            before = np.concatenate(([0], np.cumsum(lengths, dtype=np.int64)[:-1]))
            return before.astype(np.float64) * self._ns_per_byte
        return np.zeros(n)

    def span(self, ts_ns: np.ndarray, lengths: np.ndarray) -> float:
        """ns from one pass's start to the next one's."""
        n = len(lengths)
        if self.mode == CAPTURE:
            return float(self.offsets(ts_ns, lengths)[-1]) if n else 0.0
        if self.mode == PPS:
            return n * NS_PER_S / self.rate
        if self.mode == MBPS:
            return float(np.sum(lengths, dtype=np.int64)) * self._ns_per_byte
        return 0.0

    @property
    def _ns_per_byte(self) -> float:
        return BITS_PER_BYTE * NS_PER_S / (self.rate * BITS_PER_MBIT)

    def schedule(
        self, ts_ns: np.ndarray, lengths: np.ndarray, start_ns: int, pass_index: int = 0
    ) -> np.ndarray:
        """Wanted departure times (int64 ns, same clock as ``start_ns``) of pass ``pass_index``."""
        return schedule(
            self.offsets(ts_ns, lengths), self.span(ts_ns, lengths), start_ns, pass_index
        )


def schedule(offsets: np.ndarray, span: float, start_ns: int, pass_index: int) -> np.ndarray:
    """Pass ``pass_index``'s wanted times: ``start_ns`` + whole passes before it + offsets."""
    return start_ns + np.rint(pass_index * span + offsets).astype(np.int64)


class ErrorStats:
    """Departure minus wanted time of every frame: |error| mean, p50, p99, max; mean signed."""

    def __init__(self) -> None:
        self.counts = np.zeros(len(HIST_EDGES) + 1, dtype=np.int64)
        self.count = 0
        self.sum_abs = 0.0
        self.sum_signed = 0.0
        self.max_abs = 0

    def add(self, errors_ns: np.ndarray) -> None:
        if not len(errors_ns):
            return
        err = np.asarray(errors_ns, dtype=np.int64)
        size = np.abs(err)
        idx = np.searchsorted(HIST_EDGES, size, side="right")
        self.counts += np.bincount(idx, minlength=len(self.counts))
        self.count += len(err)
        self.sum_abs += float(size.sum())
        self.sum_signed += float(err.sum())
        self.max_abs = max(self.max_abs, int(size.max()))

    def percentile(self, q: float) -> float:
        """ns: the upper edge of the bin holding the q-th percentile (never above the max)."""
        if not self.count:
            return 0.0
        rank = max(1, int(np.ceil(q / 100 * self.count)))
        k = int(np.searchsorted(np.cumsum(self.counts), rank))
        upper = HIST_EDGES[k] if k < len(HIST_EDGES) else np.inf
        return float(min(upper, self.max_abs))

    def summary_us(self) -> dict[str, float] | None:
        if not self.count:
            return None
        return {
            "mean": self.sum_abs / self.count / NS_PER_US,
            "p50": self.percentile(50) / NS_PER_US,
            "p99": self.percentile(99) / NS_PER_US,
            "max": self.max_abs / NS_PER_US,
            "late_mean": self.sum_signed / self.count / NS_PER_US,  # > 0: late on average
        }


@dataclass
class Report:
    """What a replay did: counts, wanted against achieved timing, departure errors."""

    timing: Timing
    frames: int = 0
    bytes: int = 0
    passes: int = 0  # whole passes
    sends: int = 0
    first_wanted: int | None = None
    last_wanted: int = 0
    first_departed: int | None = None
    last_departed: int = 0
    errors: ErrorStats = field(default_factory=ErrorStats)

    def account(self, wanted: np.ndarray, departed: np.ndarray, lengths: np.ndarray) -> None:
        if not len(wanted):
            return
        if self.first_wanted is None:
            self.first_wanted, self.first_departed = int(wanted[0]), int(departed[0])
        self.last_wanted, self.last_departed = int(wanted[-1]), int(departed[-1])
        self.frames += len(wanted)
        self.bytes += int(np.sum(lengths, dtype=np.int64))
        if self.timing.timed:
            self.errors.add(departed - wanted)

    @property
    def wanted_s(self) -> float | None:
        """s from the first frame's wanted departure to the last's (None: topspeed)."""
        if not self.timing.timed or self.first_wanted is None:
            return None
        return (self.last_wanted - self.first_wanted) / NS_PER_S

    @property
    def achieved_s(self) -> float:
        if self.first_departed is None:
            return 0.0
        return (self.last_departed - self.first_departed) / NS_PER_S

    @staticmethod
    def _rate(frames: int, seconds: float | None) -> float | None:
        # n frames span n - 1 gaps
        return (frames - 1) / seconds if seconds and frames > 1 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.timing.mode,
            "multiplier": self.timing.multiplier if self.timing.mode == CAPTURE else None,
            "rate": self.timing.rate if self.timing.mode in (PPS, MBPS) else None,
            "frames": self.frames,
            "bytes": self.bytes,
            "passes": self.passes,
            "sends": self.sends,
            "wanted_s": self.wanted_s,
            "achieved_s": self.achieved_s,
            "wanted_pps": self._rate(self.frames, self.wanted_s),
            "achieved_pps": self._rate(self.frames, self.achieved_s),
            "error_us": self.errors.summary_us(),
        }

    def summary(self) -> str:
        """One line: frames, sends, achieved (and wanted) duration and rate, errors."""
        text = f"{self.frames:,} frames in {self.sends:,} sends ({self.passes} passes)"
        got = self._rate(self.frames, self.achieved_s)
        text += f", {self.achieved_s:.3f} s" + (f" ({got:,.0f} frames/s)" if got else "")
        wanted = self.wanted_s
        if wanted is not None:
            want = self._rate(self.frames, wanted)
            text += f", wanted {wanted:.3f} s" + (f" ({want:,.0f} frames/s)" if want else "")
        err = self.errors.summary_us()
        if err is not None:
            text += (
                f"; departure error µs mean {err['mean']:.1f} p50 {err['p50']:.1f}"
                f" p99 {err['p99']:.1f} max {err['max']:.1f}"
            )
        return text


class Replayer:
    """Sends frames on a port at the times a Timing wants, pass after pass."""

    def __init__(
        self,
        nic: Sender,
        frames: np.ndarray,
        lengths: np.ndarray,
        ts_ns: np.ndarray,
        timing: Timing,
        *,
        batch: int,
        clock: ClockNs = time.monotonic_ns,
        sleep: Sleeper = time.sleep,
        window_ns: int = RUN_WINDOW_NS,
        spin_ns: int = SPIN_NS,
        keep_departures: bool = False,
    ) -> None:
        self.nic = nic
        self.frames = frames
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.timing = timing
        self.batch = batch
        self._clock = clock
        self._sleep = sleep
        self.window_ns = window_ns
        self.spin_ns = spin_ns
        self._offsets = timing.offsets(ts_ns, self.lengths)
        self._span = timing.span(ts_ns, self.lengths)
        self.report = Report(timing)
        self.start_ns = 0
        self._done = 0  # frames of the current pass posted so far
        # (wanted, departed) per pass, for tests and tools that look at each frame
        self.departures: list[tuple[np.ndarray, np.ndarray]] | None = (
            [] if keep_departures else None
        )

    def run(self, loops: int = 1) -> Report:
        """Send ``loops`` passes (0: until KeyboardInterrupt; the report holds what was sent)."""
        self.start_ns = self._clock()
        k = 0
        while loops == 0 or k < loops:
            self.run_pass(k)
            k += 1
        return self.report

    def run_pass(self, pass_index: int) -> None:
        wanted = schedule(self._offsets, self._span, self.start_ns, pass_index)
        departed = np.zeros(len(wanted), dtype=np.int64)
        self._done = 0
        try:
            self._post(wanted, departed)
            self.report.passes += 1
        finally:  # a Ctrl-C mid-pass still counts what went out
            done = self._done
            self.report.account(wanted[:done], departed[:done], self.lengths[:done])
            if self.departures is not None:
                self.departures.append((wanted[:done], departed[:done]))

    def _post(self, wanted: np.ndarray, departed: np.ndarray) -> None:
        """The send loop: fills ``departed`` and ``self._done`` (frames posted) as it goes."""
        total = len(wanted)
        done = 0
        stalls = 0
        now = self._clock()
        while done < total:
            due = int(wanted[done])
            if due > now:
                now = self._wait(due, now)
            limit = min(done + self.batch, total)
            end = done + int(np.searchsorted(wanted[done:limit], now + self.window_ns, "right"))
            k = self.nic.send(self.frames[done:end], self.lengths[done:end], timeout=SEND_TIMEOUT)
            now = self._clock()
            departed[done : done + k] = now
            done += k
            self._done = done
            self.report.sends += 1
            stalls = 0 if k else stalls + 1
            if stalls >= STALL_LIMIT:
                raise NicError(
                    f"the TX ring of {self.nic.mac} made no progress for {STALL_LIMIT} s",
                    "check the link ('hwnic info') and the NIC",
                )

    def _wait(self, due: int, now: int) -> int:
        """Sleep, then spin, until ``due``; returns the clock then."""
        if due - now > self.spin_ns:
            self._sleep((due - now - self.spin_ns) / NS_PER_S)
            now = self._clock()
        while now < due:
            now = self._clock()
        return now
