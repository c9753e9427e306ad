"""The `orm_async_endpoint` pair (C11 with SQLAlchemy): its verdict rule on fixture
records, and on a real server where each variant's wait happens."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import pytest

from harness import runner
from harness.database import Database
from harness.pairs import discover
from harness.scenario import Scenario
from tests.conftest import blocks_of
from tests.test_pair_stall import get_all_at_once

PAIR = discover()["orm_async_endpoint"]


def rec(rps: float, lag: float) -> dict[str, Any]:
    return {"status": "ok", "rps": rps, "loop_lag_p99_ms": lag, "ping_p99_ms": lag + 1}


def decide(blocked: dict[str, Any], in_def: dict[str, Any] | None = None) -> Any:
    records = {"sync-in-async": blocked, "sync-in-def": in_def or rec(600, 2), "async-session": rec(700, 2)}
    return PAIR.decide(records, PAIR.knobs, blocks_of(records))


def test_holds_when_the_loop_stalls_and_both_fixes_serve_more() -> None:
    assert decide(rec(45, 900)).outcome == "holds"


def test_partly_holds_when_def_stalls_the_loop_too() -> None:
    verdict = decide(rec(45, 900), in_def=rec(50, 800))
    assert verdict.outcome == "partly holds"


def test_def_is_judged_on_the_loop_stall_not_on_throughput() -> None:
    # As slow as the blocked variant, yet its loop stays free: the claim's third part holds.
    verdict = decide(rec(45, 900), in_def=rec(50, 2))
    assert verdict.outcome == "holds"


def test_does_not_hold_when_the_session_never_waits() -> None:
    verdict = decide(rec(650, 2))
    assert verdict.outcome == "does not hold"


def test_the_note_follows_the_query_knob() -> None:
    assert "50 requests per second" in PAIR.how_decided({"query_ms": 20})
    assert "10 requests per second" in PAIR.how_decided({"query_ms": 100})


def worst_lag(folder: Path, since: float) -> float:
    with open(folder / "loop_lag.csv") as handle:
        return max(float(r["lag_ms"]) for r in csv.DictReader(handle) if float(r["time"]) >= since)


@pytest.mark.slow
def test_only_the_sync_session_in_async_def_holds_the_loop(db: Database, tmp_path: Path) -> None:
    knobs, n = PAIR.knobs | {"query_ms": 200}, 10
    lags, took = {}, {}
    for name in ("sync-in-async", "sync-in-def"):
        chosen, folder = PAIR.variant(name), tmp_path / name
        server, port = runner.start_server(PAIR, chosen, knobs, db, folder, Scenario(name="test", rows=1000))
        try:
            since = time.time()
            statuses = get_all_at_once(port, chosen.path, n)
            took[name] = time.time() - since
            time.sleep(0.7)  # the monitor writes its rows every 0.5 s
            lags[name] = worst_lag(folder, since)
        finally:
            server.stop()
        assert statuses == [200] * n
    wait_s = knobs["query_ms"] / 1000
    # On the loop the waits queue behind each other, and the monitor cannot wake during one;
    # on worker threads they overlap (fewer requests than the pool's 15 connections).
    assert took["sync-in-async"] >= n * wait_s and took["sync-in-def"] < n * wait_s / 2, took
    assert lags["sync-in-async"] >= knobs["query_ms"] > lags["sync-in-def"], lags
