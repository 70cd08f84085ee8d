"""``hwnic bench loopback`` in the lab: a short counted run per model completes with
zero loss and writes JSON that says what was measured (and a PNG)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hwnic.cli.main import main
from hwnic.pytest_plugin import Pair, Rig

pytestmark = pytest.mark.lab

# Fewer frames than the receive ring holds: none can be lost however slowly the
# loaded guest drains it (QEMU drops silently once ring and hub queue are full).
FRAMES = 400
RATE = 2000  # frames/s, paced per batch
BATCH = 32
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_loopback_count_without_loss(pair: Pair, hwnic_rig: Rig, tmp_path: Path) -> None:
    tx, rx = pair[0].bdf, pair[1].bdf
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    rc = main(
        ["bench", "loopback", "--tx", tx, "--rx", rx, "--count", str(FRAMES),
         "--rate", str(RATE), "--batch", str(BATCH), "--size", "64,1514", "--verify",
         "-q", "--json", str(out), "--plot", str(png)]
    )  # fmt: skip
    assert rc == 0
    data = json.loads(out.read_text())
    s = data["summary"]
    assert s["tx_frames"] == FRAMES
    assert s["rx_frames"] == FRAMES
    assert s["loss"] == 0 and s["rx_bad"] == 0
    assert s["rx_bytes"] == s["tx_bytes"]
    assert FRAMES * 64 < s["tx_bytes"] < FRAMES * 1514  # both sizes went out
    assert s["irq"]["rx"]["indicated"] == FRAMES
    assert s["irq"]["rx"]["interrupts"] > 0
    assert {p["role"]: p["bdf"] for p in data["ports"]} == {"tx": tx, "rx": rx}
    assert {p["family"] for p in data["ports"]} == {pair[0].family}
    assert data["settings"]["count"] == FRAMES
    assert data["machine"]["in_lab"] == hwnic_rig.in_lab
    assert data["stats"]["rx"]["hw"]["gprc"] >= FRAMES
    assert png.read_bytes()[:8] == PNG_MAGIC
