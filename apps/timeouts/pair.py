"""C15 (part 1): does asyncio.wait_for bound the latency of slow upstream calls?"""

from __future__ import annotations

from collections.abc import Mapping

from harness.checks import P99, P99_MIN_REQUESTS, THROUGHPUT, Check, Level, Metric, Part, Rule, Total
from harness.pairs import Pair, Variant
from harness.records import Record

# The timeout bounds latency when wait-for's p99 is at most BOUND_FACTOR x timeout_ms +
# BOUND_MARGIN_MS (cancellation and the 504 cost little; the margin absorbs load noise).
BOUND_FACTOR = 2.0
BOUND_MARGIN_MS = 100.0
# Slow calls hurt the unbounded variant when its p99 reaches this share of slow_ms.
HARM_SHARE = 0.8
# Timeouts hit only the slow calls when their share of requests is at most this many
# times the share of slow ids (plus one point for noise).
TIMEOUT_SHARE_FACTOR = 2.0
TIMEOUT_SHARE_MARGIN = 0.01
# Failures other than the timeouts' 504s (the upstream down, errors) above this share of
# requests in either variant mean the experiment itself broke: no verdict.
MAX_OTHER_FAILURE_RATE = 0.01


def failures_with_status(record: Record, status: int) -> int:
    """Failed requests answered with `status`, from the record's grouped failure kinds
    (all of them; records stored before they were kept have only the top three)."""
    kinds = record.get("failure_kinds") or record.get("top_failures") or []
    return sum(int(n) for kind, n in kinds if f"code={status})" in str(kind))


def timeout_share(record: Record) -> float | None:
    requests = record.get("requests") or 0
    return failures_with_status(record, 504) / requests if requests else None


def other_failure_share(record: Record) -> float | None:
    """Failures that are not the timeout's 504 (the unbounded variant answers none)."""
    requests = record.get("requests") or 0
    return ((record.get("failures") or 0) - failures_with_status(record, 504)) / requests if requests else None


TIMEOUT_SHARE = Metric("share of requests answered 504", "%", timeout_share, scale=100)
OTHER_FAILURES = Metric("share of requests failed otherwise", "%", other_failure_share, scale=100)


def is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))


def rule(knobs: Mapping[str, int]) -> Rule:
    bound_ms = BOUND_FACTOR * knobs["timeout_ms"] + BOUND_MARGIN_MS
    caps = Check(Level(P99, "wait-for", short="p99 `wait-for`"), "<=", bound_ms)
    return Rule(
        parts=(
            Part("asyncio.wait_for caps the tail latency near the timeout", (caps,)),
            # Counted over the whole run: exact, as the slow share is fixed by the ids.
            Part(
                "it caps the tail by cutting only the slow calls",
                (
                    Check(
                        Total(TIMEOUT_SHARE, "wait-for", short="504s `wait-for`"),
                        "<=",
                        TIMEOUT_SHARE_FACTOR / knobs["slow_every"] + TIMEOUT_SHARE_MARGIN,
                    ),
                    caps,
                ),
            ),
        ),
        controls=(
            Part(
                "the slow calls set the unbounded variant's tail",
                (Check(Level(P99, "no-timeout"), ">=", HARM_SHARE * knobs["slow_ms"]),),
            ),
            Part(
                "no request fails but by the timeout",
                (
                    Check(Total(OTHER_FAILURES, "no-timeout"), "<=", MAX_OTHER_FAILURE_RATE),
                    Check(Total(OTHER_FAILURES, "wait-for"), "<=", MAX_OTHER_FAILURE_RATE),
                ),
            ),
        ),
        shown=(Level(P99, "no-timeout"), Level(THROUGHPUT, "no-timeout"), Level(THROUGHPUT, "wait-for")),
        note=(
            "A p99 that is not capped fails both parts: cutting only the slow calls counts for nothing if the "
            "tail stays. The share of slow ids is 1 in slow_every, fixed by the ids both variants are sent."
        ),
    )


PAIR = Pair(
    name="timeouts",
    claim_id="C15",
    claim="Bound slow upstream calls with asyncio.wait_for.",
    sources=("003",),
    mechanism=(
        "Without a bound a request waits as long as its upstream call, so a few slow calls set the "
        "tail latency and, in a closed loop, hold clients that would otherwise send more requests. "
        "asyncio.wait_for cancels the call at the deadline (httpx drops that connection) and the "
        "endpoint answers 504 at once: the tail is capped near the timeout, at the price of a failed "
        "answer for each slow call."
    ),
    variants=(
        Variant(
            "no-timeout",
            "bad",
            "/no-timeout/items/{id}",
            "one httpx call to the stub upstream, awaited without a bound",
            ("upstream_delay_ms", "call_upstream", "no_timeout_item"),
            # Prime ids are fast for any slow_every but 1 and the prime itself.
            verify_ids=is_prime,
        ),
        Variant(
            "wait-for",
            "good",
            "/wait-for/items/{id}",
            "the same call inside asyncio.wait_for(timeout_ms), answering 504 when it expires",
            ("wait_for_item",),
            verify_ids=is_prime,
        ),
    ),
    rule=rule,
    knobs={"upstream_ms": 20, "slow_ms": 3000, "slow_every": 20, "timeout_ms": 200},
    order=150,
    # Few users: httpx 0.28's pool spends CPU per call that grows with its open
    # connections (httpx#3215, httpcore#1035); with 50 users the client, not the
    # waiting, would set the latency on 2 cores. At 10 users the unbounded variant answers
    # 35 to 75 requests a second (1 in 20 takes 3 s, and with 10 users the slow calls
    # bunch up by chance), so the scenario's request count (min_requests), not its
    # duration, sets that variant's window, with room up to 30 s for the 500 its p99 needs.
    # p99 decides here: every block's window holds enough requests for one (the run's
    # floor elsewhere counts on the tallies merged across blocks).
    load={"users": 10, "max_measure_s": 30, "min_requests": P99_MIN_REQUESTS},
    upstream=True,
    references=("httpx#3215", "httpcore#1035"),
)
