"""A register-level fake NIC, so the models run on the host without VFIO.

:class:`FakeDevice` stands where :class:`hwnic.vfio.Device` stands: BAR0 is a
dict of registers with the few side effects the models rely on, interrupts
are plain eventfds, DMA "mapping" is bookkeeping. :meth:`FakeDevice.deliver`
plays the NIC's receive side: it writes frames into armed RX descriptors,
sets the cause and signals the message's eventfd (if unmasked), so the real
NDIS framework runs the model's ISR and DPC.

Side effects modelled (each one a model depends on):

* ICR and EICR clear on read; a write to ICR clears the bits written (W1C);
* IMS/IMC and EIMS/EIMC set and clear one mask, read back through IMS/EIMS;
* CTRL.RST and MDIC complete at once (RST self-clears, MDIC reads READY);
* STATUS reports link up, 1000 Mb/s, full duplex; RAL0/RAH0 hold the MAC;
* EERD reads :attr:`FakeBar.eeprom` (64 words summing to 0xBABA, as QEMU's
  image) in the family's layout (quirks.Flag.EERD_8254X on the e1000).

Everything else is plain storage: what a model wrote is what a test reads.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np

from hwnic.nic import quirks, regs
from hwnic.nic import regs_igb as r_igb
from hwnic.nic.descriptors import as_qwords, as_raw
from hwnic.nic.rx_ring import RxRing
from hwnic.vfio import IrqIndex

FAKE_MAC = "02:00:00:00:00:aa"
DEVICE_IDS = {"e1000": 0x100E, "e1000e": 0x10D3, "igb": 0x10C9}  # QEMU's three models
EOP = 1 << 1  # RX status: end of packet (legacy and advanced)
DD = 1 << 0  # RX status: descriptor done
_READ_CLEAR = (regs.ICR, r_igb.EICR)
_MASKS = {  # set register, clear register -> the mask both act on
    regs.IMS: regs.IMS,
    regs.IMC: regs.IMS,
    r_igb.EIMS: r_igb.EIMS,
    r_igb.EIMC: r_igb.EIMS,
}


class FakeBar:
    """BAR0 as a dict of 32-bit registers (see the module docstring)."""

    def __init__(self, family: str) -> None:
        self.family = family
        self.regs: dict[int, int] = {}
        self.writes: list[tuple[int, int]] = []  # every write, in order
        self.lock = threading.Lock()
        ral, rah = regs.ra_from_mac(FAKE_MAC)
        self.regs[regs.RAL0] = ral
        self.regs[regs.RAH0] = rah
        self.regs[regs.STATUS] = int(regs.Status.LU | regs.Status.FD | regs.Status.SPEED_1000)
        self.eeprom = valid_eeprom()

    def read32(self, offset: int) -> int:
        with self.lock:
            value = self.regs.get(offset, 0)
            if offset in _READ_CLEAR:
                self.regs[offset] = 0
            return value

    def write32(self, offset: int, value: int) -> None:
        value &= 0xFFFFFFFF
        with self.lock:
            self.writes.append((offset, value))
            if offset in (regs.IMS, r_igb.EIMS):
                self.regs[offset] = self.regs.get(offset, 0) | value
            elif offset in (regs.IMC, r_igb.EIMC):
                mask = _MASKS[offset]
                self.regs[mask] = self.regs.get(mask, 0) & ~value
            elif offset == regs.ICR:
                self.regs[offset] = self.regs.get(offset, 0) & ~value
            elif offset == regs.CTRL:
                self.regs[offset] = value & ~regs.Ctrl.RST
            elif offset == regs.EERD:
                self.regs[offset] = self._eerd(value)
            elif offset == regs.MDIC:
                self.regs[offset] = value | regs.MDIC_READY
            else:
                self.regs[offset] = value

    def _eerd(self, value: int) -> int:
        """What EERD reads after a request: DONE and the word, in the family's layout."""
        old = self.family == "e1000"  # quirks.Flag.EERD_8254X
        shift = regs.EERD_ADDR_SHIFT_8254X if old else regs.EERD_ADDR_SHIFT
        done = regs.EERD_DONE_8254X if old else regs.EERD_DONE
        address = (value >> shift) & (regs.NVM_CHECKSUM_WORDS - 1)
        if not value & regs.EERD_START:
            return value
        word = int(self.eeprom[address])
        return (word << regs.EERD_DATA_SHIFT) | (address << shift) | done

    def written(self, offset: int) -> list[int]:
        """Every value written to ``offset``, oldest first."""
        with self.lock:
            return [v for o, v in self.writes if o == offset]

    def set_cause(self, offset: int, bits: int) -> None:
        """The NIC raising a cause (ICR or EICR)."""
        with self.lock:
            self.regs[offset] = self.regs.get(offset, 0) | bits


