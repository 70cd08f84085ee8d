"""The three NIC models on the host, against a register-level fake (hwnic.nic.testing).

Ring programming, which interrupt mode each granted type picks, the ISRs
(ack and mask one message, "not mine" on a shared line), re-enable after the
DPC, and one frame's whole way from a written-back descriptor through the
real NDIS framework to ``receive()``.
"""

from __future__ import annotations

import numpy as np
import pytest

from hwnic import traffic
from hwnic.ndis import ISR_NOT_MINE, ISR_QUEUE_DEFAULT_DPC, InterruptType
from hwnic.nic import model_class, regs
from hwnic.nic import regs_e1000e as r_e
from hwnic.nic import regs_igb as r_igb
from hwnic.nic.base import Nic, NicConfig
from hwnic.nic.e1000e import E1000eMsix
from hwnic.nic.igb import IgbMsix, IgbSharedLine
from hwnic.nic.irq import ALL_CAUSES, SharedLine
from hwnic.nic.ring import DESCRIPTOR_BYTES
from hwnic.nic.testing import FAKE_MAC, FakeDevice

RING = 64
MSIX_COUNTS = {"e1000": 0, "e1000e": 5, "igb": 10}
CASES = [
    ("e1000", InterruptType.LINE_BASED),
    ("e1000e", InterruptType.LINE_BASED),
    ("e1000e", InterruptType.MSI),
    ("e1000e", InterruptType.MSIX),
    ("igb", InterruptType.LINE_BASED),
    ("igb", InterruptType.MSI),
    ("igb", InterruptType.MSIX),
]
MODES = {
    ("e1000", InterruptType.LINE_BASED): SharedLine,
    ("e1000e", InterruptType.LINE_BASED): SharedLine,
    ("e1000e", InterruptType.MSI): SharedLine,
    ("e1000e", InterruptType.MSIX): E1000eMsix,
    ("igb", InterruptType.LINE_BASED): IgbSharedLine,
    ("igb", InterruptType.MSI): IgbSharedLine,
    ("igb", InterruptType.MSIX): IgbMsix,
}
IDS = [f"{f}-{k.name}" for f, k in CASES]


def open_fake(family: str, kind: InterruptType, **config: object) -> tuple[Nic, FakeDevice]:
    msi = 0 if family == "e1000" else 1
    device = FakeDevice(family, msix=MSIX_COUNTS[family], msi=msi)
    cfg = NicConfig(ring_size=RING, wait_link=0, interrupt=kind, **config)  # type: ignore[arg-type]
    nic = model_class(family)(device, cfg)  # type: ignore[arg-type]
    return nic, device


def rdbal(family: str, q: int) -> int:
    return r_igb.RDBAL(q) if family == "igb" else regs.RDBAL(q)


def tdbal(family: str, q: int) -> int:
    return r_igb.TDBAL(q) if family == "igb" else regs.TDBAL(q)


@pytest.mark.parametrize(("family", "kind"), CASES, ids=IDS)
def test_open_programs_rings_and_picks_the_mode_once(family: str, kind: InterruptType) -> None:
    nic, device = open_fake(family, kind)
    bar = device.bar(0)
    try:
        assert nic.interrupt is not None and nic.interrupt.granted_type is kind
        assert type(nic._mode) is MODES[(family, kind)]
        for base, iova in ((rdbal(family, 0), nic.rx_desc_iova[0]),
                           (tdbal(family, 0), nic.tx_desc_iova[0])):  # fmt: skip
            assert bar.regs[base + regs.DBAL] == iova & 0xFFFFFFFF
            assert bar.regs[base + regs.DBAH] == iova >> 32
            assert bar.regs[base + regs.DLEN] == RING * DESCRIPTOR_BYTES
        # Every RX descriptor but one is armed (a full ring would look empty).
        assert bar.regs[nic.rx_tail_offset(0)] == RING - 1
        assert bar.regs[regs.RCTL] & regs.Rctl.EN and bar.regs[regs.TCTL] & regs.Tctl.EN
        assert device.bus_master
        assert nic.mac == FAKE_MAC
    finally:
        nic.close()
    assert not device.bus_master
    assert bar.regs.get(regs.IMS, 0) == 0 and bar.regs.get(r_igb.EIMS, 0) == 0


@pytest.mark.parametrize(("family", "kind"), [c for c in CASES if c[1] is not InterruptType.MSIX])
def test_shared_line_isr_says_not_mine_and_masks_all(family: str, kind: InterruptType) -> None:
    nic, device = open_fake(family, kind)
    bar = device.bar(0)
    try:
        assert bar.regs[regs.IMS] == nic.line_causes()
        assert nic._isr(None) == ISR_NOT_MINE  # ICR reads 0: another device's line
        assert bar.regs[regs.IMS] == nic.line_causes(), "not mine must not mask"
        bar.set_cause(regs.ICR, regs.Icr.LSC)
        assert nic._isr(None) == ISR_QUEUE_DEFAULT_DPC
        assert bar.regs[regs.IMS] == 0 and bar.written(regs.IMC)[-1] == ALL_CAUSES
        assert bar.regs[regs.ICR] == 0, "the ISR's read clears ICR"
        assert nic._mode.other_causes(0) == regs.Icr.LSC  # kept for the DPC, once
        assert nic._mode.other_causes(0) == 0
        nic._enable_message(None, 0)
        assert bar.regs[regs.IMS] == nic.line_causes()
    finally:
        nic.close()


