"""The QEMU lab: emulated e1000, e1000e and igb NICs behind a vIOMMU.

``hwnic lab run`` boots Debian's kernel with virtme-ng (the host's root file
system over 9p), binds every lab NIC to vfio-pci inside the guest and runs a
command there. Modules, one concern each:

- :mod:`~hwnic.lab.topology`: which NICs, their ids, MACs and hubs
- :mod:`~hwnic.lab.deps`: finding QEMU 10, the guest kernel, vng, busybox
- :mod:`~hwnic.lab.kvm`: whether KVM really works here (else TCG)
- :mod:`~hwnic.lab.qemu`: the QEMU options and the vng command line
- :mod:`~hwnic.lab.qmp`, :mod:`~hwnic.lab.control`: QMP, and the guest's way to it
- :mod:`~hwnic.lab.guest`: the bootstrap that runs inside the guest
- :mod:`~hwnic.lab.runner`: boot, relay, time-outs and clean-up on the host
"""

from hwnic.lab.topology import LabNic

__all__ = ["LabNic"]
