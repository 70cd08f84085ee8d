"""Latency under load, as RFC 2544 §26.2 and MoonGen measure it.

A sender offers load at a fixed rate and, every ``probe_interval``, sends one
probe frame among it; the receiver finds the probes in its DPC. Each probe is
an IEEE 1588 (PTP v2 Sync, EtherType 0x88F7) frame carrying its id and the
sender's software time, so:

* software latency, every model: CLOCK_MONOTONIC (system-wide, so sender and
  receiver may be different threads or processes) read right before the
  ``send()`` that posts the probe, and again when the receiver's DPC drains
  it. It includes posting, the wire (in QEMU: the hub), interrupt delivery
  and the DPC's scheduling.
* hardware latency, igb (82576): the TX stamp the sending port latched when
  it sent the probe and the RX stamp the receiving port latched when it
  took it (``hwnic/nic/igb_ptp.py``), on two clocks whose offset is measured
  before and after the run. One latch each way: probes go one at a time and
  the latches are read between them.

QEMU's e1000e models SYSTIM but latches no RX or TX stamp, and e1000 has no
1588 block: both report software latency only.

Everything here but :class:`LatencyRun` is pure logic (host tests).
"""

from __future__ import annotations

import os
import struct
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hwnic import traffic
from hwnic.bench.pacing import Pacer
from hwnic.errors import UsageError
from hwnic.nic import igb_ptp

if TYPE_CHECKING:
    from hwnic.nic.base import Nic

# -- the probe frame -------------------------------------------------------------------------

ETH_HEADER = 14
ETHERTYPE_OFFSET = 12
PTP_HEADER = 34  # PTP v2 common header
PTP_VERSION = 2
PTP_SYNC_LENGTH = 44  # messageLength of a Sync: header + originTimestamp
PTP_SEQUENCE_OFFSET = ETH_HEADER + 30  # sequenceId, big-endian
# QEMU's igb reads the PTP header through an unpacked C struct: it finds the
# sequenceId 2 bytes later (controlField, logMessageInterval in PTP v2) and
# reads it little-endian. The probe carries a copy there (we are no PTP stack).
QEMU_SEQUENCE_OFFSET = PTP_SEQUENCE_OFFSET + 2
PROBE_MAGIC = b"HWLT"
MAGIC_OFFSET = ETH_HEADER + PTP_HEADER
ID_OFFSET = MAGIC_OFFSET + 4  # u32 probe id, big-endian
TX_NS_OFFSET = ID_OFFSET + 4  # u64 sender CLOCK_MONOTONIC ns, big-endian
PROBE_MIN_LENGTH = TX_NS_OFFSET + 8  # 64 bytes without FCS
_ETYPE_HI, _ETYPE_LO = igb_ptp.ETHERTYPE_1588 >> 8, igb_ptp.ETHERTYPE_1588 & 0xFF
_MAGIC = np.frombuffer(PROBE_MAGIC, np.uint8)
_U16 = 0xFFFF

# -- defaults --------------------------------------------------------------------------------

# 10,000 frames/s of 64 B: a load every model sustains without loss in the
# TCG lab (the slowest loopback there, e1000, runs tens of thousands per
# second), so the probes see a busy but not overrun path. Real ports take
# --rate up to what `hwnic bench throughput` finds.
DEFAULT_RATE = 10_000.0
DEFAULT_DURATION = 10.0  # s
DEFAULT_PROBE_INTERVAL = 0.01  # s: 100 probes/s, ~1000 in a default run
DEFAULT_BATCH = 32  # load frames per send: short bursts, as a paced generator
DEFAULT_SIZE = 64
TX_STAMP_TIMEOUT = 0.005  # s the sender waits for its TX latch after a probe
DRAIN_TIMEOUT = 1.0  # s to wait for the last frames after the load ends
DRAIN_POLL = 0.01  # s
# The sender and the receiver's DPC share one GIL here; a short switch
# interval bounds how long a busy sender keeps the DPC waiting (the default
# 5 ms showed as the ISR-to-DPC p99, see BENCHMARKS.md).
SWITCH_INTERVAL = 0.0005  # s
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
NS_PER_US = 1000
NS_PER_S = 1_000_000_000
WRAP_NS = 1 << (64 - igb_ptp.SYSTIM_FRACTION_BITS)  # SYSTIM's range in ns


