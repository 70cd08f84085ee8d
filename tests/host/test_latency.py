"""Latency bench logic without a device: probes, statistics, SYSTIM arithmetic, and the
82576's 1588 registers against a fake with the latch semantics QEMU's igb has."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from hwnic import traffic
from hwnic.bench import latency
from hwnic.errors import UsageError
from hwnic.nic import igb_ptp
from hwnic.nic import regs_igb as r
from hwnic.nic.descriptors import LEGACY_TX, as_qwords
from hwnic.nic.tx_ring import TxRing

SRC, DST = "02:00:00:00:00:01", "02:00:00:00:00:02"
NS_SHIFT = igb_ptp.SYSTIM_FRACTION_BITS


# -- probes ------------------------------------------------------------------------------


def test_probes_are_found_among_load_with_their_id_and_time() -> None:
    load = traffic.build(np.arange(6), np.full(6, 128), SRC, DST)
    probes = {7: 111, 70_000: 2**40 + 5}
    rows = list(load)
    for i, (pid, ns) in enumerate(probes.items()):
        frame = latency.build_probe(pid, SRC, DST, 128)
        latency.stamp_probe(frame, ns)
        rows.insert(2 + 2 * i, frame)
    frames = np.stack(rows)
    ids, sent = latency.find_probes(frames, np.full(len(frames), 128))
    assert dict(zip(ids.tolist(), sent.tolist(), strict=True)) == probes


def test_probe_is_a_ptp_v2_sync_frame() -> None:
    frame = latency.build_probe(0x1234, SRC, DST)
    assert len(frame) == latency.PROBE_MIN_LENGTH == 64
    assert frame[12:14].tobytes() == b"\x88\xf7"
    assert frame[14] == igb_ptp.PTP_V2_SYNC and frame[15] == 2
    assert frame[44:46].tobytes() == b"\x12\x34"  # sequenceId, big-endian
    assert frame[46:48].tobytes() == b"\x34\x12"  # the copy where QEMU reads it


def test_other_frames_are_not_probes() -> None:
    frame = latency.build_probe(1, SRC, DST)
    not_magic = frame.copy()
    not_magic[latency.MAGIC_OFFSET] ^= 0xFF  # a real PTP frame from someone else
    other_type = frame.copy()
    other_type[13] = 0xF8
    frames = np.stack([not_magic, other_type])
    ids, _ = latency.find_probes(frames, np.full(2, 64))
    assert len(ids) == 0
    # Too short to hold a probe: nothing, and no error.
    ids, _ = latency.find_probes(frames[:, :60], np.full(2, 60))
    assert len(ids) == 0
    # A truncated probe (length below the minimum) is not taken either.
    ids, _ = latency.find_probes(np.stack([frame]), np.array([60]))
    assert len(ids) == 0


def test_probe_length_is_checked() -> None:
    with pytest.raises(UsageError):
        latency.build_probe(1, SRC, DST, 63)


# -- statistics --------------------------------------------------------------------------


def test_summary_percentiles_and_extremes() -> None:
    ns = np.arange(1, 1001) * 1000  # 1..1000 µs
    s = latency.summarize(ns)
    assert s["count"] == 1000
    assert s["min_ns"] == 1000 and s["max_ns"] == 1_000_000
    assert s["mean_ns"] == 500_500
    assert s["p50_ns"] == pytest.approx(500_500, abs=1)
    assert s["p99_ns"] == pytest.approx(990_010, abs=1)
    assert s["p99_9_ns"] == pytest.approx(999_001, abs=1)
    assert s["p50_ns"] <= s["p90_ns"] <= s["p99_ns"] <= s["p99_9_ns"] <= s["max_ns"]


def test_summary_of_nothing() -> None:
    s = latency.summarize([])
    assert s["count"] == 0 and s["p99_ns"] is None and s["max_ns"] is None


def test_log2_histogram() -> None:
    h = latency.log2_histogram([0, 1, 2, 3, 4, 1000, 1023, 1024])
    assert h == {"0-0": 1, "1-1": 1, "2-3": 2, "4-7": 1, "512-1023": 2, "1024-2047": 1}
    assert sum(h.values()) == 8


# -- SYSTIM arithmetic -------------------------------------------------------------------


def test_systim_is_ns_shifted_by_19() -> None:
    assert igb_ptp.systim_to_ns(123_456 << NS_SHIFT | 0x7FFFF) == 123_456
    # Linux's 82576 setting: period 1 (x16 ns), value 16 << 19.
    assert igb_ptp.TIMINCA_82576 == (1 << 24) | (16 << 19)


def test_stamp_delta_across_the_wrap() -> None:
    before = (1 << 64) - (5 << NS_SHIFT)
    after = 7 << NS_SHIFT
    assert igb_ptp.stamp_delta_ns(after, before) == 12
    assert igb_ptp.stamp_delta_ns(before, after) == -12


def test_hardware_latency_subtracts_the_clock_offset() -> None:
    offset = 1_000_000  # the RX port's clock runs 1 ms ahead
    tx = {1: 5_000 << NS_SHIFT, 2: 9_000 << NS_SHIFT, 3: 1 << NS_SHIFT}
    rx = {1: (5_000 + offset + 40) << NS_SHIFT, 2: (9_000 + offset + 70) << NS_SHIFT}
    assert latency.hardware_latencies(tx, rx, offset) == {1: 40, 2: 70}
    # Across SYSTIM's wrap in ns (2^45): still the short way round.
    top = latency.WRAP_NS - 10
    assert latency.hardware_latencies({1: top << NS_SHIFT}, {1: 20 << NS_SHIFT}, 0) == {1: 30}


def test_tx_descriptor_bits_make_an_advanced_timestamped_descriptor() -> None:
    bits = igb_ptp.tx_desc_bits(64, True)
    cmd_type_len, olinfo = bits & 0xFFFFFFFF, bits >> 32
    assert cmd_type_len & r.AdvTxd.DCMD_DEXT
    assert cmd_type_len & 0x00F00000 == r.AdvTxd.DTYP_DATA
    assert cmd_type_len & r.AdvTxd.MAC_TSTAMP == 0x00080000
    assert olinfo >> r.ADVTXD_PAYLEN_SHIFT == 64
    assert not igb_ptp.tx_desc_bits(64, False) & r.AdvTxd.MAC_TSTAMP


@pytest.mark.parametrize("start", [0, 6])  # 6: the batch wraps around the ring's end
def test_ring_ors_descriptor_bits_into_its_posts_only(start: int) -> None:
    size = 8
    descs = np.zeros(size, LEGACY_TX)
    ring = TxRing(
        descs, 0x1000, np.zeros((size, 2048), np.uint8), 0x10000, write_tail=lambda v: None
    )
    ring.tail = ring.next_to_clean = start
    ring.post(np.zeros((1, 64), np.uint8))  # a plain frame first
    bits = igb_ptp.tx_desc_bits(64, True)
    ring.post(np.zeros((3, 64), np.uint8), desc_bits=bits)
    q1 = as_qwords(descs)[:, 1]
    flagged = [(start + 1 + i) % size for i in range(3)]
    for i in range(size):
        has = int(q1[i]) & bits == bits
        assert has == (i in flagged), i
    assert int(q1[start]) & 0xFFFF == 64 and not int(q1[start]) & r.AdvTxd.DCMD_DEXT
    assert all(int(q1[i]) & 0xFFFF == 64 for i in flagged)  # the length is kept


# -- the 1588 registers against a fake 82576 -------------------------------------------------


class FakeIgb1588:
    """Registers with QEMU igb's 1588 behaviour: SYSTIM from a clock, one latch each way."""

    def __init__(self, clock_ns: int = 1_000_000) -> None:
        self.regs: dict[int, int] = {}
        self.clock_ns = clock_ns
        self.reads: list[int] = []

    def _systim(self) -> int:
        inca = self.regs.get(r.TIMINCA, 0)
        value, period = inca & 0xFFFFFF, max(inca >> 24, 1)
        return self.clock_ns * value // (period * 16)

    def read32(self, off: int) -> int:
        self.reads.append(off)
        regs = self.regs
        if off == r.SYSTIML:
            t = self._systim()
            regs[r.SYSTIML], regs[r.SYSTIMH] = t & 0xFFFFFFFF, t >> 32
        elif off == r.TXSTMPH:
            regs[r.TSYNCTXCTL] = regs.get(r.TSYNCTXCTL, 0) & ~r.Tsynctxctl.VALID
        elif off == r.RXSATRH:
            regs[r.TSYNCRXCTL] = regs.get(r.TSYNCRXCTL, 0) & ~r.Tsyncrxctl.VALID
        return regs.get(off, 0)

    def write32(self, off: int, value: int) -> None:
        self.regs[off] = int(value)

    def _latch(self, lo: int, hi: int) -> None:
        t = self._systim()
        self.regs[lo], self.regs[hi] = t & 0xFFFFFFFF, t >> 32

    def transmit(self, tstamp: bool) -> None:
        ctl = self.regs.get(r.TSYNCTXCTL, 0)
        if tstamp and ctl & r.Tsynctxctl.ENABLED and not ctl & r.Tsynctxctl.VALID:
            self.regs[r.TSYNCTXCTL] = ctl | r.Tsynctxctl.VALID
            self._latch(r.TXSTMPL, r.TXSTMPH)

    def receive(self, frame: np.ndarray) -> None:
        etype = int(frame[12]) << 8 | int(frame[13])
        ctl = self.regs.get(r.TSYNCRXCTL, 0)
        for n in range(r.ETQF_ENTRIES):
            etqf = self.regs.get(r.ETQF(n), 0)
            if not etqf & r.Etqf.FILTER_ENABLE or etqf & r.ETQF_ETYPE_MASK != etype:
                continue
            msg_ok = int(frame[14]) == (self.regs.get(r.TSYNCRXCFG, 0) >> 8) & 0xFF
            if (
                etqf & r.Etqf.TIMESTAMP_1588
                and ctl & r.Tsyncrxctl.ENABLED
                and not ctl & r.Tsyncrxctl.VALID
                and int(frame[15]) & 0xF == 2
                and msg_ok
            ):
                self._latch(r.RXSTMPL, r.RXSTMPH)
                self.regs[r.TSYNCRXCTL] = ctl | r.Tsyncrxctl.VALID
                # QEMU: an unpacked struct puts sequence_id at PTP offset 32, le16_to_cpu.
                (seq,) = struct.unpack("<H", frame[46:48].tobytes())
                self.regs[r.RXSATRH] = seq << 16
            return


