"""C12: is a connection per request costly enough to pool?"""

from __future__ import annotations

from collections.abc import Mapping

from harness.checks import CPU_PER_REQUEST, NEW_BACKENDS, P50, THROUGHPUT, Check, Level, Part, Ratio, Rule
from harness.pairs import Pair, Variant

# "Costly": the pool serves at least half as much again (well outside the +-5% noise floor).
RPS_FACTOR = 1.5
# And its median latency is at most two thirds of connect-per-request's.
P50_SHARE = 0.67


def rule(knobs: Mapping[str, int]) -> Rule:
    return Rule(
        parts=(
            Part(
                "a pool serves more requests than connecting per request",
                (
                    Check(
                        Ratio(THROUGHPUT, "lifespan-pool", "connect-per-request", short="pool throughput"),
                        ">=",
                        RPS_FACTOR,
                    ),
                ),
            ),
            Part(
                "a pool answers faster than connecting per request",
                (Check(Ratio(P50, "lifespan-pool", "connect-per-request", short="pool p50"), "<=", P50_SHARE),),
            ),
        ),
        shown=(
            Ratio(CPU_PER_REQUEST, "lifespan-pool", "connect-per-request"),
            Level(NEW_BACKENDS, "connect-per-request"),
            Level(NEW_BACKENDS, "lifespan-pool"),
        ),
        note=(
            "New backends per second (pg_stat_database.sessions) show where the cost goes: connect-per-request "
            "starts about one per request, the pool none."
        ),
    )


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
    rule=rule,
    knobs={"pool_size": 10},
    order=120,
)
