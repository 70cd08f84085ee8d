"""hwnic.lab.dpdk and tools/compare_dpdk.py without DPDK or a device.

testpmd's ``show port stats all`` output is parsed from text captured in the
lab; :class:`TestPmd` is driven against a small fake testpmd (a Python script
on PATH that answers like the real one); the medians and ratios of the
comparison are checked on made-up runs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from hwnic.errors import LabError
from hwnic.lab import dpdk
from hwnic.lab.dpdk import Hugepages, PortStats, TestPmd, parse_port_stats

ROOT = Path(__file__).resolve().parents[2]

# As testpmd 22.11 printed it in the lab (igb, rxonly), but for the trailing blanks
# after RX-nombuf (added back where used).
STATS_ONE = """
  ######################## NIC statistics for port 0  ########################
  RX-packets: 425465     RX-missed: 3          RX-bytes:  218544210
  RX-errors: 0
  RX-nombuf:  7
  TX-packets: 0          TX-errors: 0          TX-bytes:  0

  Throughput (since last show)
  Rx-pps:        25416          Rx-bps:    307842184
  Tx-pps:            0          Tx-bps:            0
  ############################################################################
"""

STATS_TWO = (
    STATS_ONE
    + """
  ######################## NIC statistics for port 1  ########################
  RX-packets: 0          RX-missed: 0          RX-bytes:  0
  RX-errors: 0
  RX-nombuf:  0
  TX-packets: 2177792    TX-errors: 1          TX-bytes:  139378688

  Throughput (since last show)
  Rx-pps:            0          Rx-bps:            0
  Tx-pps:       531405          Tx-bps:    272079360
  ############################################################################
"""
)


# -- parsing ------------------------------------------------------------------------


def test_parse_one_port() -> None:
    text = STATS_ONE.replace("RX-nombuf:  7\n", "RX-nombuf:  7         \n")
    assert parse_port_stats(text) == {
        0: PortStats(rx_packets=425465, rx_missed=3, rx_nombuf=7, rx_bytes=218544210)
    }


def test_parse_two_ports_and_leaves_out_the_rates() -> None:
    ports = parse_port_stats(STATS_TWO)
    assert set(ports) == {0, 1}
    assert ports[1] == PortStats(tx_packets=2177792, tx_errors=1, tx_bytes=139378688)
    assert ports[0].rx_packets == 425465  # not Rx-pps (25416) from the same block


def test_parse_ignores_other_output() -> None:
    text = "show port stats all\nInvalid port 3\nRX-packets: 5\n" + STATS_ONE + "\nDone.\n"
    assert parse_port_stats(text)[0].rx_packets == 425465
    assert parse_port_stats("Telling cores to stop...\nRX-packets: 5\n") == {}


def test_port_stats_difference() -> None:
    before = PortStats(rx_packets=10, tx_packets=4, rx_missed=1)
    after = PortStats(rx_packets=25, tx_packets=4, rx_missed=3)
    assert after - before == PortStats(rx_packets=15, rx_missed=2)


@pytest.mark.parametrize(
    ("mounts", "found"),
    [
        ("none /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0\n", "/dev/hugepages"),
        ("hugetlbfs /mnt/h hugetlbfs rw,relatime 0 0\n", "/mnt/h"),  # the default size
        ("none /mnt/g hugetlbfs rw,pagesize=1024M 0 0\n", None),
        ("none /mnt/k hugetlbfs rw,pagesize=2048K 0 0\n", "/mnt/k"),
        ("proc /proc proc rw 0 0\ntmpfs /tmp tmpfs rw 0 0\n", None),
    ],
)
def test_hugetlbfs_mount(mounts: str, found: str | None) -> None:
    assert dpdk.hugetlbfs_mount(mounts) == found


def test_hugepages_reserved_and_given_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nr = tmp_path / "nr_hugepages"
    nr.write_text("16\n")
    mounts = tmp_path / "mounts"
    mounts.write_text("none /dev/hugepages hugetlbfs rw,pagesize=2M 0 0\n")
    monkeypatch.setattr(dpdk, "NR_HUGEPAGES", nr)
    monkeypatch.setattr(dpdk, "PROC_MOUNTS", mounts)
    with Hugepages(512) as huge:
        assert nr.read_text().strip() == "512"
        assert huge.path == "/dev/hugepages"
    assert nr.read_text().strip() == "16"


def test_testpmd_argv() -> None:
    argv = dpdk.testpmd_argv(  # not imported by name: pytest would collect test*
        "0000:01:00.0",
        prefix="p",
        main_lcore=1,
        forward_mode="txonly",
        huge_dir="/h",
        iova_mode="va",
        txpkts=64,
        eth_peer="52:54:00:12:34:02",
    )
    eal, app = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    assert eal[0] == dpdk.TESTPMD
    for pair in (["-a", "0000:01:00.0"], ["--main-lcore", "1"], ["--file-prefix", "p"]):
        assert pair[0] in eal and eal[eal.index(pair[0]) + 1] == pair[1]
    assert "--iova-mode=va" in eal and "--huge-dir" in eal
    assert {"-i", "--no-lsc-interrupt", "--burst=32", "--forward-mode=txonly"} <= set(app)
    assert "--txpkts=64" in app and "--eth-peer=0,52:54:00:12:34:02" in app


# -- TestPmd against a fake testpmd ------------------------------------------------------

FAKE = """\
#!{python}
import sys
if "--fail" in sys.argv:
    print("EAL: FATAL: Cannot get hugepage information.")
    sys.exit(1)
