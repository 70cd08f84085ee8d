"""hwnic: drive Intel 1 GbE NICs from Python through VFIO.

Layers, each depending only on the ones before it:
``hwnic._vfio`` (cffi shim) -> ``vfio``/``dma`` -> ``ndis`` (interrupt model)
-> ``nic`` (e1000, e1000e, igb) -> ``cli``/``lab`` (tools).

    with hwnic.open("0000:01:00.0", queues=2, budget=64) as nic:
        nic.send(frames)
        batch = nic.receive(timeout=1.0)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hwnic.errors import HwnicError

if TYPE_CHECKING:  # the package imports no NIC code until a NIC is opened
    from hwnic.nic.base import Nic

__all__ = ["HwnicError", "__version__", "open"]
__version__ = "0.1.0"


def open(bdf: str, **kwargs: Any) -> Nic:
    """Open and start the NIC at ``bdf``: see :func:`hwnic.nic.open`."""
    from hwnic.nic import open as open_nic

    return open_nic(bdf, **kwargs)
