"""hwnic: drive Intel 1 GbE NICs from Python through VFIO.

Layers, each depending only on the ones before it:
``hwnic._vfio`` (cffi shim) -> ``vfio``/``dma`` -> ``ndis`` (interrupt model)
-> ``nic`` (e1000, e1000e, igb) -> ``cli``/``lab`` (tools).

    with hwnic.open("0000:01:00.0", queues=2, budget=64) as nic:
        nic.send(frames)
        batch = nic.receive(timeout=1.0)
"""

from typing import Any

from hwnic.errors import HwnicError

__all__ = ["HwnicError", "__version__", "open"]
__version__ = "0.1.0"


def open(bdf: str, **kwargs: Any) -> Any:
    """Open and start the NIC at ``bdf``: see :func:`hwnic.nic.open`."""
    from hwnic.nic import open as open_nic

    return open_nic(bdf, **kwargs)
