"""``hwnic bench latency`` in the lab: IEEE 1588 stamps on the igb pair, software
stamps on e1000e; short runs with a few hundred probes each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hwnic.cli.bench import lab_pair
from hwnic.cli.main import main
from hwnic.errors import UsageError

pytestmark = pytest.mark.lab

RATE = 2000  # load frames/s: well under what any model sustains in TCG
PROBE_MS = 10
# The 82576 latches one stamp each way, read once per probe: under TCG a
# latch still full when the next probe passes costs that probe its stamp
# (77-100 % of probes were stamped in the lab), so "most" is the bar here.
MIN_STAMPED = 0.5
MAX_LOST = 0.05  # probes lost: the load is far below the pair's rate


def _run(model: str, tmp_path: Path, duration: float, *extra: str) -> dict:
    try:
        tx, rx = lab_pair(model)
    except UsageError:
        pytest.skip(f"the lab has no {model} pair")
    out = tmp_path / f"{model}.json"
    rc = main(
        ["bench", "latency", "--tx", tx, "--rx", rx, "--rate", str(RATE),
         "--duration", str(duration), "--probe-interval", str(PROBE_MS), "-q",
         "--json", str(out), *extra]
    )  # fmt: skip
    assert rc == 0
    return json.loads(out.read_text())


def test_igb_hardware_and_software_latency(tmp_path: Path) -> None:
    data = _run("igb", tmp_path, 2.0)
    p = data["probes"]
    assert data["timestamps"].startswith("hardware")
    assert p["sent"] >= 100
    assert p["lost"] <= MAX_LOST * p["sent"]
    hw, sw = data["hardware"], data["software"]
    assert hw["count"] >= MIN_STAMPED * p["sent"], p
    assert p["tx_stamps"] >= hw["count"] and p["rx_stamps"] >= hw["count"]
    # A stamp no probe seen claims: a probe the TCG receiver dropped with its batch.
    assert p["rx_stamps_unmatched"] <= MAX_LOST * p["sent"]
    # TX stamp before RX stamp on one clock (after the measured offset).
    assert hw["min_ns"] >= -data["clock"]["before"]["uncertainty_ns"], data["clock"]
    # The NICs' view is inside the software one: from before the send() to the DPC.
    assert hw["p50_ns"] < sw["p50_ns"]
    assert sw["min_ns"] > 0 and sw["count"] == p["received"]
    assert len(data["samples"]["hardware_ns"]) == hw["count"]
    assert data["load"]["received"] == data["load"]["sent"]


def test_e1000e_software_latency(tmp_path: Path) -> None:
    data = _run("e1000e", tmp_path, 2.0)
    p = data["probes"]
    assert data["timestamps"] == "software" and "hardware" not in data
    assert p["sent"] >= 50 and p["lost"] <= MAX_LOST * p["sent"]
    sw = data["software"]
    assert sw["count"] == p["received"]
    assert 0 < sw["min_ns"] <= sw["p50_ns"] <= sw["p99_ns"] <= sw["max_ns"]
