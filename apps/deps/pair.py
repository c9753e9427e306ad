"""C1: does a sync generator dependency block the event loop?"""

from __future__ import annotations

from collections.abc import Mapping

from harness.checks import LOOP_LAG, LOOP_LAG_FLOORED, THROUGHPUT, Check, Difference, Part, Ratio, Rule, stall_checks
from harness.pairs import STALL_MIN_MS, Pair, Variant

# Open loop below what the loop-blocking variant sustains closed-loop on 2 cores (about
# 120 req/s), so the comparison shows latency under load rather than an overload.
OPEN_LOOP_RATE = 60.0


# A stall by the dependency's own driver calls puts the loop at least this far behind the
# async dependency's. At 50 users both variants saturate the CPU, and CPU queueing alone
# moved sync-dep's lag p99 against async-dep's by -27 to +56 ms per block in stored runs
# (a ratio of 0.75x-2.4x, whose 3-block interval reached past 3x in one run of four); the
# same calls made on the loop (the control) put it 1.0-3.7 s behind.
STALL_EXTRA_MS = 200.0


def rule(knobs: Mapping[str, int]) -> Rule:
    behind = Check(
        Difference(LOOP_LAG_FLOORED, "sync-dep", "async-dep", short="loop lag p99 `sync-dep` - `async-dep`"),
        ">=",
        STALL_EXTRA_MS,
        band=STALL_MIN_MS,
    )
    return Rule(
        parts=(
            Part(
                "a sync generator dependency stalls the event loop",
                (*stall_checks("sync-dep", "async-dep"), behind),
            ),
        ),
        # Blocking code inside `async def` must stall the loop: if it does not here, the
        # harness failed to see a stall, and silence about the sync dependency means nothing.
        controls=(
            Part(
                "psycopg2 called inside an `async def` dependency stalls the loop",
                stall_checks("async-dep-blocking", "async-dep"),
            ),
        ),
        shown=(
            Ratio(THROUGHPUT, "sync-dep", "async-dep"),
            Ratio(THROUGHPUT, "async-dep-blocking", "async-dep"),
            Ratio(LOOP_LAG, "sync-dep", "async-dep"),
        ),
    )


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
    rule=rule,
    open_loop_rate=lambda knobs: OPEN_LOOP_RATE,
    order=10,
    # A blocked loop takes in about one new connection per pass, and a pass runs every
    # queued request first: 50 users all get a first answer only after several seconds.
    # A request timeout above that lets the warm-up (scenario warmup_max_s) admit them
    # all, instead of timed-out users reconnecting and their queued first requests
    # landing in the window as its tail.
    load={"request_timeout_s": 60},
    references=("fastapi#5122",),
)