def _enabled(clock_ns: int = 1_000_000) -> tuple[FakeIgb1588, igb_ptp.IgbPtp]:
    fake = FakeIgb1588(clock_ns)
    ptp = igb_ptp.IgbPtp(fake.read32, fake.write32)
    ptp.enable()
    return fake, ptp


def test_enable_programs_the_clock_filter_and_both_directions() -> None:
    fake, _ = _enabled()
    regs = fake.regs
    assert regs[r.TIMINCA] == igb_ptp.TIMINCA_82576
    assert regs[r.ETQF(igb_ptp.ETQF_1588_FILTER)] == (1 << 26) | (1 << 30) | 0x88F7
    assert regs[r.TSYNCRXCTL] & r.Tsyncrxctl.ENABLED
    assert regs[r.TSYNCTXCTL] & r.Tsynctxctl.ENABLED
    assert regs[r.TSYNCRXCFG] == 0  # messageId 0: Sync
    assert r.TXSTMPH in fake.reads and r.RXSTMPH in fake.reads  # left latches unlocked


def test_systim_reads_the_clock_in_ns() -> None:
    fake, ptp = _enabled(clock_ns=3_000_000_123)
    assert igb_ptp.systim_to_ns(ptp.systim()) == 3_000_000_123
    assert fake.reads[-2:] == [r.SYSTIML, r.SYSTIMH]  # low first: it latches high


