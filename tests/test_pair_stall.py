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
from tests.conftest import blocks_of

PAIR = discover()["stall"]
KNOBS = dict(PAIR.knobs)
STALL = "successful_throughput_ratio_sync-dep_async-driver"
# Four factors for four variants, so every variant's figures move differently between blocks.
WIDE = (0.5, 1.0, 2.0, 1.5)


def rec(rps: float = 1500, failure_rate: float = 0.0, p99: float = 60, users: int = 50, status: str = "ok") -> Any:
    return {"status": status, "rps": rps, "failure_rate": failure_rate, "p99_ms": p99, "users": users}


def decide(
    stalled: Any,
    in_endpoint: Any = None,
    limited: Any = None,
    driver: Any = None,
    jitter: tuple[float, ...] = (0.97, 1.0, 1.03, 0.99),
    **knobs: int,
) -> Any:
    records = {
        "sync-dep": stalled,
        "in-endpoint": in_endpoint or rec(rps=1570),
        "max-concurrency": limited or rec(rps=1100),
        "async-driver": driver or rec(rps=1930),
    }
    return PAIR.decide(records, KNOBS | knobs, blocks_of(records, jitter))


def outcomes(verdict: Any) -> dict[str, str]:
    return {check["name"]: check["outcome"] for check in verdict.checks}


def test_holds_when_the_sync_dependency_stalls_and_every_fix_restores() -> None:
    # Figures from a trial run: quick scenario, 50 users, pool of 5.
    verdict = decide(rec(rps=22, failure_rate=0.72, p99=4000))
    assert verdict.outcome == "holds"
    assert verdict.figures[STALL] == pytest.approx(22 * 0.28 / 1930, rel=0.05)
    assert verdict.figures["successful_throughput_ratio_max-concurrency_async-driver"] == pytest.approx(
        1100 / 1930, rel=0.05
    )
    assert verdict.figures["failure_rate_total_sync-dep"] == 0.72


def test_throughput_collapse_alone_is_a_stall() -> None:
    # No failures (a long pool timeout) but a fraction of the fixes' throughput.
    assert decide(rec(rps=200, failure_rate=0.0)).outcome == "holds"


def test_failures_alone_are_a_stall() -> None:
    # Fast answers, nearly all of them failures: the successful throughput collapsed.
    verdict = decide(rec(rps=1500, failure_rate=0.9))
    assert verdict.outcome == "holds" and outcomes(verdict)[STALL] == "clears"


def test_a_stall_that_lets_no_request_through_is_still_judged() -> None:
    # Every request failed: no successful throughput to divide by, so it counts as one request per phase.
    stalled = rec(rps=30, failure_rate=1.0) | {"measured_s": 4.0}
    verdict = decide(stalled)
    assert verdict.outcome == "holds"
    assert verdict.figures[STALL] == pytest.approx(0.25 / 1930, rel=0.05)


def test_partly_holds_when_a_fix_does_not_restore() -> None:
    verdict = decide(rec(rps=22, failure_rate=0.72), limited=rec(rps=40, failure_rate=0.72))  # stalls as well
    assert verdict.outcome == "partly holds"
    assert outcomes(verdict)["successful_throughput_ratio_max-concurrency_sync-dep"] == "misses"
    assert outcomes(verdict)["successful_throughput_ratio_in-endpoint_sync-dep"] == "clears"


def test_a_def_fix_slower_than_the_async_driver_still_restores() -> None:
    # 0.16x the async driver yet 49x the stalled variant: shown, not judged.
    verdict = decide(rec(rps=22, failure_rate=0.72), limited=rec(rps=300))
    assert verdict.outcome == "holds"
    assert verdict.figures["successful_throughput_ratio_max-concurrency_async-driver"] == pytest.approx(
        300 / 1930, rel=0.05
    )
    failing = decide(rec(rps=22, failure_rate=0.72), in_endpoint=rec(rps=1500, failure_rate=0.03))
    assert failing.outcome == "partly holds"
    assert outcomes(failing)["failure_rate_total_in-endpoint"] == "misses"


def test_does_not_hold_when_the_sync_dependency_keeps_up() -> None:
    # Against the claim: enough users to trigger it, yet no failures and comparable throughput.
    verdict = decide(rec(rps=1200, failure_rate=0.0, users=100))
    assert verdict.outcome == "does not hold"
    assert outcomes(verdict)[STALL] == "misses"
    # Without a stall the fixes have nothing to restore: they miss too.
    assert outcomes(verdict)["successful_throughput_ratio_in-endpoint_sync-dep"] == "misses"


def test_inconclusive_while_the_stall_interval_straddles() -> None:
    verdict = decide(rec(rps=480), jitter=WIDE)  # about 0.25x the async driver, blocks far apart
    assert verdict.outcome == "inconclusive"
    stall = next(c for c in verdict.checks if c["name"] == STALL)
    assert stall["outcome"] == "inconclusive" and stall["low"] < 0.25 < stall["high"]


def test_too_few_users_to_trigger_is_inconclusive_not_a_refutation() -> None:
    verdict = decide(rec(rps=1200, users=10))
    assert verdict.outcome == "inconclusive" and verdict.headline.startswith("control did not clear")
    assert verdict.checks[0]["outcome"] == "misses" and verdict.checks[0]["value"] == 10 - 45
    # With a bigger pool the bar rises with it.
    assert decide(rec(rps=1200, users=50), pool_size=20).outcome == "inconclusive"
    assert decide(rec(rps=1200, users=46)).outcome == "does not hold"
    # A load that cannot take every token says nothing about this stall, even when throughput is low.
    assert decide(rec(rps=22, failure_rate=0.72, users=10)).outcome == "inconclusive"


def test_inconclusive_when_a_variant_was_not_measured() -> None:
    verdict = decide(rec(), driver=rec(status="failed"))
    assert verdict.outcome == "inconclusive" and "async-driver" in verdict.headline


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
