"""C5: does a yield dependency's `finally` cleanup always run, even when the endpoint raises?"""

from __future__ import annotations

from collections.abc import Mapping

from harness.checks import FAILURE_RATE, P50, Check, Difference, Metric, Part, Rule, Total
from harness.pairs import Pair, Variant, ratio
from harness.records import Record

# Counters are read once the load has drained: every checked-out connection must be back.
IN_FLIGHT_SLACK = 0
# Backends still open after the server stopped (or ended by the runner): none is tolerated.
BACKENDS_LEFT_MAX = 0
# The error path counts only if the endpoint raised and the dependency saw it at least once.
MIN_ERRORS = 1
# Without `finally` the teardown after `yield` never runs when the endpoint raises: none at all.
NO_FINALLY_SHARE = 0.0


def counted(name: str, label: str, per: str | None = None, unit: str = "") -> Metric:
    """One of the app's counters (a counter never incremented is 0), or its ratio to another;
    None when the variant returned no counters at all."""

    def read(record: Record) -> float | None:
        counters = record.get("counters")
        if not counters:
            return None
        value = float(counters.get(name, 0))
        return value if per is None else ratio(value, float(counters.get(per, 0)))

    return Metric(label, unit, read)


def never_returned(record: Record) -> float | None:
    """Connections checked out whose teardown never ran."""
    counters = record.get("counters")
    return None if not counters else float(counters.get("setups", 0)) - float(counters.get("cleanups", 0))


def backends_left(record: Record) -> float | None:
    """Backends above the baseline after the server stopped, plus those the runner had to end."""
    settled, baseline = record.get("settled_connections"), record.get("baseline_connections")
    if settled is None or baseline is None:
        return None
    return max(0.0, float(settled) - float(baseline)) + float(record.get("terminated_backends") or 0)


CLEANED_UP = counted("cleanups", "teardowns per checked-out connection", per="setups")
LOST = Metric("connections never returned", "", never_returned)
BACKENDS_LEFT = Metric("backends left after the server stopped", "", backends_left)
HELD_AFTER = counted("held_after_response_ms", "time held after the response", per="hold_count", unit="ms")
WAITED = counted("wait_ms", "wait for a pooled connection", per="setups", unit="ms")


def rule(knobs: Mapping[str, int]) -> Rule:
    return Rule(
        parts=(
            Part(
                "when the endpoint raises, the `finally` teardown returns every connection",
                (
                    Check(
                        Total(LOST, "raises", short="connections never returned when raising"), "<=", IN_FLIGHT_SLACK
                    ),
                    Check(Total(BACKENDS_LEFT, "raises"), "<=", BACKENDS_LEFT_MAX),
                ),
            ),
            Part(
                "without an exception the teardown runs too, in either scope",
                (
                    Check(Total(LOST, "request-scope", short="never returned, request scope"), "<=", IN_FLIGHT_SLACK),
                    Check(Total(LOST, "function-scope"), "<=", IN_FLIGHT_SLACK),
                ),
            ),
        ),
        controls=(
            Part(
                "the error path was taken: the endpoint raised and the dependency saw the exception",
                (
                    Check(Total(counted("raised", "endpoints that raised"), "raises"), ">=", MIN_ERRORS),
                    Check(Total(counted("errors_seen", "exceptions the dependency saw"), "raises"), ">=", MIN_ERRORS),
                ),
            ),
            Part(
                "the counters catch a skipped teardown: written outside `finally`, it never runs",
                (Check(Total(CLEANED_UP, "raises-no-finally"), "<=", NO_FINALLY_SHARE),),
            ),
        ),
        shown=(
            Total(LOST, "raises-no-finally"),
            Total(HELD_AFTER, "request-scope"),
            Total(HELD_AFTER, "function-scope"),
            Total(HELD_AFTER, "raises"),
            Difference(P50, "function-scope", "request-scope"),
            Total(WAITED, "request-scope"),
            Total(FAILURE_RATE, "raises-no-finally"),
        ),
        note=(
            "Client p50 and how long each connection stayed checked out after its response (noted by a pure ASGI "
            "middleware) show when the teardown runs, and are not judged; pool_size is above the scenario's users, "
            "so only connections held past the response can make requests wait for the pool."
        ),
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
    rule=rule,
    knobs=KNOBS,
    drain_knob="teardown_ms",  # counters are final only once the last response's work has ended
    order=50,
    references=("fastapi#14099", "fastapi#14262"),
)
