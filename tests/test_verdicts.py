"""Each pair's verdict rule on fixture figures, including figures that must turn it the
other way: the verdict comes from the numbers, not from the role."""

from __future__ import annotations

from typing import Any

from harness import stats
from harness.pairs import discover
from tests.conftest import JITTER, blocks_of

Record = dict[str, Any]


def rec(
    rps: float = 200, ping: float = 5, failure_rate: float = 0.0, peak: int = 10, status: str = "ok"
) -> dict[str, Any]:
    return {"status": status, "rps": rps, "ping_p99_ms": ping, "failure_rate": failure_rate, "peak_connections": peak}


PAIRS = discover()


def deps(sync: dict[str, Any], good: dict[str, Any], blocking: dict[str, Any], jitter: Any = JITTER) -> Any:
    records = {"sync-dep": sync, "async-dep": good, "async-dep-blocking": blocking}
    return PAIRS["deps"].decide(records, {}, blocks_of(records, jitter))


def lagging(lag: float, rps: float = 200) -> dict[str, Any]:
    return rec(rps=rps) | {"loop_lag_p99_ms": lag}


def test_deps_does_not_hold_when_only_blocking_async_code_stalls() -> None:
    verdict = deps(lagging(15, rps=180), lagging(12), lagging(400, rps=90))
    assert verdict.outcome == "does not hold"
    control, sync = verdict.checks[:1], verdict.checks[1:]
    assert [c["outcome"] for c in control] == ["clears"] and abs(control[0]["value"] - 400 / 20) < 0.5
    # Both lags are below the 20 ms floor: read as 20 ms each, exactly no difference, as a
    # ratio and as a difference in ms.
    assert [c["outcome"] for c in sync] == ["no measurable difference"] * 2 and abs(sync[0]["value"] - 1.0) < 1e-9
    assert sync[1]["value"] == 0


def test_deps_a_stall_is_measured_against_the_floor_not_a_tiny_baseline() -> None:
    # 300 ms against a loop lag of 2 ms is 150x but 15x the 20 ms floor; 50 ms is 2.5x: no stall.
    assert abs(deps(lagging(300), lagging(2), lagging(400)).checks[1]["value"] - 15) < 0.05
    assert deps(lagging(300), lagging(2), lagging(400)).outcome == "holds"
    assert deps(lagging(50), lagging(2), lagging(400)).checks[1]["outcome"] == "misses"


def test_deps_a_stall_must_also_put_the_loop_far_behind() -> None:
    # 90 ms is 4.5x the floor, but CPU queueing under a saturated load moves the lag that
    # much: 70 ms behind the async dependency is short of 200 ms, and decides.
    verdict = deps(lagging(90), lagging(2), lagging(400))
    assert verdict.checks[1]["outcome"] == "clears" and verdict.checks[2]["outcome"] == "misses"
    assert verdict.checks[2]["value"] == 70 and verdict.outcome == "does not hold"


def test_deps_does_not_hold_on_the_figures_of_stored_runs() -> None:
    # Closed-loop lag p99 per block, sync-dep against async-dep (a run of 2026-12-03): the
    # ratio's interval reaches past 3x, the difference's stays below 200 ms.
    sync, good, blocking = (317, 84, 205), (306, 112, 150), (3319, 1259, 1923)
    blocks = [
        {
            name: lagging(lag) | {"requests": 1000}
            for name, lag in (("sync-dep", s), ("async-dep", g), ("async-dep-blocking", b))
        }
        for s, g, b in zip(sync, good, blocking, strict=True)
    ]
    records = {name: lagging(100) for name in blocks[0]}
    # At the confidence of a run's first look, where the default run stops.
    verdict = PAIRS["deps"].decide(records, {}, blocks, confidence=stats.look_confidences((3, 6))[0])
    assert verdict.checks[1]["high"] > 2.5  # the ratio alone came close to straddling 3x
    assert verdict.checks[2]["outcome"] == "misses" and verdict.outcome == "does not hold"


def test_deps_holds_when_the_sync_dependency_stalls_the_loop() -> None:
    assert deps(lagging(300, rps=50), lagging(12), lagging(400, rps=90)).outcome == "holds"


def test_deps_stall_needs_more_than_an_idle_loops_lag() -> None:
    # 4x, but 12 ms against 3 ms: both within an idle loop's noise, not a stall.
    verdict = deps(lagging(12), lagging(3), lagging(400))
    assert verdict.outcome == "does not hold"
    assert [c["outcome"] for c in verdict.checks[1:]] == ["no measurable difference"] * 2


def test_deps_is_inconclusive_when_the_positive_control_does_not_stall() -> None:
    # psycopg2 inside `async def` must stall the loop; if the harness sees no stall
    # there, its silence about the sync dependency means nothing.
    verdict = deps(lagging(15), lagging(12), lagging(14))
    assert verdict.outcome == "inconclusive" and verdict.headline.startswith("control did not clear")


def test_deps_is_inconclusive_while_the_interval_straddles() -> None:
    verdict = deps(lagging(60), lagging(12), lagging(400), jitter=(0.3, 1.0, 3.0))
    assert verdict.outcome == "inconclusive"
    assert verdict.checks[1]["outcome"] == "inconclusive" and verdict.checks[1]["low"] < 3 < verdict.checks[1]["high"]


def test_deps_inconclusive_when_a_variant_failed() -> None:
    verdict = deps(lagging(15), rec(status="failed"), lagging(400))
    assert verdict.outcome == "inconclusive" and "async-dep" in verdict.headline


