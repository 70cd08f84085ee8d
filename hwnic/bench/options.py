"""Benchmark settings and the parsers for their option values (sizes, sweeps).

Frame sizes are Ethernet frame lengths without the FCS, as the driver hands
them to the NIC: 60 to 1514, or up to 9018 as jumbo frames (the ports are
then opened with ``max_frame=9018``). A "64-byte" frame on the wire is 60
here plus the 4-byte FCS the NIC appends (``--size 64`` sends 64 + 4). ``imix`` is the
classic simple IMIX, 7:4:1 of 64, 594 and 1518 bytes on the wire.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from hwnic import traffic
from hwnic.errors import UsageError
from hwnic.nic import base as nic_base

MODES = ("tx", "rx", "loopback")
INTERRUPTS = ("msix", "msi", "line")
FCS = 4
IMIX: tuple[tuple[int, int], ...] = ((64 - FCS, 7), (594 - FCS, 4), (1518 - FCS, 1))
DEFAULT_DURATION = 10.0  # s, when neither --count nor --duration is given
# The NIC's own defaults (the fast setting, see hwnic.nic.base), and one
# tail write per 512 frames sent: in the lab (igb, 64 B, same boot) batch 512
# sent 1.8x and batch 1000 2.5x the frames/s of batch 256 (a send has a fixed
# cost of numpy calls and an MMIO exit); 512 leaves half the TX ring free.
DEFAULT_BATCH = 512
DEFAULT_BUDGET = nic_base.DEFAULT_BUDGET
DEFAULT_RING = nic_base.DEFAULT_RING_SIZE
MAX_BATCH = 4096


@dataclass(frozen=True)
class SizeMix:
    """Frame lengths sent in turn: ``lengths`` repeated ``weights`` times each."""

    label: str
    lengths: tuple[int, ...]
    weights: tuple[int, ...]

    def cycle(self) -> list[int]:
        """One period of the mix, every length as often as its weight."""
        return [n for n, w in zip(self.lengths, self.weights, strict=True) for _ in range(w)]

    @property
    def mean(self) -> float:
        return sum(n * w for n, w in zip(self.lengths, self.weights, strict=True)) / sum(
            self.weights
        )


def parse_sizes(text: str) -> SizeMix:
    """``64``, ``64,512,1514`` (equal shares) or ``imix``."""
    text = text.strip().lower()
    if text == "imix":
        return SizeMix("imix", tuple(n for n, _ in IMIX), tuple(w for _, w in IMIX))
    lo, hi = traffic.MIN_FRAME, traffic.MAX_JUMBO_FRAME
    hint = f"give frame lengths {lo} to {hi} (no FCS), comma-separated, or 'imix'"
    try:
        sizes = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise UsageError(f"--size {text!r} is not a list of numbers", hint) from None
    bad = [s for s in sizes if not lo <= s <= hi]
    if bad:
        raise UsageError(f"--size {bad[0]} is out of range", hint)
    return SizeMix(",".join(map(str, sizes)), sizes, (1,) * len(sizes))


def positive_int(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{name} {text!r} is not a whole number", f"give {name} N >= 1") from None
    if value < 1:
        raise UsageError(f"{name} {value} is too small", f"give {name} N >= 1")
    return value


def _positive_float(name: str, text: str, *, zero_ok: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{name} {text!r} is not a number", f"give {name} X, e.g. 10") from None
    if value != value or value < 0 or (value == 0 and not zero_ok) or value == float("inf"):
        raise UsageError(f"{name} {text} is out of range", f"give a positive {name}")
    return value


def parse_count(text: str) -> int:
    return positive_int("--count", text)


def parse_duration(text: str) -> float:
    return _positive_float("--duration", text)


def parse_rate(text: str) -> float:
    return _positive_float("--rate", text)


def parse_batch(text: str) -> int:
    value = positive_int("--batch", text)
    if value > MAX_BATCH:
        raise UsageError(f"--batch {value} is too large", f"give at most {MAX_BATCH}")
    return value


def parse_budget(text: str) -> int:
    return positive_int("--budget", text)


def parse_queues(text: str) -> int:
    return positive_int("--queues", text)


def parse_itr(text: str) -> float:
    return _positive_float("--itr-us", text, zero_ok=True)


def parse_ring(text: str) -> int:
    return positive_int("--ring-size", text)


def parse_window(text: str) -> int:
    """--window: 0 (open loop) or a positive number of frames."""
    if text.strip() == "0":
        return 0
    return positive_int("--window", text)


# Settings a sweep may vary, with the parser of one value. Each is a field of
# BenchSettings (``size`` sets ``sizes``).
SWEEP_KEYS: dict[str, Callable[[str], Any]] = {
    "budget": parse_budget,
    "batch": parse_batch,
    "itr_us": parse_itr,
    "size": parse_sizes,
    "rate": parse_rate,
    "queues": parse_queues,
    "ring_size": parse_ring,
}


@dataclass(frozen=True)
class Sweep:
    key: str
    values: tuple[Any, ...]

    def labels(self) -> list[str]:
        return [v.label if isinstance(v, SizeMix) else f"{v:g}" for v in self.values]


def parse_sweep(text: str) -> Sweep:
    """``budget=16,64,256``; ``size=64,512,imix`` runs each size on its own."""
    keys = ", ".join(SWEEP_KEYS)
    key, sep, rest = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or key not in SWEEP_KEYS:
        raise UsageError(f"--sweep {text!r}", f"give KEY=V1,V2,... with KEY one of {keys}")
    parts = [p.strip() for p in rest.split(",") if p.strip()]
    if not parts:
        raise UsageError(f"--sweep {text!r} has no values", f"e.g. --sweep {key}=16,64,256")
    values = tuple(SWEEP_KEYS[key](p) for p in parts)
    if key == "itr_us":
        values = tuple(float(v) for v in values)
    return Sweep(key, values)


@dataclass(frozen=True)
class BenchSettings:
    """Everything a run depends on; saved with its figures."""

    mode: str = "loopback"
    sizes: SizeMix = field(default_factory=lambda: parse_sizes("64"))
    count: int | None = None  # frames to send (tx, loopback) or receive (rx)
    duration: float | None = None  # s; with neither count nor duration: DEFAULT_DURATION
    rate: float | None = None  # frames/s; None: as fast as possible
    batch: int = DEFAULT_BATCH  # frames per send() call (one tail write)
    budget: int = DEFAULT_BUDGET  # max frames a DPC indicates per run
    queues: int = 1
    interrupt: str | None = None  # msix, msi, line; None: the best the NIC offers
    itr_us: float | None = None  # interrupt moderation; None: the family default
    ring_size: int = DEFAULT_RING
    verify: bool = False  # check every received frame's contents (costs receive time)
    # Loopback: frames in flight (sent, not yet counted) at most; None: the RX
    # ring's descriptors, 0: open loop (the sender never waits).
    window: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UsageError(f"unknown mode {self.mode!r}", f"use one of {', '.join(MODES)}")
        if self.interrupt is not None and self.interrupt not in INTERRUPTS:
            raise UsageError(f"--interrupt {self.interrupt}", f"use one of {', '.join(INTERRUPTS)}")

    @property
    def in_flight_limit(self) -> int | None:
        """Loopback: the sender's window in frames; None: open loop (or no receiver)."""
        if self.mode != "loopback" or self.window == 0:
            return None
        # Every frame in flight then has an armed descriptor waiting for it, so
        # none waits (or is dropped) outside the receiver's ring.
        return self.ring_size - 1 if self.window is None else self.window

    @property
    def time_limit(self) -> float | None:
        """The duration to run for: as given, or the default when nothing bounds the run."""
        if self.duration is None and self.count is None:
            return DEFAULT_DURATION
        return self.duration

    def with_value(self, key: str, value: Any) -> BenchSettings:
        """A copy with one sweep key set."""
        if key == "size":
            return replace(self, sizes=value)
        return replace(self, **{key: value})

    def describe(self) -> str:
        """One line for titles: sizes, batch, budget, queues, interrupt, moderation, rate."""
        parts = [
            f"size {self.sizes.label}",
            f"batch {self.batch}",
            f"budget {self.budget}",
            f"queues {self.queues}",
            f"irq {self.interrupt or 'auto'}",
            f"ITR {'default' if self.itr_us is None else f'{self.itr_us:g} µs'}",
            f"rate {'max' if self.rate is None else f'{self.rate:,.0f}/s'}",
            f"ring {self.ring_size}",
        ]
        if self.mode == "loopback":
            limit = self.in_flight_limit
            parts.append("open loop" if limit is None else f"window {limit}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sizes"] = {
            "label": self.sizes.label,
            "lengths": list(self.sizes.lengths),
            "weights": list(self.sizes.weights),
        }
        d["time_limit"] = self.time_limit
        d["in_flight_limit"] = self.in_flight_limit
        return d
