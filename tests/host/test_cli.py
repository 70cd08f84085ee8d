"""The ``hwnic`` command's user-caused errors: one line, non-zero, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hwnic.cli.main import build_parser, main


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hwnic.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_bad_address() -> None:
    proc = run("info", "not-an-address")
    assert proc.returncode == 2
    assert "is not a PCI address" in one_line_error(proc)


def test_absent_device() -> None:
    line = one_line_error(run("info", "0000:7f:1f.7"))
    assert "no PCI device at 0000:7f:1f.7" in line and "hwnic list" in line


def test_bind_absent_device() -> None:
    assert "no PCI device" in one_line_error(run("bind", "0000:7f:1f.7"))


def test_unknown_option_value() -> None:
    proc = run("bind", "0000:7f:1f.7", "--timeout", "soon")
    assert proc.returncode == 2
    assert "invalid float value" in one_line_error(proc)


def test_debug_shows_traceback() -> None:
    proc = run("--debug", "info", "zz")
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["list", "bind", "unbind", "info", "lab"])
def test_every_command_has_help(command: str) -> None:
    parser = build_parser()
    choices = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert command in choices
    assert choices[command].format_help().strip()


def test_list_json_is_a_list() -> None:
    proc = run("list", "--json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.lstrip().startswith("[")