def sessions(
    c_leaky: dict[str, Any],
    c_closed: dict[str, Any],
    p_leaky: dict[str, Any],
    p_closed: dict[str, Any],
    blocks: list[dict[str, Any]] | None = None,
) -> Any:
    from tests.conftest import blocks_of

    records = {"connect-leaky": c_leaky, "connect-closed": c_closed, "pool-leaky": p_leaky, "pool-closed": p_closed}
    return PAIRS["sessions"].decide(records, PAIRS["sessions"].knobs, blocks or blocks_of(records))


SESSIONS_POOL = "failure_rate_total_pool-leaky"
SESSIONS_PEAK = "peak_backends_ratio_connect-leaky_connect-closed"


def test_sessions_pool_only_when_connect_per_request_does_not_pile_up() -> None:
    verdict = sessions(rec(peak=34), rec(peak=33), rec(rps=30, failure_rate=1.0), rec(rps=1800))
    assert verdict.outcome == "partly holds"
    pool, peak = (c for c in verdict.checks if c["name"] in (SESSIONS_POOL, SESSIONS_PEAK))
    assert pool["outcome"] == "clears" and pool["value"] == 1.0
    assert peak["outcome"] == "no measurable difference" and abs(peak["value"] - 34 / 33) < 1e-9


def test_sessions_holds_when_both_leak() -> None:
    verdict = sessions(rec(peak=95, failure_rate=0.2), rec(peak=20), rec(rps=5, failure_rate=1.0), rec(rps=1500))
    assert verdict.outcome == "holds"
    assert abs(verdict.figures[SESSIONS_PEAK] - 95 / 20) < 1e-9


def test_sessions_a_pile_up_needs_both_factor_and_margin() -> None:
    # 3x the closed variant's backends, but only 4 more: no pile-up.
    verdict = sessions(rec(peak=6), rec(peak=2), rec(rps=1400), rec(rps=1500))
    assert verdict.outcome == "does not hold"
    assert [c["outcome"] for c in verdict.checks if c["name"].startswith("peak_backends")] == ["clears", "misses"]


def test_sessions_connect_failures_are_shown_not_judged() -> None:
    # Failures without a pile-up of backends are not a leak of connections.
    verdict = sessions(rec(peak=12, failure_rate=0.05), rec(peak=11), rec(rps=1500), rec(rps=1500))
    assert verdict.outcome == "does not hold"
    assert verdict.figures["failure_rate_total_connect-leaky"] == 0.05


def test_sessions_does_not_hold_when_neither_leaks() -> None:
    verdict = sessions(rec(peak=12), rec(peak=11), rec(rps=1400, failure_rate=0.01), rec(rps=1500))
    assert verdict.outcome == "does not hold"
    assert verdict.figures[SESSIONS_POOL] == 0.01


def test_sessions_inconclusive_while_the_peak_interval_straddles() -> None:
    c_leaky, c_closed, p_leaky, p_closed = rec(peak=40), rec(peak=20), rec(failure_rate=1.0), rec(rps=1500)
    blocks = [
        {"connect-leaky": c_leaky | {"peak_connections": leaky}, "connect-closed": c_closed}
        | {"pool-leaky": p_leaky, "pool-closed": p_closed}
        for leaky in (15, 40, 70)
    ]
    verdict = sessions(c_leaky, c_closed, p_leaky, p_closed, blocks)
    assert verdict.outcome == "inconclusive"
    peak = next(c for c in verdict.checks if c["name"] == SESSIONS_PEAK)
    assert peak["outcome"] == "inconclusive" and peak["low"] < 2.0 < peak["high"]


def test_sessions_inconclusive_when_a_closed_variant_fails_or_is_missing() -> None:
    # The closed pool failing too: the harness or the database failed, not the leaky code.
    failing = sessions(rec(peak=12), rec(peak=11), rec(failure_rate=1.0), rec(failure_rate=0.5))
    assert failing.outcome == "inconclusive" and failing.headline.startswith("control did not clear")
    missing = sessions(rec(peak=12), rec(status="failed"), rec(failure_rate=1.0), rec())
    assert missing.outcome == "inconclusive" and "connect-closed" in missing.headline


def blocking(
    bad: dict[str, Any], good: dict[str, Any], reference: dict[str, Any] | None = None, jitter: Any = JITTER
) -> Any:
    records = {"async-blocking": bad, "async-to-thread": good, "sync-def": reference or rec()}
    return PAIRS["blocking"].decide(records, {"block_ms": 10}, blocks_of(records, jitter))


def test_blocking_holds_when_loop_stalls_and_to_thread_lifts_throughput() -> None:
    verdict = blocking(lagging(300, rps=95), lagging(6, rps=450))
    assert verdict.outcome == "holds"
    assert abs(verdict.figures["throughput_ratio_async-to-thread_async-blocking"] - 450 / 95) < 0.1


def test_blocking_partly_when_to_thread_does_not_help() -> None:
    verdict = blocking(lagging(300, rps=95), lagging(6, rps=95), jitter=(0.99, 1.0, 1.01))
    assert verdict.outcome == "partly holds"
    assert verdict.checks[-1]["outcome"] == "no measurable difference"


def test_blocking_does_not_hold_without_a_stall() -> None:
    assert blocking(lagging(6, rps=400), lagging(6, rps=450)).outcome == "does not hold"


def test_blocking_shows_the_def_reference_when_measured() -> None:
    verdict = blocking(lagging(900, rps=45), lagging(4, rps=250), rec(rps=1100))
    shown = "throughput_ratio_sync-def_async-blocking"
    assert abs(verdict.figures[shown] - 1100 / 45) < 1
    assert shown not in blocking(lagging(900), lagging(4), rec(status="failed")).figures
