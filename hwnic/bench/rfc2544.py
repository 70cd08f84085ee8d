"""RFC 2544 throughput (§26.1) and back-to-back (§26.4): the searches and their arithmetic.

Pure logic, no device: a search is handed a *trial function* (send at this
rate, or this many frames back to back, and count what arrived) and decides
what to try next. The tool (:mod:`hwnic.bench.trials`) runs trials on real
ports; the host tests run them against a fake port with a known capacity.

Frame sizes here are the RFC's, on the wire *with* the 4-byte FCS (64 to
1518); hwnic's own frame lengths exclude it (a 64-byte frame is 60 bytes given
to ``send()``). On the medium every frame also costs a preamble (7), a start
frame delimiter (1) and the inter-frame gap (12): 20 bytes of overhead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from hwnic.errors import UsageError

FCS = 4
PREAMBLE, SFD, IFG = 7, 1, 12
WIRE_OVERHEAD = PREAMBLE + SFD + IFG  # bytes the medium spends per frame beyond the frame
BITS_PER_BYTE = 8
BITS_PER_MBIT = 1e6
MIN_WIRE_SIZE, MAX_WIRE_SIZE = 64, 1518
RFC_SIZES = (64, 128, 256, 512, 1024, 1280, 1518)  # RFC 2544 §9.1, Ethernet
PERCENT = 100.0
DEFAULT_RESOLUTION_PCT = 1.0  # of the search's upper bound
DEFAULT_BURST_RESOLUTION = 1  # frames: the burst search is exact by default


# -- line rate -------------------------------------------------------------------------------


def wire_bytes(size: int) -> int:
    """Bytes one frame of ``size`` (with FCS) occupies on the medium, gap included."""
    return size + WIRE_OVERHEAD


def line_rate_fps(size: int, speed_mbps: float) -> float:
    """Frames/s a link of ``speed_mbps`` carries at most (64 B at 1 Gb/s: 1,488,095)."""
    return speed_mbps * BITS_PER_MBIT / (wire_bytes(size) * BITS_PER_BYTE)


def l2_mbps(fps: float, size: int) -> float:
    """Mbit/s of frame bytes, FCS included."""
    return fps * size * BITS_PER_BYTE / BITS_PER_MBIT


def wire_mbps(fps: float, size: int) -> float:
    """Mbit/s the medium spends: frame, preamble, SFD and gap."""
    return fps * wire_bytes(size) * BITS_PER_BYTE / BITS_PER_MBIT


def frame_length(size: int) -> int:
    """The length hwnic sends (no FCS) for an RFC size on the wire."""
    return size - FCS


# -- option values ---------------------------------------------------------------------------


def parse_wire_sizes(text: str) -> tuple[int, ...]:
    """``64,128,1518`` or ``rfc``: frame sizes on the wire, FCS included."""
    hint = (
        f"give sizes on the wire with FCS, {MIN_WIRE_SIZE} to {MAX_WIRE_SIZE}, "
        "comma-separated, or 'rfc'"
    )
    text = text.strip().lower()
    if text == "rfc":
        return RFC_SIZES
    try:
        sizes = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise UsageError(f"--size {text!r} is not a list of numbers", hint) from None
    bad = [s for s in sizes if not MIN_WIRE_SIZE <= s <= MAX_WIRE_SIZE]
    if bad:
        raise UsageError(f"--size {bad[0]} is out of range", hint)
    return sizes


@dataclass(frozen=True)
class Amount:
    """A count (frames, or frames/s) or a percentage of some reference."""

    value: float
    percent: bool = False

    def of(self, reference: float) -> float:
        return self.value * reference / PERCENT if self.percent else self.value

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.percent else f"{self.value:g}"


def parse_amount(name: str, text: str, *, zero_ok: bool) -> Amount:
    """``N`` or ``N%``; ``zero_ok`` allows 0."""
    raw = text.strip()
    percent = raw.endswith("%")
    try:
        value = float(raw.removesuffix("%"))
    except ValueError:
        raise UsageError(f"{name} {text!r} is not a number", f"give {name} N or N%") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        raise UsageError(f"{name} {text} is out of range", f"give a positive {name}")
    if percent and value >= PERCENT:
        raise UsageError(f"{name} {text} is 100 % or more", f"give {name} below 100%")
    return Amount(value, percent)


def parse_loss_tolerance(text: str) -> Amount:
    return parse_amount("--loss-tolerance", text, zero_ok=True)


def parse_resolution(text: str) -> Amount:
    return parse_amount("--resolution", text, zero_ok=False)


def parse_wait(text: str) -> float:
    """--wait: seconds (0 allowed: count at once)."""
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--wait {text!r} is not a number", "give --wait S, e.g. 2") from None
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"--wait {text} is out of range", "give --wait S >= 0")
    return value


def allowed_loss(tolerance: Amount, sent: int) -> float:
    """Frames a trial of ``sent`` frames may lose and still pass."""
    return tolerance.of(sent)


# -- trials and searches ---------------------------------------------------------------------


@dataclass
class Trial:
    """One transmission and what came of it.

    ``sent``: frames posted on the TX ring and reclaimed (the NIC sent them);
    ``received``: frames of this trial's stream the receiver counted; ``stale``:
    frames of earlier trials that arrived meanwhile (not counted).
    """

    size: int  # on the wire, FCS included
    sent: int
    received: int
    seconds: float  # from the first send to the last
    target_fps: float | None = None  # the paced rate asked for; None: unpaced
    burst: int | None = None  # back to back: frames asked for
    stale: int = 0
    passed: bool = False  # set by the search from its loss tolerance

    @property
    def lost(self) -> int:
        return self.sent - self.received

    @property
    def offered_fps(self) -> float:
        """The rate really sent: frames over the sending time."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    @property
    def loss_pct(self) -> float:
        return PERCENT * self.lost / self.sent if self.sent else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(lost=self.lost, offered_fps=self.offered_fps, loss_pct=self.loss_pct)
        return d