def build_probe(probe_id: int, src: str, dst: str, length: int = PROBE_MIN_LENGTH) -> np.ndarray:
    """One probe frame (``length`` bytes, no FCS); its TX time is set by :func:`stamp_probe`."""
    if not PROBE_MIN_LENGTH <= length <= traffic.MAX_FRAME:
        raise UsageError(f"probe length {length}", f"use {PROBE_MIN_LENGTH}..{traffic.MAX_FRAME}")
    frame = np.zeros(length, np.uint8)
    frame[0:6] = traffic.mac_bytes(dst)
    frame[6:12] = traffic.mac_bytes(src)
    frame[ETHERTYPE_OFFSET] = _ETYPE_HI
    frame[ETHERTYPE_OFFSET + 1] = _ETYPE_LO
    # PTP v2 Sync header: messageType 0 (transportSpecific 0), version 2.
    frame[ETH_HEADER] = igb_ptp.PTP_V2_SYNC
    frame[ETH_HEADER + 1] = PTP_VERSION
    frame[ETH_HEADER + 2 : ETH_HEADER + 4] = np.frombuffer(
        struct.pack(">H", PTP_SYNC_LENGTH), np.uint8
    )
    frame[PTP_SEQUENCE_OFFSET : PTP_SEQUENCE_OFFSET + 2] = np.frombuffer(
        struct.pack(">H", probe_id & _U16), np.uint8
    )
    frame[QEMU_SEQUENCE_OFFSET : QEMU_SEQUENCE_OFFSET + 2] = np.frombuffer(
        struct.pack("<H", probe_id & _U16), np.uint8
    )
    frame[MAGIC_OFFSET:ID_OFFSET] = _MAGIC
    frame[ID_OFFSET:TX_NS_OFFSET] = np.frombuffer(struct.pack(">I", probe_id), np.uint8)
    return frame


def stamp_probe(frame: np.ndarray, tx_ns: int) -> None:
    """Write the sender's software TX time into a probe (last thing before posting it)."""
    frame[TX_NS_OFFSET:PROBE_MIN_LENGTH] = np.frombuffer(struct.pack(">Q", tx_ns), np.uint8)


def _be(cols: np.ndarray) -> np.ndarray:
    """Big-endian unsigned integers from rows of bytes (n x k, k <= 8)."""
    out = np.zeros(len(cols), np.uint64)
    for k in range(cols.shape[1]):
        out = (out << np.uint64(8)) | cols[:, k].astype(np.uint64)
    return out


def find_probes(frames: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probe ids, software TX ns) of the probes among a batch's frames (one numpy pass)."""
    if frames.ndim != 2 or frames.shape[1] < PROBE_MIN_LENGTH or not len(frames):
        empty = np.zeros(0, np.uint64)
        return empty, empty
    mask = (
        (frames[:, ETHERTYPE_OFFSET + 1] == _ETYPE_LO)
        & (frames[:, ETHERTYPE_OFFSET] == _ETYPE_HI)
        & (np.asarray(lengths) >= PROBE_MIN_LENGTH)
    )
    if mask.any():
        mask &= (frames[:, MAGIC_OFFSET:ID_OFFSET] == _MAGIC).all(axis=1)
    rows = frames[mask]
    return _be(rows[:, ID_OFFSET:TX_NS_OFFSET]), _be(rows[:, TX_NS_OFFSET:PROBE_MIN_LENGTH])


# -- statistics ------------------------------------------------------------------------------


