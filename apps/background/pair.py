"""C13: do background tasks run after the response, and what do they hold meanwhile?"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.pairs import Pair, Records, Variant, Verdict, counter_ratio, fmt, inconclusive, missing_variants, ratio

# The work left the response path when a background variant's p50 is below inline's by
# at least GAIN_MIN of work_ms; by less than GAIN_NONE of it, it did not.
GAIN_MIN = 0.8
GAIN_NONE = 0.2
# The request-scoped connection is held through the task when it stays checked out at
# least HOLD_MIN of work_ms after the endpoint returned.
HOLD_MIN = 0.8
# Judges "after the response" where no connection is held through the task, if measured.
UNHELD = "background-function-scope"
UNHELD_KEY = UNHELD.replace("-", "_")


def decide(records: Records, knobs: Mapping[str, Any]) -> Verdict:
    missing = missing_variants(records, ["inline", "background"])
    if missing:
        return inconclusive(missing)
    inline, background = records["inline"], records["background"]
    work_ms = knobs["work_ms"]
    judge = UNHELD if not missing_variants(records, [UNHELD]) else "background"
    gain = inline["p50_ms"] - records[judge]["p50_ms"]
    figures: dict[str, Any] = {"work_ms": work_ms, "p50_gain_ms": gain, "gain_share_of_work": gain / work_ms}
    for name in ("inline", "background", UNHELD):
        if missing_variants(records, [name]):
            continue
        key, record = name.replace("-", "_"), records[name]
        figures |= {
            f"{key}_p50_ms": record["p50_ms"],
            f"{key}_rps": record["rps"],
            f"{key}_held_ms": counter_ratio(record, "held_ms", "holds"),
            f"{key}_held_after_return_ms": counter_ratio(record, "held_after_return_ms", "holds"),
            f"{key}_acquire_wait_ms": counter_ratio(record, "acquire_wait_ms", "holds"),
            f"{key}_rss_mb_peak": record.get("server_rss_mb_peak"),
            f"{key}_rss_slope_mb_per_min": record.get("server_rss_slope_mb_per_min"),
        }
    after_return = figures["background_held_after_return_ms"]
    runs_after = gain >= GAIN_MIN * work_ms
    holds_conn = after_return is not None and after_return >= HOLD_MIN * work_ms
    latency = (
        f"moving {work_ms} ms of follow-up work into BackgroundTasks ({judge}) took client p50 from "
        f"{fmt(inline['p50_ms'], 'ms', 1)} to {fmt(records[judge]['p50_ms'], 'ms', 1)} "
        f"({fmt(100 * gain / work_ms, '%')} of the work off the response path)"
    )
    held = (
        f"with the default request scope the pooled connection stayed checked out "
        f"{fmt(figures['background_held_ms'], 'ms', 1)} per request, {fmt(after_return, 'ms', 1)} of it after the "
        f"endpoint returned (inline {fmt(figures['inline_held_after_return_ms'], 'ms', 1)}), so requests waited "
        f"{fmt(figures['background_acquire_wait_ms'], 'ms', 1)} for a connection on average (inline "
        f"{fmt(figures['inline_acquire_wait_ms'], 'ms', 1)}) and p50 was {fmt(background['p50_ms'], 'ms', 1)} at "
        f"{fmt(ratio(background['rps'], inline['rps']), 'x')} inline's throughput"
    )
    rss = (
        f"Server RSS peaked at {fmt(figures['background_rss_mb_peak'], 'MB', 1)} vs "
        f"{fmt(figures['inline_rss_mb_peak'], 'MB', 1)} inline (slope "
        f"{fmt(figures['background_rss_slope_mb_per_min'], 'MB/min', 1)} vs "
        f"{fmt(figures['inline_rss_slope_mb_per_min'], 'MB/min', 1)})"
    )
    if f"{UNHELD_KEY}_rss_mb_peak" in figures:
        # Nothing bounds tasks in flight there: about throughput x work_ms of them, each
        # keeping its request alive.
        figures["unheld_tasks_in_flight"] = records[UNHELD]["rps"] * work_ms / 1000
        rss += (
            f", and at {fmt(figures[f'{UNHELD_KEY}_rss_mb_peak'], 'MB', 1)} in {UNHELD} with about "
            f"{fmt(figures['unheld_tasks_in_flight'])} tasks in flight"
        )
    rss += "."
    headline = (
        f"p50 {fmt(records[judge]['p50_ms'], 'ms', 1)} vs {fmt(inline['p50_ms'], 'ms', 1)} inline; connection held "
        f"{fmt(after_return, 'ms')} after the response"
    )
    if runs_after and holds_conn:
        return Verdict("holds", f"Holds: {latency}; {held}. {rss}", figures, headline)
    if gain < GAIN_NONE * work_ms and not holds_conn:
        return Verdict("does not hold", f"Does not hold in this run: {latency}; {held}. {rss}", figures, headline)
    part = "the work left the response path" if runs_after else "the task held the connection"
    return Verdict("partly holds", f"Only {part}: {latency}; {held}. {rss}", figures, headline)


PAIR = Pair(
    name="background",
    claim_id="C13",
    claim="Background tasks run after the response is sent; misused, they hold on to resources.",
    sources=("003", "002"),
    mechanism=(
        "Starlette's Response sends the body and then awaits its BackgroundTasks in the same ASGI "
        "call, so the client has its answer before the work starts. FastAPI closes request-scoped "
        "yield dependencies only after that call returns (since 0.118, PR #14099), so a pooled "
        "connection they hold stays checked out until the task finishes. A closed-loop client sends "
        "its next request at once, so held connections pile up (rate x work_ms) until the pool runs "
        'dry and requests queue for one; `Depends(scope="function")` (0.121, PR #14262) releases it '
        "when the endpoint returns instead."
    ),
    decided_by=(
        f"Client p50 in units of work_ms, and app counters of how long the connection stays checked out "
        f"after the endpoint returned. The work left the response path if the background variant without "
        f"a held connection ({UNHELD}; `background` when it is not measured) has p50 >= {GAIN_MIN:g}x "
        f"work_ms below inline; the task holds the connection if `background` keeps it >= {HOLD_MIN:g}x "
        f"work_ms after returning. Holds if both; does not hold if neither and the p50 gain is "
        f"< {GAIN_NONE:g}x work_ms; partly holds otherwise. Server RSS is reported."
    ),
    variants=(
        Variant(
            "inline",
            "bad",
            "/inline/items/{id}",
            "row lookup on a pooled asyncpg connection from a request-scoped yield dependency, then "
            "work_ms of follow-up awaited before returning",
            ("get_conn", "follow_up", "inline_item"),
        ),
        Variant(
            "background",
            "good",
            "/background/items/{id}",
            "the same, with the follow-up added to BackgroundTasks (the connection stays held through it)",
            ("get_conn", "follow_up", "background_item"),
        ),
        Variant(
            UNHELD,
            "reference",
            f"/{UNHELD}/items/{{id}}",
            'the same BackgroundTasks, with the dependency declared `Depends(get_conn, scope="function")`: '
            "released before the response",
            ("get_conn", "follow_up", "background_function_scope_item"),
        ),
    ),
    decide=decide,
    # work_ms well above what a saturated 2-core server adds to a fast request (~50 ms at
    # 50 users), so the p50 gain measures the work moved, not the CPU queue.
    knobs={"work_ms": 500, "pool_size": 60},
    order=130,
    references=("fastapi#14099", "fastapi#14262"),
)