RateTrial = Callable[[int, float | None], Trial]  # (size, fps or None: unpaced) -> Trial
BurstTrial = Callable[[int, int], Trial]  # (size, frames back to back) -> Trial
OnTrial = Callable[[Trial], None]

# Why a search ended where it did.
LIMIT_LOSS = "loss"  # the next step up lost frames
LIMIT_SENDER = "sender"  # the sender's own top speed passed: the receiver kept up with it
LIMIT_LINE = "line"  # the top speed passed at line rate
LIMIT_MAX = "max"  # burst: the longest burst tried passed
LIMIT_NONE = "none"  # nothing passed


@dataclass
class Search:
    """One search for one size: every trial, the best passing one and the limit."""

    size: int
    trials: list[Trial] = field(default_factory=list)
    best: Trial | None = None
    limit: str = LIMIT_NONE

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "limit": self.limit,
            "best": self.best.to_dict() if self.best else None,
            "trials": [t.to_dict() for t in self.trials],
        }


def _judge(trial: Trial, tolerance: Amount, search: Search, on_trial: OnTrial | None) -> bool:
    trial.passed = trial.sent > 0 and trial.lost <= allowed_loss(tolerance, trial.sent)
    search.trials.append(trial)
    if on_trial is not None:
        on_trial(trial)
    return trial.passed


