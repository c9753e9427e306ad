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
    Figure,
    Level,
    Metric,
    Part,
    Ratio,
    Rule,
    Total,
    counter,
)
from harness.pairs import Pair, Variant
from harness.scenario import Scenario

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
# The load generator's request timeout when a scenario sets none: what a client would give
# up at, were the pool left at create_engine's 30 s timeout.
CLIENT_TIMEOUT_S = Scenario(name="default").request_timeout_s
SQLALCHEMY_POOL_TIMEOUT_S = 30


def returned(record: Mapping[str, Any]) -> float | None:
    """Connections the pool got back, by any cause (the instruments' check-in and detach
    events, over the whole server life); None without the instruments' counts. A
    connection an async finaliser detached and terminated counts: its slot is free again."""
    counters = record.get("counters") or {}
    if "pool_checkouts" not in counters:
        return None
    kinds = ("pool_checkins", "pool_detached")
    return sum(float(counters.get(f"{kind}_{cause}", 0)) for kind in kinds for cause in CAUSES)


def returned_share(record: Mapping[str, Any]) -> float | None:
    """Connections the pool got back per connection it lent."""
    lent, back = (record.get("counters") or {}).get("pool_checkouts"), returned(record)
    return None if not lent or back is None else back / float(lent)


def never_returned(record: Mapping[str, Any]) -> float | None:
    """Connections lent and not back when the counters were read (after the load drained)."""
    back = returned(record)
    return None if back is None else float((record.get("counters") or {})["pool_checkouts"]) - back


RETURNED = Metric("share of lent connections returned to the pool", "%", returned_share, scale=100)
NEVER_RETURNED = Metric("connections never returned (lent minus returned)", "", never_returned)
LENT = counter("pool_checkouts", "connections lent")
# Response times count failed requests too: a request that waited out pool_timeout and failed.
MAX_RESPONSE = Metric("slowest response", "ms", lambda r: r.get("max_ms"))
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
    # The mechanism only: whether requests did wait pool_timeout is in the shown figures
    # (p50 per pool_timeout, slowest response), measured.
    slots = knobs["pool_size"] + knobs["max_overflow"]
    return (
        "Holds when both parts clear: requests fail, and the connections stay lent. A connection the garbage "
        f"collector returns counts as returned. A request that finds all {slots} connections lent waits "
        f"pool_timeout ({knobs['pool_timeout_ms'] / 1000:g} s here) and then fails; the never-closed variant's p50 "
        f"per pool_timeout shows how much of its latency that wait is. With create_engine's default of "
        f"{SQLALCHEMY_POOL_TIMEOUT_S} s each such request would wait {SQLALCHEMY_POOL_TIMEOUT_S} s, longer than the "
        f"load's {CLIENT_TIMEOUT_S:g} s client timeout (request_timeout_s), so the client would give up first and "
        "count a timeout, not the pool's 503."
    )


def waiting_shown(bad: str, knobs: Mapping[str, int]) -> tuple[Figure, ...]:
    """How long the bad variant's requests took against pool_timeout: a p50 near 1x says
    most requests waited the whole timeout (and failed)."""
    timeout_ms = knobs["pool_timeout_ms"]

    def per_timeout(record: Mapping[str, Any]) -> float | None:
        p50 = record.get("p50_ms")
        return None if p50 is None else float(p50) / timeout_ms

    return (
        Level(Metric("p50 per pool_timeout", "x", per_timeout, min_requests=P50.min_requests), bad),
        Total(MAX_RESPONSE, bad),
    )


def returns_shown(bad: str, kind: str) -> tuple[Figure, ...]:
    """Where the bad variant's lent connections went: back by reference counting, back by
    the cyclic collector (and how long after), or never; `kind` is how the pool takes a
    collected connection back ("checkins" for a sync dialect, "detached" for an async one)."""
    by_gc = f"pool_{kind}_cyclic_gc"
    return (
        Total(counter(f"pool_{kind}_refcount", "connections returned by reference counting"), bad),
        Total(counter(by_gc, "connections returned by the cyclic collector"), bad),
        # When they came back: how long the collector's returns had been lent, on average.
        Total(counter("pool_held_ms_cyclic_gc", "lent before the collector returned it", by_gc, "ms"), bad),
        Total(NEVER_RETURNED, bad),
        Total(LENT, bad),
    )


def rule(knobs: Mapping[str, int]) -> Rule:
    parts, controls = leak_parts("never-closed", ("closed", "with-session"))
    return Rule(
        parts=parts,
        controls=controls,
        shown=(
            Total(counter("pool_timeouts", "QueuePool timeouts (the failures' cause)"), "never-closed"),
            *returns_shown("never-closed", "checkins"),
            Total(counter("gc_gen2_collections", "full collections"), "never-closed"),
            Level(P50, "never-closed"),
            *waiting_shown("never-closed", knobs),
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