def test_tx_latch_holds_the_first_stamp_until_read() -> None:
    fake, ptp = _enabled(clock_ns=5_000)
    assert ptp.tx_stamp() is None
    fake.transmit(tstamp=True)
    fake.clock_ns = 9_000
    fake.transmit(tstamp=True)  # locked: not stamped
    stamp = ptp.tx_stamp()
    assert stamp is not None and igb_ptp.systim_to_ns(stamp) == 5_000
    assert ptp.tx_stamp() is None  # reading TXSTMPH unlocked and emptied it
    fake.transmit(tstamp=True)
    assert igb_ptp.systim_to_ns(ptp.wait_tx_stamp(0.01) or 0) == 9_000


def test_rx_latch_takes_a_probe_and_names_its_sequence() -> None:
    fake, ptp = _enabled(clock_ns=42_000)
    load = traffic.build(np.arange(1), np.full(1, 64), SRC, DST)[0]
    fake.receive(load)
    assert ptp.rx_stamp() is None  # not a 1588 frame
    probe = latency.build_probe(0x0102, SRC, DST)
    fake.receive(probe)
    stamp = ptp.rx_stamp()
    assert stamp is not None and igb_ptp.systim_to_ns(stamp.systim) == 42_000
    assert igb_ptp.sequence_matches(stamp.rxsatrh, 0x0102)
    assert not igb_ptp.sequence_matches(stamp.rxsatrh, 0x0103)
    assert ptp.rx_stamp() is None  # unlocked by the read


