"""The semaphore pair (C15, part 2): its verdict rule on fixture records, and the bound
the semaphore puts on concurrent database work."""

from __future__ import annotations

import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from harness import runner
from harness.database import Database
from harness.pairs import discover
from harness.scenario import Scenario

PAIR = discover()["semaphore"]


def rec(
    rps: float = 190, failure_rate: float = 0.0, peak: int | None = 14, p99: float = 1200, status: str = "ok"
) -> dict[str, Any]:
    return {
        "status": status,
        "rps": rps,
        "failure_rate": failure_rate,
        "peak_connections": peak,
        "p99_ms": p99,
        "users": 200,
    }


def decide(bare: dict[str, Any], bounded: dict[str, Any], db_concurrency: int = 20) -> Any:
    return PAIR.decide({"unbounded": bare, "semaphore": bounded}, {"db_concurrency": db_concurrency, "query_ms": 20})


def test_holds_when_the_unbounded_variant_runs_out_of_connections() -> None:
    # The figures of a quick trial run at 200 users.
    verdict = decide(rec(rps=191, failure_rate=0.061, peak=66, p99=5700), rec(rps=191, peak=14, p99=1200))
    assert verdict.outcome == "holds"
    assert "failed 6.1% of requests (p99 5,700 ms)" in verdict.text and "peaked at 14 backends" in verdict.text
    assert verdict.headline == "failures 6.1% vs 0.0%, peak 66 vs 14 backends"


def test_partly_holds_when_nothing_fails_without_the_bound() -> None:
    # As at 120 users on 2 cores: connection setup throttled itself below the limit.
    verdict = decide(rec(rps=140, peak=73, p99=2100), rec(rps=121, peak=20))
    assert verdict.outcome == "partly holds" and "did not fail more" in verdict.text


def test_partly_holds_when_the_bound_costs_throughput() -> None:
    # A semaphore far below what the database could take (e.g. long sleeps, 2 slots).
    verdict = decide(rec(rps=400, failure_rate=0.05, peak=97), rec(rps=40, peak=2), db_concurrency=2)
    assert verdict.outcome == "partly holds" and "throughput cost" in verdict.text


def test_successful_throughput_is_what_counts() -> None:
    # Fast 503s inflate the unbounded variant's raw rate; half of them failed.
    verdict = decide(rec(rps=400, failure_rate=0.5, peak=97), rec(rps=150, peak=20))
    assert verdict.outcome == "holds" and verdict.figures["good_rps_ratio"] == 0.75


def test_does_not_hold_when_the_peak_exceeds_the_bound() -> None:
    # E.g. a semaphore created per request, which bounds nothing.
    assert decide(rec(failure_rate=0.06, peak=70), rec(peak=60)).outcome == "does not hold"
    assert decide(rec(failure_rate=0.06, peak=70), rec(peak=None)).outcome == "does not hold"


def test_inconclusive_when_a_variant_is_missing() -> None:
    assert decide(rec(status="failed"), rec()).outcome == "inconclusive"


def get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=20) as resp:
        return json.loads(resp.read())


@pytest.mark.slow
def test_the_semaphore_serialises_what_the_unbounded_variant_runs_at_once(db: Database, tmp_path: Path) -> None:
    # One slot and a 300 ms query: four concurrent requests take >= 1.2 s only with the bound.
    knobs = {"db_concurrency": 1, "query_ms": 300}
    took = {}
    for variant in PAIR.variants:
        folder = tmp_path / variant.name
        folder.mkdir()
        server, port = runner.start_server(PAIR, variant, knobs, db, folder, Scenario(name="test", rows=1000))
        try:
            started = time.monotonic()
            urls = [variant.path.format(id=item) for item in (1, 2, 3, 4)]
            with ThreadPoolExecutor(4) as pool:
                bodies = list(pool.map(get, [port] * 4, urls))
            took[variant.name] = time.monotonic() - started
        finally:
            server.stop()
        assert [body["id"] for body in bodies] == [1, 2, 3, 4]
    assert took["semaphore"] >= 1.2
    assert took["unbounded"] < 1.0
