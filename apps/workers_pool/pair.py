"""C19, a production failure no article claims: uvicorn's worker processes each open their
own pool, so the connections a server asks for are workers x pool_size, and a database
limit sized for one process turns the surplus into failed requests."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import psycopg2
from psycopg2.extensions import parse_dsn

from harness.checks import FAILURE_RATE, GOOD_THROUGHPUT, P99, PEAK_BACKENDS, Check, Part, Ratio, Rule, Total
from harness.database import TABLE, first_line
from harness.pairs import BenchError, Pair, Variant

# The variants' own role: PostgreSQL counts a role's connections against its CONNECTION
# LIMIT at every login, a limit no machine's speed moves (superusers are exempt).
ROLE = "bench_limited"
# "Fails": a connection refused past the limit fails its request at once; 1% of requests is
# far above a fluke, and the run within the limit must show none at all.
OVER_FAILURE_RATE = 0.01


def prepare(db: Any, knobs: Mapping[str, int]) -> dict[str, str]:
    """The role, its connection limit and its read access, set before each server starts
    (a fresh password each time); returns the DSN the variants connect with."""
    password = secrets.token_hex(16)
    try:
        with contextlib.closing(db.connect()) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,))
            verb = "ALTER" if cur.fetchone() else "CREATE"
            cur.execute(
                f"{verb} ROLE {ROLE} LOGIN NOSUPERUSER CONNECTION LIMIT %s PASSWORD %s",
                (int(knobs["connection_limit"]), password),
            )
            cur.execute(f"GRANT SELECT ON {TABLE} TO {ROLE}")
    except psycopg2.Error as err:
        raise BenchError(
            f"workers_pool needs a role with a connection limit, which this database user cannot make "
            f"(it needs CREATEROLE): {first_line(err)}"
        ) from None
    parts = parse_dsn(db.dsn)
    host, port, name = parts.get("host", "127.0.0.1"), parts.get("port", "5432"), parts.get("dbname", "")
    return {"BENCH_LIMITED_DSN": f"postgresql://{ROLE}:{quote(password, safe='')}@{host}:{port}/{name}"}


def rule(knobs: Mapping[str, int]) -> Rule:
    workers, limit, pool = knobs["workers"], knobs["connection_limit"], knobs["pool_size"]
    return Rule(
        parts=(
            Part(
                f"{workers} workers, each with its own pool of {pool}, ask for {workers * pool} connections: the "
                f"backends reach the role's limit of {limit}",
                (Check(Total(PEAK_BACKENDS, "over-limit", short="over the limit: peak backends"), ">=", limit),),
            ),
            Part(
                "and the requests that need a connection past it fail ('too many connections for role')",
                (Check(Total(FAILURE_RATE, "over-limit", short="over the limit: failed"), ">=", OVER_FAILURE_RATE),),
            ),
        ),
        controls=(
            Part(
                f"pools of connection_limit / workers = {limit // workers} each fit the limit: no request fails",
                (
                    Check(Total(FAILURE_RATE, "within-limit"), "<=", 0.0),
                    Check(Total(PEAK_BACKENDS, "within-limit"), "<=", limit),
                ),
            ),
        ),
        shown=(
            Ratio(GOOD_THROUGHPUT, "within-limit", "over-limit"),
            Ratio(P99, "over-limit", "within-limit"),
        ),
        note=(
            "Holds when the over-limit run reaches the limit and its surplus requests fail. A role's "
            "CONNECTION LIMIT stands in for max_connections, a managed database's plan limit or a pooler's "
            "per-user cap: each refuses the connection the same way, at login."
        ),
    )


PAIR = Pair(
    name="workers_pool",
    claim_id="C19",
    claim=(
        "Each uvicorn worker process opens its own pool, so workers x pool_size connections must fit the "
        "database's limit: past it, requests fail."
    ),
    sources=(),
    mechanism=(
        "`uvicorn --workers N` starts N processes, and each imports the app module: a module-level "
        "`create_async_engine(...)` builds one engine and one pool per process, which share nothing. At the "
        "load's concurrency each pool opens all pool_size connections, so the server asks PostgreSQL for "
        "workers x pool_size. PostgreSQL checks a role's CONNECTION LIMIT (and max_connections) at login and "
        "refuses the surplus with 'too many connections for role'; SQLAlchemy raises it from the checkout that "
        "tried to open the connection, so that request fails at once, and the pool tries again at the next "
        "checkout. Sizing each pool to limit / workers keeps the sum within the limit; requests then queue in "
        "their own worker's pool instead. The workers share one listening socket and whichever accepts first "
        "takes a connection; kept-alive connections would stay on the worker that accepted them, at times one "
        "worker for all 50 users, so both variants answer with `Connection: close` and each request is "
        "accepted anew by a free worker, as behind a balancer that spreads requests. Throughput within the "
        "limit is bounded by limit x 1000/hold_ms and is shown, not judged. Workers are measured as one "
        "server: their CPU, memory and descriptors summed over the process tree, their loop lag pooled."
    ),
    variants=(
        Variant(
            "over-limit",
            "bad",
            "/over-limit/items/{id}",
            "`--workers 4`, each with `create_async_engine(pool_size=5, max_overflow=0)`, against a limit of 12",
            ("held_lookup", "over_limit_item"),
        ),
        Variant(
            "within-limit",
            "good",
            "/within-limit/items/{id}",
            "the same, with pool_size = connection_limit // workers (3)",
            ("held_lookup", "within_limit_item"),
        ),
    ),
    knobs={"workers": 4, "pool_size": 5, "connection_limit": 12, "hold_ms": 50, "pool_timeout_ms": 3000},
    rule=rule,
    workers_knob="workers",
    prepare=prepare,
    # Production threads: workers x pool past the database's limit, at start-up or under load.
    references=(
        "fastapi/full-stack-fastapi-template#1",
        "encode/databases#440",
        "lsst-sqre/gafaelfawr#222",
    ),
    order=190,
)
