"""C5: does a yield dependency's `finally` cleanup always run, even when the endpoint raises?"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.pairs import Pair, Records, Variant, Verdict, fmt, inconclusive, missing_variants, ratio

# Counters are read once the load has drained, so every checked-out connection should be
# back: this many missing cleanups are tolerated (requests still in flight).
IN_FLIGHT_SLACK = 0


def counter(record: Mapping[str, Any], name: str) -> float:
    return float((record.get("counters") or {}).get(name, 0))


def lost(record: Mapping[str, Any]) -> float:
    """Connections checked out whose teardown never ran."""
    return counter(record, "setups") - counter(record, "cleanups")


def mean_hold_ms(record: Mapping[str, Any]) -> float | None:
    return ratio(counter(record, "hold_ms"), counter(record, "hold_count"))


def mean_after_response_ms(record: Mapping[str, Any]) -> float | None:
    return ratio(counter(record, "held_after_response_ms"), counter(record, "hold_count"))


def mean_wait_ms(record: Mapping[str, Any]) -> float | None:
    return ratio(counter(record, "wait_ms"), counter(record, "setups"))


def decide(records: Records, knobs: Mapping[str, Any]) -> Verdict:
    names = ["raises", "raises-no-finally", "request-scope", "function-scope"]
    missing = missing_variants(records, names)
    if missing:
        return inconclusive(missing)
    raising, no_finally = records["raises"], records["raises-no-finally"]
    req, fn = records["request-scope"], records["function-scope"]
    without_counters = [name for name in names if not records[name].get("counters")]
    if without_counters:
        return Verdict(
            "inconclusive",
            f"No verdict: {', '.join(without_counters)} returned no counters.",
            headline="no counters",
        )
    if counter(raising, "raised") == 0 or counter(raising, "errors_seen") == 0:
        return Verdict(
            "inconclusive",
            "No verdict: no exception from the endpoint reached the dependency, so the error path was not exercised.",
            headline="error path not exercised",
        )
    figures: dict[str, float | None] = {
        "raises_setups": counter(raising, "setups"),
        "raises_cleanups": counter(raising, "cleanups"),
        "raises_lost": lost(raising),
        "raises_raised": counter(raising, "raised"),
        "raises_errors_seen": counter(raising, "errors_seen"),
        "raises_baseline_connections": raising.get("baseline_connections"),
        "raises_settled_connections": raising.get("settled_connections"),
        "raises_terminated_backends": raising.get("terminated_backends"),
        "raises_p50_ms": raising["p50_ms"],
        "no_finally_setups": counter(no_finally, "setups"),
        "no_finally_cleanups": counter(no_finally, "cleanups"),
        "no_finally_failure_rate": no_finally["failure_rate"],
        "request_lost": lost(req),
        "function_lost": lost(fn),
        "request_p50_ms": req["p50_ms"],
        "function_p50_ms": fn["p50_ms"],
        "p50_rise_ms": fn["p50_ms"] - req["p50_ms"],
        "request_hold_ms": mean_hold_ms(req),
        "function_hold_ms": mean_hold_ms(fn),
        "request_after_response_ms": mean_after_response_ms(req),
        "function_after_response_ms": mean_after_response_ms(fn),
        "raises_after_response_ms": mean_after_response_ms(raising),
        "request_wait_ms": mean_wait_ms(req),
        "function_wait_ms": mean_wait_ms(fn),
    }
    cleaned_up = lost(raising) <= IN_FLIGHT_SLACK
    settled, baseline = raising.get("settled_connections"), raising.get("baseline_connections")
    ended = raising.get("terminated_backends") or 0  # left behind by the server, ended by the runner
    back_to_baseline = settled is not None and baseline is not None and settled <= baseline and ended == 0
    others_lost = [
        name for name, rec in (("request-scope", req), ("function-scope", fn)) if lost(rec) > IN_FLIGHT_SLACK
    ]
    count_says = (
        f"with the endpoint raising on every request the `finally` teardown ran "
        f"{fmt(figures['raises_cleanups'])} times for {fmt(figures['raises_setups'])} checked-out connections "
        f"({fmt(figures['raises_errors_seen'])} exceptions seen by the dependency), backends "
        f"{fmt(settled)} after the run vs {fmt(baseline)} before ({fmt(ended)} left for the runner to end); "
        f"without `finally` it ran "
        f"{fmt(figures['no_finally_cleanups'])} times for {fmt(figures['no_finally_setups'])} and "
        f"{fmt(100 * no_finally['failure_rate'], '%', 1)} of requests failed"
    )
    timing_says = (
        f"Timing, teardown {fmt(knobs['teardown_ms'], 'ms')}: with request scope client p50 was "
        f"{fmt(req['p50_ms'], 'ms')} while each connection stayed checked out "
        f"{fmt(figures['request_after_response_ms'], 'ms')} after its response had gone "
        f"({fmt(figures['request_hold_ms'], 'ms')} in all; requests waited {fmt(figures['request_wait_ms'], 'ms')} "
        f'for a free one), with scope="function" p50 was {fmt(fn["p50_ms"], "ms")} and '
        f"{fmt(figures['function_after_response_ms'], 'ms')} held past the response, and the raising endpoint "
        f"(request scope) held its connections {fmt(figures['raises_after_response_ms'], 'ms')} past its response "
        f"at p50 {fmt(raising['p50_ms'], 'ms')}."
    )
    headline = (
        f"{fmt(figures['raises_cleanups'])}/{fmt(figures['raises_setups'])} cleanups when raising; request scope "
        f"held connections {fmt(figures['request_after_response_ms'], 'ms')} past the response"
    )
    if not cleaned_up:
        return Verdict("does not hold", f"Does not hold in this run: {count_says}. {timing_says}", figures, headline)
    if back_to_baseline and not others_lost:
        return Verdict("holds", f"Holds: {count_says}. {timing_says}", figures, headline)
    problems = []
    if not back_to_baseline:
        problems.append("backends did not return to baseline")
    if others_lost:
        problems.append(f"teardowns went missing in {', '.join(others_lost)}")
    return Verdict(
        "partly holds",
        f"Cleanup ran on the error path but {' and '.join(problems)}: {count_says}. {timing_says}",
        figures,
        headline,
    )


KNOBS = {"teardown_ms": 200, "pool_size": 80, "pool_timeout_ms": 2000}

PAIR = Pair(
    name="cleanup",
    claim_id="C5",
    claim="Cleanup in a yield dependency's `finally` always runs, even when the endpoint raises.",
    sources=("001",),
    mechanism=(
        "FastAPI enters a yield dependency in an exit stack and throws the endpoint's exception in at the "
        "`yield`, so a `finally` block runs and code merely placed after `yield` does not. When it runs changed: "
        "since 0.118 (PR #14099) a request-scoped teardown runs after the response is sent, so a slow teardown "
        "no longer delays the client but keeps the connection out of the pool longer; "
        '`Depends(scope="function")` (0.121, PR #14262) tears down before the response. On an exception the '
        "response is only produced after the stack has unwound, so the client waits for the teardown either way."
    ),
    decided_by=(
        "App counters read after the load drained, and backends after the server stopped. Holds if, for the "
        f"endpoint that raises, setups - cleanups <= {IN_FLIGHT_SLACK} (IN_FLIGHT_SLACK), the dependency saw the "
        "exceptions, settled_connections <= baseline_connections with no terminated_backends left behind by the "
        "server, and no teardown is missing in the two "
        "non-raising variants; does not hold if teardowns are missing on the error path; partly holds otherwise. "
        "The variant without `finally` is the contrast that shows the counters catch a skipped cleanup. Client "
        "p50, the mean time a connection was checked out and how much of it came after the response was sent "
        "(a pure ASGI middleware notes that moment) are reported, not judged. pool_size "
        f"({KNOBS['pool_size']}) is above the scenario's users so that only connections held past the response "
        "can make requests wait for the pool."
    ),
    variants=(
        Variant(
            "request-scope",
            "good",
            "/request-scope/items/{id}",
            "pooled asyncpg connection from a yield dependency, returned in a slow `finally` after the response",
            ("check_out", "slow_teardown", "get_conn", "request_scope_item"),
        ),
        Variant(
            "function-scope",
            "reference",
            "/function-scope/items/{id}",
            'the same dependency declared `Depends(get_conn, scope="function")`: teardown before the response',
            ("function_scope_item",),
        ),
        Variant(
            "raises",
            "good",
            "/raises/items/{id}",
            "endpoint raises after its query on every request; an exception handler answers with a computed row",
            ("get_conn", "raises_item", "serve_fallback"),
        ),
        Variant(
            "raises-no-finally",
            "bad",
            "/raises-no-finally/items/{id}",
            "the same raising endpoint with the teardown after `yield` but outside `finally`",
            ("get_conn_no_finally", "raises_no_finally_item"),
        ),
    ),
    decide=decide,
    knobs=KNOBS,
    order=50,
    references=("fastapi#14099", "fastapi#14262"),
)
