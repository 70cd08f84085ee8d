"""Every behaviour that differs between parts, or between silicon and QEMU: one table.

The flags are named like Linux's ``FLAG_*`` bits and chosen once, when a port
is opened, from its PCI ids (:func:`for_ids`): the part's own flags from
:data:`PARTS`, plus :data:`EMULATED` when the ids are QEMU's (subsystem
vendor 0x1af4, Red Hat, on its e1000 and igb; 8086:0000 on its e1000e).
No other file asks whether it runs on QEMU; a model tests a flag. A
workaround that is harmless on silicon is applied to every part of the
family and still named here (``ALWAYS``), so the reason stays written.

Sources: the 82540EM/82574L/82576/I350/I210 datasheets, Linux's e1000, e1000e
and igb drivers, and QEMU 10's ``hw/net/e1000.c``, ``e1000e_core.c`` and
``igb_core.c`` (docs/qemu-models.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag

QEMU_SUBSYSTEM_VENDOR = 0x1AF4  # Red Hat, Inc.: QEMU's emulated NICs carry it
PCI_SUBSYSTEM_VENDOR_ID = 0x2C  # config space offset
PCI_DEVICE_ID = 0x02
PCI_SUBSYSTEM_ID = 0x2E
INTEL_VENDOR = 0x8086
# QEMU's e1000e is the exception: its subsystem ids default to 8086:0000
# (e1000e.c, properties subsys_ven/subsys), which no 82574L board carries.
QEMU_E1000E_SUBSYSTEM = (INTEL_VENDOR, 0x0000)
# QEMU's 82540EM refuses frames for about 1 s after each RCTL write, then
# delivers what queued meanwhile at once, dropping what exceeds the ring.
EMU_RCTL_BLACKOUT_S = 1.1
# Statistics QEMU's models never clear on read (silicon does).
EMU_STATS_NOT_CLEARED = frozenset({"mpc", "rnbc", "crcerrs"})


class Flag(IntFlag):
    # -- differences between parts (datasheets) -------------------------------------
    # IVAR layout. 82576: IVAR n holds RxQ n, TxQ n, RxQ n+8, TxQ n+8 (a byte each).
    # I350/I210 (the 82580 layout): IVAR n holds RxQ 2n, TxQ 2n, RxQ 2n+1, TxQ 2n+1.
    IVAR_82580_LAYOUT = 1 << 0
    # I210 flash-less parts keep their words in iNVM: no EEPROM checksum to check.
    NVM_FLASHLESS = 1 << 1
    # EERD layout: 8254x has START bit 0, DONE bit 4, address at bit 8; the
    # 82574/82576/I350/I210 have DONE bit 1, address at bit 2.
    EERD_8254X = 1 << 2
    # igb parts: the link comes up only after autonegotiation is restarted
    # through the PHY after every reset (silicon and QEMU alike).
    PHY_RESTART_AUTONEG = 1 << 3

    # -- QEMU's models (subsystem vendor 0x1af4) -----------------------------------
    # hw/net/e1000.c: RX blocked ~1 s after each RCTL write; open() waits it out.
    EMU_RCTL_BLACKOUT = 1 << 8
    # All three models: MPC, RNBC and CRCERRS never clear on read; hwnic takes
    # the difference from the last value instead.
    EMU_STATS_NOT_CLEARED = 1 << 9
    # hw/net/e1000.c: CTRL.RST does nothing. Harmless: open() rewrites every
    # register it relies on. Named only.
    EMU_RST_NOOP = 1 << 10
    # e1000e_core.c: under MSI-X the model auto-masks a cause as its message
    # goes out; the 82574L does not, so the ISR writes IMC on both. Named only.
    EMU_MSIX_AUTOMASK = 1 << 11
    # igb_core.c raises a queue's cause only when its IVAR entry is valid, also
    # without MSI-X, where silicon ignores IVAR. Harmless there: RX entries are
    # made valid in every mode on every igb part (ALWAYS).
    EMU_IVAR_VALID_WITHOUT_MSIX = 1 << 12
    # hw/net/e1000.c ignores RCTL.LBM (the frame goes out on the wire); PHY
    # loopback (BMCR.LOOPBACK through MDIC) works. A loopback test uses the PHY.
    EMU_NO_MAC_LOOPBACK = 1 << 13
    # e1000x_restart_autoneg: restarting autonegotiation drops the link without
    # an LSC interrupt; LSC comes only when it completes. A flap driven through
    # the PHY shows one reported link change, not two (silicon reports both).
    EMU_NO_LSC_ON_AUTONEG_RESTART = 1 << 14


NO_FLAGS = Flag(0)
# Workarounds applied on every part of a family (harmless on silicon).
ALWAYS = Flag.EMU_IVAR_VALID_WITHOUT_MSIX
EMULATED = {
    "e1000": (
        Flag.EMU_RCTL_BLACKOUT
        | Flag.EMU_STATS_NOT_CLEARED
        | Flag.EMU_RST_NOOP
        | Flag.EMU_NO_MAC_LOOPBACK
        | Flag.EMU_NO_LSC_ON_AUTONEG_RESTART
    ),
    "e1000e": (
        Flag.EMU_STATS_NOT_CLEARED | Flag.EMU_MSIX_AUTOMASK | Flag.EMU_NO_LSC_ON_AUTONEG_RESTART
    ),
    "igb": Flag.EMU_STATS_NOT_CLEARED | Flag.EMU_NO_LSC_ON_AUTONEG_RESTART,
}


@dataclass(frozen=True)
class Part:
    """One controller: its name, the hwnic family driving it, queues and flags."""

    name: str
    family: str
    max_queues: int  # RX/TX queue pairs hwnic may use on it
    flags: Flag = NO_FLAGS


_E1000 = Flag.EERD_8254X
_82576 = Flag.PHY_RESTART_AUTONEG | ALWAYS
_I350 = Flag.PHY_RESTART_AUTONEG | Flag.IVAR_82580_LAYOUT | ALWAYS
_I210 = _I350
# hwnic drives at most 8 queue pairs (one MSI-X message each plus "other").
IGB_MAX_QUEUES = 8

PARTS: dict[int, Part] = {
    0x100E: Part("82540EM", "e1000", 1, _E1000),
    0x1015: Part("82540EM LOM", "e1000", 1, _E1000),
    0x100F: Part("82545EM", "e1000", 1, _E1000),
    0x10D3: Part("82574L", "e1000e", 2),
    0x10F6: Part("82574LA", "e1000e", 2),
    0x10C9: Part("82576", "igb", IGB_MAX_QUEUES, _82576),
    0x10E6: Part("82576 fiber", "igb", IGB_MAX_QUEUES, _82576),
    0x10E7: Part("82576 serdes", "igb", IGB_MAX_QUEUES, _82576),
    0x10E8: Part("82576 quad copper", "igb", IGB_MAX_QUEUES, _82576),
    0x1526: Part("82576 quad copper ET2", "igb", IGB_MAX_QUEUES, _82576),
    0x150A: Part("82576NS", "igb", IGB_MAX_QUEUES, _82576),
    0x1518: Part("82576NS serdes", "igb", IGB_MAX_QUEUES, _82576),
    0x150D: Part("82576 serdes quad", "igb", IGB_MAX_QUEUES, _82576),
    0x1521: Part("I350 copper", "igb", 8, _I350),
    0x1522: Part("I350 fiber", "igb", 8, _I350),
    0x1523: Part("I350 serdes", "igb", 8, _I350),
    0x1524: Part("I350 SGMII", "igb", 8, _I350),
    0x1533: Part("I210 copper", "igb", 4, _I210),
    0x1536: Part("I210 fiber", "igb", 4, _I210),
    0x1537: Part("I210 serdes", "igb", 4, _I210),
    0x1538: Part("I210 SGMII", "igb", 4, _I210),
    0x157B: Part("I210 copper flashless", "igb", 4, _I210 | Flag.NVM_FLASHLESS),
    0x157C: Part("I210 serdes flashless", "igb", 4, _I210 | Flag.NVM_FLASHLESS),
    0x1539: Part("I211 copper", "igb", 2, _I210 | Flag.NVM_FLASHLESS),
}


@dataclass(frozen=True)
class Quirks:
    """What one opened port is: its part, whether QEMU emulates it, and its flags."""

    part: Part
    emulated: bool
    flags: Flag

    def __contains__(self, flag: Flag) -> bool:
        return bool(self.flags & flag)


def is_emulated(device_id: int, subsystem_vendor: int, subsystem_id: int) -> bool:
    """Whether the PCI ids are those of one of QEMU's models."""
    if subsystem_vendor == QEMU_SUBSYSTEM_VENDOR:
        return True
    part = PARTS.get(device_id)
    return (
        part is not None
        and part.family == "e1000e"
        and (subsystem_vendor, subsystem_id) == QEMU_E1000E_SUBSYSTEM
    )


def for_ids(
    device_id: int, subsystem_vendor: int, family: str, subsystem_id: int | None = None
) -> Quirks:
    """The quirks of a port from its PCI ids (an unknown id gets its family's defaults)."""
    part = PARTS.get(device_id) or Part(f"8086:{device_id:04x}", family, 1)
    sub_id = 0xFFFF if subsystem_id is None else subsystem_id
    emulated = is_emulated(device_id, subsystem_vendor, sub_id)
    flags = part.flags | (EMULATED.get(part.family, NO_FLAGS) if emulated else NO_FLAGS)
    return Quirks(part, emulated, flags)
