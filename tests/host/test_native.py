"""The cffi shim: its constants come from <linux/vfio.h>; MMIO accessors are exact."""

from __future__ import annotations

import errno
import importlib.util
import mmap
import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from hwnic._vfio import ffi, lib
from hwnic.vfio import Bar, IrqIndex, RegionIndex

ROOT = Path(__file__).resolve().parents[2]
FILL = 0xA5  # a byte pattern no accessor writes, to spot stray bytes


def _build_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("build_vfio", ROOT / "native/build_vfio.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_constants_equal_the_kernel_header(tmp_path: Path) -> None:
    """Compile a C program that prints each constant from <linux/vfio.h> and compare."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    assert gcc, "a C compiler is needed to build hwnic._vfio, so it must be here"
    names = _build_module().ALL_CONSTANTS
    src = tmp_path / "consts.c"
    body = "\n".join(f'    printf("{n} %lld\\n", (long long)({n}));' for n in names)
    src.write_text(f"#include <stdio.h>\n#include <linux/vfio.h>\nint main(void)\n{{\n{body}\n}}\n")
    exe = tmp_path / "consts"
    subprocess.run([gcc, "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    header = {name: int(value) for name, value in (line.split() for line in out.splitlines())}
    assert set(header) == set(names)
    for name in names:
        assert getattr(lib, name) == header[name], name
    # Spot-check a few against the documented ABI, so a broken header is caught too.
    assert header["VFIO_TYPE1v2_IOMMU"] == 3
    assert header["VFIO_PCI_CONFIG_REGION_INDEX"] == 7
    assert header["VFIO_PCI_MSIX_IRQ_INDEX"] == 2


def test_enums_use_the_shim_values() -> None:
    assert IrqIndex.INTX == lib.VFIO_PCI_INTX_IRQ_INDEX
    assert IrqIndex.MSIX == lib.VFIO_PCI_MSIX_IRQ_INDEX
    assert IrqIndex.REQ == lib.VFIO_PCI_REQ_IRQ_INDEX
    assert RegionIndex.CONFIG == lib.VFIO_PCI_CONFIG_REGION_INDEX
    assert RegionIndex.BAR5 == lib.VFIO_PCI_BAR5_REGION_INDEX


WIDTHS = [
    (1, lib.mmio_read8, lib.mmio_write8),
    (2, lib.mmio_read16, lib.mmio_write16),
    (4, lib.mmio_read32, lib.mmio_write32),
    (8, lib.mmio_read64, lib.mmio_write64),
]


@pytest.mark.parametrize(("width", "read", "write"), WIDTHS)
def test_mmio_write_touches_exactly_its_bytes(width, read, write) -> None:  # type: ignore[no-untyped-def]
    mem = np.full(64, FILL, dtype=np.uint8)
    base = ffi.cast("void *", mem.ctypes.data)
    value = int.from_bytes(bytes(range(1, width + 1)), "little")  # 0x..0201: distinct bytes
    for offset in range(0, 32, width):
        mem[:] = FILL
        write(base, offset, value)
        expected = np.full(64, FILL, dtype=np.uint8)
        expected[offset : offset + width] = list(range(1, width + 1))
        assert (mem == expected).all(), f"width {width} offset {offset}"
        assert read(base, offset) == value
        # A neighbouring read of the untouched pattern sees only the pattern.
        assert read(base, offset + width) == int.from_bytes(bytes([FILL] * width), "little")


def test_barriers_are_callable() -> None:
    lib.wmb()
    lib.rmb()
    lib.mb()


def test_ioctl_helpers_return_negative_errno() -> None:
    fd = os.open(os.devnull, os.O_RDWR)
    try:
        assert lib.hv_get_api_version(fd) == -errno.ENOTTY
        flags = ffi.new("uint32_t *")
        assert lib.hv_group_get_status(fd, flags) == -errno.ENOTTY
        assert lib.hv_device_reset(fd) == -errno.ENOTTY
    finally:
        os.close(fd)
    assert lib.hv_check_extension(fd, lib.VFIO_TYPE1_IOMMU) == -errno.EBADF


def test_mmap_region_maps_the_given_offset() -> None:
    """The helper Device.bar uses maps [offset, offset+size) of an fd, read-write."""
    page = mmap.PAGESIZE
    fd = os.memfd_create("fake-device")
    try:
        os.ftruncate(fd, 4 * page)
        os.pwrite(fd, struct.pack("<I", 0xC0FFEE11), 2 * page + 8)
        out = ffi.new("void **")
        assert lib.hv_mmap_region(fd, 2 * page, page, 1, out) == 0
        with Bar(out[0], page, index=0, on_close=lambda p, n: lib.hv_munmap(p, n)) as bar:
            assert bar.read32(8) == 0xC0FFEE11
            bar.write16(0x10, 0xBEEF)
        assert os.pread(fd, 2, 2 * page + 0x10) == b"\xef\xbe"
        assert lib.hv_mmap_region(fd, 1, page, 1, out) == -errno.EINVAL  # unaligned offset
    finally:
        os.close(fd)


def _bar_over(mem: np.ndarray) -> Bar:
    return Bar(ffi.cast("void *", mem.ctypes.data), mem.nbytes, index=3)


def test_bar_round_trips_and_is_little_endian() -> None:
    mem = np.zeros(64, dtype=np.uint8)
    bar = _bar_over(mem)
    bar.write32(4, 0x11223344)
    assert bytes(mem[4:8]) == b"\x44\x33\x22\x11"
    assert bar.read16(4) == 0x3344
    assert bar.read8(7) == 0x11
    bar.write64(8, 0x0102030405060708)
    assert bar.read32(12) == 0x01020304
    bar.write8(63, 0xFF)
    assert bar.read8(63) == 0xFF


@pytest.mark.parametrize(
    ("method", "offset", "message"),
    [
        ("read16", 1, "aligned"),
        ("read32", 2, "aligned"),
        ("read64", 4, "aligned"),
        ("read32", 64, "outside"),
        ("read32", 62, "aligned"),
        ("read64", 60, "aligned"),
        ("read64", 56 + 8, "outside"),
        ("read8", 64, "outside"),
        ("read8", -1, "outside"),
        ("read32", -4, "outside"),
    ],
)
def test_bar_checks_bounds_and_alignment(method: str, offset: int, message: str) -> None:
    mem = np.zeros(64, dtype=np.uint8)
    bar = _bar_over(mem)
    with pytest.raises(ValueError, match=message):
        getattr(bar, method)(offset)
    write = getattr(bar, method.replace("read", "write"))
    with pytest.raises(ValueError, match=message):
        write(offset, 0)
    assert (mem == 0).all()


def test_bar_value_out_of_range_and_closed() -> None:
    mem = np.zeros(64, dtype=np.uint8)
    released = []
    bar = Bar(ffi.cast("void *", mem.ctypes.data), 64, on_close=lambda p, n: released.append(n))
    with pytest.raises(OverflowError):
        bar.write8(0, 0x100)
    with pytest.raises(OverflowError):
        bar.write32(0, -1)
    bar.close()
    bar.close()
    assert released == [64]  # unmapped exactly once
    assert bar.closed and bar.address == 0
    with pytest.raises(ValueError, match="closed"):
        bar.read32(0)
    with pytest.raises(ValueError, match="closed"):
        bar.write32(0, 1)


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="checks x86-64 disassembly")
def test_each_accessor_compiles_to_one_memory_access() -> None:
    """One MOV of the right width per call: no split, merged or repeated access."""
    import hwnic._vfio as shim

    objdump = shutil.which("objdump")
    assert objdump, "objdump (binutils) comes with the gcc that builds the shim"
    text = subprocess.run(
        [objdump, "-d", "--no-show-raw-insn", shim.__file__],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    # How each width shows in AT&T syntax: narrow loads zero-extend (movzb/movzw),
    # stores name the value register (the third argument, %rdx) at that width.
    width_marks = {
        "read": {8: "movzb", 16: "movzw", 32: ",%eax", 64: ",%rax"},
        "write": {8: "%dl,", 16: "%dx,", 32: "%edx,", 64: "%rdx,"},
    }
    for kind, marks in width_marks.items():
        for bits, mark in marks.items():
            name = f"mmio_{kind}{bits}"
            body = text.split(f"<{name}>:\n", 1)[1].split("\n\n", 1)[0]
            memory_ops = [line for line in body.splitlines() if "(%rdi)" in line]
            assert len(memory_ops) == 1, (name, body)
            assert mark in memory_ops[0], (name, memory_ops)
