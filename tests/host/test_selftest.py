"""hwnic selftest without a device: checksum, register-pattern logic, results, CLI.

The register-level fake (hwnic.nic.testing.FakeBar) stands in for BAR0;
the device tests themselves run in tests/lab/test_selftest_lab.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hwnic.cli.main import main
from hwnic.diag import Result, Status, parse_tests, passed, registers, report
from hwnic.diag import runner as diag_runner
from hwnic.diag.nvm import checksum, read_words
from hwnic.diag.result import TestFailed, TestSkipped, timed
from hwnic.errors import NicError, UsageError
from hwnic.nic import regs
from hwnic.nic.testing import FakeBar


class ReadOnlyStatus(FakeBar):
    """STATUS ignores writes, as on silicon and in QEMU; optional per-register masks."""

    def __init__(self, family: str, masks: dict[int, int] | None = None) -> None:
        super().__init__(family)
        self.masks = masks or {}

    def write32(self, offset: int, value: int) -> None:
        if offset == regs.STATUS:
            return
        super().write32(offset, value & self.masks.get(offset, 0xFFFFFFFF))


# -- NVM checksum ---------------------------------------------------------------------


@pytest.mark.parametrize("family", ["e1000", "e1000e", "igb"])
def test_eeprom_read_through_eerd_sums_to_baba(family: str) -> None:
    bar = FakeBar(family)
    words = read_words(bar, regs.NVM_CHECKSUM_WORDS, layout_8254x=family == "e1000")
    assert np.array_equal(words, bar.eeprom)
    assert checksum(words) == regs.NVM_SUM


def test_eeprom_layouts_differ() -> None:
    """Reading the 82574 with the 8254x layout gets the wrong words (or none)."""
    bar = FakeBar("e1000e")
    with pytest.raises(NicError, match="did not complete"):
        read_words(bar, 2, layout_8254x=True)


def test_checksum_is_16_bit_and_catches_a_bad_word() -> None:
    words = FakeBar("igb").eeprom.copy()
    assert checksum(words) == 0xBABA
    words[5] ^= 0x0100
    assert checksum(words) != 0xBABA
    assert checksum(np.full(0x40, 0xFFFF, np.uint16)) == (0x40 * 0xFFFF) & 0xFFFF


# -- register patterns ------------------------------------------------------------------


@pytest.mark.parametrize("family", ["e1000", "e1000e", "igb"])
def test_register_table_passes_on_storage_and_restores(family: str) -> None:
    bar = ReadOnlyStatus(family)
    before = dict(bar.regs)
    toggle, table = registers.table_for(family, queues=8)
    checked = registers.run_table(bar, toggle, table)
    assert checked == sum(1 for t in table if t.kind is not registers.Kind.WRITE)
    for offset in registers.offsets(table):
        assert bar.regs.get(offset, 0) == before.get(offset, 0), hex(offset)


def test_a_register_that_drops_a_bit_fails() -> None:
    rdlen = regs.RDBAL0 + regs.DLEN
    bar = ReadOnlyStatus("e1000e", masks={rdlen: 0x000FFF00})  # drops bit 7
    toggle, table = registers.table_for("e1000e")
    with pytest.raises(
        registers.RegisterMismatch, match=r"RDLEN \(0x02808\).*read 0x0005A500.*expected 0x0005A580"
    ):
        registers.run_table(bar, toggle, table)


def test_registers_are_restored_after_a_failure() -> None:
    last_mta = regs.MTA + 4 * (regs.MTA_ENTRIES - 1)
    bar = ReadOnlyStatus("e1000", masks={last_mta: 0xFFFFFFFE})
    bar.regs[regs.RAH0] = 0x8000_1234
    toggle, table = registers.table_for("e1000")
    with pytest.raises(registers.RegisterMismatch, match=r"MTA\[127\]"):
        registers.run_table(bar, toggle, table)
    assert regs.RAH0 in {t.offset for t in table}  # it was overwritten by the test...
    assert bar.regs[regs.RAH0] == 0x8000_1234  # ...and is back


def test_status_that_takes_a_write_fails() -> None:
    bar = FakeBar("igb")  # plain storage: STATUS keeps what is written
    bar.regs[regs.STATUS] = 0
    with pytest.raises(registers.RegisterMismatch, match="STATUS"):
        registers.check_status(bar, registers.STATUS_TOGGLE_82576)
    assert bar.regs[regs.STATUS] == 0


def test_set_entry_checks_under_mask() -> None:
    t = registers.RegTest("RCTL", regs.RCTL, 0x0000FFFF, 0x00FF00FF, registers.Kind.SET)
    registers.run_entry(FakeBar("e1000"), t)
    bar = ReadOnlyStatus("e1000", masks={regs.RCTL: 0x0000FF00})
    with pytest.raises(registers.RegisterMismatch, match="set test"):
        registers.run_entry(bar, t)


def test_tables_keep_to_what_qemu_implements() -> None:
    names = {t.name for t in registers.table_82540()}
    assert not names & {"FCAL", "FCAH", "FCT", "FCRTH", "FCTTV", "TIPG", "TXCW", "TIDV"}
    assert not {t.name for t in registers.table_82574()} & {"TXCW", "TIDV"}
    igb = registers.table_82576(queues=4)
    assert not any(t.name.startswith("RDH") for t in igb), "RDH is read-only on the 82576"
    first_rdt = next(i for i, t in enumerate(igb) if t.name.startswith("RDT"))
    assert igb[first_rdt - 1].kind is registers.Kind.WRITE  # queues enabled first


# -- results, selection ------------------------------------------------------------------


def test_timed_turns_outcomes_into_results() -> None:
    results: list[Result] = []
    with timed("a", results) as r:
        r.detail = "fine"
    with timed("b", results):
        raise TestSkipped("no flash")
    with timed("c", results):
        raise TestFailed("bad")
    with timed("d", results):
        raise NicError("MDIC did not complete")
    with pytest.raises(KeyboardInterrupt), timed("e", results):
        raise KeyboardInterrupt
    assert [(r.name, r.status) for r in results[:4]] == [
        ("a", Status.PASS),
        ("b", Status.SKIP),
        ("c", Status.FAIL),
        ("d", Status.FAIL),
    ]
    assert results[3].detail == "MDIC did not complete"
    assert not passed(results[:4]) and passed(results[:2])
    doc = report("0000:01:00.0", None, results[:2])
    assert doc["passed"] is True
    assert doc["results"][1] == {
        "name": "b",
        "status": "skip",
        "detail": "no flash",
        "duration_s": doc["results"][1]["duration_s"],
    }


def test_parse_tests() -> None:
    assert parse_tests(None) == [t for t in diag_runner.TESTS if t != "peer"]
    assert parse_tests(None, peer="x") == list(diag_runner.TESTS)
    assert parse_tests("loopback,register") == ["register", "loopback-mac", "loopback-phy"]
    with pytest.raises(UsageError, match="no self-test named 'nope'"):
        parse_tests("register,nope")
    with pytest.raises(UsageError, match="--peer"):
        parse_tests("peer")


# -- the command ---------------------------------------------------------------------------


@pytest.fixture
def fake_run(monkeypatch: pytest.MonkeyPatch) -> list[tuple[object, ...]]:
    calls: list[tuple[object, ...]] = []
    outcome = {"status": Status.PASS}

    def run(bdf: str, peer: str | None, tests: object, **kw: object) -> list[Result]:
        calls.append((bdf, peer, tests, kw))
        return [
            Result("register", outcome["status"], "detail", 0.5),
            Result("loopback-mac", Status.SKIP, "QEMU's e1000 ignores RCTL.LBM", 0.0),
        ]

    monkeypatch.setattr(diag_runner, "run_selftest", run)
    import hwnic.diag

    monkeypatch.setattr(hwnic.diag, "run_selftest", run)
    calls.append(("outcome", outcome))
    return calls


def test_cli_pass_with_skip_exits_0_and_writes_json(
    fake_run: list[tuple[object, ...]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.json"
    rc = main(["selftest", "0000:01:00.0", "--test", "register,loopback", "--json", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["passed"] is True
    assert [r["status"] for r in doc["results"]] == ["pass", "skip"]
    text = capsys.readouterr().out
    assert "PASS" in text and "SKIP" in text and "ignores RCTL.LBM" in text
    assert fake_run[1][:3] == ("0000:01:00.0", None, "register,loopback")


def test_cli_failure_exits_1_json_on_stdout(
    fake_run: list[tuple[object, ...]], capsys: pytest.CaptureFixture[str]
) -> None:
    outcome = fake_run[0][1]
    assert isinstance(outcome, dict)
    outcome["status"] = Status.FAIL
    rc = main(["selftest", "0000:01:00.0", "--peer", "0000:02:00.0", "--json", "-"])
    assert rc == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["passed"] is False and doc["peer"] == "0000:02:00.0"


def test_cli_bad_test_name_is_a_usage_error(
    fake_run: list[tuple[object, ...]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["selftest", "0000:01:00.0", "--test", "bogus"]) == 2
    assert "no self-test named 'bogus'" in capsys.readouterr().err
    assert len(fake_run) == 1  # never ran


def test_cli_help_explains_the_tests(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["selftest", "--help"])
    text = capsys.readouterr().out
    for name in diag_runner.TESTS:
        assert name in text
    assert "OFFLINE" in text
