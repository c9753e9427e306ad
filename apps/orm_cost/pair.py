"""C18, a cost readers ask about and no article measures: how much server CPU per request
SQLAlchemy's ORM adds over the raw driver beneath it, for the same lookup."""

from __future__ import annotations

from collections.abc import Mapping

from harness.checks import CPU_PER_REQUEST, THROUGHPUT, Check, Part, Ratio, Rule
from harness.pairs import Pair, Variant

# "Costs": at least 25% more server CPU time per request, beyond the interval inside
# which identical variants land (the A/A control: up to 1.16x on a noisy host), so noise
# cannot pass for a cost.
ORM_COST = 1.25


def rule(knobs: Mapping[str, int]) -> Rule:
    return Rule(
        parts=(
            Part(
                "AsyncSession costs more CPU per request than asyncpg beneath it",
                (
                    Check(
                        Ratio(
                            CPU_PER_REQUEST, "orm-async", "raw-asyncpg", short="CPU per request, AsyncSession / asyncpg"
                        ),
                        ">=",
                        ORM_COST,
                    ),
                ),
            ),
            Part(
                "a sync Session costs more CPU per request than psycopg beneath it",
                (
                    Check(
                        Ratio(CPU_PER_REQUEST, "orm-sync", "raw-psycopg", short="CPU per request, Session / psycopg"),
                        ">=",
                        ORM_COST,
                    ),
                ),
            ),
        ),
        shown=(
            Ratio(THROUGHPUT, "orm-async", "raw-asyncpg"),
            Ratio(THROUGHPUT, "orm-sync", "raw-psycopg"),
            Ratio(CPU_PER_REQUEST, "raw-psycopg", "raw-asyncpg"),
        ),
        note=(
            "Decided on server CPU time per request (paired within blocks), not throughput: the load generator "
            "shares the machine, and takes a different share from a cheaper variant."
        ),
    )


PAIR = Pair(
    name="orm_cost",
    claim_id="C18",
    claim="SQLAlchemy's ORM costs more server CPU per request than the raw driver for the same lookup.",
    sources=(),
    mechanism=(
        "Session.get first looks in the identity map, then compiles (or takes from its cache) a SELECT, runs it "
        "in a transaction it begins on the Core connection, and builds a mapped object with its instance state "
        "before the endpoint copies it into the response model; at close the pool's reset-on-return rolls the "
        "transaction back (pool/base.py, `_ConnectionFairy._reset`), a round trip an autocommit raw query does "
        "not make. An AsyncSession runs the same sync code inside a greenlet and adapts "
        "asyncpg behind a DBAPI shim. The raw variants run one prepared query and read a tuple."
    ),
    variants=(
        Variant(
            "raw-asyncpg",
            "good",
            "/raw-asyncpg/items/{id}",
            "asyncpg pool (pool_size connections), `fetchrow`, `async def`",
            ("raw_asyncpg_item",),
        ),
        Variant(
            "orm-async",
            "bad",
            "/orm-async/items/{id}",
            "`AsyncSession.get` on asyncpg, the same pool size, `async def`",
            ("orm_async_item",),
        ),
        Variant(
            "raw-psycopg",
            "good",
            "/raw-psycopg/items/{id}",
            "psycopg 3 connections behind a queue (pool_size), autocommit, `def`",
            ("PsycopgPool", "raw_psycopg_item"),
        ),
        Variant(
            "orm-sync",
            "bad",
            "/orm-sync/items/{id}",
            "`Session.get` on psycopg 3, the same pool size, `def`",
            ("orm_sync_item",),
        ),
    ),
    knobs={"pool_size": 10},
    rule=rule,
    references=("sqlalchemy/sqlalchemy#7290", "fastapi#902"),
    order=180,
)
