"""C2: do async generator dependencies only work in `async def` endpoints?"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.pairs import Pair, Records, Variant, Verdict, counter_ratio, fmt, inconclusive, missing_variants, ratio

# The `def` endpoint "works" when it passes verification, fails fewer than this share of
# requests under load, and its dependency ran at least this share of its teardowns.
FAILURE_RATE_MAX = 0.01
CLEANUP_SHARE_MIN = 0.999
# Working at under this share of the async endpoint's throughput is a cost worth a "partly".
RPS_SHARE_MIN = 0.5


def decide(records: Records, knobs: Mapping[str, Any]) -> Verdict:
    missing = missing_variants(records, ["async-endpoint"])
    if missing:
        return inconclusive(missing)
    good = records["async-endpoint"]
    bad = records.get("def-endpoint")
    if bad is not None and bad.get("status") != "ok" and "verification failed" in str(bad.get("error")):
        return Verdict(
            "holds",
            f"Holds: the `def` endpoint with the async generator dependency failed verification ({bad['error']}).",
            headline="`def` endpoint failed verification",
        )
    missing = missing_variants(records, ["def-endpoint"])
    if missing:
        return inconclusive(missing)
    assert bad is not None
    figures = {
        "def_failure_rate": bad["failure_rate"],
        "rps_ratio": ratio(bad["rps"], good["rps"]),
        "def_rps": bad["rps"],
        "async_rps": good["rps"],
        "def_p50_ms": bad["p50_ms"],
        "async_p50_ms": good["p50_ms"],
        "def_cleanup_share": counter_ratio(bad, "teardowns", "setups"),
        # Shows the endpoint body really ran in anyio's worker threads.
        "def_threads_busy_mean": bad.get("threads_busy_mean"),
    }
    cleaned = figures["def_cleanup_share"] is None or figures["def_cleanup_share"] >= CLEANUP_SHARE_MIN
    works = bad["failure_rate"] < FAILURE_RATE_MAX and cleaned
    says = (
        f"the `def` endpoint with the async generator dependency served {fmt(bad['rps'], 'req/s')} "
        f"({fmt(figures['rps_ratio'], 'x')} the `async def` endpoint's), p50 {fmt(bad['p50_ms'], 'ms', 1)} vs "
        f"{fmt(good['p50_ms'], 'ms', 1)}, failing {fmt(100 * bad['failure_rate'], '%', 2)} of requests, "
        f"with {fmt(100 * figures['def_cleanup_share'] if figures['def_cleanup_share'] is not None else None, '%', 1)} "
        f"of its setups torn down, keeping {fmt(figures['def_threads_busy_mean'], digits=1)} of anyio's worker "
        "threads busy on average"
    )
    headline = (
        f"`def` endpoint {fmt(figures['rps_ratio'], 'x')} throughput, {fmt(100 * bad['failure_rate'], '%', 2)} failures"
    )
    if not works:
        return Verdict("holds", f"Holds: {says}.", figures, headline)
    if (figures["rps_ratio"] or 0.0) < RPS_SHARE_MIN:
        return Verdict("partly holds", f"It works, but at a cost: {says}.", figures, headline)
    return Verdict("does not hold", f"Does not hold: {says}.", figures, headline)


PAIR = Pair(
    name="def_endpoint",
    claim_id="C2",
    claim="Async generator dependencies only work in `async def` endpoints.",
    sources=("001",),
    mechanism=(
        "FastAPI solves every dependency on the event loop before it calls the endpoint, and keeps "
        "yield dependencies on an AsyncExitStack it unwinds on the loop after the response; only the "
        "endpoint body of a `def` endpoint is sent to anyio's worker threads. So an async generator "
        "dependency works the same for both kinds; what a `def` endpoint cannot do is await on a "
        "loop-bound resource such as an asyncpg connection, so the dependency here yields plain data. "
        "The `def` endpoint pays one thread hop per request."
    ),
    decided_by=(
        f"Verification, failure rate, cleanup counters and throughput of the `def` endpoint. It works if "
        f"it verifies, fails < {100 * FAILURE_RATE_MAX:g}% of requests and tears down "
        f">= {100 * CLEANUP_SHARE_MIN:g}% of its dependency's setups: then the claim does not hold, or "
        f"partly holds if it serves < {RPS_SHARE_MIN:g}x the `async def` endpoint's throughput. Holds if "
        "it does not work."
    ),
    variants=(
        Variant(
            "def-endpoint",
            "bad",
            "/def-endpoint/items/{id}",
            "`def` endpoint taking an async generator dependency that looks the row up through the asyncpg "
            "pool on the loop and yields the row (the endpoint never touches the connection from its thread)",
            ("get_item", "def_endpoint_item"),
        ),
        Variant(
            "async-endpoint",
            "good",
            "/async-endpoint/items/{id}",
            "the same async generator dependency on an `async def` endpoint",
            ("get_item", "async_endpoint_item"),
        ),
    ),
    decide=decide,
    knobs={"pool_size": 50},
    order=20,
)
