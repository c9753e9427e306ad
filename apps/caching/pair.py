"""C4: is a dependency evaluated once per request and cached?"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.pairs import Pair, Records, Variant, Verdict, counter_ratio, fmt, inconclusive, missing_variants, ratio

# Calls per request are counted by the app; a few in-flight requests cut off at shutdown
# may skew them, hence a tolerance. Cached means within CALLS_TOLERANCE of 1; the
# control (use_cache=False) must show the dependency is needed twice, within it of 2.
CALLS_TOLERANCE = 0.05


def decide(records: Records, knobs: Mapping[str, Any]) -> Verdict:
    missing = missing_variants(records, ["cached", "no-cache"])
    if missing:
        return inconclusive(missing)
    cached, uncached = records["cached"], records["no-cache"]
    figures = {
        "cached_calls_per_request": counter_ratio(cached, "lookups", "requests"),
        "no_cache_calls_per_request": counter_ratio(uncached, "lookups", "requests"),
        "cached_p50_ms": cached["p50_ms"],
        "no_cache_p50_ms": uncached["p50_ms"],
        "p50_extra_ms": uncached["p50_ms"] - cached["p50_ms"],
        "rps_ratio": ratio(uncached["rps"], cached["rps"]),
    }
    per_cached, per_uncached = figures["cached_calls_per_request"], figures["no_cache_calls_per_request"]
    if per_cached is None or per_uncached is None:
        return Verdict("inconclusive", "No verdict: the variants reported no call counters.", figures, "no counters")
    says = (
        f"the dependency ran {fmt(per_cached, digits=2)} times per request with the default cache and "
        f"{fmt(per_uncached, digits=2)} with use_cache=False"
    )
    cost = (
        f"the extra call cost {fmt(figures['p50_extra_ms'], 'ms', 1)} at p50 ({fmt(cached['p50_ms'], 'ms', 1)} vs "
        f"{fmt(uncached['p50_ms'], 'ms', 1)}) and left {fmt(figures['rps_ratio'], 'x')} the throughput"
    )
    headline = f"{fmt(per_cached, digits=2)} vs {fmt(per_uncached, digits=2)} calls per request"
    if per_cached > 1 + CALLS_TOLERANCE:
        return Verdict("does not hold", f"Does not hold: {says}; {cost}.", figures, headline)
    if abs(per_cached - 1) <= CALLS_TOLERANCE and abs(per_uncached - 2) <= CALLS_TOLERANCE:
        return Verdict("holds", f"Holds: {says}; {cost}.", figures, headline)
    return Verdict(
        "inconclusive",
        f"No verdict: without the cache the dependency should run twice per request; {says}.",
        figures,
        headline,
    )


PAIR = Pair(
    name="caching",
    claim_id="C4",
    claim="A dependency used several times in one request is evaluated once and its result reused.",
    sources=("001",),
    mechanism=(
        "solve_dependencies keeps a dict per request keyed by the dependency callable and its "
        "security scopes; a dependency met again in the same request (by the endpoint or a "
        "sub-dependency) gets the stored value unless it is declared with use_cache=False. The cache "
        "lives for one request only, so nothing is shared between requests. Here each extra call is a "
        "pool acquire plus one indexed query."
    ),
    decided_by=(
        f"Calls per request from app counters (dependency calls / endpoint calls). Holds if the cached "
        f"variant is within {CALLS_TOLERANCE:g} of 1 and use_cache=False within {CALLS_TOLERANCE:g} of 2; does "
        f"not hold if the cached variant is above 1 + {CALLS_TOLERANCE:g}; inconclusive otherwise. p50 and "
        "throughput show what the extra call costs."
    ),
    variants=(
        Variant(
            "cached",
            "good",
            "/cached/items/{id}",
            "one pooled asyncpg lookup dependency asked for by the endpoint and by an ETag sub-dependency "
            "(default use_cache=True)",
            ("load_item", "item_etag_cached", "cached_item"),
        ),
        Variant(
            "no-cache",
            "bad",
            "/no-cache/items/{id}",
            "the same with Depends(load_item, use_cache=False) in both places",
            ("load_item", "item_etag_uncached", "no_cache_item"),
        ),
    ),
    decide=decide,
    knobs={"pool_size": 50},
    order=40,
)
