"""Registers common to the 8254x/82574/82576 family, named after the datasheets.

Offsets are into BAR0. Family-specific registers live beside each model
(``e1000.py``, ``e1000e.py``, ``igb.py``); this file holds what all share.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntFlag

# General
CTRL = 0x0000
STATUS = 0x0008
CTRL_EXT = 0x0018
MDIC = 0x0020
EERD = 0x0014  # EEPROM/NVM read: one 16-bit word per request
# Flow control and VLAN EtherType (read/write storage: the register self-test)
FCAL = 0x0028
FCAH = 0x002C
FCT = 0x0030
VET = 0x0038
FCTTV = 0x0170
TXCW = 0x0178
FCRTH = 0x2168

# Interrupts (legacy/MSI causes)
ICR = 0x00C0
ITR = 0x00C4
ICS = 0x00C8
IMS = 0x00D0
IMC = 0x00D8

# Receive / transmit control
RCTL = 0x0100
TCTL = 0x0400
TIPG = 0x0410

# Receive address filters: RAL/RAH pair n at 0x5400 + 8n
RAL0 = 0x5400
RAH0 = 0x5404
RA_STRIDE = 8
RAH_AV = 1 << 31  # address valid
MTA = 0x5200  # multicast table array, 128 dwords
MTA_ENTRIES = 128


class Ctrl(IntFlag):
    FD = 1 << 0  # full duplex
    SLU = 1 << 6  # set link up
    RST = 1 << 26  # device reset (self-clearing)
    PHY_RST = 1 << 31


class Status(IntFlag):
    FD = 1 << 0
    LU = 1 << 1  # link up
    TXOFF = 1 << 4
    SPEED_100 = 1 << 6
    SPEED_1000 = 1 << 7


STATUS_SPEED_SHIFT = 6
STATUS_SPEED_MASK = 0x3
# STATUS.SPEED encodings, 10/100/1000 Mb/s (both 10b and 11b mean 1000).
SPEED_MBPS = {0b00: 10, 0b01: 100, 0b10: 1000, 0b11: 1000}


class Icr(IntFlag):
    """Interrupt cause bits shared by ICR, ICS, IMS and IMC."""

    TXDW = 1 << 0  # transmit descriptor written back
    TXQE = 1 << 1  # transmit queue empty
    LSC = 1 << 2  # link status change
    RXSEQ = 1 << 3
    RXDMT0 = 1 << 4  # receive descriptor minimum threshold
    RXO = 1 << 6  # receiver overrun
    RXT0 = 1 << 7  # receiver timer (a frame arrived); igb calls it RXDW
    MDAC = 1 << 9
    INT_ASSERTED = 1 << 31


class Rctl(IntFlag):
    EN = 1 << 1
    SBP = 1 << 2  # store bad packets
    UPE = 1 << 3  # unicast promiscuous
    MPE = 1 << 4  # multicast promiscuous
    LPE = 1 << 5  # long packet enable
    LBM_MAC = 1 << 6  # MAC loopback
    BAM = 1 << 15  # broadcast accept
    BSEX = 1 << 25  # buffer size extension
    SECRC = 1 << 26  # strip Ethernet CRC


RCTL_BSIZE_SHIFT = 16  # 00 = 2048 bytes (with BSEX clear)
RCTL_BSIZE_2048 = 0 << RCTL_BSIZE_SHIFT


class Tctl(IntFlag):
    EN = 1 << 1
    PSP = 1 << 3  # pad short packets


TCTL_CT_SHIFT = 4  # collision threshold
TCTL_COLD_SHIFT = 12  # collision distance
TCTL_CT_DEFAULT = 0x0F << TCTL_CT_SHIFT
TCTL_COLD_FULL_DUPLEX = 0x3F << TCTL_COLD_SHIFT


def link_from_status(status: int) -> tuple[bool, int, bool]:
    """(link up, speed in Mb/s, full duplex) decoded from STATUS."""
    speed = SPEED_MBPS[(status >> STATUS_SPEED_SHIFT) & STATUS_SPEED_MASK]
    return bool(status & Status.LU), speed, bool(status & Status.FD)


def mac_from_ra(ral: int, rah: int) -> str:
    """The MAC address held in a RAL/RAH pair (little-endian bytes)."""
    raw = (ral & 0xFFFFFFFF).to_bytes(4, "little") + (rah & 0xFFFF).to_bytes(2, "little")
    return ":".join(f"{b:02x}" for b in raw)


def ra_from_mac(mac: str) -> tuple[int, int]:
    """RAL and RAH (with AV set) for a MAC address string."""
    raw = bytes(int(part, 16) for part in mac.split(":"))
    if len(raw) != 6:
        raise ValueError(f"bad MAC address {mac!r}")
    return int.from_bytes(raw[:4], "little"), int.from_bytes(raw[4:], "little") | RAH_AV


# Descriptor ring registers: queue 0 of the 8254x/82574 at these bases (the
# 82574's second queue is QUEUE_STRIDE further on); igb has its own bases.
RDBAL0 = 0x2800
TDBAL0 = 0x3800
QUEUE_STRIDE = 0x100
# Offsets of each ring register from its queue's base.
DBAL = 0x00  # descriptor base address, low
DBAH = 0x04  # descriptor base address, high
DLEN = 0x08  # ring length in bytes (a multiple of 128)
DH = 0x10  # head (the NIC's next descriptor)
DT = 0x18  # tail (one past the driver's last descriptor)


# Per-queue ring registers, as ixy's IXGBE_RDT(i): queue q's register offsets.
def RDBAL(q: int) -> int:
    return RDBAL0 + q * QUEUE_STRIDE + DBAL


def RDT(q: int) -> int:
    return RDBAL0 + q * QUEUE_STRIDE + DT


def TDBAL(q: int) -> int:
    return TDBAL0 + q * QUEUE_STRIDE + DBAL


def TDT(q: int) -> int:
    return TDBAL0 + q * QUEUE_STRIDE + DT


RDTR = 0x2820  # receive delay timer
RADV = 0x282C  # receive absolute delay
TIDV = 0x3820  # transmit interrupt delay
TADV = 0x382C  # transmit absolute delay
RING_LEN_ALIGN = 128  # DLEN must be a multiple of this or the ring is disabled

# Statistics registers (clear on read). For 64-bit pairs read the low half
# first: reading the high half clears both (datasheets; QEMU does the same).
STATS32 = {
    "crcerrs": 0x4000,  # CRC errors
    "mpc": 0x4010,  # missed packets (no room in the receive FIFO/ring)
    "gprc": 0x4074,  # good packets received
    "bprc": 0x4078,  # broadcast packets received
    "mprc": 0x407C,  # multicast packets received
    "gptc": 0x4080,  # good packets transmitted
    "rnbc": 0x40A0,  # receive no buffers
    "ruc": 0x40A4,  # receive undersize
    "roc": 0x40AC,  # receive oversize
    "tpr": 0x40D0,  # total packets received
    "tpt": 0x40D4,  # total packets transmitted
}
STATS64 = {  # name: low-half offset
    "gorc": 0x4088,  # good octets received
    "gotc": 0x4090,  # good octets transmitted
    "tor": 0x40C0,  # total octets received
    "tot": 0x40C8,  # total octets transmitted
}

# PHY access through MDIC
MDIC_DATA_MASK = 0xFFFF
MDIC_REG_SHIFT = 16
MDIC_PHY_SHIFT = 21
MDIC_OP_WRITE = 1 << 26
MDIC_OP_READ = 2 << 26
MDIC_READY = 1 << 28
MDIC_ERROR = 1 << 30
PHY_ADDRESS = 1  # the internal PHY of these parts
PHY_BMCR = 0  # basic mode control register
BMCR_RESET = 1 << 15
BMCR_LOOPBACK = 1 << 14
BMCR_POWER_DOWN = 1 << 11
BMCR_SPEED_1000 = 1 << 6
BMCR_AUTONEG_ENABLE = 1 << 12
BMCR_AUTONEG_RESTART = 1 << 9
BMCR_FULL_DUPLEX = 1 << 8

# EERD layouts (quirks.Flag.EERD_8254X): the 8254x has START bit 0, DONE bit 4,
# address at bit 8; the 82574/82576/I350/I210 have DONE bit 1, address at bit 2.
# Both return the word in bits 31:16.
EERD_START = 1 << 0
EERD_DONE_8254X = 1 << 4
EERD_ADDR_SHIFT_8254X = 8
EERD_DONE = 1 << 1
EERD_ADDR_SHIFT = 2
EERD_DATA_SHIFT = 16
NVM_CHECKSUM_WORDS = 0x40  # words 0x00-0x3F, the last one the checksum word
NVM_SUM = 0xBABA  # what those words add up to (16-bit) in a valid image

# TIPG for copper parts (datasheets: IPGT 8 (10 on the 8254x), IPGR1 8, IPGR2 6)
TIPG_IPGR1_SHIFT = 10
TIPG_IPGR2_SHIFT = 20


def tipg(ipgt: int, ipgr1: int, ipgr2: int) -> int:
    """TIPG from its three fields (transmit IPG, and the two receive-side IPG parts)."""
    return ipgt | (ipgr1 << TIPG_IPGR1_SHIFT) | (ipgr2 << TIPG_IPGR2_SHIFT)


ITR_UNIT_NS = 256  # ITR and 82574 EITR count in 256 ns units

# Receive-side scaling (82574 and 82576 share these offsets and hash bits)
RXCSUM = 0x5000
RXCSUM_PCSD = 1 << 13  # packet checksum disabled: the RSS hash goes in its place
RFCTL = 0x5008
RFCTL_EXTEN = 1 << 15  # extended receive descriptors (82574)
MRQC = 0x5818
MRQC_RSS_FIELD_IPV4_TCP = 1 << 16
MRQC_RSS_FIELD_IPV4 = 1 << 17
MRQC_RSS_FIELD_IPV6 = 1 << 20
MRQC_RSS_FIELD_IPV6_TCP = 1 << 21
MRQC_RSS_FIELDS = (
    MRQC_RSS_FIELD_IPV4_TCP | MRQC_RSS_FIELD_IPV4 | MRQC_RSS_FIELD_IPV6 | MRQC_RSS_FIELD_IPV6_TCP
)
RETA = 0x5C00  # redirection table: 128 one-byte entries
RETA_ENTRIES = 128
RSSRK = 0x5C80  # RSS random key: 40 bytes
RSS_KEY_BYTES = 40


def rctl_buffer_size(size: int) -> int:
    """RCTL BSIZE/BSEX bits for a receive buffer of ``size`` bytes."""
    bsize = {2048: (0, 0), 1024: (1, 0), 512: (2, 0), 256: (3, 0), 4096: (3, 1)}
    if size not in bsize:
        raise ValueError(f"no RCTL encoding for {size}-byte buffers")
    code, extended = bsize[size]
    return (code << RCTL_BSIZE_SHIFT) | (Rctl.BSEX if extended else 0)


def write_rss_tables(write32: Callable[[int, int], None], reta_bytes: bytes, key: bytes) -> None:
    """Write RETA (128 entries, 4 per register) and the 40-byte RSSRK key."""
    for i in range(0, RETA_ENTRIES, 4):
        write32(RETA + i, int.from_bytes(reta_bytes[i : i + 4], "little"))
    for i in range(0, RSS_KEY_BYTES, 4):
        write32(RSSRK + i, int.from_bytes(key[i : i + 4], "little"))


# The key Microsoft's RSS verification suite uses: any fixed key works, this
# one spreads the usual test flows well and makes hashes reproducible.
RSS_DEFAULT_KEY = bytes.fromhex(
    "6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa"
)
