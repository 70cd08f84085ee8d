"""82574L (e1000e): two RX and two TX queues, MSI-X with five causes, MSI, INTx.

Under MSI-X, IVAR maps the causes RxQ0, RxQ1, TxQ0, TxQ1 and Other to
messages 0 to 4; the TX messages stay masked (the send path reclaims). EIAC
auto-clears the queue causes as each message goes out, so every new event is
a new edge; the ISR masks its own cause with IMC (real parts need it; QEMU
auto-masks as well, see quirks) and the enable handler unmasks it with IMS. The Other
message reads and acknowledges ICR (W1C) for link changes. With two queues,
RSS spreads flows (MRQC, RETA, extended descriptors, as the 82574 requires).
"""

from __future__ import annotations

from hwnic.ndis import ISR_QUEUE_DEFAULT_DPC, InterruptType, IsrResult
from hwnic.nic import regs
from hwnic.nic import regs_e1000e as r
from hwnic.nic.base import Nic, NicConfig
from hwnic.nic.descriptors import EXTENDED_RX_FORMAT, LEGACY_RX_FORMAT
from hwnic.nic.irq import InterruptMode, MessagePlan
from hwnic.vfio import Device

TIPG_82574 = regs.tipg(8, 8, 6)
TCTL_BASE = regs.Tctl.EN | regs.Tctl.PSP | regs.TCTL_CT_DEFAULT | regs.TCTL_COLD_FULL_DUPLEX
QUEUE_CAUSES = r.IcrMsix.RXQ0 | r.IcrMsix.RXQ1 | r.IcrMsix.TXQ0 | r.IcrMsix.TXQ1
OTHER_CAUSES = r.IcrMsix.OTHER | regs.Icr.LSC


class E1000e(Nic):
    family = "e1000e"
    rx_format = LEGACY_RX_FORMAT
    max_queues = 2

    def __init__(self, device: Device, config: NicConfig | None = None, **kw: object) -> None:
        cfg = config or NicConfig()
        if cfg.queues > 1:
            self.rx_format = EXTENDED_RX_FORMAT  # RSS needs extended descriptors
        super().__init__(device, cfg, **kw)  # type: ignore[arg-type]

    def init_hw(self) -> None:
        bar = self.bar
        cfg = self.config
        self.begin_init()
        for q in range(cfg.queues):
            self.program_ring(regs.TDBAL(q), self.tx_desc_iova[q])
            bar.write32(r.TARC(q), bar.read32(r.TARC(q)) | r.TARC_ENABLE)
        self.start_tx(TCTL_BASE, TIPG_82574)
        if cfg.queues > 1:
            bar.write32(regs.RFCTL, bar.read32(regs.RFCTL) | regs.RFCTL_EXTEN)
            reta = bytes(r.RETA_QUEUE1 if i % 2 else 0 for i in range(regs.RETA_ENTRIES))
            self.program_rss(reta, r.MRQC_ENABLE_RSS_2Q)
        for q in range(cfg.queues):
            self.program_ring(regs.RDBAL(q), self.rx_desc_iova[q])
        self.no_rx_delay()
        self.start_rx(regs.rctl_buffer_size(cfg.buffer_size))

    def interrupt_mode(self, kind: InterruptType) -> InterruptMode:
        return E1000eMsix(self) if kind is InterruptType.MSIX else super().interrupt_mode(kind)

    def stop_hw(self) -> None:
        super().stop_hw()
        self.bar.write32(regs.MRQC, 0)


class E1000eMsix(InterruptMode):
    """MSI-X on the 82574: five causes, each with its own message (IVAR).

    Message n serves IVAR cause n: RxQ0, RxQ1, TxQ0, TxQ1, Other. EIAC
    auto-clears the queue causes as each message goes out, so every new event
    is a new edge. The TX messages stay masked (the send path reclaims).
    """

    def plan(self, count: int) -> list[MessagePlan]:
        two = self.nic.config.queues > 1
        plans = [
            MessagePlan(rx=(0,)),
            MessagePlan(rx=(1,) if two else ()),
            MessagePlan(),  # TxQ0: masked
            MessagePlan(),  # TxQ1: masked
            MessagePlan(other=True),
        ]
        return plans[:count]

    def configure(self, plans: list[MessagePlan]) -> None:
        bar = self.bar
        ctrl_ext = bar.read32(regs.CTRL_EXT) & ~(r.CtrlExt.IAME | r.CtrlExt.EIAME)
        bar.write32(regs.CTRL_EXT, ctrl_ext | r.CtrlExt.PBA_CLR)
        causes = {c: c for c in range(r.IVAR_CAUSES)}  # cause n -> message n
        bar.write32(r.IVAR, r.ivar_value(causes))
        bar.write32(r.EIAC, QUEUE_CAUSES)
        for v in range(r.IVAR_CAUSES):
            bar.write32(r.EITR(v), self.nic.itr_value(0))

    @staticmethod
    def _causes(message_id: int) -> int:
        if message_id == r.IvarCause.OTHER:
            return int(OTHER_CAUSES)
        return int(r.MSIX_CAUSE_BITS[message_id])

    def isr(self, message_id: int) -> IsrResult:
        # Mask our cause with IMC: the 82574L needs it (Flag.EMU_MSIX_AUTOMASK).
        self.disable(message_id)
        return ISR_QUEUE_DEFAULT_DPC

    def other_causes(self, message_id: int) -> int:
        icr = self.bar.read32(regs.ICR)
        # Write 1 to clear (a read alone may not under MSI-X), but never a queue
        # cause: one pending behind a masked message must still fire on unmask.
        self.bar.write32(regs.ICR, icr & ~QUEUE_CAUSES)
        return icr

    def enable(self, message_id: int) -> None:
        self.bar.write32(regs.IMS, self._causes(message_id))

    def disable(self, message_id: int) -> None:
        self.bar.write32(regs.IMC, self._causes(message_id))
