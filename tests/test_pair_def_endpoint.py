"""The def_endpoint pair (C2): its verdict rule on fixture records."""

from __future__ import annotations

from typing import Any

import pytest

from apps.def_endpoint import pair as def_endpoint
from harness.checks import CPU_PER_REQUEST, THREADS_PEAK, THROUGHPUT, Level, Ratio, Total
from harness.pairs import discover
from tests.conftest import blocks_of

PAIR = discover()["def_endpoint"]
BROKEN = Total(def_endpoint.BROKEN, "def-endpoint").key


def rec(
    rps: float = 1000,
    cpu: float = 90.0,
    failure_rate: float = 0.0,
    setups: int = 5000,
    teardowns: int = 5000,
    status: str = "ok",
    error: str | None = None,
) -> dict[str, Any]:
    return {
        "status": status,
        "error": error,
        "rps": rps,
        "server_cpu_pct": cpu,
        "failure_rate": failure_rate,
        "threads_busy_peak": 12,
        "counters": {"setups": setups, "teardowns": teardowns},
    }


def decide(bad: dict[str, Any], good: dict[str, Any]) -> Any:
    records = {"def-endpoint": bad, "async-endpoint": good}
    return PAIR.decide(records, PAIR.knobs, blocks_of(records))


def test_does_not_hold_when_the_def_endpoint_serves_cleanly() -> None:
    verdict = decide(rec(rps=800), rec(rps=1000))
    assert verdict.outcome == "does not hold"
    assert verdict.checks[-1]["outcome"] == "misses" and verdict.figures[BROKEN] == 0
    # Its cost is shown, not deciding: 1.25x the CPU per request of the async endpoint.
    assert verdict.figures[Ratio(CPU_PER_REQUEST, "def-endpoint", "async-endpoint").key] == pytest.approx(1.25)
    assert verdict.figures[Ratio(THROUGHPUT, "def-endpoint", "async-endpoint").key] == pytest.approx(0.8)
    assert verdict.figures[Level(THREADS_PEAK, "def-endpoint").key] == 12


def test_a_high_cost_alone_does_not_make_it_hold() -> None:
    assert decide(rec(rps=300), rec(rps=1000)).outcome == "does not hold"


def test_holds_when_the_def_endpoint_fails_requests() -> None:
    verdict = decide(rec(rps=800, failure_rate=0.3), rec())
    assert verdict.outcome == "holds" and verdict.figures[BROKEN] == pytest.approx(0.3)


def test_holds_when_the_dependency_is_not_torn_down() -> None:
    verdict = decide(rec(teardowns=2500), rec())
    assert verdict.outcome == "holds" and verdict.figures[BROKEN] == pytest.approx(0.5)


def test_holds_when_the_def_endpoint_fails_verification() -> None:
    failed = rec(status="failed", error="verification failed for id 3: status 500, body 'Internal Server Error'")
    verdict = decide(failed, rec())
    assert verdict.outcome == "holds" and verdict.figures[BROKEN] == 1.0


def test_stray_failures_under_the_threshold_still_count_as_working() -> None:
    verdict = decide(rec(failure_rate=0.004, teardowns=4990), rec())
    assert verdict.outcome == "does not hold"
    assert verdict.figures[BROKEN] == pytest.approx(0.004)
    assert verdict.figures[BROKEN] < def_endpoint.BROKEN_SHARE


def test_inconclusive_when_the_def_endpoint_failed_for_another_reason() -> None:
    verdict = decide(rec(status="failed", error="server exited with status 1"), rec())
    assert verdict.outcome == "inconclusive" and "def-endpoint" in verdict.headline


def test_inconclusive_without_the_async_endpoint() -> None:
    assert decide(rec(), rec(status="failed", error="server exited with status 1")).outcome == "inconclusive"


def test_inconclusive_when_the_async_endpoint_does_not_work_either() -> None:
    # The positive control: the harness must serve this dependency where nobody doubts it works.
    verdict = decide(rec(failure_rate=0.3), rec(failure_rate=0.3))
    assert verdict.outcome == "inconclusive"
    assert verdict.checks[0]["outcome"] == "misses"