def search_throughput(
    size: int,
    trial: RateTrial,
    *,
    line_fps: float,
    resolution: Amount,
    tolerance: Amount,
    on_trial: OnTrial | None = None,
    near_line: float = 0.99,
) -> Search:
    """The highest offered rate at which a trial loses no more than ``tolerance``.

    The first trial is unpaced: the sender's top speed. If it passes, that is
    the result (limited by the sender, or by the line when it reached
    ``near_line`` of line rate). Otherwise a binary search between 0 and what
    the first trial really sent (at most line rate) narrows the interval to
    ``resolution`` (a rate, or a percentage of that upper bound). The result
    is the best passing trial: its *offered* rate, what was actually sent.
    """
    s = Search(size)
    top = trial(size, None)
    if _judge(top, tolerance, s, on_trial):
        s.best = top
        s.limit = LIMIT_LINE if top.offered_fps >= near_line * line_fps else LIMIT_SENDER
        return s
    hi = min(top.offered_fps, line_fps)
    lo = 0.0
    step = resolution.of(hi)
    while hi - lo > step:
        mid = (lo + hi) / 2
        t = trial(size, mid)
        if _judge(t, tolerance, s, on_trial):
            lo = mid
            if s.best is None or t.offered_fps > s.best.offered_fps:
                s.best = t
        else:
            hi = mid
    s.limit = LIMIT_LOSS if s.best is not None else LIMIT_NONE
    return s


def search_burst(
    size: int,
    trial: BurstTrial,
    *,
    max_burst: int,
    resolution: Amount,
    tolerance: Amount,
    on_trial: OnTrial | None = None,
) -> Search:
    """The longest burst, sent back to back, that arrives within ``tolerance``.

    The first trial is ``max_burst``; if it fails, a binary search over burst
    lengths narrows (0, max_burst] to ``resolution`` frames (or a percentage
    of ``max_burst``).
    """
    s = Search(size)
    top = trial(size, max_burst)
    if _judge(top, tolerance, s, on_trial):
        s.best, s.limit = top, LIMIT_MAX
        return s
    lo, hi = 0, max_burst
    step = max(1, math.ceil(resolution.of(max_burst)))
    while hi - lo > step:
        mid = (lo + hi) // 2
        t = trial(size, mid)
        if _judge(t, tolerance, s, on_trial):
            lo, s.best = mid, t
        else:
            hi = mid
    s.limit = LIMIT_LOSS if s.best is not None else LIMIT_NONE
    return s


# -- result tables ---------------------------------------------------------------------------


def _stats(values: list[float]) -> tuple[float, float, float]:
    if not values:
        return 0.0, 0.0, 0.0
    return sum(values) / len(values), min(values), max(values)


def throughput_row(size: int, searches: list[Search], speed_mbps: float) -> dict[str, Any]:
    """One size's line of the throughput table: the mean over its searches."""
    line = line_rate_fps(size, speed_mbps)
    fps, lo, hi = _stats([s.best.offered_fps if s.best else 0.0 for s in searches])
    return {
        "size": size,
        "fps": fps,
        "fps_min": lo,
        "fps_max": hi,
        "l2_mbps": l2_mbps(fps, size),
        "wire_mbps": wire_mbps(fps, size),
        "line_fps": line,
        "line_pct": PERCENT * fps / line if line else 0.0,
        "limits": sorted({s.limit for s in searches}),
        "searches": len(searches),
        "trials": sum(len(s.trials) for s in searches),
    }


def burst_row(size: int, searches: list[Search], speed_mbps: float) -> dict[str, Any]:
    """One size's line of the back-to-back table: burst length and its time on the wire."""
    line = line_rate_fps(size, speed_mbps)
    frames, lo, hi = _stats([float(s.best.sent) if s.best else 0.0 for s in searches])
    sending, _, _ = _stats([s.best.seconds if s.best else 0.0 for s in searches])
    return {
        "size": size,
        "frames": frames,
        "frames_min": lo,
        "frames_max": hi,
        "wire_seconds": frames / line if line else 0.0,  # the burst at line rate
        "send_seconds": sending,  # what the sender took to post it
        "line_fps": line,
        "limits": sorted({s.limit for s in searches}),
        "searches": len(searches),
        "trials": sum(len(s.trials) for s in searches),
    }
