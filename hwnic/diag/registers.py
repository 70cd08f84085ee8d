"""Register test: write patterns, read them back, restore (Linux's ``*_reg_test``).

The tables follow Linux's ``e1000_reg_test`` (e1000 and e1000e drivers,
82540EM and 82574L) and ``igb_reg_test`` with ``reg_test_82576`` (igb), each
entry ``(register, mask, write)``: a *pattern* entry writes each of
:data:`PATTERNS` ANDed with ``write`` and expects it back under ``mask``; a
*set* entry writes ``write & mask`` once and expects that back; a *write*
entry only writes (igb enables RX queues so that RDT keeps what is written).

Kept are the registers that hwnic's models and QEMU 10's models both
implement (``hw/net/e1000.c``, ``e1000e_core.c``, ``igb_core.c`` register
tables), so the test is right on silicon and passes in the lab:

* QEMU's e1000 does not implement FCAL, FCAH, FCT, FCRTH, FCTTV, TIPG, TXCW
  or TIDV (they read 0): dropped for the 82540EM.
* QEMU's e1000e does not implement TXCW, and TIDV is write-only there (it
  is in its write table, not its read table: reads 0, seen in the lab):
  both dropped for the 82574L.
* QEMU masks some registers more than silicon does (RDLEN/TDLEN to
  128-byte multiples on e1000/e1000e, 16-bit RDTR/RDH/RDT/TDH/FCAH/FCT/
  FCTTV/VET, DBAL to 16 bytes); Linux's masks already ignore those bits, so
  one table per part serves both. Where that is not so, the entry says so.

Everything written is restored afterwards (the port is also reset at the end
of a self-test). Bus mastering stays off during the test: RCTL.EN is set by
the RCTL set test while the ring registers hold test patterns, and no DMA may
follow from that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from hwnic.nic import regs
from hwnic.nic import regs_igb as r_igb

PATTERNS = (0x5A5A5A5A, 0xA5A5A5A5, 0x00000000, 0xFFFFFFFF)
ALL = 0xFFFFFFFF
RAR_ENTRIES = 16  # receive address pairs of the 8254x/82574/82576 (RA)
RA2_ENTRIES = 8  # the 82576's second block (RA2: addresses 16-23)


class Kind(Enum):
    PATTERN = "pattern"  # each of PATTERNS & write, read back under mask
    SET = "set"  # write & mask once, read back under mask
    WRITE = "write"  # write only (setup for the next entries)


@dataclass(frozen=True)
class RegTest:
    name: str
    offset: int
    mask: int
    write: int
    kind: Kind = Kind.PATTERN


class Registers(Protocol):
    def read32(self, offset: int) -> int: ...
    def write32(self, offset: int, value: int) -> None: ...


def _queue_regs(
    name: str, offset: Callable[[int], int], queues: int, mask: int, write: int
) -> list[RegTest]:
    return [RegTest(f"{name}({q})", offset(q), mask, write) for q in range(queues)]


def _igb_ring(base: int, reg: int) -> Callable[[int], int]:
    return lambda q: base + q * r_igb.QUEUE_STRIDE + reg


def _ra(entries: int, base: int, *, low: bool, high_mask: int) -> list[RegTest]:
    out = []
    for i in range(entries):
        if low:
            out.append(RegTest(f"RAL{i}", base + i * regs.RA_STRIDE, ALL, ALL))
        out.append(RegTest(f"RAH{i}", base + i * regs.RA_STRIDE + 4, high_mask, ALL))
    return out


def _mta() -> list[RegTest]:
    return [RegTest(f"MTA[{i}]", regs.MTA + 4 * i, ALL, ALL) for i in range(regs.MTA_ENTRIES)]


# RCTL: everything off, then the bits the part implements (Linux's "before").
RCTL_8254X_BITS = 0x06DFB3FE
RCTL_LOW_BITS = 0x003FFFFB
RAH_MASK_8254X = 0x8003FFFF  # AV, ASEL, address bytes 5-4
RAH_MASK_82576 = 0x83FFFFFF  # AV, pool select, ASEL, address bytes 5-4
STATUS_TOGGLE_8254X = 0xFFFFF833  # Linux e1000: STATUS bits a write must not change
STATUS_TOGGLE_82574 = 0x7FFFF033
STATUS_TOGGLE_82576 = 0x7FFFF3FF


def _legacy_common() -> list[RegTest]:
    """The entries the 82540EM and 82574L share (Linux e1000/e1000e)."""
    rd, td = regs.RDBAL0, regs.TDBAL0
    return [
        RegTest("VET", regs.VET, 0x0000FFFF, ALL),
        RegTest("RDTR", regs.RDTR, 0x0000FFFF, ALL),
        RegTest("RDBAH", rd + regs.DBAH, ALL, ALL),
        RegTest("RDLEN", rd + regs.DLEN, 0x000FFF80, 0x000FFFFF),
        RegTest("RDH", rd + regs.DH, 0x0000FFFF, 0x0000FFFF),
        RegTest("RDT", rd + regs.DT, 0x0000FFFF, 0x0000FFFF),
        RegTest("TDBAH", td + regs.DBAH, ALL, ALL),
        RegTest("TDLEN", td + regs.DLEN, 0x000FFF80, 0x000FFFFF),
        RegTest("RCTL", regs.RCTL, ALL, 0, Kind.SET),
        RegTest("RCTL", regs.RCTL, RCTL_8254X_BITS, RCTL_LOW_BITS, Kind.SET),
        RegTest("TCTL", regs.TCTL, ALL, 0, Kind.SET),
        RegTest("RCTL", regs.RCTL, RCTL_8254X_BITS, ALL, Kind.SET),
        RegTest("RDBAL", rd + regs.DBAL, 0xFFFFFFF0, ALL),
        RegTest("TDBAL", td + regs.DBAL, 0xFFFFFFF0, ALL),
    ]


def table_82540() -> list[RegTest]:
    """82540EM (QEMU e1000): without the registers QEMU's e1000 lacks (module docstring)."""
    return [
        *_legacy_common(),
        *_ra(RAR_ENTRIES, regs.RAL0, low=False, high_mask=RAH_MASK_8254X),
        *_mta(),
    ]


