"""One result per self-test: name, pass/fail/skip, a detail line, duration.

Every skip carries its reason in ``detail``; a failure says what was wrong.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hwnic.errors import HwnicError


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"


@dataclass
class Result:
    name: str
    status: Status
    detail: str = ""
    duration_s: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)  # figures for --json

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": str(self.status),
            "detail": self.detail,
            "duration_s": round(self.duration_s, 3),
            **({"data": self.data} if self.data else {}),
        }


class TestFailed(Exception):
    """Raised inside a test: it ends that test as a failure with this message."""

    __test__ = False  # not a pytest test class


class TestSkipped(Exception):
    """Raised inside a test: it ends that test as skipped, the message is the reason."""

    __test__ = False


@contextmanager
def timed(name: str, results: list[Result]) -> Iterator[Result]:
    """Run a test body; its outcome (pass, TestFailed, TestSkipped) lands in ``results``.

    The body may fill ``result.detail`` and ``result.data`` on success.
    A HwnicError or OSError fails the test with its message; anything else
    (KeyboardInterrupt, a bug) propagates.
    """
    result = Result(name, Status.PASS)
    start = time.monotonic()
    try:
        yield result
    except (TestFailed, HwnicError, OSError) as exc:
        # A typed error (a timeout, an MDIC error, a failed ioctl) fails this test only.
        result.status, result.detail = Status.FAIL, str(exc)
    except TestSkipped as exc:
        result.status, result.detail = Status.SKIP, str(exc)
    finally:
        result.duration_s = time.monotonic() - start
        results.append(result)


def passed(results: Sequence[Result]) -> bool:
    """No test failed (skips do not fail a run)."""
    return not any(r.status is Status.FAIL for r in results)


def report(bdf: str, peer: str | None, results: Sequence[Result]) -> dict[str, Any]:
    """The JSON document ``hwnic selftest --json`` writes."""
    return {
        "bdf": bdf,
        "peer": peer,
        "passed": passed(results),
        "results": [r.to_dict() for r in results],
    }
