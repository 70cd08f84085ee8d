"""NVM/EEPROM checksum: words 0x00-0x3F, read through EERD, add up to 0xBABA.

As Linux's ``e1000_eeprom_test`` / ``igb_eeprom_test``: the checksum word
(0x3F) is chosen by whoever wrote the image so that the 16-bit sum of the
first 64 words is 0xBABA. QEMU builds its image the same way
(``e1000x_core_prepare_eeprom``), so all three lab models pass.
EERD has two layouts (``quirks.Flag.EERD_8254X``, the fields in ``regs``).
"""

from __future__ import annotations

import time

import numpy as np

from hwnic.diag.registers import Registers
from hwnic.errors import NicError
from hwnic.nic import regs

WORD_TIMEOUT = 0.1  # s for one EERD read (microseconds on silicon, at once in QEMU)
WORD_MASK = 0xFFFF


def read_word(bar: Registers, address: int, layout_8254x: bool) -> int:
    """One 16-bit NVM word through EERD; NicError if DONE never comes."""
    shift = regs.EERD_ADDR_SHIFT_8254X if layout_8254x else regs.EERD_ADDR_SHIFT
    done = regs.EERD_DONE_8254X if layout_8254x else regs.EERD_DONE
    bar.write32(regs.EERD, (address << shift) | regs.EERD_START)
    deadline = time.monotonic() + WORD_TIMEOUT
    while True:
        value = bar.read32(regs.EERD)
        if value & done:
            return (value >> regs.EERD_DATA_SHIFT) & WORD_MASK
        if time.monotonic() > deadline:
            raise NicError(
                f"EERD read of NVM word 0x{address:02X} did not complete (EERD 0x{value:08X})",
                "the NVM may be busy or absent",
            )


def read_words(bar: Registers, count: int, layout_8254x: bool) -> np.ndarray:
    return np.array([read_word(bar, a, layout_8254x) for a in range(count)], dtype=np.uint16)


def checksum(words: np.ndarray) -> int:
    """The 16-bit sum of ``words`` (what must equal regs.NVM_SUM)."""
    return int(np.asarray(words, dtype=np.uint64).sum()) & WORD_MASK
