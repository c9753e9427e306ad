"""C14: does asyncio.gather cut the latency of independent upstream calls?"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from apps.gather.app import CALLS
from harness.pairs import Pair, Records, Variant, Verdict, fmt, inconclusive, missing_variants, ratio

# Holds when gather's p50 is at most this share of the sequential p50 (the ideal is
# 1/CALLS); does not hold above NO_GAIN_SHARE, where the calls no longer overlap.
HOLDS_SHARE = 0.6
NO_GAIN_SHARE = 0.85
# Latencies of failed calls say nothing about waiting: above this failure rate, no verdict.
MAX_FAILURE_RATE = 0.01


def decide(records: Records, knobs: Mapping[str, Any]) -> Verdict:
    missing = missing_variants(records, ["sequential", "gather"])
    if missing:
        return inconclusive(missing)
    seq, gat = records["sequential"], records["gather"]
    upstream_ms = knobs["upstream_ms"]
    figures = {
        "p50_ratio": ratio(gat["p50_ms"], seq["p50_ms"]),
        "sequential_p50_ms": seq["p50_ms"],
        "gather_p50_ms": gat["p50_ms"],
        "sequential_floor_ms": CALLS * upstream_ms,
        "gather_floor_ms": upstream_ms,
        "rps_ratio": ratio(gat["rps"], seq["rps"]),
    }
    share = figures["p50_ratio"]
    says = (
        f"{CALLS} calls of {upstream_ms} ms took p50 {fmt(seq['p50_ms'], 'ms')} in sequence (floor "
        f"{fmt(CALLS * upstream_ms, 'ms')}) and {fmt(gat['p50_ms'], 'ms')} with gather (floor "
        f"{fmt(upstream_ms, 'ms')}): {fmt(share, 'x')} the latency, at {fmt(figures['rps_ratio'], 'x')} the throughput"
    )
    headline = f"p50 {fmt(gat['p50_ms'], 'ms')} vs {fmt(seq['p50_ms'], 'ms')} ({fmt(share, 'x')})"
    failing = [name for name, r in (("sequential", seq), ("gather", gat)) if r["failure_rate"] > MAX_FAILURE_RATE]
    if failing or share is None:
        failed = ", ".join(f"{name} failed {fmt(100 * records[name]['failure_rate'], '%', 1)}" for name in failing)
        return Verdict(
            "inconclusive", f"No verdict: {failed or 'a p50 was missing'} ({says}).", figures, "requests failed"
        )
    if share <= HOLDS_SHARE:
        return Verdict("holds", f"Holds: {says}.", figures, headline)
    if share <= NO_GAIN_SHARE:
        return Verdict("partly holds", f"Gather helped less than the overlap allows: {says}.", figures, headline)
    return Verdict("does not hold", f"Does not hold in this run: {says}.", figures, headline)


PAIR = Pair(
    name="gather",
    claim_id="C14",
    claim="Run independent upstream calls concurrently with asyncio.gather instead of one after another.",
    sources=("003",),
    mechanism=(
        f"Awaiting {CALLS} calls in turn makes the request wait for the sum of their delays; "
        "asyncio.gather starts them together, so it waits for the slowest one, as long as the "
        "client has a free connection for each call and the loop has CPU to spare. Under a CPU-bound "
        "load the gain shrinks: the calls still cost the same work, and httpx 0.28's pool spends more CPU "
        "per call the more connections it holds (httpcore#1035)."
    ),
    decided_by=(
        f"Median latency, gather over sequential (ideal 1/{CALLS}); no verdict if either fails more than "
        f"{100 * MAX_FAILURE_RATE:g}% of requests. Holds when gather's p50 is <= "
        f"{HOLDS_SHARE:g}x the sequential p50; does not hold above {NO_GAIN_SHARE:g}x; partly holds in "
        f"between. The floors, {CALLS} x upstream_ms and 1 x upstream_ms, are shown beside them."
    ),
    variants=(
        Variant(
            "sequential",
            "bad",
            "/sequential/items/{id}",
            f"{CALLS} httpx calls to the stub upstream, each awaited before the next",
            ("call_upstream", "sequential_item"),
        ),
        Variant(
            "gather",
            "good",
            "/gather/items/{id}",
            f"the same {CALLS} calls awaited together with asyncio.gather",
            ("lifespan", "gather_item"),
        ),
    ),
    decide=decide,
    knobs={"upstream_ms": 50},
    order=140,
    # Few users: httpx 0.28's pool spends CPU per call that grows with its open
    # connections (httpx#3215, httpcore#1035); with 50 users the client, not the
    # waiting, would set the latency on 2 cores.
    load={"users": 5},
    upstream=True,
    references=("httpx#3215", "httpcore#1035"),
)
