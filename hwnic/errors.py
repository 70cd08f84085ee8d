"""Typed errors. Each says what is wrong and what to do, in one line.

The CLI prints ``str(error)`` and exits with ``error.exit_code``; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations


class HwnicError(Exception):
    """Base class: ``what`` went wrong, ``hint`` says what to do about it."""

    exit_code = 1

    def __init__(self, what: str, hint: str = "") -> None:
        super().__init__(what)
        self.what = what
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.what}; {self.hint}" if self.hint else self.what


class UsageError(HwnicError):
    """A bad option value or argument."""

    exit_code = 2


class BadAddress(UsageError):
    """A PCI address that does not parse."""


class DeviceNotFound(HwnicError):
    """No PCI device at that address."""


class UnsupportedDevice(HwnicError):
    """A PCI device that hwnic has no model for."""


class NotBoundToVfio(HwnicError):
    """The device is not bound to vfio-pci."""


class GroupNotViable(HwnicError):
    """Another device of the IOMMU group is bound to a host driver."""


class PermissionDenied(HwnicError):
    """No permission on /dev/vfio/N (or another device node)."""


class NoIommu(HwnicError):
    """No IOMMU, or only VFIO's unsafe no-IOMMU mode."""


class NoHugepages(HwnicError):
    """Hugepages were required but none are free."""


class VfioError(HwnicError):
    """A VFIO ioctl failed."""


class DmaError(HwnicError):
    """DMA memory could not be allocated or mapped."""


class InterruptError(HwnicError):
    """Interrupt registration or dispatch failed."""


class LabError(HwnicError):
    """The QEMU lab could not be set up or booted."""


class EmulatorFailed(LabError):
    """QEMU failed, not the command: it crashed, or its guest stopped. Worth one retry."""

    exit_code = 75  # EX_TEMPFAIL: "try again later"


class GuestFroze(EmulatorFailed):
    """The lab's guest stopped running (no heartbeat)."""


class LabDependencyMissing(LabError):
    """A program or file the QEMU lab needs is missing."""


class NicError(HwnicError):
    """The NIC did not behave as its model expects (timeout, bad state)."""
