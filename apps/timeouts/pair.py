"""C15 (part 1): does asyncio.wait_for bound the latency of slow upstream calls?"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.pairs import Pair, Records, Variant, Verdict, fmt, inconclusive, missing_variants

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


def failures_with_status(record: Mapping[str, Any], status: int) -> int:
    """Failed requests answered with `status`, from the record's grouped failure kinds
    (all of them; records stored before they were kept have only the top three)."""
    kinds = record.get("failure_kinds") or record.get("top_failures") or []
    return sum(int(n) for kind, n in kinds if f"code={status})" in str(kind))


def other_failure_rate(record: Mapping[str, Any], expected: int) -> float:
    requests = record["requests"] or 0
    return (record["failures"] - expected) / requests if requests else 0.0


def is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))


def decide(records: Records, knobs: Mapping[str, Any]) -> Verdict:
    missing = missing_variants(records, ["no-timeout", "wait-for"])
    if missing:
        return inconclusive(missing)
    bare, bounded = records["no-timeout"], records["wait-for"]
    timeout_ms, slow_ms, slow_every = knobs["timeout_ms"], knobs["slow_ms"], knobs["slow_every"]
    slow_share = 1 / slow_every
    timeouts = failures_with_status(bounded, 504)
    timeout_share = timeouts / bounded["requests"] if bounded["requests"] else 0.0
    figures = {
        "no_timeout_p99_ms": bare["p99_ms"],
        "wait_for_p99_ms": bounded["p99_ms"],
        "timeouts": timeouts,
        "timeout_share": timeout_share,
        "slow_share": slow_share,
        "no_timeout_rps": bare["rps"],
        "wait_for_rps": bounded["rps"],
    }
    bounds = bounded["p99_ms"] <= BOUND_FACTOR * timeout_ms + BOUND_MARGIN_MS
    harmed = bare["p99_ms"] >= HARM_SHARE * slow_ms
    only_slow = timeout_share <= TIMEOUT_SHARE_FACTOR * slow_share + TIMEOUT_SHARE_MARGIN
    says = (
        f"with 1 id in {slow_every} taking {fmt(slow_ms, 'ms')}, p99 was {fmt(bare['p99_ms'], 'ms')} without a "
        f"timeout and {fmt(bounded['p99_ms'], 'ms')} with wait_for({fmt(timeout_ms, 'ms')}), which answered "
        f"{fmt(timeouts)} requests with 504 ({fmt(100 * timeout_share, '%', 1)} vs "
        f"{fmt(100 * slow_share, '%', 1)} slow ids); throughput {fmt(bounded['rps'], 'req/s')} vs "
        f"{fmt(bare['rps'], 'req/s')}"
    )
    headline = (
        f"p99 {fmt(bounded['p99_ms'], 'ms')} vs {fmt(bare['p99_ms'], 'ms')}, "
        f"{fmt(100 * timeout_share, '%', 1)} timed out"
    )
    broken = {
        name: rate
        for name, rate in (
            ("no-timeout", other_failure_rate(bare, 0)),
            ("wait-for", other_failure_rate(bounded, timeouts)),
        )
        if rate > MAX_OTHER_FAILURE_RATE
    }
    if broken:
        failed = ", ".join(f"{name} failed {fmt(100 * rate, '%', 1)} of requests" for name, rate in broken.items())
        return Verdict(
            "inconclusive", f"No verdict: {failed} for reasons other than the timeout ({says}).", figures, headline
        )
    if not bounds:
        return Verdict("does not hold", f"Does not hold in this run: {says}.", figures, headline)
    if not harmed:
        return Verdict(
            "inconclusive", f"No verdict: the slow calls did not reach the unbounded p99 ({says}).", figures, headline
        )
    if not only_slow:
        return Verdict(
            "partly holds", f"The timeout bounds p99 but also cut calls that were not slow: {says}.", figures, headline
        )
    return Verdict("holds", f"Holds: {says}.", figures, headline)


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
    decided_by=(
        f"p99 latency and the 504 count. wait_for bounds latency when its p99 is <= {BOUND_FACTOR:g} x "
        f"timeout_ms + {BOUND_MARGIN_MS:g} ms; the slow calls matter when the unbounded p99 is >= "
        f"{HARM_SHARE:g} x slow_ms. Holds when both are true and the share of 504s is <= "
        f"{TIMEOUT_SHARE_FACTOR:g}x the share of slow ids + {100 * TIMEOUT_SHARE_MARGIN:g} point; partly holds "
        "if more calls timed out than were slow; does not hold if p99 is not bounded; no verdict when the slow "
        f"calls did not reach the unbounded p99, or either variant failed > {100 * MAX_OTHER_FAILURE_RATE:g}% of "
        "requests other than with the timeout's 504."
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
    decide=decide,
    knobs={"upstream_ms": 20, "slow_ms": 3000, "slow_every": 20, "timeout_ms": 200},
    order=150,
    # Few users: httpx 0.28's pool spends CPU per call that grows with its open
    # connections (httpx#3215, httpcore#1035); with 50 users the client, not the
    # waiting, would set the latency on 2 cores.
    load={"users": 10},
    upstream=True,
    references=("httpx#3215", "httpcore#1035"),
)
