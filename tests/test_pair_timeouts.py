"""The timeouts pair (C15, part 1): its verdict rule on fixture records, and the 504
the wait_for variant answers."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from harness import runner
from harness.database import Database
from harness.pairs import Verdict, discover
from harness.scenario import Scenario
from tests.conftest import blocks_of

PAIR = discover()["timeouts"]
KNOBS = dict(PAIR.knobs)


def rec(
    p99: float, requests: int = 2000, timeouts: int = 0, other: int = 0, rps: float = 250, status: str = "ok"
) -> dict[str, Any]:
    failures = timeouts + other
    kinds = [["LocustBadStatusCode(code=504)", timeouts]] if timeouts else []
    kinds += [["LocustBadStatusCode(code=500)", other]] if other else []
    return {
        "status": status,
        "p99_ms": p99,
        "requests": requests,
        "failures": failures,
        "failure_rate": failures / requests,
        "rps": rps,
        "failure_kinds": kinds,
    }


def decide(
    bare: dict[str, Any], bounded: dict[str, Any], jitter: tuple[float, ...] | None = None, **knobs: int
) -> Verdict:
    records = {"no-timeout": bare, "wait-for": bounded}
    blocks = blocks_of(records) if jitter is None else blocks_of(records, jitter)
    return PAIR.decide(records, KNOBS | knobs, blocks)


def test_holds_when_p99_is_capped_and_only_the_slow_share_times_out() -> None:
    # The figures of a default run at 10 users, over its three samples.
    verdict = decide(rec(3000, requests=786, rps=38), rec(200, requests=3369, timeouts=175, rps=283))
    assert verdict.outcome == "holds"
    assert verdict.figures["share_of_requests_answered_504_total_wait-for"] == pytest.approx(175 / 3369)
    assert verdict.figures["p99_level_wait-for"] == pytest.approx(200)
    assert verdict.headline.startswith("p99 `wait-for` 200 ms")


def test_does_not_hold_when_wait_for_does_not_cap_the_tail() -> None:
    # As if the slow call blocked the loop, so the timeout could not fire on time.
    verdict = decide(rec(3000), rec(2900, timeouts=100))
    assert verdict.outcome == "does not hold"
    assert [check["outcome"] for check in verdict.checks][-3:] == ["misses", "clears", "misses"]


def test_partly_holds_when_fast_calls_time_out_too() -> None:
    # An overloaded client: calls that should take 20 ms miss a 200 ms deadline.
    verdict = decide(rec(3000), rec(210, timeouts=600))
    assert verdict.outcome == "partly holds"
    assert verdict.figures["share_of_requests_answered_504_total_wait-for"] == pytest.approx(0.3)


def test_bound_follows_the_timeout_knob() -> None:
    assert decide(rec(3000), rec(600, timeouts=100), timeout_ms=200).outcome == "does not hold"
    assert decide(rec(3000), rec(600, timeouts=100), timeout_ms=300).outcome == "holds"


def test_inconclusive_while_the_capped_tail_straddles_the_bound() -> None:
    verdict = decide(rec(3000), rec(450, timeouts=100), jitter=(0.5, 1.0, 2.0))
    assert verdict.outcome == "inconclusive"
    assert verdict.checks[-1]["outcome"] == "inconclusive"


def test_no_verdict_when_slow_calls_do_not_reach_p99() -> None:
    # 1 id in 1000 slow: nothing in the tail for a timeout to cut.
    verdict = decide(rec(25), rec(25), slow_every=1000)
    assert verdict.outcome == "inconclusive" and verdict.checks[0]["outcome"] == "misses"


def test_no_verdict_on_a_thin_unbounded_tail() -> None:
    # 250 requests in a sample: a p99 of two or three of them.
    verdict = decide(rec(3000, requests=250), rec(200, timeouts=100))
    assert verdict.outcome == "inconclusive" and verdict.checks[0]["thin"]


def test_no_verdict_when_requests_fail_for_other_reasons() -> None:
    # A dead upstream fails fast in both variants; that is no timeout at work.
    verdict = decide(rec(3000, other=2000), rec(200, timeouts=100, other=2000))
    assert verdict.outcome == "inconclusive"
    assert [check["outcome"] for check in verdict.checks][1:3] == ["misses", "misses"]
    # The timeout's own 504s are no such failure.
    assert decide(rec(3000), rec(200, timeouts=200, other=10)).outcome == "holds"


def test_inconclusive_when_a_variant_is_missing() -> None:
    assert decide(rec(3000), rec(200, status="failed")).outcome == "inconclusive"


def test_verification_draws_fast_ids() -> None:
    drawn = [i for i in range(1, 1001) if PAIR.variant("wait-for").verify_ids(i)]  # type: ignore[misc]
    assert drawn and all(i % KNOBS["slow_every"] != 0 for i in drawn) and all(i % 10 for i in drawn)


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


@pytest.mark.slow
def test_wait_for_answers_504_at_the_deadline(db: Database, tmp_path: Path) -> None:
    knobs = KNOBS | {"slow_ms": 1500, "timeout_ms": 100}
    variant = PAIR.variant("wait-for")
    server, port = runner.start_server(PAIR, variant, knobs, db, tmp_path, Scenario(name="test", rows=1000))
    try:
        base = f"http://127.0.0.1:{port}"
        assert status_of(base + variant.path.format(id=7)) == 200  # fast id
        started = time.monotonic()
        assert status_of(base + variant.path.format(id=40)) == 504  # slow id
        took = time.monotonic() - started
        with urllib.request.urlopen(base + "/counters", timeout=10) as resp:
            counters = json.loads(resp.read())
    finally:
        server.stop()
    assert took < 1.0  # cut at 100 ms, not the upstream's 1,500 ms
    assert counters == {"timeouts": 1}
