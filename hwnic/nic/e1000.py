"""82540EM (e1000): one queue, line-based interrupts (INTx) only.

The ISR reads ICR, which clears it and deasserts the line; zero means another
device on a shared line raised it ("not mine"); the ISR masks every cause
with IMC and the last DPC of the batch unmasks them with IMS (irq.SharedLine).
What QEMU's model does differently (a no-op CTRL.RST, RX blocked for about
1 s after each RCTL write) is in hwnic.nic.quirks.
"""

from __future__ import annotations

import time

from hwnic.nic import quirks, regs
from hwnic.nic.base import Nic
from hwnic.nic.descriptors import LEGACY_RX_FORMAT
from hwnic.nic.quirks import Flag

# TIPG for the 82540EM's copper PHY: IPGT 10, IPGR1 8, IPGR2 6 (datasheet 13.4.34)
TIPG_82540 = regs.tipg(10, 8, 6)
TCTL_BASE = regs.Tctl.EN | regs.Tctl.PSP | regs.TCTL_CT_DEFAULT | regs.TCTL_COLD_FULL_DUPLEX


class E1000(Nic):
    family = "e1000"
    rx_format = LEGACY_RX_FORMAT
    max_queues = 1

    def init_hw(self) -> None:
        self.begin_init()
        self.program_ring(regs.TDBAL(0), self.tx_desc_iova[0])
        self.start_tx(TCTL_BASE, TIPG_82540)
        self.program_ring(regs.RDBAL(0), self.rx_desc_iova[0])
        self.no_rx_delay()
        self.start_rx(regs.rctl_buffer_size(self.config.buffer_size))
        if Flag.EMU_RCTL_BLACKOUT in self.quirks:
            time.sleep(quirks.EMU_RCTL_BLACKOUT_S)
