"""Build ``hwnic._vfio``: cffi API mode, out of line, against <linux/vfio.h>.

setup.py names ``native/build_vfio.py:ffibuilder`` in ``cffi_modules``, so
``pip install -e .`` compiles it. Run this file directly to build a copy in
the current directory for experiments.

Nothing here restates a kernel struct or an ioctl number: the C helpers in
``hwnic_vfio.c`` include the installed header, and the constants below are
declared with ``...`` so the C compiler fills in their values from it.
"""

from __future__ import annotations

from pathlib import Path

from cffi import FFI

NATIVE_DIR = Path(__file__).resolve().parent
HEADER = NATIVE_DIR / "hwnic_vfio.h"
SOURCE = NATIVE_DIR / "hwnic_vfio.c"

# Integer macros from <linux/vfio.h> that Python needs.
MACRO_CONSTANTS = (
    "VFIO_API_VERSION",
    "VFIO_TYPE1_IOMMU",
    "VFIO_TYPE1v2_IOMMU",
    "VFIO_NOIOMMU_IOMMU",
    "VFIO_GROUP_FLAGS_VIABLE",
    "VFIO_GROUP_FLAGS_CONTAINER_SET",
    "VFIO_DEVICE_FLAGS_RESET",
    "VFIO_DEVICE_FLAGS_PCI",
    "VFIO_REGION_INFO_FLAG_READ",
    "VFIO_REGION_INFO_FLAG_WRITE",
    "VFIO_REGION_INFO_FLAG_MMAP",
    "VFIO_REGION_INFO_FLAG_CAPS",
    "VFIO_IRQ_INFO_EVENTFD",
    "VFIO_IRQ_INFO_MASKABLE",
    "VFIO_IRQ_INFO_AUTOMASKED",
    "VFIO_IRQ_INFO_NORESIZE",
    "VFIO_IRQ_SET_DATA_NONE",
    "VFIO_IRQ_SET_DATA_BOOL",
    "VFIO_IRQ_SET_DATA_EVENTFD",
    "VFIO_IRQ_SET_ACTION_MASK",
    "VFIO_IRQ_SET_ACTION_UNMASK",
    "VFIO_IRQ_SET_ACTION_TRIGGER",
    "VFIO_DMA_MAP_FLAG_READ",
    "VFIO_DMA_MAP_FLAG_WRITE",
)

# Members of the header's anonymous enums (fixed vfio-pci region/IRQ indexes).
ENUM_CONSTANTS = (
    "VFIO_PCI_BAR0_REGION_INDEX",
    "VFIO_PCI_BAR1_REGION_INDEX",
    "VFIO_PCI_BAR2_REGION_INDEX",
    "VFIO_PCI_BAR3_REGION_INDEX",
    "VFIO_PCI_BAR4_REGION_INDEX",
    "VFIO_PCI_BAR5_REGION_INDEX",
    "VFIO_PCI_ROM_REGION_INDEX",
    "VFIO_PCI_CONFIG_REGION_INDEX",
    "VFIO_PCI_VGA_REGION_INDEX",
    "VFIO_PCI_NUM_REGIONS",
    "VFIO_PCI_INTX_IRQ_INDEX",
    "VFIO_PCI_MSI_IRQ_INDEX",
    "VFIO_PCI_MSIX_IRQ_INDEX",
    "VFIO_PCI_ERR_IRQ_INDEX",
    "VFIO_PCI_REQ_IRQ_INDEX",
    "VFIO_PCI_NUM_IRQS",
)

# Exported so the host tests can compare every value with the header's.
ALL_CONSTANTS = MACRO_CONSTANTS + ENUM_CONSTANTS


def _cdef() -> str:
    lines = [HEADER.read_text()]
    lines += [f"#define {name} ..." for name in MACRO_CONSTANTS]
    lines += [f"static const int {name};" for name in ENUM_CONSTANTS]
    return "\n".join(lines)


ffibuilder = FFI()
ffibuilder.cdef(_cdef())
ffibuilder.set_source(
    "hwnic._vfio",
    # Compile the helpers into the extension itself: one .so, no extra library.
    '#include "hwnic_vfio.c"\n',
    include_dirs=[str(NATIVE_DIR)],
    extra_compile_args=["-O2", "-Wall"],
    depends=[str(HEADER), str(SOURCE)],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
