"""82576 / I210 / I350 (igb): up to eight queue pairs with RSS, MSI-X, MSI, INTx.

Under MSI-X (GPIE.MSIX_MODE) message 0 carries the "other" causes (LSC,
through IVAR_MISC) and message 1+q carries RX queue q (IVAR; TX completions
raise no interrupt, the send path reclaims). EIAC
auto-clears each EICR bit as its message goes out; nothing auto-masks, so the
ISR writes EIMC for its own message and the enable handler writes EIMS.
GPIE.NSICR makes ICR reads clear. Link needs autonegotiation restarted
through the PHY after every reset.
"""

from __future__ import annotations

from hwnic.ndis import ISR_QUEUE_DEFAULT_DPC, InterruptType, IsrResult
from hwnic.nic import regs
from hwnic.nic import regs_igb as r
from hwnic.nic.base import Nic
from hwnic.nic.descriptors import ADVANCED_RX_FORMAT
from hwnic.nic.irq import InterruptMode, MessagePlan, SharedLine
from hwnic.nic.quirks import Flag

TCTL_BASE = (
    regs.Tctl.EN | regs.Tctl.PSP | r.TCTL_RTLC | regs.TCTL_CT_DEFAULT | regs.TCTL_COLD_FULL_DUPLEX
)
OTHER_MESSAGE = 0
PHY_AUTONEG = (
    regs.BMCR_AUTONEG_ENABLE
    | regs.BMCR_AUTONEG_RESTART
    | regs.BMCR_FULL_DUPLEX
    | regs.BMCR_SPEED_1000
)


class Igb(Nic):
    family = "igb"
    rx_format = ADVANCED_RX_FORMAT
    max_queues = 8

    def rx_tail_offset(self, queue: int) -> int:
        return r.RDT(queue)

    def tx_tail_offset(self, queue: int) -> int:
        return r.TDT(queue)

    def mask_all(self) -> None:
        self.bar.write32(regs.IMC, 0xFFFFFFFF)
        self.bar.write32(r.EIMC, 0xFFFFFFFF)

    def messages_wanted(self, counts: object) -> int | None:
        return 1 + self.config.queues

    def init_hw(self) -> None:
        bar = self.bar
        cfg = self.config
        self.begin_init()
        for q in range(cfg.queues):
            bar.write32(r.TXDCTL(q), 0)
            self.program_ring(r.TDBAL(q), self.tx_desc_iova[q])
            bar.write32(r.TXDCTL(q), r.XDCTL_ENABLE)
        self.start_tx(TCTL_BASE)
        if cfg.queues > 1:
            self.program_rss(bytes(i % cfg.queues for i in range(regs.RETA_ENTRIES)),
                             r.MRQC_ENABLE_RSS_MQ)  # fmt: skip
        srrctl = r.SRRCTL_DESCTYPE_ADV_ONEBUF | (cfg.buffer_size // r.SRRCTL_BSIZEPKT_UNIT)
        for q in range(cfg.queues):
            bar.write32(r.RXDCTL(q), 0)
            self.program_ring(r.RDBAL(q), self.rx_desc_iova[q])
            bar.write32(r.SRRCTL(q), srrctl)
            bar.write32(r.RXDCTL(q), r.XDCTL_ENABLE)
        bar.write32(r.RLPML, cfg.max_frame + r.RLPML_FCS)  # the longest frame accepted
        self.start_rx()
        if Flag.PHY_RESTART_AUTONEG in self.quirks:  # else the link stays down
            self.phy_write(regs.PHY_BMCR, PHY_AUTONEG)

    def interrupt_mode(self, kind: InterruptType) -> InterruptMode:
        return IgbMsix(self) if kind is InterruptType.MSIX else IgbSharedLine(self)

    def stop_hw(self) -> None:
        super().stop_hw()
        for q in range(self.config.queues):
            self.bar.write32(r.RXDCTL(q), 0)
            self.bar.write32(r.TXDCTL(q), 0)
        self.bar.write32(regs.MRQC, 0)


def set_ivar(nic: Nic, queue: int, vector: int) -> None:
    """Map RX queue ``queue`` to ``vector``; TX entries stay invalid (no TX interrupts)."""
    bar = nic.bar
    reg, shift = r.ivar_entry_shift(queue, False, Flag.IVAR_82580_LAYOUT in nic.quirks)
    value = bar.read32(reg) & ~(r.IVAR_ENTRY_MASK << shift)
    bar.write32(reg, value | ((vector | r.IVAR_VALID) << shift))


class IgbSharedLine(SharedLine):
    """Line-based and MSI: ICR as on every family, with GPIE.NSICR so reads clear."""

    def configure(self, plans: list[MessagePlan]) -> None:
        self.bar.write32(r.GPIE, r.Gpie.NSICR)
        # quirks.Flag.EMU_IVAR_VALID_WITHOUT_MSIX: harmless on silicon, so always.
        for q in range(self.nic.config.queues):
            set_ivar(self.nic, q, 0)


class IgbMsix(InterruptMode):
    """MSI-X on the 82576: message 0 for the other causes, message 1+q for RX queue q.

    EIAC auto-clears each EICR bit as its message goes out; nothing
    auto-masks, so the ISR masks its own message with EIMC and the enable
    handler unmasks it with EIMS. TX queues have no message (IVAR invalid).
    """

    def plan(self, count: int) -> list[MessagePlan]:
        queues = range(min(self.nic.config.queues, count - 1))
        return [MessagePlan(other=True)] + [MessagePlan(rx=(q,)) for q in queues]

    def configure(self, plans: list[MessagePlan]) -> None:
        bar = self.bar
        bar.write32(r.GPIE, r.Gpie.MSIX_MODE | r.Gpie.NSICR | r.Gpie.EIAME | r.Gpie.PBA)
        bar.write32(r.IVAR_MISC, (OTHER_MESSAGE | r.IVAR_VALID) << r.IVAR_MISC_OTHER_SHIFT)
        for q in range(self.nic.config.queues):
            set_ivar(self.nic, q, 1 + q)
        bar.write32(r.EIAC, (1 << len(plans)) - 1)
        interval = round(self.nic.config.itr_us or 0) << r.EITR_INTERVAL_SHIFT
        for v in range(len(plans)):
            bar.write32(r.EITR(v), interval)
        # Only LSC: any other enabled ICR cause would also fire message 0.
        bar.write32(regs.IMS, regs.Icr.LSC)

    def isr(self, message_id: int) -> IsrResult:
        self.disable(message_id)
        return ISR_QUEUE_DEFAULT_DPC

    def other_causes(self, message_id: int) -> int:
        return self.bar.read32(regs.ICR)  # NSICR: the read clears

    def enable(self, message_id: int) -> None:
        self.bar.write32(r.EIMS, 1 << message_id)

    def disable(self, message_id: int) -> None:
        self.bar.write32(r.EIMC, 1 << message_id)
