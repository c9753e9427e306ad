"""The caching pair (C4): its verdict rule on fixture records, and the call counts the
real app records."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from harness import runner
from harness.database import Database
from harness.pairs import discover
from harness.scenario import Scenario
from tests.conftest import blocks_of

PAIR = discover()["caching"]


def rec(lookups: int, requests: int = 1000, p50: float = 10.0, rps: float = 2000) -> dict[str, Any]:
    return {"status": "ok", "p50_ms": p50, "rps": rps, "counters": {"lookups": lookups, "requests": requests}}


def decide(cached: dict[str, Any], uncached: dict[str, Any]) -> Any:
    records = {"cached": cached, "no-cache": uncached}
    return PAIR.decide(records, PAIR.knobs, blocks_of(records))


CACHED = "times_the_dependency_ran_per_request_total_cached"


def test_holds_with_one_call_cached_and_two_without() -> None:
    verdict = decide(rec(1000, p50=10), rec(2001, p50=12.5, rps=1600))
    assert verdict.outcome == "holds"
    assert verdict.figures[CACHED] == 1.0
    assert verdict.figures["times_the_dependency_ran_per_request_total_no-cache"] == 2.001
    assert verdict.figures["p50_difference_no-cache_cached"] == pytest.approx(2.5, abs=0.5)
    assert verdict.figures["throughput_ratio_no-cache_cached"] == pytest.approx(0.8, rel=0.05)


def test_holds_within_the_tolerance_of_requests_cut_off_at_shutdown() -> None:
    assert decide(rec(1040), rec(2000)).outcome == "holds"
    assert decide(rec(1060), rec(2000)).outcome == "does not hold"


def test_does_not_hold_when_the_cached_variant_calls_twice() -> None:
    verdict = decide(rec(2000), rec(2000))
    assert verdict.outcome == "does not hold"
    assert [c["outcome"] for c in verdict.checks if c["name"] == CACHED] == ["clears", "misses"]


def test_inconclusive_when_the_control_does_not_call_twice() -> None:
    verdict = decide(rec(1000), rec(1000))
    assert verdict.outcome == "inconclusive" and verdict.headline.startswith("control did not clear")
    # Nor when the counters miss calls the cached variant must make.
    assert decide(rec(500), rec(2000)).outcome == "inconclusive"


def test_inconclusive_without_counters() -> None:
    no_counters = {"status": "ok", "p50_ms": 10, "rps": 100, "counters": None}
    verdict = decide(no_counters, rec(2000))
    assert verdict.outcome == "inconclusive" and "cached" in verdict.headline
    assert decide(rec(1000), {"status": "failed"}).outcome == "inconclusive"


def counters_after(db: Database, tmp_path: Path, name: str, ids: list[int]) -> dict[str, Any]:
    variant = PAIR.variant(name)
    folder = tmp_path / name
    folder.mkdir()
    server, port = runner.start_server(PAIR, variant, PAIR.knobs, db, folder, Scenario(name="test", rows=1000))
    try:
        for item_id in ids:
            url = f"http://127.0.0.1:{port}{variant.path.format(id=item_id)}"
            with urllib.request.urlopen(url, timeout=10) as resp:
                assert json.loads(resp.read())["id"] == item_id
                assert resp.headers["ETag"]
        counters = runner.read_counters(port)
    finally:
        server.stop()
    assert counters is not None
    return counters


@pytest.mark.slow
def test_app_counts_one_call_cached_and_two_without(db: Database, tmp_path: Path) -> None:
    ids = [1, 2, 3, 500]
    assert counters_after(db, tmp_path, "cached", ids) == {"lookups": 4, "requests": 4}
    assert counters_after(db, tmp_path, "no-cache", ids) == {"lookups": 8, "requests": 4}
