"""The semaphore pair (C15, part 2): its verdict rule on fixture blocks, and what the
semaphore changes beside a pooled engine on a real server."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from harness import runner
from harness.database import Database
from harness.pairs import Verdict, discover
from harness.scenario import Scenario
from tests.conftest import blocks_of

PAIR = discover()["semaphore"]
KNOBS = dict(PAIR.knobs)


def rec(
    rps: float = 200, failure_rate: float = 0.0, peak: int = 10, p99: float = 420, timeouts: int = 0
) -> dict[str, Any]:
    return {
        "status": "ok",
        "rps": rps,
        "failure_rate": failure_rate,
        # Both variants open the whole pool at start-up; what differs is how many run a query.
        "peak_connections": KNOBS["pool_size"],
        "peak_active": peak,
        "p99_ms": p99,
        "requests": 1000,
        "counters": {"acquire_timeouts": timeouts} if timeouts else {},
    }


# The default knobs' queue physics: the pool alone serves 20 x 1000/50 = 400 req/s and
# times out a third of its 80 users' requests; the semaphore serves 10 x 1000/50.
POOL_ALONE = rec(rps=600, failure_rate=0.33, peak=20, p99=150, timeouts=2000)
CAPPED = rec(rps=195, peak=10, p99=420)


def decide(
    bare: dict[str, Any], bounded: dict[str, Any], jitter: tuple[float, ...] | None = None, **knobs: int
) -> Verdict:
    records = {"unbounded": bare, "semaphore": bounded}
    blocks = blocks_of(records) if jitter is None else blocks_of(records, jitter)
    return PAIR.decide(records, KNOBS | knobs, blocks)


def test_holds_at_the_default_knobs_its_tail_is_what_its_queue_predicts() -> None:
    verdict = decide(POOL_ALONE, CAPPED)
    assert verdict.outcome == "holds"
    outcomes = [check["outcome"] for check in verdict.checks]
    # Peak 10 <= 12 and 20 - 10 >= 3; 33 points fewer failures, none of its own; p99 420 ms
    # against twice the 80 x 50 / 10 = 400 ms each request waits.
    assert outcomes == ["clears"] * 6
    assert verdict.figures["peak_active_backends_level_semaphore"] == pytest.approx(10)
    assert verdict.figures["p99_level_semaphore"] == pytest.approx(420, rel=0.05)
    # The cost against the pool alone is reported, not judged.
    assert verdict.figures["p99_ratio_semaphore_unbounded"] == pytest.approx(2.8, rel=0.05)
    assert verdict.figures["acquire_timeouts_total_unbounded"] == 2000
    assert verdict.headline.startswith("peak active backends `semaphore` 10.0")


def test_partly_holds_when_its_queue_starves_some_waiters() -> None:
    # A p99 of 2 s where each request should wait about 400 ms: an unfair queue.
    verdict = decide(POOL_ALONE, CAPPED | {"p99_ms": 2000})
    assert verdict.outcome == "partly holds"
    assert verdict.checks[4]["outcome"] == "misses"


def test_the_tail_bound_follows_the_knobs() -> None:
    # A semaphore of 5 halves the rate and doubles the wait: 800 ms, so 1.2 s clears.
    assert (
        decide(POOL_ALONE, CAPPED | {"rps": 100, "p99_ms": 1200, "peak_active": 5}, db_concurrency=5).outcome == "holds"
    )
    assert decide(POOL_ALONE, CAPPED | {"rps": 100, "p99_ms": 1200, "peak_active": 5}).outcome == "partly holds"


def test_the_pool_already_caps_the_backends_when_the_semaphore_is_as_large() -> None:
    # db_concurrency = pool_size: as many at work; the semaphore only moves the queue.
    verdict = decide(POOL_ALONE, CAPPED | {"peak_active": 20, "rps": 390, "p99_ms": 180}, db_concurrency=20)
    assert verdict.outcome == "partly holds"
    assert verdict.checks[0]["outcome"] == "clears"
    assert verdict.checks[1]["outcome"] == "no measurable difference"
    assert verdict.figures["peak_active_backends_difference_unbounded_semaphore"] == pytest.approx(0)


def test_does_not_hold_when_the_semaphore_bounds_nothing() -> None:
    # E.g. a semaphore created per request: the same backends and the same timeouts.
    verdict = decide(POOL_ALONE, POOL_ALONE)
    assert verdict.outcome == "does not hold"
    assert verdict.checks[0]["outcome"] == "misses"


def test_successful_throughput_is_what_is_shown() -> None:
    # The pool alone's timed-out requests inflate its raw rate; its successes are what the cap costs.
    verdict = decide(POOL_ALONE | {"rps": 800, "failure_rate": 0.5}, CAPPED | {"rps": 390, "p99_ms": 180})
    assert verdict.outcome == "holds"
    assert verdict.figures["successful_throughput_ratio_semaphore_unbounded"] == pytest.approx(0.975, rel=0.05)


def test_inconclusive_while_the_tail_straddles_its_threshold() -> None:
    verdict = decide(POOL_ALONE | {"failure_rate": 0.2}, CAPPED | {"p99_ms": 700}, jitter=(0.5, 1.0, 2.0))
    assert verdict.outcome == "inconclusive"
    assert verdict.checks[4]["outcome"] == "inconclusive"


def test_inconclusive_when_a_variant_is_missing() -> None:
    records = {"unbounded": POOL_ALONE, "semaphore": {"status": "failed"}}
    assert PAIR.decide(records, KNOBS, blocks_of(records)).outcome == "inconclusive"


def fetch(port: int, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=20) as resp:
            return int(resp.status), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return int(err.code), json.loads(err.read())


def concurrently(port: int, paths: list[str]) -> tuple[float, list[tuple[int, Any]]]:
    started = time.monotonic()
    with ThreadPoolExecutor(len(paths)) as pool:
        answers = list(pool.map(fetch, [port] * len(paths), paths))
    return time.monotonic() - started, answers


@pytest.mark.slow
def test_the_semaphore_serialises_what_the_pool_runs_at_once(db: Database, tmp_path: Path) -> None:
    # One slot, a pool of four and a 300 ms query: four concurrent requests take >= 1.2 s
    # only with the bound. A long acquire timeout: connections open on first use.
    knobs = KNOBS | {"pool_size": 4, "db_concurrency": 1, "query_ms": 300, "acquire_timeout_ms": 10_000}
    took = {}
    for variant in PAIR.variants:
        folder = tmp_path / variant.name
        folder.mkdir()
        server, port = runner.start_server(PAIR, variant, knobs, db, folder, Scenario(name="test", rows=1000))
        try:
            took[variant.name], answers = concurrently(port, [variant.path.format(id=item) for item in (1, 2, 3, 4)])
        finally:
            server.stop()
        assert [(status, body["id"]) for status, body in answers] == [(200, 1), (200, 2), (200, 3), (200, 4)]
    assert took["semaphore"] >= 1.2
    assert took["unbounded"] < 1.0


@pytest.mark.slow
def test_the_pool_alone_times_out_where_the_semaphore_waits(db: Database, tmp_path: Path) -> None:
    # One connection, a 400 ms query and a 100 ms acquire timeout: of two requests at once,
    # the pool alone fails the second; behind a semaphore of one it waits its turn.
    knobs = KNOBS | {"pool_size": 1, "db_concurrency": 1, "query_ms": 400, "acquire_timeout_ms": 100}
    for variant in PAIR.variants:
        folder = tmp_path / variant.name
        folder.mkdir()
        server, port = runner.start_server(PAIR, variant, knobs, db, folder, Scenario(name="test", rows=1000))
        try:
            _, answers = concurrently(port, [variant.path.format(id=item) for item in (1, 2)])
            _, counters = fetch(port, "/counters")
        finally:
            server.stop()
        statuses = sorted(status for status, _ in answers)
        if variant.name == "unbounded":
            assert statuses == [200, 503] and counters == {"acquire_timeouts": 1}
        else:
            assert statuses == [200, 200] and counters == {}
