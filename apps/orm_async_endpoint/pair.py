"""C11 with SQLAlchemy (article 004): does a sync Session inside an `async def` endpoint
block the server, and does `def` or an AsyncSession fix it?"""

from __future__ import annotations

from collections.abc import Mapping

from harness.checks import LOOP_LAG, PING_P99, THROUGHPUT, Check, Part, Ratio, Rule, stall_checks
from harness.pairs import Pair, Variant

# Blocked: the async-session variant serves at least twice as much (far outside the noise
# floor; blocking caps the loop near 1000 / query_ms requests per second).
RPS_FACTOR = 2.0


def rule(knobs: Mapping[str, int]) -> Rule:
    return Rule(
        parts=(
            Part(
                "a sync Session in an `async def` endpoint blocks the event loop",
                stall_checks("sync-in-async", "async-session"),
            ),
            Part(
                "and caps the server's throughput",
                (
                    Check(
                        Ratio(THROUGHPUT, "async-session", "sync-in-async", short="AsyncSession / sync in async def"),
                        ">=",
                        RPS_FACTOR,
                    ),
                ),
            ),
            # Judged on the loop, not on throughput: sync-in-def's throughput swung 108-246
            # req/s between runs (40 threads on 15 connections, CPU-bound), while its loop
            # lag (25-145 ms) stayed far below sync-in-async's (about 1.5 s).
            Part(
                "the same Session in a `def` endpoint does not block the loop",
                stall_checks("sync-in-async", "sync-in-def"),
            ),
        ),
        shown=(
            Ratio(THROUGHPUT, "sync-in-def", "sync-in-async", short="def / async def"),
            Ratio(PING_P99, "sync-in-async", "async-session"),
            Ratio(LOOP_LAG, "sync-in-def", "async-session"),
            Ratio(THROUGHPUT, "sync-in-def", "async-session"),
        ),
        note=(
            f"Each request waits {knobs['query_ms']} ms in PostgreSQL first, so a loop that waits for it "
            f"serves at most about {1000 / knobs['query_ms']:.0f} requests per second."
        ),
    )


PAIR = Pair(
    name="orm_async_endpoint",
    claim_id="C11",
    claim="A sync SQLAlchemy Session inside an `async def` endpoint blocks the server.",
    sources=("004",),
    mechanism=(
        "FastAPI awaits an `async def` endpoint on the event loop; a sync Session's queries are blocking socket "
        "reads in psycopg, so while one waits for PostgreSQL nothing else on the loop runs, /ping included. "
        "The same code in a `def` endpoint runs on anyio's worker threads (40 tokens), and waits there, so "
        "the loop stays free; its concurrency is then bounded by the pool's 5 + 10 connections. An AsyncSession "
        "on asyncpg awaits each round trip, so the loop serves other requests meanwhile, up to the same pool."
    ),
    variants=(
        Variant(
            "sync-in-async",
            "bad",
            "/sync-in-async/items/{id}",
            "`with Session(engine)` (psycopg 3) inside an `async def` endpoint",
            ("lookup", "sync_in_async_item"),
        ),
        Variant(
            "sync-in-def",
            "good",
            "/sync-in-def/items/{id}",
            "the same code in a `def` endpoint",
            ("lookup", "sync_in_def_item"),
        ),
        Variant(
            "async-session",
            "good",
            "/async-session/items/{id}",
            "`async with AsyncSession(engine)` on asyncpg in an `async def` endpoint",
            ("async_session_item",),
        ),
    ),
    knobs={"pool_size": 5, "max_overflow": 10, "query_ms": 20},
    rule=rule,
    # Decided on loop lag and throughput ratios, not on percentiles: the blocked variant
    # (about 1000 / query_ms req/s) need not stretch its window to 500 requests.
    load={"max_measure_s": 6},
    order=112,
)
