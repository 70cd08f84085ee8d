"""NIC models: e1000 (82540EM), e1000e (82574L), igb (82576/I210/I350).

``open(bdf, ...)`` picks the model from the PCI id and returns a started
:class:`~hwnic.nic.base.Nic`; use it as a context manager so the NIC is left
quiet whatever happens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hwnic import pci

if TYPE_CHECKING:
    from hwnic.nic.base import Nic


def model_class(family: str) -> type[Nic]:
    """The Nic subclass for a family name."""
    if family == "e1000":
        from hwnic.nic.e1000 import E1000

        return E1000
    if family == "e1000e":
        from hwnic.nic.e1000e import E1000e

        return E1000e
    if family == "igb":
        from hwnic.nic.igb import Igb

        return Igb
    raise ValueError(f"unknown NIC family {family!r}")


def open(
    bdf: str,
    *,
    allow_noiommu: bool = False,
    on_receive: Callable[..., None] | None = None,
    **config: Any,
) -> Nic:
    """Open the NIC at ``bdf`` through VFIO and start it; see NicConfig for ``config``."""
    from hwnic import vfio
    from hwnic.nic.base import NicConfig

    model = pci.require_supported(pci.describe(bdf))
    pci.require_vfio(bdf)
    cls = model_class(model.family)
    nic_config = NicConfig(**config)
    device = vfio.open_device(bdf, allow_noiommu=allow_noiommu)
    try:
        return cls(device, nic_config, on_receive=on_receive, close_device=True)
    except BaseException:
        device.close()
        raise
