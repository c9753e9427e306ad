"""C7 on SQLAlchemy's asyncio extension: does an AsyncSession that is never closed leak
its connection? The same parts as the sync `orm_sessions` pair, a third C7 row."""

from __future__ import annotations

from collections.abc import Mapping

from apps.orm_sessions.pair import LENT, NEVER_RETURNED, leak_parts, timeout_note, waiting_shown
from harness.checks import FAILURE_RATE, NEW_BACKENDS, P50, Level, Rule, Total, counter
from harness.pairs import Pair, Variant


def rule(knobs: Mapping[str, int]) -> Rule:
    parts, controls = leak_parts("async-never-closed", ("async-with",))
    return Rule(
        parts=parts,
        controls=controls,
        shown=(
            Total(counter("pool_timeouts", "QueuePool timeouts (the failures' cause)"), "async-never-closed"),
            Total(counter("pool_gc_cleanup_warnings", "SQLAlchemy's gc clean-up warnings"), "async-never-closed"),
            Total(counter("pool_detached_cyclic_gc", "connections terminated by the collector"), "async-never-closed"),
            Total(
                counter(
                    "pool_held_ms_cyclic_gc", "lent before the collector ended it", "pool_detached_cyclic_gc", "ms"
                ),
                "async-never-closed",
            ),
            Total(NEVER_RETURNED, "async-never-closed"),
            Total(LENT, "async-never-closed"),
            Total(counter("gc_gen2_collections", "full collections"), "async-never-closed"),
            Level(NEW_BACKENDS, "async-never-closed"),
            Level(NEW_BACKENDS, "async-with"),
            Level(P50, "async-never-closed"),
            *waiting_shown("async-never-closed", knobs),
            Total(FAILURE_RATE, "async-with"),
        ),
        note=timeout_note(knobs).replace("create_engine", "create_async_engine"),
    )


PAIR = Pair(
    name="orm_async_sessions",
    claim_id="C7",
    claim="An AsyncSession that is never closed leaks its connection.",
    sources=("003",),
    mechanism=(
        "An AsyncSession wraps a sync Session and holds its pooled asyncpg connection the same way, in the same "
        "reference cycle (see `orm_sessions`). When the collector frees the connection's proxy, "
        "`_finalize_fairy(..., is_gc_cleanup=True)` (sqlalchemy/pool/base.py) runs outside any event loop "
        "and cannot await a rollback: for an async dialect (`pool._dialect.is_async`) it detaches the "
        "connection from the pool, which frees its slot without a check-in, terminates it, and warns 'The "
        "garbage collector is trying to clean up non-checked-in connection ..., which will be terminated'. "
        "The next checkout must open a new connection: a leak that the collector turns into backend churn. "
        "Until a collection runs, the connection stays lent, exactly as with a sync Session. The closed "
        "variant churns backends too, for another reason: at 50 users it borrows overflow connections past "
        "pool_size, and the pool closes each one when it is checked in while the pool is full, so the next "
        "burst opens new ones. The never-closed variant opens few, because its pool sits at its maximum, "
        "lent out, until the collector frees a slot."
    ),
    variants=(
        Variant(
            "async-never-closed",
            "bad",
            "/async-never-closed/items/{id}",
            "AsyncSession from an async yield dependency, never closed (`finally: pass`)",
            ("get_db_never_closed", "async_never_closed_item"),
        ),
        Variant(
            "async-with",
            "good",
            "/async-with/items/{id}",
            "`async with SessionLocal() as db: yield db`",
            ("get_db", "async_with_item"),
        ),
    ),
    # create_async_engine's default pool (AsyncAdaptedQueuePool, 5 + 10), a short timeout.
    knobs={"pool_size": 5, "max_overflow": 10, "pool_timeout_ms": 3000},
    rule=rule,
    # Two pool timeouts and a little more, as in orm_sessions.
    load={"duration_s": 6.5, "max_measure_s": 6.5},
    # Production threads: asyncpg connections left to the collector until the pool gave 503s,
    # and an AsyncSession never closed, warned about ~78 times an hour.
    references=("mozilla-ai/otari#1236", "masumi-network/kodosumi#38"),
    soak=True,
    order=69,
)
