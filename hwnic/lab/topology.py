"""Which NICs the lab gets, and how they are wired: plain data, no QEMU here.

NICs are paired two by two on QEMU hubs (1+2 on hub 0, 3+4 on hub 1, ...), so
each pair behaves like two ports cabled back to back; an odd last NIC gets a
hub of its own. Every NIC sits behind its own ``pcie-root-port`` at a fixed
slot of the root bus, which is also how the guest finds it again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from hwnic.errors import LabError, UsageError

# QEMU device name -> PCI device id (vendor 8086) the emulated NIC reports.
MODELS: dict[str, int] = {
    "e1000": 0x100E,  # 82540EM
    "e1000e": 0x10D3,  # 82574L
    "igb": 0x10C9,  # 82576
}
DEFAULT_NICS = ("igb", "igb")

PORTS_PER_HUB = 2
# Root ports go at fixed root-bus slots, above the ones virtme-ng's own
# devices get assigned (it adds about ten), below the q35 chipset at 0x1f.
FIRST_ROOT_PORT_SLOT = 0x10
MAX_NICS = 8
# Locally administered QEMU prefix; the last byte is the NIC number, from 1.
MAC_PREFIX = "52:54:00:12:34"


@dataclass(frozen=True)
class LabNic:
    """One emulated NIC: its QEMU names, wiring and (inside the guest) address."""

    index: int
    model: str
    qemu_id: str  # -device id, accepted by QMP set_link
    netdev: str  # the hubport netdev id, also accepted by set_link
    mac: str
    hub: int
    root_port: str  # id of its pcie-root-port
    slot: int  # root-bus slot of that root port
    bdf: str | None = None  # filled in by the guest

    @property
    def address(self) -> str:
        """The guest PCI address; only inside the lab, once the guest located it."""
        if self.bdf is None:
            raise LabError(f"{self.qemu_id} has no guest PCI address", "run this inside the lab")
        return self.bdf

    @property
    def pci_device_id(self) -> int:
        return MODELS[self.model]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabNic:
        return cls(**data)


def check_models(models: list[str]) -> None:
    """Raise :class:`UsageError` for an unknown model or too many NICs."""
    for model in models:
        if model not in MODELS:
            raise UsageError(
                f"unknown NIC model '{model}'",
                f"choose from {', '.join(MODELS)}",
            )
    if not models:
        raise UsageError("the lab needs at least one NIC", "give --nic MODEL")
    if len(models) > MAX_NICS:
        raise UsageError(
            f"{len(models)} NICs asked for, the lab has slots for {MAX_NICS}",
            "give fewer --nic options",
        )


def plan_nics(models: list[str] | tuple[str, ...]) -> list[LabNic]:
    """Number, name and wire the NICs in the order given."""
    models = list(models)
    check_models(models)
    return [
        LabNic(
            index=i,
            model=model,
            qemu_id=f"nic{i}",
            netdev=f"hp{i}",
            mac=f"{MAC_PREFIX}:{i + 1:02x}",
            hub=i // PORTS_PER_HUB,
            root_port=f"rp{i}",
            slot=FIRST_ROOT_PORT_SLOT + i,
        )
        for i, model in enumerate(models)
    ]


def peers(nics: list[LabNic], nic: LabNic) -> list[LabNic]:
    """The other NICs on ``nic``'s hub: those that receive what it sends."""
    return [n for n in nics if n.hub == nic.hub and n.index != nic.index]


def pairs(nics: list[LabNic]) -> dict[str, tuple[LabNic, LabNic]]:
    """For each model: the first two NICs of it on one hub (the sender first)."""
    found: dict[str, tuple[LabNic, LabNic]] = {}
    for nic in nics:
        for peer in peers(nics, nic):
            if peer.model == nic.model:
                found.setdefault(nic.model, (nic, peer))
    return found


def dumps(nics: list[LabNic]) -> str:
    return json.dumps([n.to_dict() for n in nics])


def loads(text: str) -> list[LabNic]:
    return [LabNic.from_dict(d) for d in json.loads(text)]