print("EAL: Detected CPU lcores: 2\\nDone")
stats = {stats!r}
rx = 0
while True:
    sys.stdout.write("testpmd> ")
    sys.stdout.flush()
    line = sys.stdin.readline()
    if not line or line.strip() == "quit":
        print("Bye...")
        break
    cmd = line.strip()
    if cmd == "show port stats all":
        rx += 100
        sys.stdout.write(stats.replace("425465", str(rx)))
    elif cmd == "hang":
        sys.stdin.readline()
    elif cmd not in ("start", "stop") and not cmd.startswith("set txpkts"):
        print("Bad arguments")
"""


@pytest.fixture
def fake_testpmd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / dpdk.TESTPMD
    script.write_text(FAKE.format(python=sys.executable, stats=STATS_ONE))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    return script


def test_testpmd_commands_and_stats(fake_testpmd: Path) -> None:
    with TestPmd([dpdk.TESTPMD, "-i"], name="fake") as pmd:
        assert "Detected CPU lcores" in pmd.output()
        pmd.start()
        pmd.set_txpkts(64)
        assert pmd.stats().rx_packets == 100  # each show counts 100 more in the fake
        assert pmd.stats().rx_packets == 200
        assert "Bad arguments" in pmd.command("frobnicate")
        proc = pmd.proc
    assert proc is not None and proc.returncode == 0  # quit, not killed
    assert "Bye" in pmd.output()


def test_testpmd_that_fails_to_start_says_why(fake_testpmd: Path) -> None:
    with pytest.raises(LabError, match=r"(?s)exited during 'start'.*Cannot get hugepage"):
        TestPmd([dpdk.TESTPMD, "--fail"], name="fake").__enter__()


def test_testpmd_without_an_answer_times_out_and_is_ended(fake_testpmd: Path) -> None:
    with TestPmd([dpdk.TESTPMD], name="fake") as pmd:
        with pytest.raises(LabError, match="no prompt within 0 s of 'hang'"):
            pmd.command("hang", timeout=0.2)
        proc = pmd.proc
    assert proc is not None and proc.poll() is not None  # quit still ends it


def test_testpmd_not_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LabError, match="not found on PATH") as err:
        TestPmd([dpdk.TESTPMD]).__enter__()
    assert "tools/setup-dpdk.sh" in str(err.value.hint)


# -- the comparison's summary ---------------------------------------------------------


@pytest.fixture(scope="module")
def compare() -> ModuleType:
    path = ROOT / "tools" / "compare_dpdk.py"
    spec = importlib.util.spec_from_file_location("compare_dpdk", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(compare: ModuleType, sent: int, received: int, seconds: float = 2.0) -> dict[str, float]:
    result: dict[str, float] = compare.figures(sent, seconds, received)
    return result


def test_figures(compare: ModuleType) -> None:
    f = _run(compare, 1000, 750)
    assert f["tx_pps"] == 500 and f["rx_pps"] == 375 and f["loss_pct"] == 25
    assert _run(compare, 0, 0, 0.0)["loss_pct"] == 0 and _run(compare, 0, 0, 0.0)["tx_pps"] == 0


def test_medians_and_ratios(compare: ModuleType) -> None:
    dd = [_run(compare, n, n // 2) for n in (1000, 3000, 2000)]  # median TX 1000/s, RX 500/s
    dh = [_run(compare, 2000, n) for n in (100, 300, 200)]  # RX 100/s
    hd = [_run(compare, n, n) for n in (400, 200, 600)]  # TX = RX 200/s
    hh = [_run(compare, 100, 100)]
    runs = {"64": {"dpdk->dpdk": dd, "dpdk->hwnic": dh, "hwnic->dpdk": hd, "hwnic->hwnic": hh}}
    rows = compare.medians({"igb": runs})
    by_mode = {r["mode"]: r for r in rows}
    assert by_mode["dpdk->dpdk"]["tx_pps"] == 1000 and by_mode["dpdk->dpdk"]["rx_pps"] == 500
    assert by_mode["dpdk->dpdk"]["runs"] == 3 and by_mode["dpdk->dpdk"]["loss_pct"] == 50
    assert (by_mode["dpdk->hwnic"]["rx_pps_min"], by_mode["dpdk->hwnic"]["rx_pps_max"]) == (50, 150)
    (ratio,) = compare.ratios(rows)
    assert (ratio["model"], ratio["size"]) == ("igb", 64)
    assert ratio["receiver_rx"] == pytest.approx(100 / 500)
    assert ratio["sender_tx"] == pytest.approx(200 / 1000)
    assert ratio["sender_rx"] == pytest.approx(200 / 500)
    assert ratio["both_rx"] == pytest.approx(50 / 500)


def test_ratios_with_a_missing_mode_or_a_zero(compare: ModuleType) -> None:
    runs = {
        "1514": {
            "dpdk->dpdk": [_run(compare, 100, 0)],
            "dpdk->hwnic": [_run(compare, 100, 50)],
            "hwnic->dpdk": [],
            "hwnic->hwnic": [],
        }
    }
    (ratio,) = compare.ratios(compare.medians({"e1000": runs}))
    assert ratio["receiver_rx"] is None  # DPDK received nothing: no ratio, not a division error
    assert ratio["sender_tx"] is None and ratio["both_rx"] is None


def test_size_list(compare: ModuleType) -> None:
    assert compare.parse_size_list("64,1514") == [64, 1514]
    from hwnic.errors import UsageError

    with pytest.raises(UsageError, match="out of range"):
        compare.parse_size_list("64,9000")


def test_show_prints_both_tables(compare: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    runs = {"64": {"dpdk->dpdk": [_run(compare, 100, 50)], "dpdk->hwnic": [_run(compare, 100, 5)]}}
    rows = compare.medians({"igb": runs})
    compare.show(rows, compare.ratios(rows), "test")
    out = capsys.readouterr().out
    assert "dpdk->hwnic" in out and "0.100" in out and "ratios" in out


def test_tools_do_not_need_dpdk() -> None:
    # The everyday commands must run on a machine without DPDK.
    for script in ("test.sh", "run.sh", "setup-host.sh"):
        text = (ROOT / "tools" / script).read_text()
        assert "dpdk" not in text.lower(), script


def test_report_writes_partial_results(compare: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "r" / "compare_dpdk.json"
    args = compare.arguments(["--json", str(out), "--host-load", "load average: 1.00"])
    port = SimpleNamespace(address="0000:05:00.0")
    runs = {"64": {"dpdk->dpdk": [_run(compare, 100, 50)], "dpdk->hwnic": []}}
    summary = {"checkout": "abc", "interrupted": False, "errors": {"igb": "boom"}}
    compare.report(args, {"igb": (port, port)}, {**summary, "models": {"igb": runs}})
    doc = json.loads(out.read_text())
    assert doc["host_load"] == "load average: 1.00" and doc["errors"] == {"igb": "boom"}
    assert doc["settings"]["runs"] == 3 and doc["settings"]["window"] == 0
    assert doc["medians"][0]["rx_pps"] == 25 and doc["ratios"][0]["receiver_rx"] is None
    assert not out.with_suffix(".tmp").exists()


def test_a_hung_trial_ends_its_mode(compare: ModuleType) -> None:
    import time

    args = compare.arguments(["--duration", "0.1"])
    port = SimpleNamespace(address="0000:05:00.0", mac="52:54:00:12:34:05")
    model = compare.Model("igb", port, port, args, "/dev/hugepages")
    hung: list[str] = []
    model.on_hang = hung.append
    compare.TRIAL_MARGIN, margin = 0.1, compare.TRIAL_MARGIN
    try:
        with model.mode("hwnic->hwnic"):
            model.trial("hwnic->hwnic", 64, 0, lambda: time.sleep(5) or {})
            raise AssertionError("the trial should have been cut short")
        model.trial("hwnic->dpdk", 64, 0, lambda: _run(compare, 10, 10))  # the next one runs
    finally:
        compare.TRIAL_MARGIN = margin
    assert model.errors and "took over" in model.errors[0] and not hung
    assert model.runs["64"]["hwnic->dpdk"] and not model.runs["64"]["hwnic->hwnic"]
