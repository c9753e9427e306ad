"""The def_endpoint pair (C2): its verdict rule on fixture records."""

from __future__ import annotations

from typing import Any

from harness.pairs import discover

PAIR = discover()["def_endpoint"]


def rec(
    rps: float = 1000,
    p50: float = 20,
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
        "p50_ms": p50,
        "failure_rate": failure_rate,
        "counters": {"setups": setups, "teardowns": teardowns},
    }


def decide(bad: dict[str, Any], good: dict[str, Any]) -> Any:
    return PAIR.decide({"def-endpoint": bad, "async-endpoint": good}, PAIR.knobs)


def test_does_not_hold_when_the_def_endpoint_serves_like_the_async_one() -> None:
    verdict = decide(rec(rps=800, p50=25), rec(rps=1000, p50=20))
    assert verdict.outcome == "does not hold"
    assert "0.80x" in verdict.text and "100.0%" in verdict.text


def test_holds_when_the_def_endpoint_fails_requests() -> None:
    assert decide(rec(rps=800, failure_rate=0.3), rec()).outcome == "holds"


def test_holds_when_the_dependency_is_not_torn_down() -> None:
    assert decide(rec(teardowns=2500), rec()).outcome == "holds"


def test_holds_when_the_def_endpoint_fails_verification() -> None:
    failed = rec(status="failed", error="verification failed for id 3: status 500, body 'Internal Server Error'")
    verdict = decide(failed, rec())
    assert verdict.outcome == "holds" and "status 500" in verdict.text


def test_partly_holds_when_it_works_at_a_fraction_of_the_throughput() -> None:
    assert decide(rec(rps=300), rec(rps=1000)).outcome == "partly holds"


def test_inconclusive_when_the_def_endpoint_failed_for_another_reason() -> None:
    verdict = decide(rec(status="failed", error="server exited with status 1"), rec())
    assert verdict.outcome == "inconclusive" and "def-endpoint" in verdict.text


def test_inconclusive_without_the_async_endpoint() -> None:
    assert decide(rec(), rec(status="failed")).outcome == "inconclusive"
