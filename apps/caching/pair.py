"""C4: is a dependency evaluated once per request and cached?"""

from __future__ import annotations

from collections.abc import Mapping

from harness.checks import P50, THROUGHPUT, Check, Difference, Part, Ratio, Rule, Total, counter
from harness.pairs import Pair, Variant

# Tolerance on calls per request: requests cut off at shutdown can skew the counts a little.
CALLS_TOLERANCE = 0.05
# Cached: at most one call per request, within the tolerance.
CACHED_MAX = 1 + CALLS_TOLERANCE
# The counters see the one call a request needs at least, within the tolerance.
CALLED_MIN = 1 - CALLS_TOLERANCE
# With use_cache=False the dependency is needed twice: within the tolerance of 2.
UNCACHED_MIN, UNCACHED_MAX = 2 - CALLS_TOLERANCE, 2 + CALLS_TOLERANCE

# Shown as "1.00x": the times the dependency ran per request, to two decimals.
CALLS = counter("lookups", "times the dependency ran per request", per="requests", unit="x")


def rule(knobs: Mapping[str, int]) -> Rule:
    return Rule(
        parts=(
            Part(
                "a dependency asked for twice in one request is evaluated once",
                (Check(Total(CALLS, "cached", short="calls per request with the cache"), "<=", CACHED_MAX),),
            ),
        ),
        controls=(
            Part(
                "the counters see every call: once per request with the cache, twice with use_cache=False",
                (
                    Check(Total(CALLS, "cached"), ">=", CALLED_MIN),
                    Check(Total(CALLS, "no-cache"), ">=", UNCACHED_MIN),
                    Check(Total(CALLS, "no-cache"), "<=", UNCACHED_MAX),
                ),
            ),
        ),
        shown=(
            Total(CALLS, "no-cache"),
            Difference(P50, "no-cache", "cached"),
            Ratio(THROUGHPUT, "no-cache", "cached"),
        ),
        note="p50 and throughput show what the extra call costs; they are not judged.",
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
    rule=rule,
    knobs={"pool_size": 50},
    order=40,
)
