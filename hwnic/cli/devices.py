"""``hwnic list``, ``bind``, ``unbind`` and ``info``: find and prepare NICs."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from hwnic import pci
from hwnic.errors import UsageError


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


def cmd_list(args: argparse.Namespace) -> int:
    nics = pci.list_devices(all_intel_ethernet=args.all)
    if args.json:
        _print_json([n.to_dict() for n in nics])
        return 0
    if not nics:
        print("no supported Intel NIC found (hwnic drives e1000, e1000e and igb parts)")
        return 0
    header = f"{'ADDRESS':<13} {'PCI ID':<10} {'MODEL':<24} {'DRIVER':<10} {'GROUP':>5}  VFIO"
    print(header)
    for n in nics:
        group = "-" if n.iommu_group is None else str(n.iommu_group)
        ready = "ready" if n.vfio_ready else f"no: run 'hwnic bind {n.bdf}'"
        if not n.supported:
            ready = "unsupported"
        print(f"{n.bdf:<13} {n.pci_id:<10} {n.model:<24} {n.driver or '-':<10} {group:>5}  {ready}")
    return 0


def cmd_bind(args: argparse.Namespace) -> int:
    if not args.timeout > 0:
        raise UsageError(f"--timeout {args.timeout}", "give a number of seconds above 0")
    for bdf in args.bdf:
        nic = pci.bind_vfio(bdf, timeout=args.timeout)
        print(f"{nic.bdf}: bound to {nic.driver}, /dev/vfio/{nic.iommu_group}")
    return 0


def cmd_unbind(args: argparse.Namespace) -> int:
    for bdf in args.bdf:
        nic = pci.unbind_vfio(bdf)
        print(f"{nic.bdf}: now bound to {nic.driver or 'no driver'}")
    return 0


NOIOMMU_WARNING = (
    "hwnic: warning: --allow-noiommu: if the device is in VFIO's no-IOMMU mode nothing "
    "confines its DMA (it can read and write all memory); registers only, no DMA"
)


def cmd_info(args: argparse.Namespace) -> int:
    from hwnic.nic.info import read_info

    if args.allow_noiommu:
        print(NOIOMMU_WARNING, file=sys.stderr)
    info = read_info(args.bdf, allow_noiommu=args.allow_noiommu)
    if args.json:
        _print_json(info.to_dict())
        return 0
    link = f"up, {info.speed_mbps} Mb/s {'full' if info.full_duplex else 'half'} duplex"
    print(f"{info.bdf}  {info.model} ({info.pci_id}), family {info.family}")
    print(f"  driver      {info.driver}, IOMMU group {info.iommu_group}")
    print(f"  MAC         {info.mac}")
    print(f"  link        {link if info.link_up else 'down'} (STATUS 0x{info.status:08x})")
    for bar in info.bars:
        kind = "mmap" if bar.mmap else "no mmap"
        print(f"  BAR{bar.index}        {bar.size:>8} bytes ({kind})")
    modes = ", ".join(f"{k.upper()} x{v}" for k, v in info.interrupts.items() if v)
    print(f"  interrupts  {modes}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "list",
        help="list supported Intel NICs and whether they are ready for VFIO",
        description="List every supported Intel NIC with its PCI address, model, current "
        "driver, IOMMU group and whether it is bound to vfio-pci with /dev/vfio/N present.",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--all", action="store_true", help="include unsupported Intel Ethernet parts")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "bind",
        help="bind NICs to vfio-pci (root)",
        description="Bind each NIC to vfio-pci (driver_override, unbind, drivers_probe) and "
        "wait for its /dev/vfio/N node. Needs root.",
    )
    p.add_argument("bdf", nargs="+", help="PCI address, e.g. 0000:01:00.0")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for /dev/vfio/N")
    p.set_defaults(func=cmd_bind)

    p = sub.add_parser(
        "unbind",
        help="give NICs back to their kernel driver (root)",
        description="Clear driver_override and let the kernel's own driver probe each NIC.",
    )
    p.add_argument("bdf", nargs="+", help="PCI address, e.g. 0000:01:00.0")
    p.set_defaults(func=cmd_unbind)

    p = sub.add_parser(
        "info",
        help="show model, MAC, link, BARs and interrupt modes of a NIC",
        description="Open the NIC through VFIO (it must be bound to vfio-pci) and show its "
        "model, MAC address (RAL0/RAH0), link state and speed (STATUS), BARs and the "
        "interrupt modes VFIO offers with their vector counts. Does not reset the NIC.",
    )
    p.add_argument("bdf", help="PCI address, e.g. 0000:01:00.0")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--allow-noiommu",
        action="store_true",
        help="accept VFIO's unsafe no-IOMMU mode (the NIC can then DMA anywhere)",
    )
    p.set_defaults(func=cmd_info)