def test_clock_sample_finds_systim_against_monotonic() -> None:
    fake, ptp = _enabled()
    fake.clock_ns = 10**12
    sample = igb_ptp.clock_sample(ptp, samples=4)
    assert sample.window_ns >= 0
    import time

    assert abs(sample.offset_ns - (10**12 - time.monotonic_ns())) < 10**9


def test_cross_offset_between_two_ports() -> None:
    fa, a = _enabled(clock_ns=1_000_000)
    fb, b = _enabled(clock_ns=1_000_000)
    fb.regs[r.TIMINCA] = igb_ptp.TIMINCA_82576
    fb.clock_ns = 1_000_000 + 2_500  # port b's clock reads 2.5 µs ahead
    sample = igb_ptp.cross_offset(a, b, samples=3)
    assert sample == igb_ptp.ClockSample(offset_ns=2_500, window_ns=0)
    assert fa.reads.count(r.SYSTIML) == 2 * fb.reads.count(r.SYSTIML) == 6


class _Batch:
    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames = np.stack(frames)
        self.lengths = np.array([len(f) for f in frames])
        self.count = len(frames)
        self.released = False

    def release(self) -> None:
        self.released = True


def test_sink_records_software_and_matched_hardware_stamps() -> None:
    fake, ptp = _enabled(clock_ns=77_000)
    sink = latency._Sink(ptp=ptp)
    probe = latency.build_probe(3, SRC, DST)
    latency.stamp_probe(probe, 1234)
    fake.receive(probe)
    load = traffic.build(np.arange(2), np.full(2, 64), SRC, DST)
    batch = _Batch([load[0], probe, load[1]])
    sink.on_receive(0, batch)
    assert batch.released and sink.frames == 3
    assert sink.tx_ns == {3: 1234} and 3 in sink.rx_ns
    assert igb_ptp.systim_to_ns(sink.rx_hw[3]) == 77_000
    # A stamp for another sequence is counted, not attributed.
    other = latency.build_probe(9, SRC, DST)
    fake.receive(other)
    sink.on_receive(0, _Batch([latency.build_probe(4, SRC, DST)]))
    assert 4 not in sink.rx_hw and sink.unmatched_hw == 1


def test_a_late_latched_stamp_goes_to_its_own_earlier_probe() -> None:
    fake, ptp = _enabled(clock_ns=50_000)
    sink = latency._Sink(ptp=ptp)
    five = latency.build_probe(5, SRC, DST)
    sink.on_receive(0, _Batch([five]))  # read before the stamp was latched: none yet
    assert 5 in sink.rx_ns and 5 not in sink.rx_hw
    fake.receive(five)  # now the latch holds probe 5's stamp...
    sink.on_receive(0, _Batch([latency.build_probe(6, SRC, DST)]))  # ...read with probe 6's batch
    assert igb_ptp.systim_to_ns(sink.rx_hw[5]) == 50_000
    assert 6 not in sink.rx_hw and sink.unmatched_hw == 0


def test_summary_lines_say_which_timestamps() -> None:
    base = {
        "probes": {"sent": 10, "received": 10, "lost": 0, "tx_stamps": 10, "rx_stamps": 10},
        "load": {"sent": 100, "received": 100, "pps": 50.0},
        "ports": [{"family": "e1000e"}],
        "software": latency.summarize([1000, 2000]),
    }
    text = "\n".join(latency.summary_lines(base))
    assert "software only" in text and "hardware (1588)" not in text
    hw = {
        **base,
        "ports": [{"family": "igb"}],
        "hardware": latency.summarize([500]),
        "clock": {"rx_minus_tx_ns": 5, "before": {"uncertainty_ns": 3}, "drift_ns": 1},
    }
    text = "\n".join(latency.summary_lines(hw))
    assert "hardware (1588)" in text and "offset 5 ns" in text


def test_plot_writes_a_png(tmp_path: object) -> None:
    from pathlib import Path

    data = {
        "settings": {"rate": 2000.0, "size": 64, "probe_interval": 0.01},
        "ports": [{"family": "igb"}],
        "timestamps": "hardware (IEEE 1588) and software",
        "samples": {"software_ns": [3_000_000, 4_000_000], "hardware_ns": [3_900, 7_000]},
    }
    path = latency.plot(data, Path(str(tmp_path)) / "lat.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
