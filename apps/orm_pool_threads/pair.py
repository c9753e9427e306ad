"""C16, a production failure no article claims: SQLAlchemy's default pool behind `def`
endpoints, where anyio's 40 worker threads compete for 5 + 10 connections."""

from __future__ import annotations

from collections.abc import Mapping

from harness.checks import (
    FAILURE_RATE,
    GOOD_THROUGHPUT,
    P99,
    Check,
    Difference,
    Metric,
    Part,
    Ratio,
    Rule,
    Total,
    counter,
)
from harness.pairs import ANYIO_TOKENS, Pair, Variant
from harness.records import Record

# Each variant's own timing of its checkout, per request, over the server's life.
WAIT = counter("connection_wait_ms", "wait for a connection per request", per="lookups", unit="ms")


def _threads_waiting(record: Record) -> float | None:
    wait_ms = WAIT.of(record)
    return None if wait_ms is None or not record.get("rps") else wait_ms * float(record["rps"]) / 1000


# Little's law: the wait per request times the request rate is how many worker threads
# wait for a connection at any moment, on average. Judged on that, not on the wait per
# request: with 40 threads on 15 connections about 25 threads queue whatever the host's
# speed (26-28 a block in four default runs: the waits are counted over the server's life
# and the rate over the window, which reads a little above the 25 that can wait), while
# the wait per request is those threads over the rate, which the host's speed moves
# (58-119 ms a block; over three blocks its interval once reached below zero).
THREADS_WAITING = Metric("worker threads waiting for a connection (wait per request x rate)", "", _threads_waiting)
# "Waits": at least one thread more waiting than beside the sized pool. A difference, not a
# ratio: the sized pool's threads wait only while it opens its 40 connections as the load
# starts (1.8-2.7 threads a block in those runs), so a ratio would read connect speed.
WAITING_MIN = 1.0
# "Fails": past pool_timeout a checkout raises; 1% of requests is far above a fluke for a
# pool that does not fail when sized to the threads (its control allows as much again).
POOL_FAILURE_RATE = 0.01
SIZED_FAILURE_RATE = 0.01


def slowest_per_timeout(knobs: Mapping[str, int]) -> Metric:
    """The slowest response (failed ones included) in pool timeouts: near 1x or above, some
    request waited the whole timeout; well below, none came close."""
    timeout_ms = knobs["pool_timeout_ms"]

    def read(record: Record) -> float | None:
        top = record.get("max_ms")
        return None if top is None else float(top) / timeout_ms

    return Metric("slowest response per pool_timeout", "x", read)


def rule(knobs: Mapping[str, int]) -> Rule:
    slots = knobs["pool_size"] + knobs["max_overflow"]
    return Rule(
        parts=(
            Part(
                f"behind {ANYIO_TOKENS} worker threads, requests wait for the default pool's {slots} connections",
                (
                    Check(
                        Difference(
                            THREADS_WAITING, "default-pool", "pool-sized", short="threads waiting, default minus sized"
                        ),
                        ">=",
                        WAITING_MIN,
                    ),
                ),
            ),
            Part(
                "and past pool_timeout they fail with 'QueuePool limit ... reached'",
                (Check(Total(FAILURE_RATE, "default-pool", short="default pool: failed"), ">=", POOL_FAILURE_RATE),),
            ),
        ),
        controls=(
            Part(
                "a pool with a connection for every worker thread serves without failures",
                (Check(Total(FAILURE_RATE, "pool-sized"), "<=", SIZED_FAILURE_RATE),),
            ),
        ),
        shown=(
            Difference(WAIT, "default-pool", "pool-sized"),
            Ratio(WAIT, "limiter-to-pool", "default-pool"),
            Ratio(WAIT, "async-engine", "default-pool"),
            Ratio(GOOD_THROUGHPUT, "pool-sized", "default-pool"),
            Ratio(GOOD_THROUGHPUT, "limiter-to-pool", "default-pool"),
            Ratio(GOOD_THROUGHPUT, "async-engine", "default-pool"),
            Ratio(P99, "default-pool", "pool-sized"),
            Total(slowest_per_timeout(knobs), "default-pool"),
            Total(slowest_per_timeout(knobs), "limiter-to-pool"),
        ),
        note=(
            f"Holds when requests both wait and fail; partly holds when they wait within pool_timeout "
            f"({knobs['pool_timeout_ms'] / 1000:g} s here) and none fails; the slowest response per pool_timeout "
            "shows how close the longest wait came. The fixes are shown, not judged."
        ),
    )


PAIR = Pair(
    name="orm_pool_threads",
    claim_id="C16",
    claim=(
        "`def` endpoints on SQLAlchemy's default pool (5 + 10 connections) queue for connections behind anyio's "
        "40 worker threads and fail with 'QueuePool limit ... reached'."
    ),
    sources=(),
    mechanism=(
        "FastAPI runs each `def` endpoint on one of anyio's worker threads (40 tokens by default). The template's "
        "Session takes a connection at its first query and holds it until the dependency's teardown closes the "
        "session after the response. create_engine lends at most pool_size + max_overflow connections (5 + 10); "
        "the 16th thread blocks in QueuePool's queue up to pool_timeout and then raises TimeoutError "
        "('QueuePool limit of size 5 overflow 10 reached, connection timed out', error 3o7r). SQLAlchemy's "
        "errors page gives the two cures measured here: more connections (a pool of one per thread), or fewer "
        "threads competing for them (anyio's limiter set to the pool's size). The second has a catch: a request "
        "needs a worker-thread token twice while it holds its connection, once for the endpoint and once more "
        "for the response model, which FastAPI validates for a `def` endpoint with `run_in_threadpool` "
        "(fastapi/routing.py, serialize_response), before the dependency's teardown closes the session (that "
        "teardown runs under its own CapacityLimiter(1), fastapi/concurrency.py). With no more tokens than "
        "connections, every token can be held by an endpoint waiting for a connection while every connection "
        "is held by a request waiting for a token, until pool_timeout breaks the tie: the stall of C6 "
        "(fastapi#3205). An AsyncSession waits for the same pool on the event loop, holding no thread."
    ),
    variants=(
        Variant(
            "default-pool",
            "bad",
            "/default-pool/items/{id}",
            "`with Session(engine) as session: yield session` on create_engine's default pool, `def` endpoint",
            ("get_session", "timed_lookup", "default_pool_item"),
        ),
        Variant(
            "pool-sized",
            "good",
            "/pool-sized/items/{id}",
            "the same, with pool_size = 40 (one connection per worker thread), no overflow",
            ("get_session", "timed_lookup", "pool_sized_item"),
        ),
        Variant(
            "limiter-to-pool",
            "good",
            "/limiter-to-pool/items/{id}",
            "the default pool, with anyio's thread limiter lowered to pool_size + max_overflow",
            ("lifespan", "timed_lookup", "limiter_to_pool_item"),
        ),
        Variant(
            "async-engine",
            "good",
            "/async-engine/items/{id}",
            "`async with AsyncSession(engine)` on asyncpg, the same default pool, `async def` endpoint",
            ("async_engine_item",),
        ),
    ),
    knobs={"pool_size": 5, "max_overflow": 10, "pool_timeout_ms": 3000, "sized_pool_size": ANYIO_TOKENS},
    rule=rule,
    references=(
        "fastapi#3205",
        "fastapi#3089",
        "fastapi/full-stack-fastapi-template#104",
        "https://sqlalche.me/e/21/3o7r",
        "fastapi/full-stack-fastapi-template#459",
        "Future-Energy-Associates/granular_certificate_registry#104",
    ),
    order=160,
)
