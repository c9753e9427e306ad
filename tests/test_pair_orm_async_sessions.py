"""The `orm_async_sessions` pair (C7 on AsyncSession): its verdict rule on fixture
records, and on a real server what the collector does with a dropped session's connection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness import runner
from harness.database import Database
from harness.pairs import discover
from harness.scenario import Scenario
from tests.conftest import blocks_of
from tests.test_pair_stall import get_all_at_once

PAIR = discover()["orm_async_sessions"]


def rec(failure_rate: float, lent: int, **returned: int) -> dict[str, Any]:
    counters = {"pool_checkouts": lent} | {f"pool_{kind}": n for kind, n in returned.items()}
    return {
        "status": "ok",
        "rps": 100,
        "requests": 500,
        "failure_rate": failure_rate,
        "p50_ms": 30,
        "counters": counters,
    }


def decide(never_closed: dict[str, Any], closed: dict[str, Any] | None = None) -> Any:
    records = {"async-never-closed": never_closed, "async-with": closed or rec(0.0, 5000, checkins_close=5000)}
    return PAIR.decide(records, PAIR.knobs, blocks_of(records))


def test_holds_when_the_pool_runs_dry_and_the_collector_returns_little() -> None:
    verdict = decide(rec(0.7, 53, detached_cyclic_gc=20))
    assert verdict.outcome == "holds"


def test_connections_the_collector_terminates_count_as_returned() -> None:
    verdict = decide(rec(0.0, 5000, detached_cyclic_gc=4990))
    assert verdict.outcome == "does not hold"
    returned = next(c for c in verdict.checks if c["name"].endswith("total_async-never-closed") and "lent" in c["name"])
    assert returned["value"] == pytest.approx(4990 / 5000)


def test_inconclusive_when_the_closed_session_loses_connections() -> None:
    assert decide(rec(0.7, 53), closed=rec(0.0, 5000, checkins_close=10)).outcome == "inconclusive"


@pytest.mark.slow
def test_the_collector_terminates_what_it_frees_and_warns_each_time(db: Database, tmp_path: Path) -> None:
    knobs = PAIR.knobs | {"pool_timeout_ms": 1000}
    variant = PAIR.variant("async-never-closed")
    server, port = runner.start_server(PAIR, variant, knobs, db, tmp_path, Scenario(name="test", rows=1000))
    try:
        statuses = [s for _ in range(2) for s in get_all_at_once(port, variant.path, 50)]
        counts = runner.read_counters(port) or {}
    finally:
        server.stop()
    runner.settle(db, 0, 10)
    assert set(statuses) <= {200, 503} and 503 in statuses
    assert counts["pool_timeouts"] == statuses.count(503)
    # An async dialect's finaliser never checks a connection in: it detaches and terminates it.
    # (One check-in with its proxy still alive shows up in some runs, not yet explained.)
    assert not counts.get("pool_checkins_refcount") and not counts.get("pool_checkins_cyclic_gc"), counts
    assert counts.get("pool_checkins_close", 0) <= 1, counts
    terminated = counts.get("pool_detached_cyclic_gc", 0) + counts.get("pool_detached_refcount", 0)
    assert counts.get("pool_gc_cleanup_warnings", 0) == terminated
    slots = knobs["pool_size"] + knobs["max_overflow"]
    returned = sum(n for name, n in counts.items() if name.startswith(("pool_checkins_", "pool_detached_")))
    assert counts["pool_checkouts"] - returned <= slots, "no more lent at once than the pool has"


def test_one_warning_about_many_connections_is_listed_once(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    message = "SAWarning: The garbage collector is trying to clean up non-checked-in connection <AdaptedConnection "
    log.write_text(
        "".join(f"x.py:1: {message}<C object at 0x7efe10ad{n:04x}>>, which will be terminated.\n" for n in range(5))
    )
    [listed] = runner.server_warnings(log)
    assert "at 0x...>>" in listed
