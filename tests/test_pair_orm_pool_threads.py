"""The `orm_pool_threads` pair (C16): its verdict rule on fixture records, where its
claim's source is shown, and on a real server how much of each pool a burst lends."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from apps.orm_pool_threads.pair import THREADS_WAITING, slowest_per_timeout
from harness import report, runner
from harness.checks import Difference, Total
from harness.database import Database
from harness.pairs import ANYIO_TOKENS, discover
from harness.scenario import Scenario
from tests.conftest import blocks_of, write_manifest, write_variant
from tests.test_pair_stall import get_all_at_once

PAIR = discover()["orm_pool_threads"]
WAITS = Difference(THREADS_WAITING, "default-pool", "pool-sized").key
FAILS = "failure_rate_total_default-pool"


def rec(wait_ms: float, failure_rate: float = 0.0, rps: float = 800) -> dict[str, Any]:
    lookups = 10_000
    counters = {"connection_wait_ms": wait_ms * lookups, "lookups": lookups}
    return {"status": "ok", "rps": rps, "failure_rate": failure_rate, "p99_ms": 80, "counters": counters}


def decide(default: dict[str, Any], sized: dict[str, Any] | None = None) -> Any:
    records = {
        "default-pool": default,
        "pool-sized": sized or rec(0.03),
        "limiter-to-pool": rec(20.0, failure_rate=0.2),
        "async-engine": rec(5.0),
    }
    return PAIR.decide(records, PAIR.knobs, blocks_of(records, (0.9, 1.0, 1.1, 0.95)))


def outcomes(verdict: Any) -> dict[str, str]:
    return {check["name"]: check["outcome"] for check in verdict.checks}


def test_holds_when_requests_wait_and_fail_on_the_default_pool() -> None:
    verdict = decide(rec(9.0, failure_rate=0.05))
    assert verdict.outcome == "holds"
    # Little's law at 800 req/s: 9 ms a request is 7.2 threads waiting, 0.03 ms 0.024.
    assert verdict.figures[WAITS] == pytest.approx((9.0 - 0.03) * 0.8, rel=0.15)


def test_threads_waiting_stay_put_when_the_host_halves_the_rate() -> None:
    # The same queue of threads on a host half as fast: twice the wait per request, the
    # same number waiting, the same outcome.
    fast = decide(rec(30.0, rps=800))
    slow = decide(rec(60.0, rps=400))
    assert fast.figures[WAITS] == pytest.approx(slow.figures[WAITS], rel=0.05)
    assert outcomes(fast)[WAITS] == outcomes(slow)[WAITS] == "clears"


def test_partly_holds_when_they_wait_but_none_fails() -> None:
    verdict = decide(rec(9.0))
    assert verdict.outcome == "partly holds"
    assert outcomes(verdict)[WAITS] == "clears" and outcomes(verdict)[FAILS] == "misses"


def test_the_slowest_wait_is_shown_against_pool_timeout() -> None:
    timeout_ms = PAIR.knobs["pool_timeout_ms"]
    records = {
        "default-pool": rec(9.0, failure_rate=0.05) | {"max_ms": timeout_ms * 0.25},
        "pool-sized": rec(0.03),
        "limiter-to-pool": rec(20.0, failure_rate=0.2) | {"max_ms": timeout_ms * 2.05},
        "async-engine": rec(5.0),
    }
    verdict = PAIR.decide(records, PAIR.knobs, blocks_of(records))
    values = {f["name"]: f["value"] for f in verdict.shown}
    per_timeout = slowest_per_timeout(PAIR.knobs)
    found = [values[Total(per_timeout, name).key] for name in ("default-pool", "limiter-to-pool")]
    assert found == pytest.approx([0.25, 2.05])


def test_a_few_microseconds_more_are_no_wait() -> None:
    # Three times the sized pool's wait, but not one thread more waiting (0.08 against 0.024).
    verdict = decide(rec(0.1))
    assert outcomes(verdict)[WAITS] == "misses"
    assert verdict.outcome == "does not hold"


def test_the_sized_pool_opening_its_connections_does_not_hide_the_queue() -> None:
    # Measured: the sized pool's 40 connects cost 9-25 ms per request over a short
    # sample, the default pool's queue 110-160 ms; a ratio of the two read 1.5x-35x.
    verdict = decide(rec(120.0, failure_rate=0.05), sized=rec(15.0))
    assert outcomes(verdict)[WAITS] == "clears"
    assert verdict.outcome == "holds"


def test_inconclusive_when_the_sized_pool_fails() -> None:
    assert decide(rec(9.0, failure_rate=0.05), sized=rec(0.03, failure_rate=0.1)).outcome == "inconclusive"


def test_the_sized_pool_has_a_connection_per_worker_thread() -> None:
    assert PAIR.knobs["sized_pool_size"] == ANYIO_TOKENS
    assert PAIR.knobs["pool_size"] + PAIR.knobs["max_overflow"] < ANYIO_TOKENS, "the default pool is the smaller"


def test_a_claim_no_article_makes_cites_its_threads(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_manifest(run_dir, {"orm_pool_threads": dict(PAIR.knobs)})
    for variant in PAIR.variants:
        write_variant(run_dir, PAIR.name, variant.name, variant.role)
    text = report.rebuild(run_dir, write_top_report=False).read_text()
    # The ledger row cites the pair's first threads, linked as its section does.
    assert "(production reports: [fastapi#3205](https://github.com/fastapi/fastapi/issues/3205)" in text
    assert "Source: production reports, [fastapi#3205](https://github.com/fastapi/fastapi/issues/3205)" in text


def peak(folder: Path, column: str) -> int:
    with open(folder / "loop_lag.csv") as handle:
        return max(int(r[column]) for r in csv.DictReader(handle) if r[column])


@pytest.mark.slow
def test_a_burst_lends_the_whole_default_pool_and_more_of_a_sized_one(db: Database, tmp_path: Path) -> None:
    found = {}
    for name in ("default-pool", "pool-sized"):
        variant, folder = PAIR.variant(name), tmp_path / name
        server, port = runner.start_server(PAIR, variant, PAIR.knobs, db, folder, Scenario(name="test", rows=1000))
        try:
            statuses = [s for _ in range(3) for s in get_all_at_once(port, variant.path, 60)]
            counts = runner.read_counters(port) or {}
        finally:
            server.stop()
        runner.settle(db, 0, 10)
        found[name] = (statuses, counts, peak(folder, "pool_overflow"), peak(folder, "pool_checked_out"))
    statuses, counts, overflow, _ = found["default-pool"]
    assert set(statuses) <= {200, 503}
    assert counts["lookups"] == counts["pool_checkouts"] >= statuses.count(200)
    assert overflow == PAIR.knobs["max_overflow"], "60 requests at once open every overflow connection"
    statuses, counts, _, lent = found["pool-sized"]
    assert statuses == [200] * len(statuses)
    assert lent > PAIR.knobs["pool_size"] + PAIR.knobs["max_overflow"], "more at once than the default pool has"
