"""C1: does a sync generator dependency block the event loop?"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.pairs import (
    STALL_FACTOR,
    STALL_MIN_MS,
    Pair,
    Records,
    Variant,
    Verdict,
    fmt,
    inconclusive,
    loop_lag,
    missing_variants,
    ratio,
    stalls_loop,
)

# Open loop below what the loop-blocking variant sustains closed-loop on 2 cores (about
# 120 req/s), so the comparison shows latency under load rather than an overload.
OPEN_LOOP_RATE = 60.0


def decide(records: Records, knobs: Mapping[str, Any]) -> Verdict:
    missing = missing_variants(records, ["sync-dep", "async-dep", "async-dep-blocking"])
    if missing:
        return inconclusive(missing)
    sync, good, blocking = records["sync-dep"], records["async-dep"], records["async-dep-blocking"]
    figures = {
        "sync_rps_ratio": ratio(sync["rps"], good["rps"]),
        "blocking_rps_ratio": ratio(blocking["rps"], good["rps"]),
        "sync_loop_lag_p99_ms": loop_lag(sync),
        "good_loop_lag_p99_ms": loop_lag(good),
        "blocking_loop_lag_p99_ms": loop_lag(blocking),
        "sync_ping_p99_ms": sync["ping_p99_ms"],
        "good_ping_p99_ms": good["ping_p99_ms"],
        "blocking_ping_p99_ms": blocking["ping_p99_ms"],
    }
    sync_stalls = stalls_loop(sync, good)
    blocking_stalls = stalls_loop(blocking, good)
    sync_says = (
        f"the sync dependency served {fmt(figures['sync_rps_ratio'], 'x')} the asyncpg variant's throughput "
        f"with loop lag p99 {fmt(loop_lag(sync), 'ms')} vs {fmt(loop_lag(good), 'ms')} "
        f"(/ping p99 {fmt(sync['ping_p99_ms'], 'ms')} vs {fmt(good['ping_p99_ms'], 'ms')})"
    )
    blocking_says = (
        f"the `async def` dependency calling psycopg2 served {fmt(figures['blocking_rps_ratio'], 'x')} "
        f"the throughput with loop lag p99 {fmt(loop_lag(blocking), 'ms')} "
        f"(/ping p99 {fmt(blocking['ping_p99_ms'], 'ms')})"
    )
    headline = (
        f"loop lag p99: sync dep {fmt(loop_lag(sync), 'ms')}, async psycopg2 dep {fmt(loop_lag(blocking), 'ms')}, "
        f"asyncpg {fmt(loop_lag(good), 'ms')}; sync dep {fmt(figures['sync_rps_ratio'], 'x')} throughput"
    )
    if sync_stalls:
        return Verdict("holds", f"Holds: {sync_says}.", figures, headline)
    if blocking_stalls:
        return Verdict(
            "partly holds",
            f"Holds only for blocking code inside an `async def` dependency: {blocking_says}, while {sync_says}.",
            figures,
            headline,
        )
    return Verdict("does not hold", f"Does not hold in this run: {sync_says}; {blocking_says}.", figures, headline)


PAIR = Pair(
    name="deps",
    claim_id="C1",
    claim="A sync generator dependency blocks the event loop; use an async one.",
    sources=("000",),
    mechanism=(
        "FastAPI runs a `def` dependency (setup and teardown) and a `def` endpoint in anyio's "
        "worker threads, 40 at a time, so the event loop stays free; they compete for those "
        "threads and for the GIL, not for the loop. An `async def` dependency runs on the loop "
        "itself: if it calls a blocking driver, every other request, /ping included, waits."
    ),
    decided_by=(
        f"Event-loop lag p99, measured inside the server (the /ping probe from outside corroborates it). "
        f"A variant stalls the loop when its lag p99 is "
        f">= {STALL_FACTOR:g}x the asyncpg variant's and >= {STALL_MIN_MS:g} ms above it. Holds if the "
        "sync dependency stalls it; holds only for blocking async code if only the psycopg2-in-"
        "`async def` variant does; does not hold otherwise."
    ),
    variants=(
        Variant(
            "sync-dep",
            "bad",
            "/sync-dep/items/{id}",
            "`def` generator dependency with psycopg2 (connect per request) on a `def` endpoint",
            ("get_db_sync", "sync_dep_item"),
        ),
        Variant(
            "async-dep",
            "good",
            "/async-dep/items/{id}",
            "`async def` generator dependency with asyncpg (connect per request) on an `async def` endpoint",
            ("get_db_async", "async_dep_item"),
        ),
        Variant(
            "async-dep-blocking",
            "bad",
            "/async-dep-blocking/items/{id}",
            "`async def` generator dependency that calls blocking psycopg2, on an `async def` endpoint",
            ("get_db_async_blocking", "async_dep_blocking_item"),
        ),
    ),
    decide=decide,
    open_loop_rate=lambda knobs: OPEN_LOOP_RATE,
    order=10,
    references=("fastapi#5122",),
)
