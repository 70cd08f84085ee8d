"""Offline diagnostics of one port: ``hwnic selftest``, the ``ethtool -t`` of hwnic.

One module per concern: ``registers`` (pattern tests, per-part tables),
``nvm`` (EEPROM checksum through EERD), ``interrupts`` (ICS/EICS through
VFIO eventfds), ``loopback`` (link, MAC/PHY loopback, cabled pair),
``phy`` (MDIC on a bare BAR), ``result`` (Result, JSON) and ``runner``
(:func:`run_selftest`, the order and the cleanup).
"""

from __future__ import annotations

from hwnic.diag.result import Result, Status, passed, report
from hwnic.diag.runner import TESTS, parse_tests, run_selftest

__all__ = ["TESTS", "Result", "Status", "parse_tests", "passed", "report", "run_selftest"]
