"""RFC 2544 throughput and back-to-back on the host: line-rate arithmetic, the searches
driven by a fake port of known capacity, stream counting (late frames of a trial are
not counted in the next), and the CLI against the fake wire."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import hwnic
from hwnic import traffic
from hwnic.bench import rfc2544
from hwnic.bench.pool import STREAM_SHIFT, STREAMS, count_streams, stream_base
from hwnic.bench.rfc2544 import Amount, Trial
from hwnic.bench.runner import RxCounter
from hwnic.bench.testing import FakeBatch, FakeNic, FakeWire
from hwnic.bench.trials import TrialPorts, TrialSettings
from hwnic.cli.main import main
from hwnic.errors import UsageError

TX, RX = "0000:01:00.0", "0000:02:00.0"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GIGABIT = 1000  # Mbit/s
TRIAL_S = 10.0  # the fake trial's duration


@pytest.fixture(autouse=True)
def _no_lab(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HWNIC_LAB", raising=False)


# -- line rate --------------------------------------------------------------------------------


def test_line_rate_at_one_gigabit() -> None:
    assert round(rfc2544.line_rate_fps(64, GIGABIT)) == 1_488_095
    assert round(rfc2544.line_rate_fps(1518, GIGABIT)) == 81_274
    assert rfc2544.line_rate_fps(64, 100) == pytest.approx(148_809.5, rel=1e-6)
    fps = rfc2544.line_rate_fps(64, GIGABIT)
    assert rfc2544.wire_mbps(fps, 64) == pytest.approx(GIGABIT)
    assert rfc2544.l2_mbps(fps, 64) == pytest.approx(GIGABIT * 64 / 84)
    assert rfc2544.frame_length(64) == 60 and rfc2544.frame_length(1518) == 1514


# -- option values ---------------------------------------------------------------------------


def test_sizes_tolerance_and_resolution_values() -> None:
    assert rfc2544.parse_wire_sizes("rfc") == rfc2544.RFC_SIZES == (
        64, 128, 256, 512, 1024, 1280, 1518,
    )  # fmt: skip
    assert rfc2544.parse_wire_sizes("64, 1518") == (64, 1518)
    assert rfc2544.parse_loss_tolerance("0") == Amount(0.0)
    assert rfc2544.parse_loss_tolerance("0.5%") == Amount(0.5, percent=True)
    assert rfc2544.parse_resolution("1000").of(5e5) == 1000
    assert rfc2544.parse_resolution("2%").of(5e5) == pytest.approx(10_000)
    assert rfc2544.parse_wait("0") == 0.0


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (rfc2544.parse_wire_sizes, "60"),
        (rfc2544.parse_wire_sizes, "1519"),
        (rfc2544.parse_wire_sizes, "64,x"),
        (rfc2544.parse_loss_tolerance, "-1"),
        (rfc2544.parse_loss_tolerance, "abc"),
        (rfc2544.parse_loss_tolerance, "100%"),
        (rfc2544.parse_resolution, "0"),
        (rfc2544.parse_resolution, "nan"),
        (rfc2544.parse_wait, "-2"),
    ],
)
def test_bad_values_say_what_to_give(parse: Any, text: str) -> None:
    with pytest.raises(UsageError) as err:
        parse(text)
    assert "give" in str(err.value) and "\n" not in str(err.value)


# -- the searches against a fake port ---------------------------------------------------------


class FakePort:
    """A sender with a top speed and a receiver that keeps ``capacity`` frames/s.

    Above capacity the excess is lost; a burst longer than ``buffer`` loses the rest.
    """

    def __init__(self, capacity: float, top: float, buffer: int = 0) -> None:
        self.capacity = capacity
        self.top = top
        self.buffer = buffer
        self.rates: list[float | None] = []

    def rate_trial(self, size: int, rate: float | None) -> Trial:
        self.rates.append(rate)
        offered = self.top if rate is None else min(rate, self.top)
        sent = round(offered * TRIAL_S)
        lost = max(0, round((offered - self.capacity) * TRIAL_S))
        return Trial(size, sent, sent - lost, TRIAL_S, target_fps=rate)

    def burst_trial(self, size: int, frames: int) -> Trial:
        received = min(frames, self.buffer)
        return Trial(size, frames, received, frames / self.top, burst=frames)


def _throughput(port: FakePort, resolution: str = "1%", tolerance: str = "0") -> Any:
    return rfc2544.search_throughput(
        64,
        port.rate_trial,
        line_fps=rfc2544.line_rate_fps(64, GIGABIT),
        resolution=rfc2544.parse_resolution(resolution),
        tolerance=rfc2544.parse_loss_tolerance(tolerance),
    )


@pytest.mark.parametrize("capacity", [20_000.0, 123_456.0, 499_999.0, 870_000.0])
def test_throughput_converges_to_the_capacity_within_the_resolution(capacity: float) -> None:
    port = FakePort(capacity, top=900_000.0)
    found = _throughput(port)
    assert found.limit == rfc2544.LIMIT_LOSS
    assert found.best is not None and found.best.lost == 0
    step = 0.01 * port.top
    assert capacity - step <= found.best.offered_fps <= capacity
    # Unpaced first, then halving the interval until it is within 1 %: 7 more trials.
    assert port.rates[0] is None
    assert len(found.trials) == 1 + math.ceil(math.log2(100))
    assert all(t.passed == (t.lost == 0) for t in found.trials)
    # Every failing trial is above the result, every passing one at or below it.
    assert all(t.offered_fps > found.best.offered_fps for t in found.trials if not t.passed)


def test_resolution_in_frames_per_second() -> None:
    port = FakePort(300_000.0, top=800_000.0)
    found = _throughput(port, resolution="500")
    assert found.best is not None
    assert 300_000.0 - 500 <= found.best.offered_fps <= 300_000.0
    coarse = _throughput(FakePort(300_000.0, top=800_000.0), resolution="25%")
    assert len(coarse.trials) < len(found.trials)


def test_sender_or_line_limits_end_the_search_at_once() -> None:
    line = rfc2544.line_rate_fps(64, GIGABIT)
    slow = _throughput(FakePort(capacity=10 * line, top=200_000.0))
    assert slow.limit == rfc2544.LIMIT_SENDER and len(slow.trials) == 1
    assert slow.best is not None and slow.best.offered_fps == 200_000.0
    fast = _throughput(FakePort(capacity=10 * line, top=line))
    assert fast.limit == rfc2544.LIMIT_LINE


def test_the_search_never_tries_above_line_rate() -> None:
    line = rfc2544.line_rate_fps(64, GIGABIT)
    port = FakePort(capacity=0.6 * line, top=3 * line)  # a sender faster than the wire
    found = _throughput(port)
    assert all(r is None or r <= line for r in port.rates)
    assert found.best is not None and found.best.offered_fps <= 0.6 * line


def test_loss_tolerance_in_frames_and_percent() -> None:
    strict = _throughput(FakePort(100_000.0, top=400_000.0), resolution="100")
    # 20,000 frames may go in a 10 s trial: 2,000 frames/s above capacity pass.
    loose = _throughput(FakePort(100_000.0, top=400_000.0), resolution="100", tolerance="20000")
    assert strict.best is not None and loose.best is not None
    assert loose.best.offered_fps == pytest.approx(102_000.0, abs=100)
    assert loose.best.lost > 0 and loose.best.passed
    pct = _throughput(FakePort(100_000.0, top=400_000.0), resolution="100", tolerance="10%")
    assert pct.best is not None
    # lost <= 10 % of sent: (r - c) <= 0.1 r, r <= c / 0.9
    assert pct.best.offered_fps == pytest.approx(100_000.0 / 0.9, abs=100)


def test_nothing_passes() -> None:
    found = _throughput(FakePort(0.0, top=100_000.0))
    assert found.best is None and found.limit == rfc2544.LIMIT_NONE
    row = rfc2544.throughput_row(64, [found], GIGABIT)
    assert row["fps"] == 0.0 and row["limits"] == ["none"]


@pytest.mark.parametrize("buffer", [1, 700, 4095])
def test_burst_search_finds_the_buffer(buffer: int) -> None:
    port = FakePort(0.0, top=1e6, buffer=buffer)
    found = rfc2544.search_burst(
        1518, port.burst_trial, max_burst=4096, resolution=Amount(1), tolerance=Amount(0)
    )
    assert found.limit == rfc2544.LIMIT_LOSS
    assert found.best is not None and found.best.sent == buffer
    assert len(found.trials) <= 1 + math.ceil(math.log2(4096))


def test_burst_longest_passes_and_coarse_resolution() -> None:
    port = FakePort(0.0, top=1e6, buffer=10_000)
    top = rfc2544.search_burst(
        64, port.burst_trial, max_burst=4096, resolution=Amount(1), tolerance=Amount(0)
    )
    assert top.limit == rfc2544.LIMIT_MAX and len(top.trials) == 1
    coarse = rfc2544.search_burst(
        64,
        FakePort(0.0, top=1e6, buffer=1000).burst_trial,
        max_burst=4096,
        resolution=Amount(10, percent=True),
        tolerance=Amount(0),
    )
    assert coarse.best is not None and 1000 - 410 <= coarse.best.sent <= 1000


def test_rows_average_repeated_searches() -> None:
    searches = [_throughput(FakePort(c, top=900_000.0), resolution="100") for c in (1e5, 2e5)]
    row = rfc2544.throughput_row(64, searches, GIGABIT)
    assert row["fps"] == pytest.approx(150_000.0, abs=100)
    assert row["fps_min"] < row["fps"] < row["fps_max"]
    assert row["line_pct"] == pytest.approx(100 * row["fps"] / 1_488_095.2, rel=1e-6)
    assert row["wire_mbps"] == pytest.approx(row["fps"] * 84 * 8 / 1e6)
    assert row["searches"] == 2
    bursts = [
        rfc2544.search_burst(
            64, FakePort(0, 1e6, b).burst_trial, max_burst=512, resolution=Amount(1),
            tolerance=Amount(0),
        )
        for b in (100, 300)
    ]  # fmt: skip
    brow = rfc2544.burst_row(64, bursts, GIGABIT)
    assert brow["frames"] == 200 and (brow["frames_min"], brow["frames_max"]) == (100, 300)
    assert brow["wire_seconds"] == pytest.approx(200 / 1_488_095.2)


# -- streams: a trial counts its own frames only ---------------------------------------------


def _frames(first_seq: int, n: int) -> np.ndarray:
    seqs = (first_seq + np.arange(n)) & 0xFFFFFFFF
    return traffic.build(seqs, np.full(n, 60), "02:00:00:00:00:01", "02:00:00:00:00:02")


def test_count_streams_fast_path_straddling_and_foreign_frames() -> None:
    out = np.zeros(STREAMS, dtype=np.int64)
    col, etype = traffic.payload_offset(False), traffic.ETHERTYPE_EXPERIMENTAL
    count_streams(_frames(stream_base(3) + 10, 50), col, etype, out)
    assert out[3] == 50 and out.sum() == 50
    # A batch that straddles trial 3's end and trial 4's start.
    mixed = np.concatenate([_frames(stream_base(4) - 5, 5), _frames(stream_base(4), 7)])
    count_streams(mixed, col, etype, out)
    assert (out[3], out[4]) == (55, 7)
    foreign = _frames(stream_base(4) + 7, 4)
    foreign[[0, 3], 12:14] = (0x86, 0xDD)  # IPv6 frames at both ends: not ours
    count_streams(foreign, col, etype, out)
    assert out[4] == 9 and out.sum() == 64
    assert stream_base(STREAMS + 1) == stream_base(1) == 1 << STREAM_SHIFT


def test_rx_counter_counts_streams_per_queue() -> None:
    counter = RxCounter(2, streams=True)
    counter(0, FakeBatch(_frames(stream_base(1), 8), np.full(8, 60)))
    counter(1, FakeBatch(_frames(stream_base(2), 3), np.full(3, 60)))
    totals = counter.stream_totals()
    assert (totals[1], totals[2], totals.sum()) == (8, 3, 11)
    assert counter.totals()[0] == 11


class LateWire(FakeWire):
    """Holds back the last ``late`` frames of every send until the next send."""

    def __init__(self, late: int) -> None:
        super().__init__()
        self.late = late
        self.held: tuple[np.ndarray, np.ndarray] | None = None

    def carry(self, sender: FakeNic, frames: np.ndarray, lengths: np.ndarray) -> None:
        if self.held is not None:
            held, self.held = self.held, None
            super().carry(sender, *held)
        cut = len(lengths) - self.late
        super().carry(sender, frames[:cut], lengths[:cut])
        self.held = (frames[cut:], lengths[cut:])


def test_late_frames_of_a_trial_are_not_counted_in_the_next() -> None:
    wire = LateWire(late=5)
    settings = TrialSettings(wait=0.05, batch=64)
    with TrialPorts(settings, tx=TX, rx=RX, opener=wire.open) as ports:
        assert not ports.receiver_process and ports.speed_mbps == GIGABIT
        first = ports.burst_trial(64, 640)
        second = ports.burst_trial(64, 640)
    # The last 5 frames of each trial arrive during the next one: lost for their
    # trial, and stale (not received) for the one they land in.
    assert (first.sent, first.received, first.stale) == (640, 635, 0)
    assert (second.sent, second.received, second.stale) == (640, 635, 5)


def test_rate_trial_sends_for_the_trial_duration() -> None:
    settings = TrialSettings(trial_seconds=0.2, wait=0.05, batch=64)
    with TrialPorts(settings, tx=TX, rx=RX, opener=FakeWire().open) as ports:
        t = ports.rate_trial(1518, 20_000.0)
    assert t.lost == 0 and t.stale == 0 and t.target_fps == 20_000.0
    # Paced per batch of 64: about 0.2 s worth, give or take a batch.
    assert abs(t.sent - 4000) <= 64 + 64


def test_reflector_sends_and_counts_on_one_port() -> None:
    wire = FakeWire(reflect=True)
    settings = TrialSettings(wait=0.05, batch=64, reflector=True)
    with TrialPorts(settings, tx=TX, rx=None, opener=wire.open) as ports:
        t = ports.burst_trial(128, 1000)
    assert list(wire.nics) == [TX]
    assert (t.sent, t.received) == (1000, 1000)


# -- the CLI -----------------------------------------------------------------------------------


def test_cli_throughput_writes_table_json_and_plot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(hwnic, "open", FakeWire().open)
    out_json, out_png = tmp_path / "t.json", tmp_path / "t.png"
    rc = main(["bench", "throughput", "--tx", TX, "--rx", RX, "--size", "64,1518",
               "--trial", "0.1", "--wait", "0.05", "--json", str(out_json),
               "--plot", str(out_png)])  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    assert "RFC 2544 throughput" in out and "unpaced" in out and "-> pass" in out
    data = json.loads(out_json.read_text())
    assert data["kind"] == "hwnic-bench-throughput" and data["link_mbps"] == GIGABIT
    assert [r["size"] for r in data["rows"]] == [64, 1518]
    for row, search in zip(data["rows"], data["searches"], strict=True):
        # The fake wire loses nothing: the first, unpaced trial is the result.
        assert search["best"]["lost"] == 0 and len(search["trials"]) == 1
        assert row["limits"][0] in ("line", "sender") and row["fps"] > 0
    assert data["settings"]["trial_seconds"] == 0.1 and data["settings"]["loss_tolerance"] == "0"
    assert {p["role"] for p in data["ports"]} == {"tx", "rx"}
    assert out_png.read_bytes()[:8] == PNG_MAGIC


def test_cli_burst_on_a_lossy_wire(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hwnic, "open", FakeWire(drop_every=1).open)  # loses everything
    out_json, out_png = tmp_path / "b.json", tmp_path / "b.png"
    rc = main(["bench", "burst", "--tx", TX, "--rx", RX, "--size", "64", "--max-burst",
               "256", "--wait", "0.01", "-q", "--json", str(out_json), "--plot",
               str(out_png)])  # fmt: skip
    assert rc == 0
    data = json.loads(out_json.read_text())
    (search,) = data["searches"]
    assert search["limit"] == "none" and search["best"] is None
    assert len(search["trials"]) == 1 + 8  # 256, then halving down to 1 frame
    assert data["rows"][0]["frames"] == 0
    assert out_png.read_bytes()[:8] == PNG_MAGIC


def test_cli_reflector_takes_one_port(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(hwnic, "open", FakeWire(reflect=True).open)
    rc = main(["bench", "burst", "--tx", TX, "--reflector", "--size", "64",
               "--max-burst", "100", "--wait", "0.01", "-q"])  # fmt: skip
    assert rc == 0
    assert "(reflector)" not in capsys.readouterr().out  # -q: no progress lines
    assert main(["bench", "burst", "--tx", TX, "--rx", RX, "--reflector"]) == 2
    assert "--reflector uses one port" in capsys.readouterr().err
