"""Replay timing (hwnic/bench/replay.py): the wanted schedule of each mode, the error
statistics, and the send loop's runs against a fake clock and a fake port."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import hwnic
from hwnic import capture, traffic
from hwnic.bench import replay
from hwnic.bench.replay import CAPTURE, MBPS, PPS, TOPSPEED, ErrorStats, Replayer, Timing
from hwnic.bench.testing import FakeWire
from hwnic.cli.main import main
from hwnic.errors import NicError, UsageError

MS = 1_000_000  # ns
US = 1_000
T0 = 1_700_000_000 * 1_000_000_000  # a capture's first timestamp (ns since the epoch)


class FakeClock:
    """Time moves only when the code under test sleeps, reads the clock or sends."""

    def __init__(self, overshoot_ns: int = 0, read_ns: int = 100) -> None:
        self.now = 10**12
        self.overshoot_ns = overshoot_ns
        self.read_ns = read_ns
        self.reads = 0
        self.sleeps: list[float] = []

    def clock(self) -> int:
        self.reads += 1
        self.now += self.read_ns
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += round(seconds * 1e9) + self.overshoot_ns


class FakePort:
    """A port whose send() costs ``cost_ns`` of fake time and posts at most ``room`` frames."""

    mac = "02:00:00:00:00:01"

    def __init__(self, clock: FakeClock, cost_ns: int = 0, room: int | None = None) -> None:
        self.clock = clock
        self.cost_ns = cost_ns
        self.room = room
        self.sends: list[tuple[int, int]] = []  # (fake time at the call, frames posted)
        self.seqs: list[int] = []

    def send(
        self, frames: np.ndarray, lengths: np.ndarray | None = None, *, timeout: float | None = 1.0
    ) -> int:
        n = len(frames) if self.room is None else min(len(frames), self.room)
        self.sends.append((self.clock.now, n))
        self.clock.now += self.cost_ns
        self.seqs.extend(frames[:n, 0].tolist())
        return n


def _replayer(
    ts_ns: np.ndarray,
    timing: Timing,
    clock: FakeClock,
    port: FakePort,
    *,
    lengths: np.ndarray | None = None,
    batch: int = 64,
    **kw: int,
) -> Replayer:
    n = len(ts_ns)
    frames = np.zeros((n, 64), np.uint8)
    frames[:, 0] = np.arange(n) % 256  # each frame's number, for the order
    lengths = np.full(n, 60) if lengths is None else lengths
    return Replayer(
        port, frames, lengths, ts_ns, timing, batch=batch, clock=clock.clock, sleep=clock.sleep,
        keep_departures=True, **kw,
    )  # fmt: skip


# -- schedules -----------------------------------------------------------------------------------


def test_capture_schedule_keeps_the_gaps_and_divides_them_by_the_multiplier() -> None:
    ts = T0 + np.array([0, 1 * MS, 3 * MS, 3 * MS, 8 * MS])
    lengths = np.full(5, 60)
    assert Timing(CAPTURE).offsets(ts, lengths).tolist() == [0, MS, 3 * MS, 3 * MS, 8 * MS]
    half = Timing(CAPTURE, multiplier=2.0).offsets(ts, lengths)
    assert half.tolist() == [0, MS / 2, 1.5 * MS, 1.5 * MS, 4 * MS]
    slow = Timing(CAPTURE, multiplier=0.25).schedule(ts, lengths, start_ns=7)
    assert slow.tolist() == [7, 7 + 4 * MS, 7 + 12 * MS, 7 + 12 * MS, 7 + 32 * MS]
    assert Timing(CAPTURE).span(ts, lengths) == 8 * MS  # the next pass starts at once


def test_capture_schedule_treats_time_going_back_as_at_once() -> None:
    ts = T0 + np.array([0, 5 * MS, 2 * MS, 6 * MS])
    assert Timing(CAPTURE).offsets(ts, np.full(4, 60)).tolist() == [0, 5 * MS, 5 * MS, 6 * MS]


def test_pps_and_mbps_schedules_ignore_the_timestamps() -> None:
    ts = T0 + np.array([0, 9, 99, 999]) * MS
    lengths = np.array([125, 1250, 60, 1514])
    assert Timing(PPS, rate=1000).offsets(ts, lengths).tolist() == [0, MS, 2 * MS, 3 * MS]
    assert Timing(PPS, rate=1000).span(ts, lengths) == 4 * MS
    # 8 Mbit/s = 1 byte/µs: each frame leaves when the previous one's bytes are out
    mbps = Timing(MBPS, rate=8).offsets(ts, lengths)
    assert mbps.tolist() == [0, 125 * US, 1375 * US, 1435 * US]
    assert Timing(MBPS, rate=8).span(ts, lengths) == pytest.approx(2949 * US)
    assert Timing(MBPS, rate=1000).offsets(ts, lengths)[1] == pytest.approx(1000)  # 125 B at 1G
    assert not Timing(TOPSPEED).offsets(ts, lengths).any()
    assert Timing(TOPSPEED).span(ts, lengths) == 0.0


def test_loops_follow_each_other() -> None:
    ts = T0 + np.array([0, 2, 5]) * MS
    lengths = np.full(3, 60)
    second = Timing(CAPTURE).schedule(ts, lengths, start_ns=0, pass_index=1)
    assert second.tolist() == [5 * MS, 7 * MS, 10 * MS]
    third = Timing(PPS, rate=1000).schedule(ts, lengths, start_ns=0, pass_index=2)
    assert third.tolist() == [6 * MS, 7 * MS, 8 * MS]  # one steady rate across passes
    far = Timing(PPS, rate=3).schedule(ts, lengths, start_ns=0, pass_index=10**6)
    assert far[0] == 10**6 * 10**9  # no drift from rounding after a million passes


@pytest.mark.parametrize(
    "kw", [{"mode": "fast"}, {"multiplier": 0.0}, {"mode": PPS}, {"mode": MBPS, "rate": -1.0}]
)
def test_bad_timings(kw: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        Timing(**kw)  # type: ignore[arg-type]


# -- error statistics ----------------------------------------------------------------------------


def test_error_stats() -> None:
    stats = ErrorStats()
    assert stats.summary_us() is None
    rng = np.random.default_rng(1)
    errors = rng.integers(-500 * US, 2000 * US, 100_000)
    stats.add(errors[:30_000])
    stats.add(errors[30_000:])
    stats.add(np.zeros(0, np.int64))
    got = stats.summary_us()
    assert got is not None
    size = np.abs(errors) / US
    assert got["mean"] == pytest.approx(size.mean())
    assert got["max"] == size.max()
    assert got["late_mean"] == pytest.approx(errors.mean() / US)
    for q in (50, 99):
        exact = np.percentile(size, q)
        assert exact <= got[f"p{q}"] <= exact * 1.011  # the bin's upper edge: within 1 %
    tiny = ErrorStats()
    tiny.add(np.array([30, -40]))
    assert tiny.percentile(99) == 40  # never above the max


# -- the send loop against a fake clock ----------------------------------------------------------


def test_runs_group_the_frames_due_together() -> None:
    # two bursts of 3 frames 20 µs apart, 1 ms between bursts
    ts = T0 + np.array([0, 20, 40, 1000, 1020, 1040]) * US
    clock = FakeClock()
    port = FakePort(clock, cost_ns=10 * US)
    r = _replayer(ts, Timing(CAPTURE), clock, port, window_ns=50 * US, spin_ns=0)
    report = r.run()
    assert [n for _, n in port.sends] == [3, 3]
    assert port.seqs == list(range(6))
    assert r.departures is not None
    wanted, departed = r.departures[0]
    assert ((wanted - wanted[0]) // US).tolist() == [0, 20, 40, 1000, 1020, 1040]
    assert (departed == departed[0]).sum() == 3  # one clock read per send, shared by its run
    err = report.errors.summary_us()
    # the run leaves after one 10 µs send: its last frame 30 µs early, its first 10 µs late
    assert err is not None and err["max"] == pytest.approx(30, abs=0.5)
    assert report.frames == 6 and report.passes == 1 and report.sends == 2
    assert report.wanted_s == pytest.approx(1040e-6)


def test_each_frame_waits_for_its_time_when_sends_are_cheap() -> None:
    ts = T0 + np.arange(200) * MS
    clock = FakeClock(overshoot_ns=70 * US)
    port = FakePort(clock, cost_ns=5 * US)
    report = _replayer(ts, Timing(CAPTURE, multiplier=2.0), clock, port, spin_ns=200 * US).run()
    assert len(port.sends) == 200
    at = np.array([t for t, _ in port.sends])
    assert np.abs(np.diff(at) - MS // 2).max() <= 200  # the spin absorbs the overshoot
    assert report.achieved_s == pytest.approx(199 * 0.5e-3, rel=1e-3)
    err = report.errors.summary_us()
    assert err is not None and err["p99"] == pytest.approx(5, rel=0.1)  # the send's cost
    assert report.to_dict()["achieved_pps"] == pytest.approx(2000, rel=1e-3)


def test_without_a_spin_the_overshoot_shows_in_the_errors() -> None:
    ts = T0 + np.arange(50) * MS
    clock = FakeClock(overshoot_ns=70 * US)
    port = FakePort(clock)
    report = _replayer(ts, Timing(CAPTURE), clock, port, spin_ns=0).run()
    err = report.errors.summary_us()
    assert err is not None and err["p50"] == pytest.approx(70, rel=0.02)
    assert err["late_mean"] > 0


def test_a_slow_sender_catches_up_back_to_back() -> None:
    ts = T0 + np.arange(100) * 10 * US  # 100 kfps wanted
    clock = FakeClock()
    port = FakePort(clock, cost_ns=100 * US, room=4)  # at most 40 kfps
    r = _replayer(ts, Timing(CAPTURE), clock, port, spin_ns=0)
    report = r.run()
    assert not clock.sleeps  # always behind: never sleeps
    assert port.seqs == list(range(100))
    assert report.achieved_s > report.wanted_s  # type: ignore[operator]


def test_pps_loops_and_topspeed() -> None:
    ts = np.full(10, T0)
    clock = FakeClock()
    port = FakePort(clock)
    report = _replayer(ts, Timing(PPS, rate=1000), clock, port, spin_ns=0).run(loops=3)
    assert report.frames == 30 and report.passes == 3 and len(port.sends) == 30
    assert report.achieved_s == pytest.approx(29e-3, rel=1e-3)
    clock2 = FakeClock()
    port2 = FakePort(clock2)
    top = _replayer(ts, Timing(TOPSPEED), clock2, port2, batch=4).run(loops=2)
    assert [n for _, n in port2.sends] == [4, 4, 2, 4, 4, 2]  # --batch caps a run
    assert not clock2.sleeps
    assert top.errors.summary_us() is None and top.to_dict()["wanted_s"] is None
    assert "departure error" not in top.summary()


def test_ctrl_c_mid_pass_keeps_what_went_out() -> None:
    ts = T0 + np.arange(20) * MS
    clock = FakeClock()
    port = FakePort(clock)
    r = _replayer(ts, Timing(CAPTURE), clock, port, spin_ns=0)

    def interrupted(seconds: float) -> None:
        if len(port.sends) >= 5:
            raise KeyboardInterrupt
        clock.sleep(seconds)

    r._sleep = interrupted
    with pytest.raises(KeyboardInterrupt):
        r.run(loops=0)
    assert r.report.frames == 5 and r.report.passes == 0
    assert r.report.errors.count == 5


def test_a_stuck_ring_is_an_error() -> None:
    clock = FakeClock()
    port = FakePort(clock, room=0)
    with pytest.raises(NicError, match="no progress"):
        _replayer(np.full(3, T0), Timing(TOPSPEED), clock, port).run()
    assert len(port.sends) == replay.STALL_LIMIT


# -- the command ---------------------------------------------------------------------------------


def _write(path: Path, gaps_us: list[int]) -> np.ndarray:
    n = len(gaps_us) + 1
    lengths = np.full(n, 60)
    frames = traffic.build(np.arange(n), lengths, "02:00:00:00:00:09", "ff:ff:ff:ff:ff:ff")
    ts = T0 + np.concatenate(([0], np.cumsum(gaps_us))) * US
    with capture.CaptureWriter(path) as w:
        w.write(frames, lengths, ts)
    return lengths


def test_send_command_timing_flags_and_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    wire = FakeWire()
    monkeypatch.setattr(hwnic, "open", wire.open)
    peer = wire.open("0000:02:00.0")
    path = tmp_path / "g.pcap"
    _write(path, [2000] * 9)  # 10 frames, 18 ms
    out = tmp_path / "r.json"
    assert main(["send", "0000:01:00.0", str(path), "-x", "4", "--json", str(out)]) == 0
    assert peer.received == 10
    got = json.loads(out.read_text())
    assert got["mode"] == CAPTURE and got["multiplier"] == 4.0 and got["frames"] == 10
    assert got["wanted_s"] == pytest.approx(4.5e-3)
    assert set(got["error_us"]) == {"mean", "p50", "p99", "max", "late_mean"}
    assert "departure error" in capsys.readouterr().err
    assert main(["send", "0000:01:00.0", str(path), "--topspeed", "-l", "2"]) == 0
    assert main(["send", "0000:01:00.0", str(path), "--mbps", "100", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["rate"] == 100.0
    assert peer.received == 40


@pytest.mark.parametrize(
    "args",
    [
        ["--pps", "10", "--multiplier", "2"],
        ["--topspeed", "--mbps", "5"],
        ["--rate", "10", "--topspeed"],
        ["--multiplier", "0"],
        ["--mbps", "fast"],
    ],
)
def test_send_refuses_conflicting_or_bad_timing(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["send", "0000:01:00.0", "x.pcap", *args])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip()
