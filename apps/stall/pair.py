"""C6: does a small pool behind a sync dependency stall `def` endpoints, and what fixes it?"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.pairs import ANYIO_TOKENS, Pair, Records, Variant, Verdict, fmt, inconclusive, missing_variants, ratio

# The sync dependency stalls when it fails at least this share of requests, or serves
# less than this share of the best fix's throughput.
STALL_FAILURE_RATE = 0.05
STALL_RPS_SHARE = 0.25
# A fix restores service when it fails at most this share of requests and serves at
# least this share of the async driver's throughput.
FIX_FAILURE_RATE = 0.01
RESTORE_SHARE = 0.3

FIXES = {
    "in-endpoint": "a connection taken inside the `def` endpoint",
    "max-concurrency": "`Depends(max_concurrency=pool_size)`",
    "async-driver": "asyncpg in an async dependency",
}


def decide(records: Records, knobs: Mapping[str, Any]) -> Verdict:
    missing = missing_variants(records, ["sync-dep", *FIXES])
    if missing:
        return inconclusive(missing)
    stalled, reference = records["sync-dep"], records["async-driver"]
    best = max(FIXES, key=lambda name: records[name]["rps"])
    figures: dict[str, float] = {
        "stalled_failure_rate": stalled["failure_rate"],
        "stalled_rps": stalled["rps"],
        "stalled_rps_ratio": ratio(stalled["rps"], records[best]["rps"]),
        "stalled_p99_ms": stalled["p99_ms"],
    }
    restored = []
    for name in FIXES:
        share, key = ratio(records[name]["rps"], reference["rps"]), name.replace("-", "_")
        figures[f"{key}_rps_share"] = share
        figures[f"{key}_failure_rate"] = records[name]["failure_rate"]
        if records[name]["failure_rate"] <= FIX_FAILURE_RATE and (share or 0.0) >= RESTORE_SHARE:
            restored.append(name)
    not_restored = [name for name in FIXES if name not in restored]
    stalls = stalled["failure_rate"] >= STALL_FAILURE_RATE or (figures["stalled_rps_ratio"] or 0.0) < STALL_RPS_SHARE
    stall_says = (
        f"with {fmt(knobs['pool_size'])} pooled connections and {fmt(stalled['users'])} users the sync dependency "
        f"failed {fmt(100 * stalled['failure_rate'], '%', 1)} of requests at {fmt(stalled['rps'], 'req/s')} "
        f"({fmt(figures['stalled_rps_ratio'], 'x')} the best fix, {best}), p99 {fmt(stalled['p99_ms'], 'ms')}"
    )

    def fixes_say(names: list[str]) -> str:
        return ", ".join(
            f"{FIXES[name]} ({fmt(records[name]['rps'], 'req/s')}, "
            f"{fmt(100 * records[name]['failure_rate'], '%', 1)} failed)"
            for name in names
        )

    headline = (
        f"{fmt(100 * stalled['failure_rate'], '%', 0)} failed, {fmt(figures['stalled_rps_ratio'], 'x')} throughput "
        f"of {best}"
    )
    if not stalls:
        # Below tokens + pool slots the setups cannot take every token: no stall to see.
        if stalled["users"] <= ANYIO_TOKENS + knobs["pool_size"]:
            return Verdict(
                "inconclusive",
                f"No verdict: {fmt(stalled['users'])} users cannot take all {ANYIO_TOKENS} worker-thread tokens "
                f"and {fmt(knobs['pool_size'])} connections at once; {stall_says}.",
                figures,
                f"{fmt(stalled['users'])} users <= {ANYIO_TOKENS} tokens + pool",
            )
        return Verdict("does not hold", f"Does not hold in this run: {stall_says}.", figures, headline)
    if not not_restored:
        return Verdict(
            "holds", f"Holds: {stall_says}; every fix restored service: {fixes_say(restored)}.", figures, headline
        )
    worked = f"restored by {fixes_say(restored)}" if restored else "no fix restored service"
    return Verdict(
        "partly holds",
        f"The stall holds but not every fix helped: {stall_says}; {worked}; not by {fixes_say(not_restored)}.",
        figures,
        headline,
    )


PAIR = Pair(
    name="stall",
    claim_id="C6",
    claim=(
        "A connection pool smaller than the load stalls `def` endpoints whose sync dependency holds the "
        "connection; take the connection in the endpoint, limit the dependency, or use an async driver."
    ),
    sources=("003", "002"),
    mechanism=(
        "FastAPI runs a sync dependency's setup, the `def` endpoint and its response validation in anyio's "
        "worker threads, 40 tokens shared by all. When more requests arrive than tokens plus pool slots, every "
        "token ends up held by a setup blocked waiting for the pool, while the requests that hold the "
        "connections queue for a token to run their endpoint: nothing moves until the pool wait times out "
        "(fastapi#3205; PR #5122 fixed only the teardown path, PR #12066 another). Taking the connection in "
        "the endpoint keeps waiting and use in one thread; `max_concurrency` waits on an async semaphore; "
        "asyncpg waits on the loop."
    ),
    decided_by=(
        f"Failure rate and throughput. The sync dependency stalls if it fails >= {100 * STALL_FAILURE_RATE:g}% "
        f"of requests or serves < {STALL_RPS_SHARE:g}x the best fix's req/s; a fix restores service if it "
        f"fails <= {100 * FIX_FAILURE_RATE:g}% and serves >= {RESTORE_SHARE:g}x the async driver's req/s (a wide "
        "margin: the `def` fixes pay several worker-thread hops per request on a small machine). Holds "
        "if it stalls and every fix restores; partly holds if some fix does not; does not hold without a stall "
        f"(inconclusive when users <= {ANYIO_TOKENS} tokens + pool_size, which cannot trigger it)."
    ),
    variants=(
        Variant(
            "sync-dep",
            "bad",
            "/sync-dep/items/{id}",
            "`def` endpoint with a sync generator dependency that waits for a connection from a small pool",
            ("get_conn", "sync_dep_item"),
        ),
        Variant(
            "in-endpoint",
            "good",
            "/in-endpoint/items/{id}",
            "`def` endpoint that takes the connection from the same pool itself",
            ("in_endpoint_item",),
        ),
        Variant(
            "max-concurrency",
            "good",
            "/max-concurrency/items/{id}",
            "the same sync dependency declared with `Depends(get_conn, max_concurrency=pool_size)`",
            ("get_conn", "max_concurrency_item"),
        ),
        Variant(
            "async-driver",
            "good",
            "/async-driver/items/{id}",
            "asyncpg pool of the same size in an `async def` dependency and endpoint",
            ("get_conn_async", "async_driver_item"),
        ),
    ),
    decide=decide,
    knobs={"pool_size": 5, "pool_timeout_ms": 2000},
    order=60,
    references=("fastapi#3205", "fastapi#5122", "fastapi#12066"),
)
