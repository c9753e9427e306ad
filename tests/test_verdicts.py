"""Each pair's verdict rule on fixture figures, including figures that must turn it the
other way: the verdict comes from the numbers, not from the role."""

from __future__ import annotations

from typing import Any

from harness.pairs import discover

Record = dict[str, Any]


def rec(
    rps: float = 200, ping: float = 5, failure_rate: float = 0.0, peak: int = 10, status: str = "ok"
) -> dict[str, Any]:
    return {"status": status, "rps": rps, "ping_p99_ms": ping, "failure_rate": failure_rate, "peak_connections": peak}


PAIRS = discover()


def deps(sync: dict[str, Any], good: dict[str, Any], blocking: dict[str, Any]) -> Any:
    return PAIRS["deps"].decide({"sync-dep": sync, "async-dep": good, "async-dep-blocking": blocking}, {})


def test_deps_holds_only_for_blocking_async_code_when_sync_dep_keeps_ping_low() -> None:
    verdict = deps(rec(rps=180, ping=15), rec(rps=200, ping=12), rec(rps=90, ping=400))
    assert verdict.outcome == "partly holds"
    assert "400 ms" in verdict.text and "0.90x" in verdict.text


def test_deps_holds_when_sync_dep_stalls_ping() -> None:
    assert deps(rec(rps=50, ping=300), rec(rps=200, ping=12), rec(rps=90, ping=400)).outcome == "holds"


def test_deps_does_not_hold_when_nothing_stalls() -> None:
    assert deps(rec(ping=15), rec(ping=12), rec(ping=20)).outcome == "does not hold"


def test_deps_stall_needs_both_factor_and_margin() -> None:
    # 3x but only 6 ms above: noise on an idle loop, not a stall.
    assert deps(rec(ping=9), rec(ping=3), rec(ping=9)).outcome == "does not hold"


def test_deps_decides_on_loop_lag_when_the_server_measured_it() -> None:
    # /ping looks calm here, but the loop lag inside the server says the loop stalled.
    sync, good, blocking = rec(ping=5), rec(ping=5), rec(ping=5)
    sync["loop_lag_p99_ms"], good["loop_lag_p99_ms"], blocking["loop_lag_p99_ms"] = 150.0, 2.0, 900.0
    verdict = deps(sync, good, blocking)
    assert verdict.outcome == "holds" and "150 ms" in verdict.headline
    sync["loop_lag_p99_ms"] = 3.0
    assert deps(sync, good, blocking).outcome == "partly holds"


def test_deps_inconclusive_when_a_variant_failed() -> None:
    verdict = deps(rec(), rec(status="failed"), rec())
    assert verdict.outcome == "inconclusive" and "async-dep" in verdict.text


def sessions(
    c_leaky: dict[str, Any], c_closed: dict[str, Any], p_leaky: dict[str, Any], p_closed: dict[str, Any]
) -> Any:
    records = {"connect-leaky": c_leaky, "connect-closed": c_closed, "pool-leaky": p_leaky, "pool-closed": p_closed}
    return PAIRS["sessions"].decide(records, {"pool_size": 10, "pool_timeout_ms": 2000})


def test_sessions_pool_only_when_connect_per_request_does_not_pile_up() -> None:
    verdict = sessions(rec(peak=12), rec(peak=11), rec(rps=5, failure_rate=1.0), rec(rps=1500))
    assert verdict.outcome == "partly holds" and "pooled connections only" in verdict.text


def test_sessions_holds_when_both_leak() -> None:
    verdict = sessions(rec(peak=95, failure_rate=0.2), rec(peak=20), rec(rps=5, failure_rate=1.0), rec(rps=1500))
    assert verdict.outcome == "holds"


def test_sessions_connect_failures_alone_count_as_a_leak() -> None:
    verdict = sessions(rec(peak=12, failure_rate=0.05), rec(peak=11), rec(rps=1500), rec(rps=1500))
    assert verdict.outcome == "partly holds" and "connect-per-request only" in verdict.text


def test_sessions_does_not_hold_when_neither_leaks() -> None:
    assert sessions(rec(peak=12), rec(peak=11), rec(rps=1400), rec(rps=1500)).outcome == "does not hold"


def blocking(bad: dict[str, Any], good: dict[str, Any], block_ms: int = 10) -> Any:
    return PAIRS["blocking"].decide(
        {"async-blocking": bad, "async-to-thread": good, "sync-def": rec()}, {"block_ms": block_ms}
    )


def test_blocking_holds_when_loop_stalls_and_to_thread_lifts_throughput() -> None:
    verdict = blocking(rec(rps=95, ping=300), rec(rps=450, ping=6))
    assert verdict.outcome == "holds" and "at most 100 req/s" in verdict.text


def test_blocking_partly_when_to_thread_does_not_help() -> None:
    assert blocking(rec(rps=95, ping=300), rec(rps=100, ping=6)).outcome == "partly holds"


def test_blocking_does_not_hold_without_a_stall() -> None:
    assert blocking(rec(rps=400, ping=6), rec(rps=450, ping=6)).outcome == "does not hold"


def test_blocking_ceiling_follows_the_knob() -> None:
    assert blocking(rec(rps=48, ping=300), rec(rps=250, ping=6), block_ms=20).figures["loop_ceiling_rps"] == 50


def test_blocking_reports_the_def_reference_when_measured() -> None:
    records = {
        "async-blocking": rec(rps=45, ping=900),
        "async-to-thread": rec(rps=250, ping=4),
        "sync-def": rec(rps=1100),
    }
    verdict = PAIRS["blocking"].decide(records, {"block_ms": 20})
    assert "plain `def` endpoint served 24x" in verdict.text
    records["sync-def"] = rec(status="failed")
    assert "plain `def`" not in PAIRS["blocking"].decide(records, {"block_ms": 20}).text