def table_82574() -> list[RegTest]:
    """82574L (QEMU e1000e): Linux's list without TXCW and TIDV."""
    return [
        RegTest("FCAL", regs.FCAL, ALL, ALL),
        RegTest("FCAH", regs.FCAH, 0x0000FFFF, ALL),
        RegTest("FCT", regs.FCT, 0x0000FFFF, ALL),
        RegTest("FCRTH", regs.FCRTH, 0x0000FFF8, 0x0000FFF8),
        RegTest("FCTTV", regs.FCTTV, 0x0000FFFF, 0x0000FFFF),
        RegTest("TIPG", regs.TIPG, 0x3FFFFFFF, 0x3FFFFFFF),
        *_legacy_common(),
        *_ra(RAR_ENTRIES, regs.RAL0, low=False, high_mask=RAH_MASK_8254X),
        *_mta(),
    ]


def table_82576(queues: int) -> list[RegTest]:
    """82576 (QEMU igb): Linux's reg_test_82576 over the queues hwnic drives.

    RDH is read-only on the 82576 (only RDT is tested), and RDT keeps what
    is written only while its queue is enabled (RXDCTL.ENABLE around it).
    """
    rd, td = r_igb.RDBAL0, r_igb.TDBAL0
    enable = [
        RegTest(f"RXDCTL({q})", r_igb.RXDCTL(q), 0, r_igb.XDCTL_ENABLE, Kind.WRITE)
        for q in range(queues)
    ]
    disable = [RegTest(f"RXDCTL({q})", r_igb.RXDCTL(q), 0, 0, Kind.WRITE) for q in range(queues)]
    return [
        RegTest("FCAL", regs.FCAL, ALL, ALL),
        RegTest("FCAH", regs.FCAH, 0x0000FFFF, ALL),
        RegTest("FCT", regs.FCT, 0x0000FFFF, ALL),
        RegTest("VET", regs.VET, ALL, ALL),
        *_queue_regs("RDBAL", _igb_ring(rd, regs.DBAL), queues, 0xFFFFFF80, ALL),
        *_queue_regs("RDBAH", _igb_ring(rd, regs.DBAH), queues, ALL, ALL),
        *_queue_regs("RDLEN", _igb_ring(rd, regs.DLEN), queues, 0x000FFFF0, 0x000FFFFF),
        *enable,
        *_queue_regs("RDT", _igb_ring(rd, regs.DT), queues, 0x0000FFFF, 0x0000FFFF),
        *disable,
        RegTest("FCRTH", regs.FCRTH, 0x0000FFF0, 0x0000FFF0),
        RegTest("FCTTV", regs.FCTTV, 0x0000FFFF, 0x0000FFFF),
        RegTest("TIPG", regs.TIPG, 0x3FFFFFFF, 0x3FFFFFFF),
        *_queue_regs("TDBAL", _igb_ring(td, regs.DBAL), queues, 0xFFFFFF80, ALL),
        *_queue_regs("TDBAH", _igb_ring(td, regs.DBAH), queues, ALL, ALL),
        *_queue_regs("TDLEN", _igb_ring(td, regs.DLEN), queues, 0x000FFFF0, 0x000FFFFF),
        RegTest("RCTL", regs.RCTL, ALL, 0, Kind.SET),
        RegTest("RCTL", regs.RCTL, 0x04CFB0FE, RCTL_LOW_BITS, Kind.SET),
        RegTest("RCTL", regs.RCTL, 0x04CFB0FE, ALL, Kind.SET),
        RegTest("TCTL", regs.TCTL, ALL, 0, Kind.SET),
        *_ra(RAR_ENTRIES, regs.RAL0, low=True, high_mask=RAH_MASK_82576),
        *_ra(RA2_ENTRIES, r_igb.RA2, low=True, high_mask=RAH_MASK_82576),
        *_mta(),
    ]