def test_igb_msix_maps_queues_and_masks_one_message() -> None:
    nic, device = open_fake("igb", InterruptType.MSIX, queues=2)
    bar = device.bar(0)
    try:
        # Message 0: other causes; 1+q: RX queue q; TX entries invalid.
        assert bar.regs[r_igb.GPIE] & r_igb.Gpie.MSIX_MODE
        ivar0 = bar.regs[r_igb.IVAR0]
        assert ivar0 & 0xFF == 1 | r_igb.IVAR_VALID
        assert not (ivar0 >> 8) & r_igb.IVAR_VALID, "TX queue 0 must raise no interrupt"
        assert bar.regs[r_igb.IVAR0 + r_igb.IVAR_STRIDE] & 0xFF == 2 | r_igb.IVAR_VALID
        assert bar.regs[r_igb.EIMS] == 0b111
        assert nic._message_isr(None, 2) == ISR_QUEUE_DEFAULT_DPC
        assert bar.written(r_igb.EIMC)[-1] == 1 << 2 and bar.regs[r_igb.EIMS] == 0b011
        nic._enable_message(None, 2)
        assert bar.regs[r_igb.EIMS] == 0b111
        bar.set_cause(regs.ICR, regs.Icr.LSC)
        assert nic._mode.other_causes(0) == regs.Icr.LSC
    finally:
        nic.close()


def test_e1000e_msix_five_causes_tx_masked() -> None:
    nic, device = open_fake("e1000e", InterruptType.MSIX)
    bar = device.bar(0)
    try:
        assert bar.regs[r_e.IVAR] == r_e.ivar_value({c: c for c in range(r_e.IVAR_CAUSES)})
        enabled = bar.regs[regs.IMS]
        assert enabled & r_e.IcrMsix.RXQ0 and enabled & r_e.IcrMsix.OTHER
        assert not enabled & (r_e.IcrMsix.TXQ0 | r_e.IcrMsix.TXQ1), "TX stays masked"
        assert nic._message_isr(None, r_e.IvarCause.RXQ0) == ISR_QUEUE_DEFAULT_DPC
        assert bar.written(regs.IMC)[-1] == r_e.IcrMsix.RXQ0
        assert not bar.regs[regs.IMS] & r_e.IcrMsix.RXQ0
        assert bar.regs[regs.IMS] & r_e.IcrMsix.OTHER, "only its own cause is masked"
        # The other message acknowledges ICR by W1C, never a queue cause.
        bar.set_cause(regs.ICR, regs.Icr.LSC | r_e.IcrMsix.RXQ1)
        assert nic._mode.other_causes(r_e.IvarCause.OTHER) & regs.Icr.LSC
    finally:
        nic.close()


@pytest.mark.parametrize(("family", "kind"), CASES, ids=IDS)
def test_a_frame_through_isr_and_dpc_to_receive(family: str, kind: InterruptType) -> None:
    nic, device = open_fake(family, kind)
    bar = device.bar(0)
    try:
        n = 5
        lengths = np.full(n, 64)
        frames = traffic.build(np.arange(n), lengths, "02:00:00:00:00:01", FAKE_MAC)
        assert device.write_back(nic.rx[0], nic.rx_tail_offset(0), frames, lengths) == n
        if kind is InterruptType.MSIX:
            message = nic.rx_messages()[0]
            cause_reg = r_igb.EICR if family == "igb" else regs.ICR
            bar.set_cause(cause_reg, 1 << message if family == "igb" else r_e.IcrMsix.RXQ0)
        else:
            message = 0
            bar.set_cause(regs.ICR, regs.Icr.RXT0)
        tail_before = bar.regs[nic.rx_tail_offset(0)]
        device.signal(message)
        batch = nic.receive(timeout=5.0)
        assert batch is not None and batch.count == n
        assert (traffic.check(batch.frames, batch.lengths).seqs == np.arange(n)).all()
        assert nic.interrupt is not None and nic.interrupt.wait_idle(5.0)
        # The DPC re-armed what it consumed and the message is unmasked again.
        assert bar.regs[nic.rx_tail_offset(0)] == (tail_before + n) % RING
        if family == "igb" and kind is InterruptType.MSIX:
            assert bar.regs[r_igb.EIMS] & (1 << message)
        elif kind is InterruptType.MSIX:
            assert bar.regs[regs.IMS] & r_e.IcrMsix.RXQ0
        else:
            assert bar.regs[regs.IMS] == nic.line_causes()
    finally:
        nic.close()


def test_reset_self_clears_and_reprograms() -> None:
    nic, device = open_fake("igb", InterruptType.MSIX)
    bar = device.bar(0)
    try:
        resets = len([v for v in bar.written(regs.CTRL) if v & regs.Ctrl.RST])
        nic.reset(wait_link=0)
        assert len([v for v in bar.written(regs.CTRL) if v & regs.Ctrl.RST]) == resets + 1
        assert not bar.regs[regs.CTRL] & regs.Ctrl.RST
        assert nic.resets == 1 and bar.regs[r_igb.EIMS] == 0b11
    finally:
        nic.close()