def summarize(ns: Iterable[int] | np.ndarray) -> dict[str, Any]:
    """count, min, mean, percentiles and max of latencies in ns (None fields when empty)."""
    a = np.asarray(list(ns) if not isinstance(ns, np.ndarray) else ns, dtype=np.float64)
    keys = ["min_ns", "mean_ns", *(pct_key(p) for p in PERCENTILES), "max_ns"]
    if not len(a):
        return {"count": 0, **dict.fromkeys(keys)}
    pcts = np.percentile(a, PERCENTILES)
    values = [a.min(), a.mean(), *pcts, a.max()]
    return {"count": len(a), **{k: round(float(v)) for k, v in zip(keys, values, strict=True)}}


def pct_key(p: float) -> str:
    return f"p{p:g}_ns".replace(".", "_")


def log2_histogram(ns: Iterable[int] | np.ndarray) -> dict[str, int]:
    """Counts per power-of-two bucket of ns, keyed "lo-hi" (hi inclusive)."""
    a = np.asarray(list(ns) if not isinstance(ns, np.ndarray) else ns, dtype=np.int64)
    a = np.maximum(a, 0)
    exps = np.zeros(len(a), np.int64)
    pos = a > 0
    exps[pos] = np.floor(np.log2(a[pos])).astype(np.int64) + 1
    out: dict[str, int] = {}
    for e, count in zip(*np.unique(exps, return_counts=True), strict=True):
        lo = 0 if e == 0 else 1 << (int(e) - 1)
        hi = 0 if e == 0 else (1 << int(e)) - 1
        out[f"{lo}-{hi}"] = int(count)
    return out


