"""hwnic: drive Intel 1 GbE NICs from Python through VFIO.

Layers, each depending only on the ones before it:
``hwnic._vfio`` (cffi shim) -> ``vfio``/``dma`` -> ``ndis`` (interrupt model)
-> ``nic`` (e1000, e1000e, igb) -> ``cli``/``lab`` (tools).
"""

from hwnic.errors import HwnicError

__all__ = ["HwnicError", "__version__"]
__version__ = "0.1.0"
