"""C7: does a session without close leak connections?"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.pairs import Pair, Records, Variant, Verdict, fmt, inconclusive, missing_variants, ratio

# Connect-per-request leaks when the leaky variant's peak backend count is at least this
# many times the closed one's and this many backends above it, or it fails requests.
PEAK_FACTOR = 2.0
PEAK_MIN_EXTRA = 10
# A pool leaks when the leaky variant fails this share of requests or falls below this
# share of the closed pool's throughput.
POOL_FAILURE_RATE = 0.05
POOL_RPS_SHARE = 0.5
# Failure-rate excess that counts as the connect-per-request leak hurting clients.
CONNECT_FAILURE_RATE = 0.01


def decide(records: Records, knobs: Mapping[str, Any]) -> Verdict:
    missing = missing_variants(records, ["connect-leaky", "connect-closed", "pool-leaky", "pool-closed"])
    if missing:
        return inconclusive(missing)
    c_leaky, c_closed = records["connect-leaky"], records["connect-closed"]
    p_leaky, p_closed = records["pool-leaky"], records["pool-closed"]
    figures = {
        "connect_leaky_peak": c_leaky["peak_connections"],
        "connect_closed_peak": c_closed["peak_connections"],
        "connect_leaky_failure_rate": c_leaky["failure_rate"],
        "pool_leaky_failure_rate": p_leaky["failure_rate"],
        "pool_rps_ratio": ratio(p_leaky["rps"], p_closed["rps"]),
    }
    connect_leaks = (
        c_leaky["peak_connections"] >= PEAK_FACTOR * c_closed["peak_connections"]
        and c_leaky["peak_connections"] - c_closed["peak_connections"] >= PEAK_MIN_EXTRA
    ) or c_leaky["failure_rate"] - c_closed["failure_rate"] >= CONNECT_FAILURE_RATE
    pool_leaks = p_leaky["failure_rate"] >= POOL_FAILURE_RATE or (figures["pool_rps_ratio"] or 0.0) < POOL_RPS_SHARE
    connect_says = (
        f"connect-per-request without close peaked at {fmt(c_leaky['peak_connections'])} backends vs "
        f"{fmt(c_closed['peak_connections'])} closed, failing {fmt(100 * c_leaky['failure_rate'], '%', 1)} of requests"
    )
    pool_says = (
        f"a pool connection never released failed {fmt(100 * p_leaky['failure_rate'], '%', 1)} of requests "
        f"at {fmt(figures['pool_rps_ratio'], 'x')} the released pool's throughput"
    )
    headline = (
        f"never-released pool connection: {fmt(100 * p_leaky['failure_rate'], '%', 1)} failed; never-closed "
        f"connect-per-request: peak {fmt(c_leaky['peak_connections'])} vs {fmt(c_closed['peak_connections'])} backends"
    )
    if connect_leaks and pool_leaks:
        return Verdict("holds", f"Holds: {pool_says}; {connect_says}.", figures, headline)
    if pool_leaks:
        return Verdict(
            "partly holds", f"Holds for pooled connections only: {pool_says}; but {connect_says}.", figures, headline
        )
    if connect_leaks:
        return Verdict(
            "partly holds", f"Holds for connect-per-request only: {connect_says}; {pool_says}.", figures, headline
        )
    return Verdict("does not hold", f"Does not hold in this run: {connect_says}; {pool_says}.", figures, headline)


PAIR = Pair(
    name="sessions",
    claim_id="C7",
    claim="A database session that is never closed leaks connections.",
    sources=("002", "004"),
    mechanism=(
        "A connection opened per request and dropped without close() loses its last reference "
        "when the request ends; CPython frees it at once and asyncpg's finaliser terminates the "
        "backend (with a ResourceWarning), so it does not pile up. A connection acquired from a "
        "pool and never released stays checked out for good: once the pool is dry every request "
        "waits for the acquire timeout and fails."
    ),
    decided_by=(
        f"Peak `pg_stat_activity` backends and failure rate. Connect-per-request leaks if the leaky "
        f"peak is >= {PEAK_FACTOR:g}x and >= {PEAK_MIN_EXTRA} above the closed one, or its failure rate "
        f"is {100 * CONNECT_FAILURE_RATE:g} points higher; the pool leaks if the leaky variant fails "
        f">= {100 * POOL_FAILURE_RATE:g}% of requests or serves < {POOL_RPS_SHARE:g}x the closed pool's throughput."
    ),
    variants=(
        Variant(
            "connect-leaky",
            "bad",
            "/connect-leaky/items/{id}",
            "asyncpg connection per request, never closed (`finally: pass`)",
            ("get_conn_leaky",),
        ),
        Variant(
            "connect-closed",
            "good",
            "/connect-closed/items/{id}",
            "asyncpg connection per request, closed in `finally`",
            ("get_conn_closed",),
        ),
        Variant(
            "pool-leaky",
            "bad",
            "/pool-leaky/items/{id}",
            "connection acquired from a lifespan asyncpg pool, never released",
            ("get_pooled_leaky",),
        ),
        Variant(
            "pool-closed",
            "good",
            "/pool-closed/items/{id}",
            "connection acquired from the pool and released in `finally`",
            ("get_pooled_closed",),
        ),
    ),
    knobs={"pool_size": 10, "pool_timeout_ms": 2000},
    decide=decide,
    soak=True,
    order=70,
)
