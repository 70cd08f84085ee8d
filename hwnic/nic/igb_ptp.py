"""IEEE 1588 hardware timestamps on the 82576 (igb): clock, RX and TX latches.

What the part does (82576 datasheet 7.9; Linux ``igb_ptp.c``), and what
QEMU 10's model does of it (``hw/net/igb_core.c``, ``e1000x_common.c``):

* SYSTIM counts ``TIMINCA.INCVALUE`` every ``INCPERIOD`` ticks of 16 ns.
  Linux programs period 1 and value ``16 << 19``: SYSTIM is then nanoseconds
  shifted left by 19 (the 82576 has no fractional-ns register, the low 19
  bits are the fraction). QEMU computes it from ``QEMU_CLOCK_VIRTUAL`` with
  the same formula, plus an adjustment that depends on when TIMINCA was
  written: two ports run at the same rate but from different origins, so
  the offset between them is measured (:func:`clock_sample`), never assumed.
* TX: an *advanced* data descriptor with ``MAC_TSTAMP`` latches the time
  the frame is sent into TXSTMPL/H and sets TSYNCTXCTL.VALID; nothing else
  is latched until TXSTMPH is read. QEMU stamps only advanced descriptors
  and remembers the first descriptor's command of the last advanced packet,
  so a legacy descriptor after a stamped one would be stamped too: every
  frame of a timestamped stream goes out as an advanced descriptor
  (:func:`tx_desc_bits`).
* RX: frames whose EtherType matches an ETQF filter with the 1588 bit,
  with a PTP v2 header whose messageId is TSYNCRXCFG's, latch RXSTMPL/H and
  RXSATRL/H (sequenceId in RXSATRH 31:16) and set TSYNCRXCTL.VALID until the
  latch is read (QEMU unlocks on RXSATRH, the 82576 on RXSTMPH: read both).
  QEMU takes the sequenceId from 2 bytes further than PTP v2 puts it, read
  little-endian (its PTP header struct is not packed).
  QEMU never writes the timestamp into the packet buffer (SRRCTL.TIMESTAMP is
  not modelled); the descriptor's TS status bit (16) is set.

One RX and one TX latch per port: probes go out one at a time, the latches
read between them, as MoonGen does on these parts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from hwnic.nic import regs_igb as r

ETHERTYPE_1588 = 0x88F7
SYSTIM_FRACTION_BITS = 19  # Linux IGB_82576_TSYNC_SHIFT: SYSTIM = ns << 19
TIMINCA_82576 = (1 << r.TIMINCA_INCPERIOD_SHIFT) | (16 << SYSTIM_FRACTION_BITS)
PTP_V2_SYNC = 0x0  # messageId of the frames the RX latch takes (PTP v2 Sync)
ETQF_1588_FILTER = 3  # the filter Linux uses for 1588 (any free one works)
SYSTIM_MODULUS = 1 << 64
CLOCK_SAMPLES = 16  # SYSTIM reads per clock sample; the tightest one is kept
U16_MASK = 0xFFFF
U32_BITS = 32
U32_MASK = 0xFFFFFFFF
BYTE_BITS = 8
BYTE_MASK = 0xFF
SEQUENCE_SHIFT = 16  # RXSATRH: sequenceId in 31:16

Read32 = Callable[[int], int]
Write32 = Callable[[int, int], None]


def systim_to_ns(systim: int) -> int:
    """A SYSTIM (or latched stamp) value in nanoseconds."""
    return (systim % SYSTIM_MODULUS) >> SYSTIM_FRACTION_BITS


def stamp_delta_ns(later: int, earlier: int) -> int:
    """``later - earlier`` in ns for two raw 64-bit stamps of one clock (wrap-safe)."""
    delta = (later - earlier) % SYSTIM_MODULUS
    if delta >= SYSTIM_MODULUS // 2:
        delta -= SYSTIM_MODULUS
    return delta // (1 << SYSTIM_FRACTION_BITS)


def tx_desc_bits(length: int, timestamp: bool) -> int:
    """What to OR into a legacy-built TX descriptor's second quadword to make it advanced.

    The legacy command bits the ring writes (EOP, IFCS, RS) sit where the
    advanced format has them; DEXT and DTYP make it an advanced data
    descriptor, MAC_TSTAMP asks for a timestamp, PAYLEN (olinfo_status) is the
    frame length.
    """
    cmd = r.AdvTxd.DCMD_DEXT | r.AdvTxd.DTYP_DATA
    if timestamp:
        cmd |= r.AdvTxd.MAC_TSTAMP
    olinfo = length << r.ADVTXD_PAYLEN_SHIFT
    return int(cmd) | (olinfo << U32_BITS)


def sequence_matches(rxsatrh: int, sequence: int) -> bool:
    """Whether RXSATRH's sequenceId is ``sequence`` (16 bits).

    The frame carries it big-endian where PTP v2 has it, and a little-endian
    copy where QEMU looks; both byte orders are accepted.
    """
    seq = (rxsatrh >> SEQUENCE_SHIFT) & U16_MASK
    swapped = ((seq & BYTE_MASK) << BYTE_BITS) | (seq >> BYTE_BITS)
    return (sequence & U16_MASK) in (seq, swapped)


@dataclass(frozen=True)
class RxStamp:
    systim: int  # raw 64-bit RXSTMPH:RXSTMPL
    rxsatrh: int  # sourceUuidHi and sequenceId of the stamped frame


@dataclass(frozen=True)
class ClockSample:
    """One clock against another (SYSTIM against CLOCK_MONOTONIC, or port against port)."""

    offset_ns: int
    window_ns: int  # monotonic time the SYSTIM read took: the sample's uncertainty


class IgbPtp:
    """The 1588 block of one 82576 port, through 32-bit register accessors."""

    def __init__(self, read32: Read32, write32: Write32) -> None:
        self.read32 = read32
        self.write32 = write32

    def enable(self) -> None:
        """Start SYSTIM, stamp PTP v2 Sync frames on RX and requested frames on TX."""
        w = self.write32
        w(r.TIMINCA, TIMINCA_82576)
        w(r.ETQF(ETQF_1588_FILTER), r.Etqf.FILTER_ENABLE | r.Etqf.TIMESTAMP_1588 | ETHERTYPE_1588)
        w(r.TSYNCRXCFG, PTP_V2_SYNC << r.TSYNCRXCFG_V2_MSGID_SHIFT)
        w(r.TSYNCRXCTL, r.Tsyncrxctl.ENABLED | r.Tsyncrxctl.TYPE_L2_V2)
        w(r.TSYNCTXCTL, r.Tsynctxctl.ENABLED)
        self.clear()

    def disable(self) -> None:
        self.write32(r.TSYNCRXCTL, 0)
        self.write32(r.TSYNCTXCTL, 0)
        self.write32(r.ETQF(ETQF_1588_FILTER), 0)

    def clear(self) -> None:
        """Unlock both latches (a stamp left from before would block the next)."""
        for reg in (r.TXSTMPL, r.TXSTMPH, r.RXSATRL, r.RXSATRH, r.RXSTMPL, r.RXSTMPH):
            self.read32(reg)

    def systim(self) -> int:
        """SYSTIM as one 64-bit value (the SYSTIML read latches SYSTIMH)."""
        low = self.read32(r.SYSTIML)
        return low | (self.read32(r.SYSTIMH) << U32_BITS)

    def tx_stamp(self) -> int | None:
        """The latched TX stamp (raw SYSTIM), unlocking the latch; None if none is latched."""
        if not self.read32(r.TSYNCTXCTL) & r.Tsynctxctl.VALID:
            return None
        low = self.read32(r.TXSTMPL)
        return low | (self.read32(r.TXSTMPH) << U32_BITS)

    def wait_tx_stamp(self, timeout: float, poll: float = 0.0002) -> int | None:
        """The TX stamp of the frame just posted, waiting up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while (stamp := self.tx_stamp()) is None:
            if time.monotonic() >= deadline:
                return None
            time.sleep(poll)
        return stamp

    def rx_stamp(self) -> RxStamp | None:
        """The latched RX stamp and its attributes, unlocking the latch; None if none."""
        if not self.read32(r.TSYNCRXCTL) & r.Tsyncrxctl.VALID:
            return None
        self.read32(r.RXSATRL)
        satrh = self.read32(r.RXSATRH)
        low = self.read32(r.RXSTMPL)
        return RxStamp(low | (self.read32(r.RXSTMPH) << U32_BITS), satrh)


