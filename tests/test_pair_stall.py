"""The `stall` pair (C6): its verdict rule on fixture records, and the stall itself on a
real server: more simultaneous requests than worker-thread tokens + pool slots."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from harness import runner
from harness.database import Database
from harness.pairs import discover
from harness.scenario import Scenario

PAIR = discover()["stall"]
KNOBS = {"pool_size": 5, "pool_timeout_ms": 2000}


def rec(rps: float = 1500, failure_rate: float = 0.0, p99: float = 60, users: int = 50, status: str = "ok") -> Any:
    return {"status": status, "rps": rps, "failure_rate": failure_rate, "p99_ms": p99, "users": users}


def decide(stalled: Any, in_endpoint: Any = None, limited: Any = None, driver: Any = None, **knobs: int) -> Any:
    records = {
        "sync-dep": stalled,
        "in-endpoint": in_endpoint or rec(rps=1570),
        "max-concurrency": limited or rec(rps=1100),
        "async-driver": driver or rec(rps=1930),
    }
    return PAIR.decide(records, KNOBS | knobs)


def test_holds_when_the_sync_dependency_stalls_and_every_fix_restores() -> None:
    # Figures from a trial run: quick scenario, 50 users, pool of 5.
    verdict = decide(rec(rps=22, failure_rate=0.72, p99=4000))
    assert verdict.outcome == "holds"
    assert "72.0%" in verdict.text and "0.01x" in verdict.text and "async-driver" in verdict.text
    assert "`Depends(max_concurrency=pool_size)` (1,100 req/s" in verdict.text


def test_throughput_collapse_alone_is_a_stall() -> None:
    # No failures (a long pool timeout) but a fraction of the fixes' throughput.
    assert decide(rec(rps=200, failure_rate=0.0)).outcome == "holds"


def test_partly_holds_and_names_the_fix_that_did_not_restore() -> None:
    verdict = decide(rec(rps=22, failure_rate=0.72), limited=rec(rps=300))  # 0.16x the async driver
    assert verdict.outcome == "partly holds"
    assert "restored by a connection taken inside the `def` endpoint" in verdict.text
    assert "not by `Depends(max_concurrency=pool_size)` (300 req/s" in verdict.text
    failing = decide(rec(rps=22, failure_rate=0.72), in_endpoint=rec(rps=1500, failure_rate=0.03))
    assert failing.outcome == "partly holds" and "not by a connection taken inside" in failing.text


def test_does_not_hold_when_the_sync_dependency_keeps_up() -> None:
    # Against the claim: enough users to trigger it, yet no failures and comparable throughput.
    verdict = decide(rec(rps=1200, failure_rate=0.0, users=100))
    assert verdict.outcome == "does not hold"
    assert "0.0%" in verdict.text


def test_too_few_users_to_trigger_is_inconclusive_not_a_refutation() -> None:
    verdict = decide(rec(rps=1200, users=10))
    assert verdict.outcome == "inconclusive" and "10 users" in verdict.text
    # With a bigger pool the bar rises with it.
    assert decide(rec(rps=1200, users=50), pool_size=20).outcome == "inconclusive"
    # A stall seen anyway still counts.
    assert decide(rec(rps=22, failure_rate=0.72, users=10)).outcome == "holds"


def test_inconclusive_when_a_variant_was_not_measured() -> None:
    verdict = decide(rec(), driver=rec(status="failed"))
    assert verdict.outcome == "inconclusive" and "async-driver" in verdict.text


def get_all_at_once(port: int, path: str, n: int) -> list[int]:
    """`n` requests released together; their status codes (599: no answer)."""
    statuses = [599] * n
    start = threading.Barrier(n)

    def one(i: int) -> None:
        start.wait()
        url = f"http://127.0.0.1:{port}{path.format(id=i + 1)}"
        try:
            with urllib.request.urlopen(url, timeout=20) as resp:
                statuses[i] = resp.status
        except urllib.error.HTTPError as err:
            statuses[i] = err.code
        except OSError:
            pass

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


@pytest.mark.slow
@pytest.mark.parametrize(("variant", "stalls"), [("sync-dep", True), ("max-concurrency", False)])
def test_more_requests_than_tokens_and_pool_slots(db: Database, tmp_path: Path, variant: str, stalls: bool) -> None:
    # 80 requests > 40 tokens + 1 connection: the sync dependency's setups take every token
    # while the one request holding the connection waits for a token to run its endpoint.
    chosen = PAIR.variant(variant)
    knobs = {"pool_size": 1, "pool_timeout_ms": 1000}
    server, port = runner.start_server(PAIR, chosen, knobs, db, tmp_path, Scenario(name="test", rows=1000))
    try:
        statuses = get_all_at_once(port, chosen.path, 80)
        counters = runner.read_counters(port)
    finally:
        server.stop()
    assert set(statuses) <= {200, 503}, "every request answered: the pool timeout bounds the wait"
    if stalls:
        assert statuses.count(503) >= 10, statuses
        assert counters and counters["pool_timeouts"] == statuses.count(503)
    else:
        assert statuses == [200] * 80
        assert not (counters or {}).get("pool_timeouts")
