"""C11: does a blocking call in `async def` stall the server, and does to_thread fix it?"""

from __future__ import annotations

from collections.abc import Mapping

from harness.checks import THROUGHPUT, Check, Level, Part, Ratio, Rule, stall_checks
from harness.pairs import ANYIO_TOKENS, Pair, Variant

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


def rule(knobs: Mapping[str, int]) -> Rule:
    return Rule(
        parts=(
            Part(
                "a blocking call in `async def` stalls the event loop",
                stall_checks("async-blocking", "async-to-thread"),
            ),
            Part(
                "`asyncio.to_thread` lifts throughput",
                (
                    Check(
                        Ratio(THROUGHPUT, "async-to-thread", "async-blocking", short="to_thread throughput"),
                        ">=",
                        FIX_FACTOR,
                    ),
                ),
            ),
        ),
        # The `def` endpoint is a reference point, not part of the claim.
        shown=(Ratio(THROUGHPUT, "sync-def", "async-blocking"), Level(THROUGHPUT, "async-blocking")),
    )


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
        "endpoint uses anyio's 40 worker threads instead. "
        "With the loop blocked, uvicorn's default loop (uvloop, on libuv) accepts about one new connection per "
        "loop pass, and each pass first runs every request already queued, so connections that arrive together "
        "wait in the kernel's accept queue: the n-th user is taken in after roughly n squared / 2 blocking calls. "
        "The warm-up waits until every user has had an answer (the Little's law table below gives how long that "
        "took), and this pair's request timeout is long enough that none gives up and reconnects meanwhile, so "
        "the measured window sees fair service: every user in turn, latency near users / throughput."
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
    rule=rule,
    physics=ceilings,
    open_loop_rate=lambda knobs: OPEN_LOOP_SHARE * 1000 / knobs["block_ms"],
    order=110,
    # A blocked loop takes in about one new connection per pass, and a pass runs every
    # queued request first: 50 users all get a first answer only after tens of seconds
    # (measured: the 50th after 27 s at block_ms=20). A request timeout above that lets
    # the warm-up (scenario warmup_max_s) admit them all, instead of timed-out users
    # reconnecting and their queued first requests landing in the window as its tail.
    load={"request_timeout_s": 60},
)
