"""C7 on SQLAlchemy: does a Session that is never closed leak its connection?

The articles' sessions are SQLAlchemy sessions, so this pair decides C7; the `sessions`
pair measures the same claim on raw asyncpg connections, as a second ledger row.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.checks import (
    GOOD_THROUGHPUT,
    IDLE_IN_TRANSACTION_PEAK,
    NEW_BACKENDS,
    P50,
    POOL_CHECKED_OUT,
    RSS_PEAK,
    Check,
    Level,
    Metric,
    Part,
    Ratio,
    Rule,
    Total,
    counter,
)
from harness.pairs import Pair, Variant

# A pool that stays dry fails nearly every request after pool_timeout; the closed
# variants fail none (their control allows 1%), so 5% is far outside noise.
POOL_FAILURE_RATE = 0.05
# "Leaks": the pool got back at most half the connections it lent during the run. The
# closed variants return every one (their control needs 95%, which allows for requests
# still in flight when the counters are read); a collector that kept the pool supplied
# would return most of them and this part would miss.
RETURNED_SHARE = 0.5
CLOSED_RETURNED_SHARE = 0.95
# Closed sessions failing more than this means the database or harness failed, not a leak.
CLOSED_FAILURE_RATE = 0.01

CAUSES = ("close", "refcount", "cyclic_gc")


def returned_share(record: Mapping[str, Any]) -> float | None:
    """Connections the pool got back, by any cause, per connection it lent (the
    instruments' check-out, check-in and detach events, over the whole server life). A
    connection an async finaliser detached and terminated counts: its slot is free again."""
    counters = record.get("counters") or {}
    lent = counters.get("pool_checkouts")
    if not lent:
        return None
    kinds = ("pool_checkins", "pool_detached")
    return sum(float(counters.get(f"{kind}_{cause}", 0)) for kind in kinds for cause in CAUSES) / float(lent)


RETURNED = Metric("share of lent connections returned to the pool", "%", returned_share, scale=100)
# The failure rate of the requests answered in the window; none answered (a window shorter
# than the pool timeout) is no measurement, not a rate of 0.
ANSWERED_FAILURE_RATE = Metric(
    "failure rate", "%", lambda r: r.get("failure_rate") if r.get("requests") else None, scale=100
)


def leak_parts(bad: str, closed: tuple[str, ...]) -> tuple[tuple[Part, ...], tuple[Part, ...]]:
    """The claim's parts for a session variant that is never closed, and the controls for
    the variants that close theirs (shared with the AsyncSession pair)."""
    parts = (
        Part(
            "a session that is never closed keeps its connection: the pool runs dry and requests fail "
            "with 'QueuePool limit ... reached'",
            (Check(Total(ANSWERED_FAILURE_RATE, bad, short=f"{bad}: failed"), ">=", POOL_FAILURE_RATE),),
        ),
        Part(
            "the pool does not get those connections back while the server runs",
            (Check(Total(RETURNED, bad, short="returned to the pool"), "<=", RETURNED_SHARE),),
        ),
    )
    controls = (
        Part(
            "the sessions that are closed serve without failures and return every connection",
            tuple(Check(Total(ANSWERED_FAILURE_RATE, name), "<=", CLOSED_FAILURE_RATE) for name in closed)
            + tuple(Check(Total(RETURNED, name), ">=", CLOSED_RETURNED_SHARE) for name in closed),
        ),
    )
    return parts, controls


def timeout_note(knobs: Mapping[str, int]) -> str:
    slots = knobs["pool_size"] + knobs["max_overflow"]
    return (
        "Holds when both parts clear: requests fail, and the connections stay lent. A connection the garbage "
        f"collector returns counts as returned. A request that finds all {slots} connections lent waits "
        f"pool_timeout ({knobs['pool_timeout_ms'] / 1000:g} s here) before it fails, so the never-closed variant's "
        "p50 sits at that timeout; with create_engine's default of 30 s each such request would wait 30 s."
    )


def rule(knobs: Mapping[str, int]) -> Rule:
    parts, controls = leak_parts("never-closed", ("closed", "with-session"))
    return Rule(
        parts=parts,
        controls=controls,
        shown=(
            Total(counter("pool_timeouts", "QueuePool timeouts (the failures' cause)"), "never-closed"),
            Total(counter("pool_checkins_cyclic_gc", "connections returned by the cyclic collector"), "never-closed"),
            Total(counter("pool_checkins_refcount", "connections returned by reference counting"), "never-closed"),
            # When they came back: how long the collector's returns had been lent, on average.
            Total(
                counter(
                    "pool_held_ms_cyclic_gc", "lent before the collector returned it", "pool_checkins_cyclic_gc", "ms"
                ),
                "never-closed",
            ),
            Total(counter("gc_gen2_collections", "full collections"), "never-closed"),
            Level(P50, "never-closed"),
            Level(POOL_CHECKED_OUT, "never-closed"),
            Level(POOL_CHECKED_OUT, "closed"),
            Total(IDLE_IN_TRANSACTION_PEAK, "never-closed"),
            Total(IDLE_IN_TRANSACTION_PEAK, "closed"),
            Ratio(GOOD_THROUGHPUT, "closed", "with-session"),
            Level(NEW_BACKENDS, "closed"),
            Ratio(RSS_PEAK, "never-closed", "closed"),
        ),
        note=timeout_note(knobs),
    )


PAIR = Pair(
    name="orm_sessions",
    claim_id="C7",
    claim="A SQLAlchemy Session that is never closed leaks its connection.",
    sources=("002", "004"),
    mechanism=(
        "A Session takes a pooled connection at its first query and holds it in a transaction (autobegin) "
        "until close(), commit() or rollback(). Dropped without close(), it is not freed by reference counting: "
        "its SessionTransaction refers back to it (SQLAlchemy 2.1.9, orm/session.py: `self.session = session` in "
        "SessionTransaction.__init__, and `self.session._transaction = self`), a cycle, and Session has no "
        "`__del__`. The connection's proxy (`_ConnectionFairy`) carries a `weakref.finalize` that calls "
        "`_finalize_fairy(..., is_gc_cleanup=True)` (pool/base.py) once the proxy is collected: for a sync "
        "dialect such as psycopg it rolls the connection back and checks it in without a warning; for an async "
        "dialect it cannot await, so it terminates the connection and warns 'The garbage collector is trying to "
        "clean up non-checked-in connection'. Until then the connection is checked out and idle in transaction. "
        "(An unclosed `engine.connect()` is in the same position: its transaction refers back to it.) A session "
        "that outlives the young-generation collections run during its request reaches the oldest generation, "
        "which CPython collects only once the objects promoted since the last full collection exceed a quarter "
        "of those already there (gc.get_objects() counts 94,614 after importing this pair's app). With 40 worker "
        "threads and 5 + 10 connections, the pool is dry after 15 such requests unless a collection frees them "
        "first, and each later checkout waits pool_timeout and raises 'QueuePool limit of size 5 overflow 10 "
        "reached, connection timed out' (SQLAlchemy error 3o7r). "
        "The instruments classify each check-in by what returned the connection: close() (the proxy was alive), "
        "reference counting, or the cyclic collector (inside a gc.callbacks start/stop pair)."
    ),
    variants=(
        Variant(
            "never-closed",
            "bad",
            "/never-closed/items/{id}",
            "`SessionLocal()` from a sync yield dependency, never closed (`finally: pass`), `def` endpoint",
            ("get_db_never_closed", "never_closed_item"),
        ),
        Variant(
            "closed",
            "good",
            "/closed/items/{id}",
            "the same dependency with `db.close()` in `finally` (articles 002 and 004)",
            ("get_db_closed", "closed_item"),
        ),
        Variant(
            "with-session",
            "good",
            "/with-session/items/{id}",
            "SQLModel's `with Session(engine) as session: yield session`, as FastAPI's full-stack template",
            ("get_session", "with_session_item"),
        ),
    ),
    # pool_size and max_overflow are create_engine's defaults (a test checks them against
    # SQLAlchemy's); pool_timeout is short, so a dry pool fails within a sample, not after 30 s.
    knobs={"pool_size": 5, "max_overflow": 10, "pool_timeout_ms": 3000},
    rule=rule,
    # A window of two pool timeouts and a little more: a request that waits out the
    # timeout must be able to start and finish inside it (a 2 s window counted none). The
    # leak is decided on exact counts, so the window need not stretch for min_requests.
    load={"duration_s": 6.5, "max_measure_s": 6.5},
    # SQLAlchemy's own link for the QueuePool timeout (error 3o7r), and production threads
    # with the same failure: the template's pool running dry, a pool exhausted by
    # idle-in-transaction sessions, and a FastAPI app fixed by closing in a yield dependency.
    references=(
        "https://sqlalche.me/e/21/3o7r",
        "fastapi/full-stack-fastapi-template#459",
        "hasadna/open-bus#387",
        "farmOS/farmOS-aggregator#89",
    ),
    soak=True,
    order=68,
)
