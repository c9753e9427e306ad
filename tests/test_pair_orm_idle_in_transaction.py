"""The `orm_idle_in_transaction` pair (C17): its verdict rule and ceilings on fixture
records, and on a real server the backends' state while the upstream answers."""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from harness import database, runner
from harness.database import Database
from harness.pairs import ANYIO_TOKENS, discover
from harness.scenario import Scenario
from tests.conftest import blocks_of
from tests.test_pair_stall import get_all_at_once

PAIR = discover()["orm_idle_in_transaction"]
IDLE = "mean_backends_idle_in_transaction_difference_held-across-call_commit-before-call"
RPS = "throughput_ratio_commit-before-call_held-across-call"


def rec(rps: float, idle: float, failure_rate: float = 0.0) -> dict[str, Any]:
    return {"status": "ok", "rps": rps, "mean_idle_in_transaction": idle, "failure_rate": failure_rate}


def decide(held: dict[str, Any], committed: dict[str, Any] | None = None) -> Any:
    records = {"held-across-call": held, "commit-before-call": committed or rec(190, 0.3)}
    return PAIR.decide(records, PAIR.knobs, blocks_of(records))


def outcomes(verdict: Any) -> dict[str, str]:
    return {check["name"]: check["outcome"] for check in verdict.checks}


def test_holds_when_the_held_sessions_sit_idle_in_transaction_and_cap_the_rate() -> None:
    verdict = decide(rec(70, 14.2))
    assert verdict.outcome == "holds"
    assert verdict.figures[IDLE] == pytest.approx(13.9, abs=0.5) and verdict.figures[RPS] == pytest.approx(190 / 70)


def test_partly_holds_when_idle_transactions_cost_no_throughput() -> None:
    # A pool as large as the worker threads: the transactions still idle, but nothing waits.
    verdict = decide(rec(185, 14.2))
    assert verdict.outcome == "partly holds"
    assert outcomes(verdict)[IDLE] == "clears" and outcomes(verdict)[RPS] != "clears"


def test_does_not_hold_when_nothing_sits_idle_in_transaction() -> None:
    assert decide(rec(185, 0.4)).outcome == "does not hold"


def test_inconclusive_when_committing_first_fails() -> None:
    assert decide(rec(70, 14.2), committed=rec(190, 0.3, failure_rate=0.2)).outcome == "inconclusive"


def test_the_ceilings_are_connections_and_threads_per_upstream_wait() -> None:
    assert PAIR.physics is not None
    ceilings = PAIR.physics(PAIR.knobs, 50, 2)
    per_s = 1000 / PAIR.knobs["upstream_ms"]
    assert ceilings["held-across-call"][0] == (PAIR.knobs["pool_size"] + PAIR.knobs["max_overflow"]) * per_s
    assert ceilings["commit-before-call"][0] == ANYIO_TOKENS * per_s
    assert PAIR.physics(PAIR.knobs, 10, 2)["commit-before-call"][0] == 10 * per_s


def idle_in_transaction_during_a_burst(db: Database, port: int, path: str, n: int, wait_s: float) -> int:
    """The backends idle in transaction while `n` requests wait on the upstream: the median
    of counts taken through the wait, so the instant between a read and its commit, which
    a busy machine can stretch, does not count as holding the transaction."""
    burst = threading.Thread(target=get_all_at_once, args=(port, path, n))
    burst.start()
    counts = []
    with contextlib.closing(db.connect()) as conn, conn.cursor() as cur:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            counts.append(database.backends_by_state(cur).get("idle in transaction", 0))
            time.sleep(0.05)
    burst.join()
    return int(statistics.median(counts))


@pytest.mark.slow
def test_only_the_held_session_sits_idle_in_transaction_through_the_call(db: Database, tmp_path: Path) -> None:
    knobs = PAIR.knobs | {"upstream_ms": 1000}
    slots = knobs["pool_size"] + knobs["max_overflow"]
    seen = {}
    for name in ("held-across-call", "commit-before-call"):
        variant, folder = PAIR.variant(name), tmp_path / name
        server, port = runner.start_server(PAIR, variant, knobs, db, folder, Scenario(name="test", rows=1000))
        try:
            seen[name] = idle_in_transaction_during_a_burst(db, port, variant.path, slots, 0.8)
        finally:
            server.stop()
        runner.settle(db, 0, 10)
    # Every one of the pool's connections holds a transaction through its call; committed
    # sessions are idle in transaction only between their query and commit (a few, at once).
    assert seen["held-across-call"] >= slots - 2 and seen["commit-before-call"] < seen["held-across-call"] / 2, seen
