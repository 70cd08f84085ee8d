"""``hwnic bench throughput`` and ``burst`` in the lab: a short search on one igb pair
keeps the searches' invariants (the result lost nothing in its trial, the step above
it lost frames or the sender's top speed passed, nothing above line rate)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hwnic.bench import rfc2544
from hwnic.cli.bench import lab_pair
from hwnic.cli.main import main

pytestmark = pytest.mark.lab

MODEL = "igb"  # one pair is enough: the search logic is the same on every model
SIZES = (64, 1518)
TRIAL = "0.5"  # s
WAIT = "0.5"  # s without a frame before the rest counts as lost
# Coarse, but fine enough to reach 1/8 of the top speed (4 trials a size): at 64 B
# the TCG receiver drops a batch now and then at half and even a quarter of it.
RESOLUTION = "15%"
MAX_BURST = 2048
BURST_SIZE = 64  # the size most likely to lose frames in a burst


def _run(test: str, tmp_path: Path, *extra: str, sizes: tuple[int, ...] = SIZES) -> dict:
    tx, rx = lab_pair(MODEL)
    out = tmp_path / f"{test}.json"
    size = ",".join(map(str, sizes))
    rc = main(["bench", test, "--tx", tx, "--rx", rx, "--size", size, "--wait", WAIT,
               "--resolution", RESOLUTION, "-q", "--json", str(out), *extra])  # fmt: skip
    assert rc == 0
    return json.loads(out.read_text())


def _check_search(search: dict) -> None:
    best = search["best"]
    assert best is not None, f"{search['size']} B: no trial passed"
    assert best["lost"] == 0 and best["passed"]
    assert best["received"] == best["sent"] > 0
    failed = [t for t in search["trials"] if not t["passed"]]
    if search["limit"] == rfc2544.LIMIT_LOSS:
        assert failed, "a search limited by loss had a trial that lost frames"
        assert all(t["lost"] > 0 for t in failed)


def test_throughput_search(tmp_path: Path) -> None:
    data = _run("throughput", tmp_path, "--trial", TRIAL)
    assert data["kind"] == "hwnic-bench-throughput" and data["link_mbps"] == 1000
    assert [r["size"] for r in data["rows"]] == list(SIZES)
    for search in data["searches"]:
        _check_search(search)
        assert search["limit"] in (rfc2544.LIMIT_LOSS, rfc2544.LIMIT_SENDER)
        best = search["best"]
        line = rfc2544.line_rate_fps(search["size"], data["link_mbps"])
        assert 0 < best["offered_fps"] < line
        # The first trial is unpaced; a failed one bounds everything tried after it.
        first = search["trials"][0]
        assert first["target_fps"] is None
        if not first["passed"]:
            assert all(t["target_fps"] <= first["offered_fps"] for t in search["trials"][1:])
    for row in data["rows"]:
        assert 0 < row["line_pct"] < 100


def test_burst_search(tmp_path: Path) -> None:
    data = _run("burst", tmp_path, "--max-burst", str(MAX_BURST), sizes=(BURST_SIZE,))
    assert data["kind"] == "hwnic-bench-burst"
    for search in data["searches"]:
        _check_search(search)
        assert all(t["burst"] <= MAX_BURST for t in search["trials"])
        if search["limit"] == rfc2544.LIMIT_MAX:
            assert search["best"]["sent"] == MAX_BURST