def clock_sample(ptp: IgbPtp, samples: int = CLOCK_SAMPLES) -> ClockSample:
    """SYSTIM's offset from CLOCK_MONOTONIC, from the quickest of ``samples`` reads.

    Each read is bracketed by two monotonic reads; SYSTIM is taken to be read
    at their midpoint, so the error is at most half the bracket. Two ports'
    samples give their clocks' offset (cross-port latency needs it).
    """
    best: ClockSample | None = None
    for _ in range(samples):
        before = time.monotonic_ns()
        systim = ptp.systim()
        after = time.monotonic_ns()
        sample = ClockSample(systim_to_ns(systim) - (before + after) // 2, after - before)
        if best is None or sample.window_ns < best.window_ns:
            best = sample
    assert best is not None
    return best


def cross_offset(a: IgbPtp, b: IgbPtp, samples: int = CLOCK_SAMPLES) -> ClockSample:
    """Port ``b``'s SYSTIM minus port ``a``'s, in ns, from the quickest of ``samples``.

    ``b`` is read between two reads of ``a`` and taken to be read at their
    midpoint; ``window_ns`` is the bracket on ``a``'s clock. MMIO reads only:
    tighter than going through CLOCK_MONOTONIC where that clock is slow to read
    (the TCG lab's HPET: 13-86 µs a read under traffic).
    """
    best: ClockSample | None = None
    for _ in range(samples):
        before = a.systim()
        middle = b.systim()
        after = a.systim()
        window = stamp_delta_ns(after, before)
        mid_a = systim_to_ns(before) + window // 2
        offset = systim_to_ns(middle) - mid_a
        sample = ClockSample(offset, window)
        if best is None or sample.window_ns < best.window_ns:
            best = sample
    assert best is not None
    return best
