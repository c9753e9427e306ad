"""C7: does a session without close leak connections?"""

from __future__ import annotations

from collections.abc import Mapping

from harness.checks import FAILURE_RATE, GOOD_THROUGHPUT, PEAK_BACKENDS, Check, Difference, Part, Ratio, Rule, Total
from harness.pairs import Pair, Variant

# A dry pool fails nearly every request after the acquire timeout; 5% is far above an accident.
POOL_FAILURE_RATE = 0.05
# Leaked backends pile up towards max_connections (100), well past twice the ~35 in flight.
PEAK_FACTOR = 2.0
# And this many backends above the closed variant, so 2 against 1 on an idle server is no leak.
PEAK_MIN_EXTRA = 10
# Closed variants failing more than this means the database or harness failed, not a leak.
CLOSED_FAILURE_RATE = 0.01


def rule(knobs: Mapping[str, int]) -> Rule:
    return Rule(
        parts=(
            Part(
                "a pooled connection that is never released leaks: the pool runs dry and requests fail",
                (
                    Check(
                        Total(FAILURE_RATE, "pool-leaky", short="never-released pool: failed"), ">=", POOL_FAILURE_RATE
                    ),
                ),
            ),
            Part(
                "a connection opened per request and never closed leaks: backends pile up",
                (
                    Check(
                        Ratio(
                            PEAK_BACKENDS,
                            "connect-leaky",
                            "connect-closed",
                            short="never-closed connect: peak backends",
                        ),
                        ">=",
                        PEAK_FACTOR,
                    ),
                    Check(Difference(PEAK_BACKENDS, "connect-leaky", "connect-closed"), ">=", PEAK_MIN_EXTRA),
                ),
            ),
        ),
        controls=(
            Part(
                "the variants that close their connection serve without failures",
                (
                    Check(Total(FAILURE_RATE, "connect-closed"), "<=", CLOSED_FAILURE_RATE),
                    Check(Total(FAILURE_RATE, "pool-closed"), "<=", CLOSED_FAILURE_RATE),
                ),
            ),
        ),
        shown=(
            Total(FAILURE_RATE, "connect-leaky"),
            Ratio(GOOD_THROUGHPUT, "pool-leaky", "pool-closed"),
            Ratio(GOOD_THROUGHPUT, "connect-leaky", "connect-closed"),
        ),
        note=(
            "Holds when both kinds of session leak, partly holds when only one does. Failures of the never-closed "
            "connect-per-request variant are shown, not judged: leaked backends show in the backend count first "
            "and fail requests only once they reach max_connections."
        ),
    )


PAIR = Pair(
    name="sessions",
    claim_id="C7",
    claim="A database session that is never closed leaks connections.",
    sources=("002", "004"),
    mechanism=(
        "A connection opened per request and dropped without close() loses its last reference "
        "when the request ends; CPython frees it at once and asyncpg's finaliser terminates the "
        "backend (with a ResourceWarning), so it does not pile up. A connection acquired from a "
        "pool and never released stays checked out for good: once the pool is dry every request "
        "waits for the acquire timeout and fails."
    ),
    variants=(
        Variant(
            "connect-leaky",
            "bad",
            "/connect-leaky/items/{id}",
            "asyncpg connection per request, never closed (`finally: pass`)",
            ("get_conn_leaky",),
        ),
        Variant(
            "connect-closed",
            "good",
            "/connect-closed/items/{id}",
            "asyncpg connection per request, closed in `finally`",
            ("get_conn_closed",),
        ),
        Variant(
            "pool-leaky",
            "bad",
            "/pool-leaky/items/{id}",
            "connection acquired from a lifespan asyncpg pool, never released",
            ("get_pooled_leaky",),
        ),
        Variant(
            "pool-closed",
            "good",
            "/pool-closed/items/{id}",
            "connection acquired from the pool and released in `finally`",
            ("get_pooled_closed",),
        ),
    ),
    knobs={"pool_size": 10, "pool_timeout_ms": 2000},
    rule=rule,
    soak=True,
    order=70,
)
