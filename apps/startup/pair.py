"""C8: is `@app.on_event` the way to create resources at startup?"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.pairs import Pair, Records, Variant, Verdict, fmt, inconclusive, missing_variants, ratio

# The on_event variant works when it fails at most this share of requests more and serves
# at least this share of the lifespan variant's throughput. The request path is identical,
# and on 2 cores identical variants drift up to a quarter apart within one run, so the
# bound catches a broken pool (every request slow or failing), not noise.
MAX_EXTRA_FAILURE_RATE = 0.01
MIN_RPS_SHARE = 0.6


def deprecations(record: Mapping[str, Any], baseline: Mapping[str, Any]) -> list[str] | None:
    """DeprecationWarnings the server printed that the other variant's server did not
    (None: warnings were not recorded)."""
    if record.get("warnings") is None:
        return None
    seen = set(baseline.get("warnings") or [])
    return [w for w in record["warnings"] if "DeprecationWarning" in w and w not in seen]


def decide(records: Records, knobs: Mapping[str, Any]) -> Verdict:
    missing = missing_variants(records, ["lifespan"])
    if missing or "on-event" not in records:
        return inconclusive(missing or ["on-event"])
    on_event, lifespan = records["on-event"], records["lifespan"]
    if on_event.get("status") != "ok":
        # The variant is built exactly like the lifespan one except for its startup code,
        # so a start or verification failure is the result.
        error = on_event.get("error") or "unknown error"
        return Verdict(
            "does not hold",
            f"Does not hold: the on_event variant did not start and verify ({error}), while the lifespan "
            f"variant served {fmt(lifespan['rps'], 'req/s')}.",
            {"lifespan_rps": lifespan["rps"]},
            "on_event variant failed to start",
        )
    figures = {
        "rps_ratio": ratio(on_event["rps"], lifespan["rps"]),
        "on_event_failure_rate": on_event["failure_rate"],
        "lifespan_failure_rate": lifespan["failure_rate"],
    }
    warned = deprecations(on_event, lifespan)
    if warned is not None:
        figures["deprecation_warnings"] = len(warned)
    works = (
        on_event["failure_rate"] - lifespan["failure_rate"] <= MAX_EXTRA_FAILURE_RATE
        and (figures["rps_ratio"] or 0.0) >= MIN_RPS_SHARE
    )
    says = (
        f"the on_event variant started, verified and served {fmt(figures['rps_ratio'], 'x')} the lifespan "
        f"variant's throughput, failing {fmt(100 * on_event['failure_rate'], '%', 1)} of requests vs "
        f"{fmt(100 * lifespan['failure_rate'], '%', 1)}"
    )
    if warned is None:
        warn_says, warn_short = "its server's warnings were not recorded", "warnings not recorded"
    elif warned:
        # The runner keeps a warning's first line, which for FastAPI's message is empty.
        texts = [w.split("Warning:", 1)[1].strip() for w in warned]
        quoted = "; ".join(f"`{t}`" for t in texts if t)
        warn_says = "its server printed a DeprecationWarning the lifespan server did not" + (
            f" ({quoted})" if quoted else ""
        )
        warn_short = "DeprecationWarning printed"
    else:
        warn_says, warn_short = "its server printed no DeprecationWarning the lifespan server did not", "no warning"
    headline = f"{fmt(figures['rps_ratio'], 'x')} throughput, {warn_short}"
    if not works:
        return Verdict("does not hold", f"Does not hold in this run: {says}; {warn_says}.", figures, headline)
    if warned is None:
        return Verdict("inconclusive", f"It works ({says}), but {warn_says}.", figures, headline)
    if warned:
        return Verdict(
            "partly holds", f"Partly holds: it works, but is deprecated: {says}; {warn_says}.", figures, headline
        )
    return Verdict("holds", f"Holds: {says}, and {warn_says}.", figures, headline)


PAIR = Pair(
    name="startup",
    claim_id="C8",
    claim="Create shared resources such as a connection pool in `@app.on_event('startup')` / `('shutdown')` handlers.",
    sources=("001",),
    mechanism=(
        "FastAPI deprecated `on_event` (0.104) in favour of the `lifespan` context manager (0.93+): the "
        "method is wrapped in `@deprecated`, so each call emits a DeprecationWarning at import. Starlette "
        "deprecated its own handlers (starlette#2070) and removed them in 1.0 (starlette#3117); FastAPI 0.165 "
        "keeps a copy (`_DefaultLifespan`) that still runs them, but only when the app gets no `lifespan=`: "
        "next to one, they are silently skipped."
    ),
    decided_by=(
        f"Start-up and verification status, failure rate, throughput and the server's warnings. The on_event "
        f"variant works when it starts, verifies, fails at most {100 * MAX_EXTRA_FAILURE_RATE:g} points more "
        f"and serves >= {MIN_RPS_SHARE:g}x the lifespan variant's throughput. Holds if it works without a "
        "DeprecationWarning the lifespan server lacks; partly holds if it works but warns; does not hold "
        "if it does not work."
    ),
    variants=(
        Variant(
            "on-event",
            "good",
            "/on-event/items/{id}",
            "asyncpg pool opened in an `@app.on_event('startup')` handler, closed in a shutdown handler",
            ("open_pool_on_startup", "close_pool_on_shutdown", "app_pool", "on_event_item"),
        ),
        Variant(
            "lifespan",
            "reference",
            "/lifespan/items/{id}",
            "the same pool opened and closed in a `lifespan` context manager",
            ("lifespan", "app_pool", "lifespan_item"),
        ),
    ),
    decide=decide,
    knobs={"pool_size": 10},
    order=80,
    references=("starlette#2070", "starlette#3117"),
)