def table_for(family: str, queues: int = 1) -> tuple[int, list[RegTest]]:
    """(STATUS toggle mask, register table) for a family."""
    if family == "e1000":
        return STATUS_TOGGLE_8254X, table_82540()
    if family == "e1000e":
        return STATUS_TOGGLE_82574, table_82574()
    if family == "igb":
        return STATUS_TOGGLE_82576, table_82576(queues)
    raise ValueError(f"no register table for family {family!r}")


class RegisterMismatch(Exception):
    """A register did not keep what was written (message: which, what, how)."""


def check_status(bar: Registers, toggle: int) -> None:
    """STATUS is read-only: writing the toggle bits must not change them (Linux)."""
    before = bar.read32(regs.STATUS)
    value = before & toggle
    bar.write32(regs.STATUS, toggle)
    after = bar.read32(regs.STATUS) & toggle
    bar.write32(regs.STATUS, before)
    if after != value:
        raise RegisterMismatch(
            f"STATUS (0x{regs.STATUS:05X}) changed on a write: 0x{after:08X}, was 0x{value:08X}"
        )


def run_entry(bar: Registers, t: RegTest) -> None:
    """One table entry; raises RegisterMismatch on the first value not kept."""
    if t.kind is Kind.WRITE:
        bar.write32(t.offset, t.write)
        return
    values = PATTERNS if t.kind is Kind.PATTERN else (ALL,)
    for pattern in values:
        written = pattern & t.write if t.kind is Kind.PATTERN else t.write & t.mask
        bar.write32(t.offset, written)
        got = bar.read32(t.offset) & t.mask
        want = written & t.mask
        if got != want:
            raise RegisterMismatch(
                f"{t.name} (0x{t.offset:05X}) {t.kind.value} test: wrote 0x{written:08X}, "
                f"read 0x{got:08X} under mask 0x{t.mask:08X}, expected 0x{want:08X}"
            )


def offsets(table: Iterable[RegTest]) -> list[int]:
    """Every register a table touches, in first-touch order."""
    seen: dict[int, None] = {}
    for t in table:
        seen.setdefault(t.offset, None)
    return list(seen)


def run_table(bar: Registers, toggle: int, table: Sequence[RegTest]) -> int:
    """STATUS check, then every entry; restores every register touched, even on failure.

    Returns how many entries were checked (WRITE entries are not counted).
    """
    touched = offsets(table)
    saved = [(offset, bar.read32(offset)) for offset in touched]
    try:
        check_status(bar, toggle)
        for t in table:
            run_entry(bar, t)
    finally:
        for offset, value in reversed(saved):
            bar.write32(offset, value)
    return sum(1 for t in table if t.kind is not Kind.WRITE)
