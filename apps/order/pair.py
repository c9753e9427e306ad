"""C3: do yield dependencies set up in declared order, one after another, and clean up in reverse?"""

from __future__ import annotations

from collections.abc import Mapping

from harness.checks import P50, Check, Difference, Metric, Part, Ratio, Rule, Total, counter
from harness.pairs import Pair, Variant
from harness.records import Record

# What the claim predicts for dependencies declared A then B.
EXPECTED_ORDER = ["enter A", "enter B", "exit B", "exit A"]
# The recorded order either is the expected one (1) or is not (0).
ORDER_MATCH = 1.0
# Halfway between what a second setup adds to the median overlapped (0) and one after another (1 setup_ms).
EXTRA_MIN = 0.5
# Setups' wall time over their summed time: 1.0 or more one after another, 0.5 when two overlap fully.
WALL_SHARE_MIN = 0.95
# One setup's median above this many setup_ms: the server's own queueing swamps the comparison.
# The median of all its requests merged over the blocks: one block's hiccup on a shared host
# (measured 97 ms against 53 ms in the other two) does not make the server's own cost unknown.
BASELINE_MAX = 1.5


def order_as_declared(record: Record) -> float | None:
    """1.0 when the first request's enter/exit events came in the expected order, else 0.0."""
    order = (record.get("counters") or {}).get("order")
    return None if not order else float(list(order) == EXPECTED_ORDER)


ORDER = Metric("recorded order as expected (1 yes, 0 no)", "", order_as_declared)
WALL_SHARE = counter("setup_wall_ms", "setups' wall time / their summed time", per="setup_sum_ms")


def rule(knobs: Mapping[str, int]) -> Rule:
    setup_ms = knobs["setup_ms"]
    return Rule(
        parts=(
            Part(
                f"yield dependencies set up in declared order and clean up in reverse ({', '.join(EXPECTED_ORDER)})",
                (Check(Total(ORDER, "two-deps", short="recorded order as expected"), ">=", ORDER_MATCH),),
            ),
            Part(
                "they set up one after another: two setups cost the sum of their waits",
                (
                    Check(
                        Difference(P50, "two-deps", "one-dep", short="p50 added by the second setup"),
                        ">=",
                        EXTRA_MIN * setup_ms,
                    ),
                    Check(Total(WALL_SHARE, "two-deps"), ">=", WALL_SHARE_MIN),
                ),
            ),
        ),
        controls=(
            Part(
                "one dependency costs about one setup: the server adds little latency of its own",
                (Check(Total(P50, "one-dep"), "<=", BASELINE_MAX * setup_ms),),
            ),
        ),
        shown=(
            Ratio(P50, "two-deps", "one-dep"),
            Total(counter("exits_B", "teardowns of B per setup", per="setups_B"), "two-deps"),
        ),
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
    rule=rule,
    knobs={"setup_ms": 50},
    order=30,
    references=("fastapi#639",),
)
