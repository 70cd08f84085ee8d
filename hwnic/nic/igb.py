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

from hwnic.ndis import InterruptType
from hwnic.nic import regs
from hwnic.nic import regs_igb as r
from hwnic.nic.base import MessagePlan, Nic
from hwnic.nic.descriptors import ADVANCED_RX_FORMAT

TCTL_RTLC = 1 << 24  # retransmit on late collision
TCTL_BASE = (
    regs.Tctl.EN | regs.Tctl.PSP | TCTL_RTLC | regs.TCTL_CT_DEFAULT | regs.TCTL_COLD_FULL_DUPLEX
)
SRRCTL_DESCTYPE_ADV_ONEBUF = 1 << 25
SRRCTL_BSIZEPKT_UNIT = 1024  # BSIZEPKT counts kilobytes
MRQC_ENABLE_RSS_MQ = 0x2
OTHER_MESSAGE = 0
# EITR interval field: bits 14:2 in microseconds on the 82576.
EITR_INTERVAL_SHIFT = 2
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
        return r.RDBAL0 + queue * r.QUEUE_STRIDE + regs.DT

    def tx_tail_offset(self, queue: int) -> int:
        return r.TDBAL0 + queue * r.QUEUE_STRIDE + regs.DT

    def mask_all(self) -> None:
        self.bar.write32(regs.IMC, 0xFFFFFFFF)
        self.bar.write32(r.EIMC, 0xFFFFFFFF)

    def messages_wanted(self, counts: object) -> int | None:
        return 1 + self.config.queues

    def init_hw(self) -> None:
        bar = self.bar
        cfg = self.config
        ring_bytes = cfg.ring_size * 16
        bar.write32(regs.RCTL, 0)
        bar.write32(regs.TCTL, regs.Tctl.PSP)
        for q in range(cfg.queues):
            off = q * r.QUEUE_STRIDE
            bar.write32(r.TXDCTL0 + off, 0)
            self.program_ring(r.TDBAL0 + off, self.tx_desc_iova[q], ring_bytes)
            bar.write32(r.TXDCTL0 + off, r.XDCTL_ENABLE)
        bar.write32(regs.TCTL, TCTL_BASE)
        if cfg.queues > 1:
            bar.write32(regs.RXCSUM, regs.RXCSUM_PCSD)
            reta = bytes(i % cfg.queues for i in range(regs.RETA_ENTRIES))
            regs.write_rss_tables(bar.write32, reta, regs.RSS_DEFAULT_KEY)
            bar.write32(regs.MRQC, MRQC_ENABLE_RSS_MQ | regs.MRQC_RSS_FIELDS)
        srrctl = SRRCTL_DESCTYPE_ADV_ONEBUF | (cfg.buffer_size // SRRCTL_BSIZEPKT_UNIT)
        for q in range(cfg.queues):
            off = q * r.QUEUE_STRIDE
            bar.write32(r.RXDCTL0 + off, 0)
            self.program_ring(r.RDBAL0 + off, self.rx_desc_iova[q], ring_bytes)
            bar.write32(r.SRRCTL0 + off, srrctl)
            bar.write32(r.RXDCTL0 + off, r.XDCTL_ENABLE)
        filters = self.set_filters()
        bar.write32(regs.RCTL, regs.Rctl.EN | filters | regs.Rctl.SECRC)
        # Link comes up only after autonegotiation is restarted (QEMU and HW alike).
        self.phy_write(regs.PHY_BMCR, PHY_AUTONEG)

    def plan_messages(self, kind: InterruptType, count: int) -> list[MessagePlan]:
        if kind is not InterruptType.MSIX:
            return super().plan_messages(kind, count)
        queues = range(min(self.config.queues, count - 1))
        return [MessagePlan(other=True)] + [MessagePlan(rx=(q,)) for q in queues]

    def _set_ivar(self, queue: int, vector: int) -> None:
        """Map RX queue ``queue`` to ``vector``; TX entries stay invalid (no TX interrupts)."""
        reg, shift = r.ivar_entry_shift(queue, False)
        value = self.bar.read32(reg) & ~(0xFF << shift)
        self.bar.write32(reg, value | ((vector | r.IVAR_VALID) << shift))

    def configure_interrupts(self, kind: InterruptType) -> None:
        bar = self.bar
        if kind is InterruptType.MSIX:
            bar.write32(r.GPIE, r.Gpie.MSIX_MODE | r.Gpie.NSICR | r.Gpie.EIAME | r.Gpie.PBA)
            other = (OTHER_MESSAGE | r.IVAR_VALID) << r.IVAR_MISC_OTHER_SHIFT
            bar.write32(r.IVAR_MISC, other)
            for q in range(self.config.queues):
                self._set_ivar(q, 1 + q)
            vectors = (1 << len(self._plans)) - 1
            bar.write32(r.EIAC, vectors)
            interval = round(self.config.itr_us or 0) << EITR_INTERVAL_SHIFT
            for v in range(len(self._plans)):
                bar.write32(r.EITR0 + v * r.EITR_STRIDE, interval)
            # Only LSC: any other enabled ICR cause would also fire message 0.
            bar.write32(regs.IMS, regs.Icr.LSC)
        else:
            bar.write32(r.GPIE, r.Gpie.NSICR)
            # QEMU raises a queue's cause only when its IVAR entry is valid,
            # even without MSI-X (igb_start_xmit, igb_receive): RX entries only.
            for q in range(self.config.queues):
                self._set_ivar(q, 0)

    def msix_ack_and_mask(self, message_id: int) -> None:
        self.bar.write32(r.EIMC, 1 << message_id)

    def msix_mask(self, message_id: int) -> None:
        self.bar.write32(r.EIMC, 1 << message_id)

    def msix_unmask(self, message_id: int) -> None:
        self.bar.write32(r.EIMS, 1 << message_id)

    def other_causes(self, message_id: int) -> int:
        if self.interrupt is None or self.interrupt.granted_type is not InterruptType.MSIX:
            return 0
        return self.bar.read32(regs.ICR)  # NSICR: the read clears

    def stop_hw(self) -> None:
        super().stop_hw()
        for q in range(self.config.queues):
            self.bar.write32(r.RXDCTL0 + q * r.QUEUE_STRIDE, 0)
            self.bar.write32(r.TXDCTL0 + q * r.QUEUE_STRIDE, 0)
        self.bar.write32(regs.MRQC, 0)
