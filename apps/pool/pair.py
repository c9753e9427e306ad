"""C12: is a connection per request costly enough to pool?"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.pairs import Pair, Records, Variant, Verdict, fmt, inconclusive, missing_variants, ratio

# Holds when the pool serves at least this many times the connect-per-request throughput
# and its median latency is at most this share of connect-per-request's.
RPS_FACTOR = 1.5
P50_SHARE = 0.67
# Below this throughput gain, with the median no better than this share, the pool saved
# nothing worth the claim.
MIN_RPS_GAIN = 1.1
MIN_P50_SHARE = 0.9


def decide(records: Records, knobs: Mapping[str, Any]) -> Verdict:
    missing = missing_variants(records, ["connect-per-request", "lifespan-pool"])
    if missing:
        return inconclusive(missing)
    connect, pooled = records["connect-per-request"], records["lifespan-pool"]
    figures = {
        "rps_ratio": ratio(pooled["rps"], connect["rps"]),
        "p50_ratio": ratio(pooled["p50_ms"], connect["p50_ms"]),
        "connect_p50_ms": connect["p50_ms"],
        "pool_p50_ms": pooled["p50_ms"],
        "connect_new_backends_per_s": connect.get("new_backends_per_s"),
        "pool_new_backends_per_s": pooled.get("new_backends_per_s"),
    }
    gain, p50_share = figures["rps_ratio"] or 0.0, figures["p50_ratio"]
    p50_share = 1.0 if p50_share is None else p50_share
    says = (
        f"the lifespan pool served {fmt(figures['rps_ratio'], 'x')} the throughput of connect-per-request "
        f"({fmt(pooled['rps'], 'req/s')} vs {fmt(connect['rps'], 'req/s')}), p50 {fmt(pooled['p50_ms'], 'ms', 1)} "
        f"vs {fmt(connect['p50_ms'], 'ms', 1)}, starting {fmt(figures['pool_new_backends_per_s'], '', 1)} vs "
        f"{fmt(figures['connect_new_backends_per_s'], '', 1)} new backends per second"
    )
    headline = (
        f"{fmt(figures['rps_ratio'], 'x')} throughput, p50 {fmt(pooled['p50_ms'], 'ms', 1)} vs "
        f"{fmt(connect['p50_ms'], 'ms', 1)}"
    )
    if gain >= RPS_FACTOR and p50_share <= P50_SHARE:
        return Verdict("holds", f"Holds: {says}.", figures, headline)
    if gain < MIN_RPS_GAIN and p50_share > MIN_P50_SHARE:
        return Verdict("does not hold", f"Does not hold in this run: {says}.", figures, headline)
    return Verdict("partly holds", f"The pool helped, by less than the claim suggests: {says}.", figures, headline)


PAIR = Pair(
    name="pool",
    claim_id="C12",
    claim="Opening a database connection per request is costly; use a pool created at startup.",
    sources=("002", "003"),
    mechanism=(
        "Each new PostgreSQL connection costs a TCP handshake, a startup packet, password "
        "authentication (SCRAM: several round trips and hashing on both sides) and a fork of a "
        "new backend process, milliseconds of CPU on a machine this size, before the query itself. "
        "A pooled connection is already authenticated: borrowing it costs a queue operation, and "
        "asyncpg resets it on release with one extra round trip."
    ),
    decided_by=(
        f"Throughput and p50. Holds when the pool serves >= {RPS_FACTOR:g}x the connect-per-request "
        f"throughput with p50 <= {P50_SHARE:g}x; does not hold when it serves < {MIN_RPS_GAIN:g}x with p50 "
        f"> {MIN_P50_SHARE:g}x; partly holds in between. New backends per second (pg_stat_database.sessions) "
        "show where the cost goes: connect-per-request starts about one per request, the pool none."
    ),
    variants=(
        Variant(
            "connect-per-request",
            "bad",
            "/connect-per-request/items/{id}",
            "yield dependency that opens an asyncpg connection per request and closes it",
            ("get_conn_per_request", "connect_per_request_item"),
        ),
        Variant(
            "lifespan-pool",
            "good",
            "/lifespan-pool/items/{id}",
            "yield dependency that borrows a connection from an asyncpg pool opened in the lifespan",
            ("lifespan", "get_pooled_conn", "lifespan_pool_item"),
        ),
    ),
    decide=decide,
    knobs={"pool_size": 10},
    order=120,
)