def valid_eeprom() -> np.ndarray:
    """64 NVM words whose last (checksum) word makes them add up to regs.NVM_SUM."""
    words = np.arange(regs.NVM_CHECKSUM_WORDS, dtype=np.uint16) * 0x0101
    words[-1] = (regs.NVM_SUM - int(words[:-1].sum(dtype=np.uint64))) & 0xFFFF
    return words


@dataclass
class _Irq:
    count: int
    flags: int = 0


class FakeDevice:
    """What :class:`hwnic.nic.base.Nic` uses of a VFIO device, without VFIO."""

    def __init__(
        self,
        family: str,
        *,
        msix: int = 0,
        msi: int = 1,
        intx: int = 1,
        device_id: int | None = None,
        emulated: bool = True,
    ) -> None:
        self.bdf = f"fake:{family}"
        self.family = family
        self._bar = FakeBar(family)
        self._counts = {IrqIndex.INTX: intx, IrqIndex.MSI: msi, IrqIndex.MSIX: msix}
        self.eventfds: dict[int, list[int]] = {}
        self.bus_master = False
        self.mappings: dict[int, int] = {}  # iova -> size
        self.intx_unmasks = 0
        self.config_space = {
            quirks.PCI_DEVICE_ID: DEVICE_IDS[family] if device_id is None else device_id,
            quirks.PCI_SUBSYSTEM_VENDOR_ID: (
                quirks.QEMU_SUBSYSTEM_VENDOR if emulated else quirks.INTEL_VENDOR
            ),
            quirks.PCI_SUBSYSTEM_ID: 0x1100 if emulated else 0xA01F,
        }
        self.closed = False
        self._heads: dict[int, int] = {}  # per RX ring: the next descriptor to write back

    def bar(self, n: int) -> FakeBar:
        return self._bar

    def config_read(self, offset: int, size: int) -> int:
        return self.config_space.get(offset, 0)

    def set_bus_master(self, enabled: bool) -> None:
        self.bus_master = enabled

    def map_dma(self, vaddr: int, iova: int, size: int) -> None:
        self.mappings[iova] = size

    def unmap_dma(self, iova: int, size: int) -> None:
        self.mappings.pop(iova, None)

    def irq_info(self, index: IrqIndex | int) -> _Irq:
        return _Irq(self._counts[IrqIndex(index)])

    def enable_irq(
        self, index: IrqIndex | int, count: int | None = None, *, start: int = 0
    ) -> list[int]:
        n = self._counts[IrqIndex(index)] if count is None else count
        fds = [os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK) for _ in range(n)]
        self.eventfds[int(index)] = fds
        return fds

    def disable_irq(self, index: IrqIndex | int) -> None:
        for fd in self.eventfds.pop(int(index), []):
            os.close(fd)

    def unmask_intx(self) -> None:
        self.intx_unmasks += 1

    def close(self) -> None:
        for index in list(self.eventfds):
            self.disable_irq(index)
        self.closed = True

    def signal(self, message_id: int) -> None:
        """Fire message ``message_id`` of whichever interrupt index is enabled."""
        for fds in self.eventfds.values():
            if message_id < len(fds):
                os.eventfd_write(fds[message_id], 1)
                return
        raise AssertionError(f"no enabled interrupt has message {message_id}")

    def write_back(
        self, ring: RxRing, tail_offset: int, frames: np.ndarray, lengths: np.ndarray
    ) -> int:
        """Write frames into the armed descriptors of an RX ring, from its head on.

        ``tail_offset`` is the ring's RDT register (the armed end). Returns how
        many fitted. The caller then raises the cause (:meth:`FakeBar.set_cause`)
        and :meth:`signal` s the message.
        """
        head = self._heads.get(id(ring), 0)
        room = (self._bar.regs.get(tail_offset, 0) - head) % ring.size
        n = min(len(lengths), room)
        raw, q = as_raw(ring.descs), as_qwords(ring.descs)
        fmt = ring.fmt
        for i in range(n):  # the device's side, one descriptor at a time
            slot = (int(q[head, 0]) - ring.pool_iova) // ring.buffer_size
            length = int(lengths[i])
            ring.pool[slot, :length] = frames[i, :length]
            q[head, 1] = 0
            raw[head, fmt.length_offset : fmt.length_offset + 2] = np.frombuffer(
                length.to_bytes(2, "little"), np.uint8
            )
            raw[head, fmt.status_offset] = DD | EOP
            head = (head + 1) % ring.size
        self._heads[id(ring)] = head
        return n
