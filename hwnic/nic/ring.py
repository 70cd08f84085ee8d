"""What the RX and TX rings share: descriptor size, the tail writer, row copies.

The rings themselves are :mod:`hwnic.nic.rx_ring` and :mod:`hwnic.nic.tx_ring`.
Both work on whole batches over numpy views of DMA memory: no Python loop
runs per frame. Conventions (the datasheets'): the NIC owns descriptors from
head to tail-1; the driver never arms more than ``size - 1`` so head == tail
means "empty". The rings know nothing of VFIO: they take arrays, IOVAs and a
``write_tail`` callable, so host tests drive them with ordinary memory and a
fake NIC.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

DESCRIPTOR_BYTES = 16
U16_BYTES = 2
U32_BYTES = 4
BITS_PER_BYTE = 8
# From this many frames on, a copy between the pool and a batch goes row by
# row as one fixed-size item each (a 1-D copy), not as a 2-D array: numpy's
# 2-D strided copy costs about twice as much per row.
ITEM_COPY_MIN = 128

TailWriter = Callable[[int], None]


def no_barrier() -> None:
    """Host tests: ordinary memory needs no fence."""


_ITEM_DTYPES: dict[tuple[int, int], np.dtype] = {}


def row_items(rows: np.ndarray, width: int) -> np.ndarray | None:
    """Each row's first ``width`` bytes as one item of a 1-D array (a view), or None.

    numpy copies such items about twice as fast as the same bytes as a 2-D
    (rows x width) array. None when the rows are not contiguous bytes.
    """
    if rows.ndim != 2 or rows.strides[1] != 1 or not 0 < width <= rows.shape[1]:
        return None
    key = (width, rows.shape[1])
    item = _ITEM_DTYPES.get(key)
    if item is None:
        item = _ITEM_DTYPES[key] = np.dtype(
            {"names": ["frame"], "formats": [f"V{width}"], "offsets": [0], "itemsize": key[1]}
        )
    try:
        return rows.view(item)[:, 0]["frame"]
    except ValueError:
        return None