def wrap_ns(delta: int) -> int:
    """A difference of SYSTIM-derived ns folded into [-range/2, range/2) (wrap-safe)."""
    return (delta + WRAP_NS // 2) % WRAP_NS - WRAP_NS // 2


def hardware_latencies(
    tx: dict[int, int], rx: dict[int, int], rx_minus_tx_ns: int
) -> dict[int, int]:
    """Per probe id: RX stamp - TX stamp - clock offset, in ns (raw SYSTIM stamps in)."""
    out = {}
    for pid in tx.keys() & rx.keys():
        raw = igb_ptp.systim_to_ns(rx[pid]) - igb_ptp.systim_to_ns(tx[pid])
        out[pid] = wrap_ns(raw - rx_minus_tx_ns)
    return out


# -- the run ---------------------------------------------------------------------------------


@dataclass
class LatencySettings:
    rate: float = DEFAULT_RATE  # load frames/s
    duration: float = DEFAULT_DURATION  # s
    size: int = DEFAULT_SIZE  # bytes without FCS, load and probes
    probe_interval: float = DEFAULT_PROBE_INTERVAL  # s between probes
    batch: int = DEFAULT_BATCH
    budget: int = 512
    ring_size: int = 2048
    hardware: bool = True  # IEEE 1588 stamps where the model has them
    wait_link: float = 10.0

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.duration <= 0 or self.probe_interval <= 0:
            raise UsageError("rate, duration and probe interval", "must be more than 0")
        if not traffic.MIN_FRAME <= self.size <= traffic.MAX_FRAME:
            raise UsageError(f"size {self.size}", f"use {traffic.MIN_FRAME}..{traffic.MAX_FRAME}")

    @property
    def probe_length(self) -> int:
        return max(self.size, PROBE_MIN_LENGTH)


@dataclass
class _Sink:
    """The receiver's side, called in DPC context: software and hardware RX times."""

    ptp: igb_ptp.IgbPtp | None = None
    frames: int = 0
    rx_ns: dict[int, int] = field(default_factory=dict)  # probe id -> CLOCK_MONOTONIC ns
    tx_ns: dict[int, int] = field(default_factory=dict)  # probe id -> sender's ns (payload)
    rx_hw: dict[int, int] = field(default_factory=dict)  # probe id -> raw RX stamp
    unmatched_hw: int = 0  # latched stamps whose sequenceId was not a probe in the batch

    def on_receive(self, queue: int, batch: Any) -> None:
        now = time.monotonic_ns()
        try:
            self.frames += batch.count
            ids, sent = find_probes(batch.frames, batch.lengths)
            if not len(ids):
                return
            for pid, tx in zip(ids.tolist(), sent.tolist(), strict=True):
                self.rx_ns[pid] = now
                self.tx_ns[pid] = tx
            if self.ptp is not None and (stamp := self.ptp.rx_stamp()) is not None:
                match = [p for p in ids.tolist() if igb_ptp.sequence_matches(stamp.rxsatrh, p)]
                if not match:
                    # The latch can still hold an earlier probe's stamp (its batch
                    # was read before QEMU latched it): the sequenceId says whose.
                    match = [
                        p
                        for p in self.rx_ns
                        if p not in self.rx_hw and igb_ptp.sequence_matches(stamp.rxsatrh, p)
                    ]
                if match:
                    self.rx_hw[match[-1]] = stamp.systim
                else:
                    self.unmatched_hw += 1
        finally:
            batch.release()


def _clock_offset(tx: igb_ptp.IgbPtp, rx: igb_ptp.IgbPtp) -> dict[str, int]:
    """RX port's SYSTIM minus TX port's (both ports are in this process)."""
    sample = igb_ptp.cross_offset(tx, rx)
    return {"rx_minus_tx_ns": sample.offset_ns, "uncertainty_ns": sample.window_ns // 2}


class LatencyRun:
    """Open both ports, offer the load with probes among it, collect the stamps."""

    def __init__(
        self,
        settings: LatencySettings,
        tx: str,
        rx: str,
        stop: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.tx_bdf, self.rx_bdf = tx, rx
        self.stop = stop or threading.Event()

    def run(self) -> dict[str, Any]:
        import hwnic

        s = self.settings
        sink = _Sink()
        opts = {"budget": s.budget, "ring_size": s.ring_size, "wait_link": s.wait_link}
        old_switch = sys.getswitchinterval()
        with (
            hwnic.open(self.rx_bdf, on_receive=sink.on_receive, **opts) as rx,
            hwnic.open(self.tx_bdf, **opts) as tx,
        ):
            hw = s.hardware and tx.family == "igb" and rx.family == "igb"
            ptp_tx = ptp_rx = None
            if hw:
                ptp_tx = igb_ptp.IgbPtp(tx.bar.read32, tx.bar.write32)
                ptp_rx = igb_ptp.IgbPtp(rx.bar.read32, rx.bar.write32)
                ptp_tx.enable()
                ptp_rx.enable()
                sink.ptp = ptp_rx
            clock_before = _clock_offset(ptp_tx, ptp_rx) if ptp_tx and ptp_rx else None
            old_cpus = os.sched_getaffinity(0)
            # The sender off the CPUs of the receiver's RX DPCs (as the loopback
            # bench): a busy sender there delays the very DPC being timed.
            assert rx.interrupt is not None
            dpc_cpus = {rx.interrupt.messages[m].target_cpu for m in rx.rx_messages()}
            sys.setswitchinterval(SWITCH_INTERVAL)
            try:
                if old_cpus - dpc_cpus:
                    os.sched_setaffinity(0, old_cpus - dpc_cpus)  # this thread only
                sent = self._offer(tx, rx, sink, ptp_tx)
            finally:
                sys.setswitchinterval(old_switch)
                os.sched_setaffinity(0, old_cpus)
            clock_after = _clock_offset(ptp_tx, ptp_rx) if ptp_tx and ptp_rx else None
            if ptp_tx and ptp_rx:
                ptp_tx.disable()
                ptp_rx.disable()
            families = {"tx": tx.family, "rx": rx.family}
            stats = {"tx": tx.stats(), "rx": rx.stats()}
        return self._result(sent, sink, hw, clock_before, clock_after, families, stats)

    def _offer(
        self, tx: Nic, rx: Nic, sink: _Sink, ptp_tx: igb_ptp.IgbPtp | None
    ) -> dict[str, Any]:
        s = self.settings
        n = s.batch
        load = traffic.build(np.arange(n), np.full(n, s.size), tx.mac, rx.mac)
        load_bits = igb_ptp.tx_desc_bits(s.size, False) if ptp_tx else 0
        probe_bits = igb_ptp.tx_desc_bits(s.probe_length, True) if ptp_tx else 0
        out: dict[str, Any] = {
            "load_frames": 0, "probes": 0, "tx_hw": {}, "post_ns": [], "interrupted": False,
        }  # fmt: skip
        pacer = Pacer(s.rate)
        start = time.monotonic()
        next_probe = start + s.probe_interval / 2
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                if now - start >= s.duration:
                    break
                if now >= next_probe:
                    self._probe(tx, rx, out, ptp_tx, probe_bits)
                    next_probe = max(next_probe + s.probe_interval, now)
                pacer.wait(out["load_frames"])
                out["load_frames"] += tx.send(load, desc_bits=load_bits)
        except KeyboardInterrupt:
            out["interrupted"] = True
        out["seconds"] = time.monotonic() - start
        deadline = time.monotonic() + DRAIN_TIMEOUT
        expected = out["probes"] + out["load_frames"]
        while sink.frames < expected and time.monotonic() < deadline:
            time.sleep(DRAIN_POLL)
        tx.flush()
        return out

    def _probe(
        self, tx: Nic, rx: Nic, out: dict[str, Any], ptp: igb_ptp.IgbPtp | None, bits: int
    ) -> None:
        pid = out["probes"]
        frame = build_probe(pid, tx.mac, rx.mac, self.settings.probe_length)
        t0 = time.monotonic_ns()
        stamp_probe(frame, t0)
        tx.send(frame[None, :], desc_bits=bits)
        out["post_ns"].append(time.monotonic_ns() - t0)
        out["probes"] += 1
        if ptp is not None and (stamp := ptp.wait_tx_stamp(TX_STAMP_TIMEOUT)) is not None:
            out["tx_hw"][pid] = stamp

    def _result(
        self,
        sent: dict[str, Any],
        sink: _Sink,
        hw: bool,
        clock_before: dict[str, int] | None,
        clock_after: dict[str, int] | None,
        families: dict[str, str],
        stats: dict[str, Any],
    ) -> dict[str, Any]:
        sw = {pid: sink.rx_ns[pid] - sink.tx_ns[pid] for pid in sink.rx_ns}
        probes = sent["probes"]
        received = len(sink.rx_ns)
        data: dict[str, Any] = {
            "kind": "latency",
            "settings": asdict(self.settings),
            "ports": [
                {"role": "tx", "bdf": self.tx_bdf, "family": families["tx"]},
                {"role": "rx", "bdf": self.rx_bdf, "family": families["rx"]},
            ],
            "timestamps": "hardware (IEEE 1588) and software" if hw else "software",
            "probes": {
                "sent": probes,
                "received": received,
                "lost": probes - received,
                "tx_stamps": len(sent["tx_hw"]),
                "rx_stamps": len(sink.rx_hw),
                "rx_stamps_unmatched": sink.unmatched_hw,
            },
            "load": {
                "sent": sent["load_frames"],
                "received": sink.frames - received,
                "seconds": sent["seconds"],
                "pps": sent["load_frames"] / sent["seconds"] if sent["seconds"] else 0.0,
            },
            "interrupted": sent["interrupted"],
            "software": {
                **summarize(list(sw.values())),
                "histogram": log2_histogram(list(sw.values())),
            },
            "post_ns": summarize(sent["post_ns"]),
            "samples": {"software_ns": [sw[p] for p in sorted(sw)]},
            "stats": stats,
        }
        if hw and clock_before is not None and clock_after is not None:
            offset = (clock_before["rx_minus_tx_ns"] + clock_after["rx_minus_tx_ns"]) // 2
            lat = hardware_latencies(sent["tx_hw"], sink.rx_hw, offset)
            data["clock"] = {
                "before": clock_before,
                "after": clock_after,
                "drift_ns": clock_after["rx_minus_tx_ns"] - clock_before["rx_minus_tx_ns"],
                "rx_minus_tx_ns": offset,
            }
            data["hardware"] = {
                **summarize(list(lat.values())),
                "histogram": log2_histogram(list(lat.values())),
            }
            data["samples"]["hardware_ns"] = [lat[p] for p in sorted(lat)]
        return data


# -- output ----------------------------------------------------------------------------------


def _us(ns: float | None) -> str:
    return "-" if ns is None else f"{ns / NS_PER_US:,.1f}"


def summary_lines(data: dict[str, Any]) -> list[str]:
    """The printed summary: one line per clock, then probes and load."""
    cols = ["min_ns", "mean_ns", *(pct_key(p) for p in PERCENTILES), "max_ns"]
    head = ["min", "mean", *(f"p{p:g}" for p in PERCENTILES), "max"]
    lines = [f"{'latency µs':<22}" + "".join(f"{h:>10}" for h in head) + f"{'count':>8}"]
    for key, label in (("hardware", "hardware (1588)"), ("software", "software")):
        if key in data:
            row = data[key]
            lines.append(
                f"{label:<22}" + "".join(f"{_us(row[c]):>10}" for c in cols) + f"{row['count']:>8}"
            )
    p = data["probes"]
    lines.append(
        f"probes: {p['sent']} sent, {p['received']} received, {p['lost']} lost"
        + (
            f"; hardware stamps TX {p['tx_stamps']}, RX {p['rx_stamps']}"
            if "hardware" in data
            else ""
        )
    )
    load = data["load"]
    lines.append(
        f"load: {load['sent']:,} frames at {load['pps']:,.0f}/s, {load['received']:,} received"
    )
    fam = data["ports"][0]["family"]
    if "hardware" not in data:
        lines.append(f"timestamps: software only ({fam}: no IEEE 1588 stamps used)")
    else:
        c = data["clock"]
        lines.append(
            f"clocks: RX-TX SYSTIM offset {c['rx_minus_tx_ns']:,} ns "
            f"(±{c['before']['uncertainty_ns']:,} ns, drift {c['drift_ns']:,} ns over the run)"
        )
    return lines


def plot(data: dict[str, Any], path: str | Path) -> Path:
    """Histogram and CDF of the probes' latency, hardware and software side by side."""
    from hwnic.bench import report

    report.prepare_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_hist, ax_cdf) = plt.subplots(1, 2, figsize=(12, 5), dpi=100, layout="constrained")
    series = [
        ("hardware_ns", "hardware (1588)", "tab:green"),
        ("software_ns", "software", "tab:blue"),
    ]
    values = [np.asarray(data["samples"].get(k, []), float) / NS_PER_US for k, _, _ in series]
    positive = np.concatenate([v[v > 0] for v in values]) if values else np.zeros(0)
    lo, hi = (positive.min(), positive.max()) if len(positive) else (1.0, 10.0)
    bins = np.logspace(np.log10(max(lo, 0.01)), np.log10(max(hi, lo * 1.01)), 40)
    for v, (_, label, color) in zip(values, series, strict=True):
        if not len(v):
            continue
        ax_hist.hist(np.clip(v, bins[0], None), bins=bins, alpha=0.6, color=color, label=label)
        xs = np.sort(v)
        ax_cdf.plot(xs, np.arange(1, len(xs) + 1) / len(xs), color=color, label=label)
    for ax in (ax_hist, ax_cdf):
        ax.set_xscale("log")
        ax.set_xlabel("latency, µs")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    ax_hist.set_ylabel("probes")
    ax_cdf.set_ylabel("fraction of probes")
    s = data["settings"]
    fam = data["ports"][0]["family"]
    fig.suptitle(
        f"hwnic bench latency ({fam}): {s['rate']:,.0f} frames/s of {s['size']} B, "
        f"a probe every {s['probe_interval'] * 1000:g} ms; {data['timestamps']} timestamps",
        fontsize="medium",
    )
    return report.save_figure(fig, path)
