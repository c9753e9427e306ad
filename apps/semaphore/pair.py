"""C15 (part 2): does a semaphore keep concurrent database work within bounds?"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.pairs import Pair, Records, Variant, Verdict, fmt, inconclusive, missing_variants, ratio

# The unbounded variant overruns the database when it fails at least this share of
# requests more than the bounded one.
FAILURE_EXCESS = 0.01
# The semaphore bounds the work when peak backends stay within db_concurrency plus this
# slack (a closed connection's backend can linger in pg_stat_activity for a moment).
PEAK_SLACK = 2
# The bound is cheap when the bounded variant answers at least this share of the
# unbounded variant's successful requests per second.
GOOD_RPS_SHARE = 0.7


def good_rps(record: Mapping[str, Any]) -> float:
    return float(record["rps"] * (1 - record["failure_rate"]))


def decide(records: Records, knobs: Mapping[str, Any]) -> Verdict:
    missing = missing_variants(records, ["unbounded", "semaphore"])
    if missing:
        return inconclusive(missing)
    bare, bounded = records["unbounded"], records["semaphore"]
    limit = knobs["db_concurrency"]
    figures = {
        "unbounded_failure_rate": bare["failure_rate"],
        "semaphore_failure_rate": bounded["failure_rate"],
        "unbounded_peak": bare["peak_connections"],
        "semaphore_peak": bounded["peak_connections"],
        "good_rps_ratio": ratio(good_rps(bounded), good_rps(bare)),
        "unbounded_p99_ms": bare["p99_ms"],
        "semaphore_p99_ms": bounded["p99_ms"],
    }
    overruns = bare["failure_rate"] - bounded["failure_rate"] >= FAILURE_EXCESS
    bounds = bounded["peak_connections"] is not None and bounded["peak_connections"] <= limit + PEAK_SLACK
    cheap = (figures["good_rps_ratio"] or 0.0) >= GOOD_RPS_SHARE
    says = (
        f"at {fmt(bare.get('users'))} users, the unbounded variant peaked at {fmt(bare['peak_connections'])} "
        f"backends and failed {fmt(100 * bare['failure_rate'], '%', 1)} of requests (p99 {fmt(bare['p99_ms'], 'ms')}); "
        f"a semaphore of {limit} peaked at {fmt(bounded['peak_connections'])} backends, failed "
        f"{fmt(100 * bounded['failure_rate'], '%', 1)} (p99 {fmt(bounded['p99_ms'], 'ms')}) and answered "
        f"{fmt(figures['good_rps_ratio'], 'x')} the successful requests per second"
    )
    headline = (
        f"failures {fmt(100 * bare['failure_rate'], '%', 1)} vs {fmt(100 * bounded['failure_rate'], '%', 1)}, "
        f"peak {fmt(bare['peak_connections'])} vs {fmt(bounded['peak_connections'])} backends"
    )
    if not bounds:
        return Verdict("does not hold", f"Does not hold in this run: {says}.", figures, headline)
    if overruns and cheap:
        return Verdict("holds", f"Holds: {says}.", figures, headline)
    if overruns:
        return Verdict(
            "partly holds", f"The bound prevents the failures, at a throughput cost: {says}.", figures, headline
        )
    return Verdict(
        "partly holds",
        f"The semaphore bounds the backends, but the unbounded variant did not fail more here: {says}.",
        figures,
        headline,
    )


PAIR = Pair(
    name="semaphore",
    claim_id="C15",
    claim="An asyncio.Semaphore bounds concurrent database work.",
    sources=("003",),
    mechanism=(
        "PostgreSQL admits max_connections backends (less superuser_reserved_connections for "
        "ordinary roles) and refuses the next with 'too many clients already'. Connect-per-request "
        "opens one backend per request in flight, so more concurrent requests than that limit turn "
        "into errors. A semaphore around connect, query and close makes the excess wait on the event "
        "loop, holding no connection, so the database never sees more than db_concurrency of them."
    ),
    decided_by=(
        f"Failure rate, peak backends, successful throughput; p99 shown. Holds when the unbounded "
        f"variant fails >= {100 * FAILURE_EXCESS:g} points more, the semaphore keeps peak backends <= "
        f"db_concurrency + {PEAK_SLACK}, and it answers >= {GOOD_RPS_SHARE:g}x the unbounded variant's "
        "successful requests per second; partly holds if it bounds the backends but costs more throughput or "
        "the unbounded variant did not fail more; does not hold if the peak exceeds the bound. The sampled peak "
        "misses backends still authenticating, which count against max_connections."
    ),
    variants=(
        Variant(
            "unbounded",
            "bad",
            "/unbounded/items/{id}",
            "asyncpg connection per request for a query of query_ms, no bound on how many at once",
            ("slow_lookup", "unbounded_item"),
        ),
        Variant(
            "semaphore",
            "good",
            "/semaphore/items/{id}",
            "the same inside `async with asyncio.Semaphore(db_concurrency)`",
            ("semaphore_item",),
        ),
    ),
    decide=decide,
    knobs={"db_concurrency": 20, "query_ms": 20},
    order=151,
    # More concurrent requests than the embedded server admits for the app's role (97):
    # at 120 users on 2 cores, connection setup throttles itself and few attempts fail.
    load={"users": 200, "spawn_rate": 200},
)
