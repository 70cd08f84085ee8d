"""Descriptor layouts as numpy structured dtypes (16 bytes each, little-endian).

Rings are numpy arrays of these over DMA memory, so the driver reads and
writes whole batches of descriptors at once.
"""

from __future__ import annotations

from enum import IntFlag

import numpy as np

DESCRIPTOR_SIZE = 16

# Legacy transmit descriptor (8254x datasheet 3.3.3): the igb accepts it too,
# its bit layout coinciding with the advanced format for plain sends.
LEGACY_TX = np.dtype(
    [
        ("addr", "<u8"),
        ("length", "<u2"),
        ("cso", "u1"),
        ("cmd", "u1"),
        ("status", "u1"),
        ("css", "u1"),
        ("special", "<u2"),
    ]
)

# Legacy receive descriptor (8254x datasheet 3.2.3).
LEGACY_RX = np.dtype(
    [
        ("addr", "<u8"),
        ("length", "<u2"),
        ("csum", "<u2"),
        ("status", "u1"),
        ("errors", "u1"),
        ("special", "<u2"),
    ]
)


class TxCmd(IntFlag):
    EOP = 1 << 0  # end of packet
    IFCS = 1 << 1  # insert FCS
    RS = 1 << 3  # report status: write DD back
    DEXT = 1 << 5  # extended (context/data) descriptor
    IDE = 1 << 7  # interrupt delay enable


class TxStatus(IntFlag):
    DD = 1 << 0  # descriptor done


class RxStatus(IntFlag):
    DD = 1 << 0
    EOP = 1 << 1


assert LEGACY_TX.itemsize == DESCRIPTOR_SIZE
assert LEGACY_RX.itemsize == DESCRIPTOR_SIZE
