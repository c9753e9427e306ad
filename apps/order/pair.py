"""C3: do yield dependencies set up in declared order, one after another, and clean up in reverse?"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.pairs import Pair, Records, Variant, Verdict, counter_ratio, fmt, inconclusive, missing_variants, ratio

# What the claim predicts for dependencies declared A then B.
EXPECTED_ORDER = ["enter A", "enter B", "exit B", "exit A"]
# Sequential setups: two-deps p50 >= this many setup_ms and at least this share of a
# setup_ms above one-dep's p50; one-dep's p50 must stay under BASELINE_MAX setup_ms,
# else the server itself adds too much for the comparison.
SEQUENTIAL_MIN = 1.8
EXTRA_MIN = 0.8
BASELINE_MAX = 1.5
# Overlapped setups: two-deps p50 under this many setup_ms.
OVERLAP_MAX = 1.5


def decide(records: Records, knobs: Mapping[str, Any]) -> Verdict:
    missing = missing_variants(records, ["two-deps", "one-dep"])
    if missing:
        return inconclusive(missing)
    two, one = records["two-deps"], records["one-dep"]
    setup_ms = knobs["setup_ms"]
    order = (two.get("counters") or {}).get("order")
    if not order:
        return Verdict(
            "inconclusive", "No verdict: two-deps recorded no order of events.", headline="no order recorded"
        )
    figures = {
        "setup_ms": setup_ms,
        "two_p50_ms": two["p50_ms"],
        "one_p50_ms": one["p50_ms"],
        "two_p50_setups": ratio(two["p50_ms"], setup_ms),
        "one_p50_setups": ratio(one["p50_ms"], setup_ms),
        # Server-side: wall time of the setups over their summed time (1 sequential, 0.5 parallel).
        "setup_wall_share": counter_ratio(two, "setup_wall_ms", "setup_sum_ms"),
        "cleanups_per_setup": counter_ratio(two, "exits_B", "setups_B"),
    }
    extra = two["p50_ms"] - one["p50_ms"]
    order_text = ", ".join(order)
    says = (
        f"the first request ran {order_text}; with {setup_ms} ms per setup, two-deps p50 was "
        f"{fmt(two['p50_ms'], 'ms')} ({fmt(figures['two_p50_setups'], 'x')} a setup) vs one-dep "
        f"{fmt(one['p50_ms'], 'ms')} ({fmt(figures['one_p50_setups'], 'x')}), and the setups' wall time was "
        f"{fmt(figures['setup_wall_share'], 'x')} their summed time"
    )
    headline = f"{order_text}; p50 {fmt(two['p50_ms'], 'ms')} vs {fmt(one['p50_ms'], 'ms')} for {setup_ms} ms setups"
    if order != EXPECTED_ORDER:
        return Verdict(
            "does not hold", f"Does not hold: {says} (expected {', '.join(EXPECTED_ORDER)}).", figures, headline
        )
    if two["p50_ms"] < OVERLAP_MAX * setup_ms:
        return Verdict("does not hold", f"Does not hold: the setups overlapped; {says}.", figures, headline)
    if (
        one["p50_ms"] <= BASELINE_MAX * setup_ms
        and two["p50_ms"] >= SEQUENTIAL_MIN * setup_ms
        and extra >= EXTRA_MIN * setup_ms
    ):
        return Verdict("holds", f"Holds: {says}.", figures, headline)
    return Verdict(
        "inconclusive",
        f"The order is as claimed, but latency cannot tell sequential from overlapped here: {says}.",
        figures,
        headline,
    )


PAIR = Pair(
    name="order",
    claim_id="C3",
    claim="Yield dependencies set up one after another in declared order and clean up in reverse.",
    sources=("001",),
    mechanism=(
        "FastAPI's solve_dependencies walks the endpoint's dependencies in declaration order, "
        "sub-dependencies first, awaiting each before the next, and enters every yield dependency on "
        "one AsyncExitStack, which unwinds last-in first-out. Nothing gathers independent "
        "dependencies: the request for concurrent resolution (fastapi#639) was closed without it, so "
        "two setups that each wait cost the sum of their waits."
    ),
    decided_by=(
        f"The enter/exit order of the first request (app counters) and p50 latency in units of "
        f"setup_ms. Holds if the order is {', '.join(EXPECTED_ORDER)}, two-deps p50 >= "
        f"{SEQUENTIAL_MIN:g}x setup_ms and >= {EXTRA_MIN:g}x setup_ms above one-dep, whose p50 stays "
        f"<= {BASELINE_MAX:g}x; does not hold if the order differs or two-deps p50 < {OVERLAP_MAX:g}x "
        "setup_ms (setups overlapped); inconclusive otherwise."
    ),
    variants=(
        Variant(
            "two-deps",
            "good",
            "/two-deps/items/{id}",
            "two yield dependencies (A then B), each awaiting setup_ms in setup; records enter/exit order",
            ("get_trace", "setup_work", "dep_a", "dep_b", "two_deps_item"),
        ),
        Variant(
            "one-dep",
            "reference",
            "/one-dep/items/{id}",
            "one such dependency: the latency of a single setup",
            ("dep_a", "one_dep_item"),
        ),
    ),
    decide=decide,
    knobs={"setup_ms": 50},
    order=30,
    references=("fastapi#639",),
)
