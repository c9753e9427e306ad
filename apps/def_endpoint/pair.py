"""C2: do async generator dependencies only work in `async def` endpoints?"""

from __future__ import annotations

from collections.abc import Mapping

from harness.checks import CPU_PER_REQUEST, THREADS_PEAK, THROUGHPUT, Check, Level, Metric, Part, Ratio, Rule, Total
from harness.pairs import Pair, Variant, counter_ratio
from harness.records import Record

# An endpoint "does not work" when at least this share of its requests went wrong
# (failed, or left their dependency's teardown undone): above a stray timeout, far below
# what a dependency that cannot run in a `def` endpoint would do (every request).
BROKEN_SHARE = 0.01


def broken_share(record: Record) -> float | None:
    """The share of requests that did not work: every one when verification failed;
    else the larger of the failure rate and the share of setups never torn down. None
    when the variant failed for another reason (e.g. its server did not start)."""
    if record.get("status", "ok") != "ok":
        return 1.0 if "verification failed" in str(record.get("error")) else None
    failed = float(record.get("failure_rate") or 0.0)
    cleaned = counter_ratio(record, "teardowns", "setups")
    return failed if cleaned is None else max(failed, 1.0 - cleaned)


BROKEN = Metric("share of requests that did not work", "%", broken_share, scale=100, reads_failed=True)


def rule(knobs: Mapping[str, int]) -> Rule:
    return Rule(
        parts=(
            Part(
                "an async generator dependency does not work in a `def` endpoint",
                (
                    Check(
                        Total(BROKEN, "def-endpoint", short="`def` endpoint requests that did not work"),
                        ">=",
                        BROKEN_SHARE,
                    ),
                ),
            ),
        ),
        # The same dependency must work where nobody doubts it does, or the harness failed.
        controls=(
            Part(
                "the same dependency works in an `async def` endpoint",
                (Check(Total(BROKEN, "async-endpoint"), "<=", BROKEN_SHARE),),
            ),
        ),
        shown=(
            Ratio(CPU_PER_REQUEST, "def-endpoint", "async-endpoint"),
            Ratio(THROUGHPUT, "def-endpoint", "async-endpoint"),
            # Shows the endpoint body (and its response validation) really ran in worker threads.
            Level(THREADS_PEAK, "def-endpoint"),
        ),
        note=(
            "What a working `def` endpoint costs (its thread hops, in server CPU per request and throughput) is "
            "shown, not deciding: the claim is that it does not work at all, and a verification failure must "
            "stay its answer, which a cost check on a variant that served nothing could not give."
        ),
    )


PAIR = Pair(
    name="def_endpoint",
    claim_id="C2",
    claim="Async generator dependencies only work in `async def` endpoints.",
    sources=("001",),
    mechanism=(
        "FastAPI solves every dependency on the event loop before it calls the endpoint, and keeps "
        "yield dependencies on an AsyncExitStack it unwinds on the loop after the response. A `def` "
        "endpoint's body goes to anyio's worker threads, and so does the validation of its return value: "
        "`serialize_response` in fastapi/routing.py checks `if is_coroutine: value, errors = "
        'field.validate(response_content, {}, loc=("response",))` and otherwise `value, errors = await '
        'run_in_threadpool(field.validate, response_content, {}, loc=("response",))`; the validated value is '
        "then serialized (`field.serialize_json`) back on the loop. So an async generator dependency works "
        "the same for both kinds; what a `def` endpoint cannot do is await on a loop-bound resource such as "
        "an asyncpg connection, so the dependency here yields plain data. The `def` endpoint pays two thread "
        "hops per request (its body, then its return-value validation)."
    ),
    variants=(
        Variant(
            "def-endpoint",
            "bad",
            "/def-endpoint/items/{id}",
            "`def` endpoint taking an async generator dependency that looks the row up through the asyncpg "
            "pool on the loop and yields the row (the endpoint never touches the connection from its thread)",
            ("get_item", "def_endpoint_item"),
        ),
        Variant(
            "async-endpoint",
            "good",
            "/async-endpoint/items/{id}",
            "the same async generator dependency on an `async def` endpoint",
            ("get_item", "async_endpoint_item"),
        ),
    ),
    rule=rule,
    knobs={"pool_size": 50},
    order=20,
)
