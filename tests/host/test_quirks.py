"""The quirks table: one entry per supported id, chosen once from the PCI ids."""

from __future__ import annotations

import pytest

from hwnic import pci
from hwnic.errors import UsageError
from hwnic.ndis import InterruptType
from hwnic.nic import model_class, quirks
from hwnic.nic import regs_igb as r_igb
from hwnic.nic.base import NicConfig
from hwnic.nic.quirks import Flag
from hwnic.nic.testing import FakeDevice


def test_every_supported_id_has_a_part_of_the_same_family() -> None:
    assert set(quirks.PARTS) == set(pci.SUPPORTED)
    for device_id, model in pci.SUPPORTED.items():
        assert quirks.PARTS[device_id].family == model.family, hex(device_id)


def test_emulation_flags_only_with_qemus_subsystem_vendor() -> None:
    silicon = quirks.for_ids(0x100E, 0x8086, "e1000")
    qemu = quirks.for_ids(0x100E, quirks.QEMU_SUBSYSTEM_VENDOR, "e1000")
    assert not silicon.emulated and Flag.EMU_RCTL_BLACKOUT not in silicon
    assert qemu.emulated and Flag.EMU_RCTL_BLACKOUT in qemu
    assert Flag.EERD_8254X in silicon and Flag.EERD_8254X in qemu
    # A harmless workaround is on for every igb part, silicon too, and named.
    assert Flag.EMU_IVAR_VALID_WITHOUT_MSIX in quirks.for_ids(0x1521, 0x8086, "igb")


def test_qemus_e1000e_is_known_by_its_intel_subsystem_0000() -> None:
    assert quirks.for_ids(0x10D3, 0x8086, "e1000e", 0x0000).emulated
    assert not quirks.for_ids(0x10D3, 0x8086, "e1000e", 0xA01F).emulated
    assert not quirks.for_ids(0x10C9, 0x8086, "igb", 0x0000).emulated  # only the e1000e


def test_part_differences() -> None:
    i210 = quirks.PARTS[0x1533]
    assert i210.max_queues == 4 and Flag.IVAR_82580_LAYOUT in i210.flags
    assert Flag.NVM_FLASHLESS in quirks.PARTS[0x157B].flags
    assert Flag.IVAR_82580_LAYOUT not in quirks.PARTS[0x10C9].flags
    assert quirks.for_ids(0xBEEF, 0, "igb").part.max_queues == 1  # unknown: be modest


def test_ivar_layouts() -> None:
    # 82576: RxQ q in IVAR q byte 0, RxQ q+8 in byte 2.
    assert r_igb.ivar_entry_shift(1, False) == (r_igb.IVAR0 + 4, 0)
    assert r_igb.ivar_entry_shift(9, False) == (r_igb.IVAR0 + 4, 16)
    assert r_igb.ivar_entry_shift(1, True) == (r_igb.IVAR0 + 4, 8)
    # I350/I210: RxQ 2n in IVAR n byte 0, RxQ 2n+1 in byte 2.
    assert r_igb.ivar_entry_shift(1, False, True) == (r_igb.IVAR0, 16)
    assert r_igb.ivar_entry_shift(2, False, True) == (r_igb.IVAR0 + 4, 0)
    assert r_igb.ivar_entry_shift(3, True, True) == (r_igb.IVAR0 + 4, 24)


def test_i350_msix_uses_its_ivar_layout() -> None:
    device = FakeDevice("igb", msix=10, device_id=0x1521, emulated=False)
    cfg = NicConfig(ring_size=64, wait_link=0, interrupt=InterruptType.MSIX, queues=2)
    nic = model_class("igb")(device, cfg)  # type: ignore[arg-type]
    try:
        ivar0 = device.bar(0).regs[r_igb.IVAR0]
        assert ivar0 & 0xFF == 1 | r_igb.IVAR_VALID  # RxQ0 -> message 1
        assert (ivar0 >> 16) & 0xFF == 2 | r_igb.IVAR_VALID  # RxQ1 -> message 2
        assert not nic.quirks.emulated
    finally:
        nic.close()


def test_i210_refuses_more_queues_than_it_has() -> None:
    device = FakeDevice("igb", msix=5, device_id=0x1533, emulated=False)
    with pytest.raises(UsageError, match="1 to 4"):
        model_class("igb")(device, NicConfig(wait_link=0, queues=5))  # type: ignore[arg-type]


def test_rctl_blackout_only_on_qemus_e1000(monkeypatch: pytest.MonkeyPatch) -> None:
    from hwnic.nic import e1000

    for emulated in (False, True):
        slept: list[float] = []
        monkeypatch.setattr(e1000.time, "sleep", slept.append)
        device = FakeDevice("e1000", msi=0, emulated=emulated)
        nic = model_class("e1000")(device, NicConfig(ring_size=64, wait_link=0))  # type: ignore[arg-type]
        nic.close()
        monkeypatch.undo()
        assert (quirks.EMU_RCTL_BLACKOUT_S in slept) is emulated
