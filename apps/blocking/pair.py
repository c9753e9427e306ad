"""C11: does a blocking call in `async def` stall the server, and does to_thread fix it?"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.pairs import (
    ANYIO_TOKENS,
    Pair,
    Records,
    Variant,
    Verdict,
    fmt,
    inconclusive,
    loop_lag,
    missing_variants,
    ratio,
    stalls_loop,
)

# to_thread "fixes" it when it serves at least this many times the blocking throughput.
FIX_FACTOR = 1.5
# Open loop at this share of the blocking variant's ceiling: below saturation, where a
# closed loop and an open loop tell different stories about the same stall.
OPEN_LOOP_SHARE = 0.8


def ceilings(knobs: Mapping[str, int], users: int, cpus: int) -> dict[str, tuple[float, str]]:
    """Throughput ceilings if the blocking call were all the work: calls at once x calls
    per second each, where at most `users` requests are in flight (closed loop)."""
    block_ms = knobs["block_ms"]
    per_call = 1000 / block_ms
    executor = min(32, cpus + 4)  # asyncio's default executor size
    return {
        "async-blocking": (per_call, f"one call at a time on the loop: 1000/{block_ms}"),
        "async-to-thread": (
            min(executor, users) * per_call,
            f"min({executor} default-executor threads, {users} users) x 1000/{block_ms}",
        ),
        "sync-def": (
            min(ANYIO_TOKENS, users) * per_call,
            f"min({ANYIO_TOKENS} anyio tokens, {users} users) x 1000/{block_ms}",
        ),
    }


def decide(records: Records, knobs: Mapping[str, Any]) -> Verdict:
    missing = missing_variants(records, ["async-blocking", "async-to-thread"])
    if missing:
        return inconclusive(missing)
    blocking, threaded = records["async-blocking"], records["async-to-thread"]
    block_ms = knobs["block_ms"]
    figures = {
        "rps_ratio": ratio(threaded["rps"], blocking["rps"]),
        "blocking_rps": blocking["rps"],
        "loop_ceiling_rps": 1000 / block_ms,
        "blocking_loop_lag_p99_ms": loop_lag(blocking),
        "threaded_loop_lag_p99_ms": loop_lag(threaded),
        "blocking_ping_p99_ms": blocking["ping_p99_ms"],
        "threaded_ping_p99_ms": threaded["ping_p99_ms"],
    }
    stalls = stalls_loop(blocking, threaded)
    fixes = (figures["rps_ratio"] or 0.0) >= FIX_FACTOR
    says = (
        f"a {block_ms} ms blocking call in `async def` capped throughput at {fmt(blocking['rps'], 'req/s')} "
        f"(one call at a time: at most {fmt(1000 / block_ms, 'req/s')}) with loop lag p99 "
        f"{fmt(loop_lag(blocking), 'ms')} (/ping p99 {fmt(blocking['ping_p99_ms'], 'ms')}); `asyncio.to_thread` "
        f"served {fmt(figures['rps_ratio'], 'x')} that with loop lag p99 {fmt(loop_lag(threaded), 'ms')} "
        f"(/ping p99 {fmt(threaded['ping_p99_ms'], 'ms')})"
    )
    headline = (
        f"to_thread {fmt(figures['rps_ratio'], 'x')} throughput; loop lag p99 {fmt(loop_lag(blocking), 'ms')} "
        f"vs {fmt(loop_lag(threaded), 'ms')}"
    )
    # The `def` endpoint is a reference point, not part of the claim: report it when measured.
    reference = records.get("sync-def")
    if reference is not None and reference.get("status") == "ok":
        figures["def_rps_ratio"] = ratio(reference["rps"], blocking["rps"])
        says += f", and a plain `def` endpoint served {fmt(figures['def_rps_ratio'], 'x')}"
    if stalls and fixes:
        return Verdict("holds", f"Holds: {says}.", figures, headline)
    if stalls:
        return Verdict(
            "partly holds",
            f"The call blocks the loop, but to_thread did not lift throughput here: {says}.",
            figures,
            headline,
        )
    return Verdict("does not hold", f"Does not hold in this run: {says}.", figures, headline)


PAIR = Pair(
    name="blocking",
    claim_id="C11",
    claim="A blocking call such as time.sleep in `async def` blocks the whole server; `asyncio.to_thread` fixes it.",
    sources=("002", "003", "004"),
    mechanism=(
        "An `async def` endpoint runs on the event loop, so a blocking call holds the loop for its "
        "whole duration: one request at a time, at most 1000/block_ms per second, and /ping waits "
        "behind it. `asyncio.to_thread` moves the call to the loop's default executor, "
        "min(32, CPUs + 4) threads, which raises the ceiling to that many calls at once; a `def` "
        "endpoint uses anyio's 40 worker threads instead."
    ),
    decided_by=(
        f"Throughput and event-loop lag p99. Holds when the blocking variant stalls the loop (as in `deps`) and "
        f"to_thread serves >= {FIX_FACTOR:g}x its throughput."
    ),
    variants=(
        Variant(
            "async-blocking",
            "bad",
            "/async-blocking/items/{id}",
            "`async def` endpoint making the blocking call directly",
            ("blocking_lookup", "async_blocking_item"),
        ),
        Variant(
            "async-to-thread",
            "good",
            "/async-to-thread/items/{id}",
            "`async def` endpoint awaiting `asyncio.to_thread` on the same call",
            ("async_to_thread_item",),
        ),
        Variant(
            "sync-def",
            "reference",
            "/sync-def/items/{id}",
            "`def` endpoint making the same call in anyio's worker threads",
            ("sync_def_item",),
        ),
    ),
    knobs={"block_ms": 20},
    decide=decide,
    physics=ceilings,
    open_loop_rate=lambda knobs: OPEN_LOOP_SHARE * 1000 / knobs["block_ms"],
    order=110,
)
