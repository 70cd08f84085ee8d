"""hwnic bench on the host: option parsing, pacing, the frame pool, the measurement
loop against a fake pair of ports, JSON contents, plots, the CLI."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import hwnic
from hwnic import traffic
from hwnic.bench import options, pacing, report, sweep
from hwnic.bench.options import BenchSettings, parse_sizes, parse_sweep
from hwnic.bench.pool import POOL_FRAMES, FramePool
from hwnic.bench.runner import Bench, Progress, RxCounter, open_kwargs
from hwnic.bench.testing import FakeBatch, FakeWire
from hwnic.cli import bench as cli_bench
from hwnic.cli.main import main
from hwnic.errors import UsageError
from hwnic.lab.topology import dumps, plan_nics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TX, RX = "0000:01:00.0", "0000:02:00.0"


@pytest.fixture(autouse=True)
def _fast_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("hwnic.bench.runner.SAMPLE_INTERVAL", 0.05)
    monkeypatch.setattr("hwnic.bench.runner.SETTLE_IDLE", 0.2)
    monkeypatch.delenv("HWNIC_LAB", raising=False)
    monkeypatch.delenv("HWNIC_LAB_NICS", raising=False)


# -- option values ---------------------------------------------------------------------


def test_sizes_single_list_and_imix() -> None:
    assert parse_sizes("64").lengths == (64,)
    mix = parse_sizes("64,512,1514")
    assert mix.lengths == (64, 512, 1514) and mix.weights == (1, 1, 1)
    imix = parse_sizes("IMIX")
    assert imix.lengths == (60, 590, 1514) and imix.weights == (7, 4, 1)
    assert len(imix.cycle()) == 12
    assert imix.mean == pytest.approx((7 * 60 + 4 * 590 + 1514) / 12)


@pytest.mark.parametrize("text", ["59", "9019", "64,abc", "", "0", "-64", "64,,512"])
def test_bad_sizes_say_what_to_give(text: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_sizes(text)
    assert "60 to 9018" in str(err.value)
    assert "\n" not in str(err.value)


def test_sweep_parser() -> None:
    s = parse_sweep("budget=16,64,256")
    assert s.key == "budget" and s.values == (16, 64, 256)
    assert parse_sweep("itr-us=0,50.5").values == (0.0, 50.5)
    sizes = parse_sweep("size=64,imix")
    assert [v.label for v in sizes.values] == ["64", "imix"]
    assert sizes.labels() == ["64", "imix"]
    assert parse_sweep("batch=1, 8 ,32").values == (1, 8, 32)


@pytest.mark.parametrize(
    "text", ["budget", "nonsense=1,2", "budget=", "budget=0,16", "batch=99999", "size=10"]
)
def test_bad_sweeps(text: str) -> None:
    with pytest.raises(UsageError):
        parse_sweep(text)


def test_settings_sweep_values_and_defaults() -> None:
    base = BenchSettings()
    assert base.time_limit == options.DEFAULT_DURATION
    assert replace(base, count=10).time_limit is None
    assert base.with_value("budget", 16).budget == 16
    assert base.with_value("size", parse_sizes("imix")).sizes.label == "imix"
    d = base.to_dict()
    assert d["sizes"]["label"] == "64" and d["time_limit"] == options.DEFAULT_DURATION
    with pytest.raises(UsageError):
        BenchSettings(mode="sideways")
    with pytest.raises(UsageError):
        BenchSettings(interrupt="nmi")


def test_open_kwargs_map_interrupt_names() -> None:
    from hwnic.ndis import InterruptType

    kw = open_kwargs(BenchSettings(interrupt="line", budget=16, itr_us=0.0))
    assert kw["interrupt"] is InterruptType.LINE_BASED
    assert kw["budget"] == 16 and kw["itr_us"] == 0.0
    assert "interrupt" not in open_kwargs(BenchSettings())
    assert open_kwargs(BenchSettings(interrupt="msix"))["interrupt"] is InterruptType.MSIX


# -- pacing ------------------------------------------------------------------------------------


def test_pacing_math() -> None:
    assert pacing.delay(0, 0.0, 1000.0) == 0.0
    assert pacing.delay(64, 0.0, 1000.0) == pytest.approx(0.064)
    assert pacing.delay(64, 0.050, 1000.0) == pytest.approx(0.014)
    assert pacing.delay(64, 1.0, 1000.0) == 0.0  # behind: no sleep, no catching up
    assert pacing.delay(10**6, 0.0, None) == 0.0
    assert pacing.batch_interval(64, 32_000.0) == pytest.approx(0.002)


def test_pacer_with_a_fake_clock_sends_at_the_rate() -> None:
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    pacer = pacing.Pacer(10_000.0, clock=lambda: now[0], sleep=sleep)
    sent = 0
    for _ in range(100):
        pacer.wait(sent)
        sent += 50
    # The 100th batch starts when frame 4950 is due; the average is the rate.
    assert now[0] == pytest.approx(4950 / 10_000.0)
    assert pacer.slept == pytest.approx(now[0])


# -- the frame pool ----------------------------------------------------------------------------


def test_pool_frames_stay_valid_with_rewritten_sequence_numbers() -> None:
    pool = FramePool(parse_sizes("imix"), "02:00:00:00:00:01", "02:00:00:00:00:02")
    assert pool.size == POOL_FRAMES
    start = 3 * POOL_FRAMES + 1000
    rows, lengths = pool.take(start, 64)
    assert len(rows) == 64
    checked = traffic.check(rows, lengths)
    assert checked.good.all()
    assert (checked.seqs == np.arange(start, start + 64)).all()
    # At the pool's end a batch is cut short, and the next one starts at row 0.
    rows, _ = pool.take(POOL_FRAMES - 10, 64)
    assert len(rows) == 10
    assert set(np.unique(pool.lengths)) == {60, 590, 1514}


def test_pool_with_flows_builds_udp_frames() -> None:
    pool = FramePool(parse_sizes("128"), "02:00:00:00:00:01", "02:00:00:00:00:02", flows=4)
    rows, lengths = pool.take(5, 32)
    assert traffic.check(rows, lengths, flows=True).good.all()
    assert (rows[:, 12:14] == [0x08, 0x00]).all()


def test_pool_size_must_fit_the_pattern() -> None:
    with pytest.raises(ValueError):
        FramePool(parse_sizes("64"), "02:00:00:00:00:01", "02:00:00:00:00:02", frames=1000)


# -- the measurement loop -------------------------------------------------------------------


def _run(settings: BenchSettings, wire: FakeWire | None = None, **kw: Any) -> Any:
    wire = wire or FakeWire()
    return Bench(settings, tx=TX, rx=RX, opener=wire.open, **kw).run(), wire


def test_loopback_counts_every_frame() -> None:
    result, wire = _run(BenchSettings(count=5120, batch=128, verify=True))
    assert result.tx_frames == 5120
    assert result.rx_frames == 5120
    assert result.loss == 0 and result.rx_bad == 0
    assert result.tx_calls == 40  # one send per batch
    assert all(nic.closed for nic in wire.nics.values())
    assert {p["role"] for p in result.ports} == {"tx", "rx"}


def test_loopback_loss_is_sent_minus_received() -> None:
    result, _ = _run(BenchSettings(count=4000, batch=64), FakeWire(drop_every=10))
    assert result.tx_frames == 4000
    assert result.rx_frames == 3600
    assert result.loss == 400


def test_loopback_window_gives_up_lost_frames_and_goes_on() -> None:
    # 400 of 2000 frames lost; the window (the 256-ring's 255 descriptors)
    # fills with frames that never arrive, stalls, writes them off, carries on.
    settings = BenchSettings(count=2000, batch=64, ring_size=256)
    assert settings.in_flight_limit == 255
    result, _ = _run(settings, FakeWire(drop_every=5))
    assert (result.tx_frames, result.rx_frames, result.loss) == (2000, 1600, 400)
    assert result.tx_window_stalls >= 1
    open_loop, _ = _run(replace(settings, window=0), FakeWire(drop_every=5))
    assert open_loop.settings.in_flight_limit is None
    assert (open_loop.loss, open_loop.tx_window_stalls) == (400, 0)


def test_window_applies_to_loopback_only() -> None:
    assert BenchSettings(mode="tx").in_flight_limit is None
    assert BenchSettings(window=100).in_flight_limit == 100
    assert f"window {options.DEFAULT_RING - 1}" in BenchSettings().describe()
    assert "open loop" in BenchSettings(window=0).describe()
    with pytest.raises(UsageError):
        options.parse_window("-3")


def test_settings_reach_the_nic() -> None:
    _, wire = _run(BenchSettings(count=64, budget=16, itr_us=25.0, ring_size=256))
    for _, config in wire.opened:
        assert config["budget"] == 16 and config["itr_us"] == 25.0
        assert config["ring_size"] == 256


def test_duration_and_rate_bound_the_run() -> None:
    result, _ = _run(BenchSettings(duration=0.5, rate=2000.0, batch=50))
    # Paced per batch: about 0.5 s x 2000/s, never more than one batch ahead.
    assert 500 <= result.tx_frames <= 1000 + 50
    assert result.loss == 0


def test_tx_only_and_rx_only() -> None:
    wire = FakeWire()
    tx = Bench(BenchSettings(mode="tx", count=640), tx=TX, opener=wire.open).run()
    assert tx.tx_frames == 640 and tx.loss is None
    assert [p["role"] for p in tx.ports] == ["tx"]
    rx = Bench(BenchSettings(mode="rx", duration=0.2), rx=RX, opener=FakeWire().open).run()
    assert rx.rx_frames == 0 and rx.tx_frames == 0 and rx.loss is None


def test_ctrl_c_stops_reports_and_closes() -> None:
    class InterruptingView:
        def __init__(self) -> None:
            self.calls = 0

        def update(self, progress: Progress) -> None:
            self.calls += 1
            if self.calls == 2:
                raise KeyboardInterrupt

    wire = FakeWire()
    result, _ = _run(BenchSettings(duration=30.0, rate=5000.0), wire, view=InterruptingView())
    assert result.interrupted
    assert 0 < result.tx_frames < 30 * 5000
    assert all(nic.closed for nic in wire.nics.values())
    assert report.summary(result)["interrupted"]


def test_rx_counter_counts_per_queue_and_releases() -> None:
    counter = RxCounter(2, verify=True)
    lengths = np.array([60, 100])
    frames = traffic.build(np.arange(2), lengths, "02:00:00:00:00:01", "02:00:00:00:00:02")
    batch = FakeBatch(frames, lengths)
    counter(1, batch)
    frames[1, 30] ^= 0xFF
    counter(0, FakeBatch(frames, lengths))
    assert batch.released
    assert counter.frames == [2, 2] and counter.bytes == [160, 160]
    assert counter.totals() == (4, 320, 1)


def test_a_send_error_is_raised_after_closing() -> None:
    wire = FakeWire()

    def opener(bdf: str, **kw: Any) -> Any:
        nic = wire.open(bdf, **kw)
        if bdf == TX:

            def broken(*a: Any, **k: Any) -> int:
                raise OSError("bus error")

            nic.send = broken
        return nic

    with pytest.raises(OSError, match="bus error"):
        Bench(BenchSettings(count=100), tx=TX, rx=RX, opener=opener).run()
    assert all(nic.closed for nic in wire.nics.values())


# -- reports ---------------------------------------------------------------------------------------


def test_json_has_settings_figures_samples_and_stats(tmp_path: Path) -> None:
    result, _ = _run(BenchSettings(count=3000))
    data = report.to_dict(result, argv=["hwnic", "bench", "loopback"])
    path = report.write_json(tmp_path / "out" / "b.json", data)
    loaded = json.loads(path.read_text())
    assert loaded["kind"] == "hwnic-bench"
    assert loaded["command"] == ["hwnic", "bench", "loopback"]
    assert loaded["settings"]["count"] == 3000
    assert loaded["settings"]["budget"] == options.DEFAULT_BUDGET  # the default was recorded
    s = loaded["summary"]
    assert s["tx_frames"] == s["rx_frames"] == 3000
    assert s["loss"] == 0 and s["loss_pct"] == 0.0
    assert s["tx_pps"] > 0 and s["rx_mbps"] > 0
    assert s["tx_bytes"] == 3000 * 64
    assert set(s["irq"]) == {"tx", "rx"}
    assert s["irq"]["rx"]["indicated"] == 3000
    assert s["irq"]["rx"]["interrupts"] > 0
    assert loaded["samples"][-1]["rx_frames"] == 3000
    assert loaded["samples"][0]["t"] <= loaded["samples"][-1]["t"]
    assert loaded["stats"]["rx"]["interrupts"]["indicated_per_dpc"]["count"] > 0
    assert loaded["machine"]["cpus"] >= 1
    assert {p["role"]: p["bdf"] for p in loaded["ports"]} == {"tx": TX, "rx": RX}


def test_plot_writes_a_png(tmp_path: Path) -> None:
    result, _ = _run(BenchSettings(count=2000))
    path = report.plot(report.to_dict(result), tmp_path / "b.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert path.stat().st_size > 10_000


def test_sweep_runs_each_value_and_plots(tmp_path: Path) -> None:
    seen: list[int] = []

    def run_one(s: BenchSettings) -> dict[str, Any]:
        seen.append(s.budget)
        result, _ = _run(s)
        return report.to_dict(result)

    data = sweep.run_sweep(BenchSettings(count=500), parse_sweep("budget=16,64"), run_one)
    assert seen == [16, 64]
    assert [r["value"] for r in data["table"]] == ["16", "64"]
    assert all(r["loss"] == 0 for r in data["table"])
    assert data["runs"][0]["settings"]["budget"] == 16
    assert sweep.plot(data, tmp_path / "s.png").read_bytes()[:8] == PNG_MAGIC
    sizes = sweep.run_sweep(BenchSettings(count=100), parse_sweep("size=64,imix"), run_one)
    assert sweep.plot(sizes, tmp_path / "sizes.png").read_bytes()[:8] == PNG_MAGIC


def test_an_interrupted_run_ends_the_sweep() -> None:
    calls = []

    def run_one(s: BenchSettings) -> dict[str, Any]:
        calls.append(s.batch)
        result, _ = _run(s)
        data = report.to_dict(result)
        data["summary"]["interrupted"] = True
        return data

    data = sweep.run_sweep(BenchSettings(count=64), parse_sweep("batch=8,16,32"), run_one)
    assert calls == [8] and len(data["runs"]) == 1


# -- the CLI ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["--size", "59"],
        ["--size", "jumbo"],
        ["--count", "0"],
        ["--count", "1e3"],
        ["--duration", "-1"],
        ["--rate", "fast"],
        ["--batch", "0"],
        ["--budget", "-5"],
        ["--itr-us", "-1"],
        ["--interrupt", "nmi"],
        ["--sweep", "colour=red"],
        ["--sweep", "budget=1,x"],
    ],
)
def test_bad_option_values_exit_2_with_one_line(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", "loopback", "--tx", TX, "--rx", RX, *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("hwnic bench loopback: error: argument")


def test_ports_are_required_outside_the_lab(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "loopback"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "hwnic: bench loopback needs --tx BDF and --rx BDF; see 'hwnic list' for addresses"
    )
    assert main(["bench", "loopback", "--tx", TX, "--rx", TX]) == 2
    assert main(["bench", "rx", "--rx", "not-an-address"]) == 2


def test_lab_defaults_to_two_ports_on_one_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    nics = plan_nics(["e1000", "e1000", "igb", "igb"])
    bdfs = ["0000:01:00.0", "0000:02:00.0", "0000:03:00.0", "0000:04:00.0"]
    located = [replace(n, bdf=b) for n, b in zip(nics, bdfs, strict=True)]
    monkeypatch.setenv("HWNIC_LAB", "1")
    monkeypatch.setenv("HWNIC_LAB_NICS", dumps(located))
    assert cli_bench.resolve_ports("loopback", None, None) == (bdfs[0], bdfs[1])
    assert cli_bench.resolve_ports("loopback", None, None, "igb") == (bdfs[2], bdfs[3])
    assert cli_bench.resolve_ports("loopback", bdfs[3], None) == (bdfs[3], bdfs[2])
    assert cli_bench.resolve_ports("tx", None, None, "igb") == (bdfs[2], None)
    assert cli_bench.resolve_ports("rx", None, None) == (None, bdfs[1])
    with pytest.raises(UsageError, match="no two e1000e ports"):
        cli_bench.resolve_ports("loopback", None, None, "e1000e")


def test_cli_run_writes_json_and_plot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    wire = FakeWire()
    monkeypatch.setattr(hwnic, "open", wire.open)
    out_json, out_png = tmp_path / "b.json", tmp_path / "b.png"
    rc = main(["bench", "loopback", "--tx", TX, "--rx", RX, "--count", "2000", "--size",
               "64,1514", "--json", str(out_json), "--plot", str(out_png)])  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    assert "loss 0 (0.00 %)" in out
    assert str(out_json) in out and str(out_png) in out
    data = json.loads(out_json.read_text())
    assert data["summary"]["rx_frames"] == 2000
    assert data["settings"]["sizes"]["lengths"] == [64, 1514]
    assert out_png.read_bytes()[:8] == PNG_MAGIC


def test_cli_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hwnic, "open", FakeWire().open)
    out_json = tmp_path / "s.json"
    rc = main(["bench", "loopback", "--tx", TX, "--rx", RX, "--count", "300", "-q",
               "--sweep", "batch=8,32", "--json", str(out_json)])  # fmt: skip
    assert rc == 0
    data = json.loads(out_json.read_text())
    assert data["kind"] == "hwnic-bench-sweep"
    assert [r["settings"]["batch"] for r in data["runs"]] == [8, 32]


def test_live_lines_when_not_a_tty() -> None:
    import io

    from hwnic.bench.live import LiveView

    stream = io.StringIO()
    with LiveView("t", stream=stream, tty=False) as view:
        result, _ = _run(BenchSettings(count=1000), view=view)
    lines = stream.getvalue().splitlines()
    assert lines and all("tx" in line and "rx" in line for line in lines)
    assert result.loss == 0


def test_live_table_on_a_tty() -> None:
    import io

    from hwnic.bench.live import table

    p = Progress(1.0, "sending", 100, 90, 1000.0, 900.0, 0.5, 0.4, 10,
                 {"tx": {"interrupts_per_s": 5.0, "interrupts": 5, "dpc_runs": 5,
                         "more_pending": 0, "time_cutoffs": 0, "indicated": 0},
                  "rx": {"interrupts_per_s": 7.0, "interrupts": 7, "dpc_runs": 9,
                         "more_pending": 2, "time_cutoffs": 0, "indicated": 90}})  # fmt: skip
    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=100).print(table(p, "title"))
    text = buf.getvalue()
    assert "frames/s" in text and "budget used up" in text and "loss so far 10" in text


def test_rx_counter_is_thread_safe_per_queue() -> None:
    counter = RxCounter(4)
    lengths = np.full(8, 60)
    frames = np.zeros((8, 60), np.uint8)

    def feed(q: int) -> None:
        for _ in range(500):
            counter(q, FakeBatch(frames, lengths))

    threads = [threading.Thread(target=feed, args=(q,)) for q in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter.totals()[0] == 4 * 500 * 8


def test_jumbo_sizes_open_the_ports_for_long_frames() -> None:
    from types import SimpleNamespace

    from hwnic.bench.runner import open_kwargs

    base = {"queues": 1, "budget": 64, "ring_size": 512, "itr_us": None, "interrupt": None}
    standard = SimpleNamespace(sizes=parse_sizes("64,1514"), **base)
    jumbo = SimpleNamespace(sizes=parse_sizes("64,9000"), **base)
    assert "max_frame" not in open_kwargs(standard)  # type: ignore[arg-type]
    assert open_kwargs(jumbo)["max_frame"] == 9018  # type: ignore[arg-type]
