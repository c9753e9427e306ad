"""The `workers_pool` pair (C19): its verdict rule on fixture records, and on real
servers: four uvicorn workers with a pool each, against a role's connection limit."""

from __future__ import annotations

import contextlib
import json
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from apps.workers_pool.pair import ROLE
from harness import analysis, runner
from harness.database import Database
from harness.pairs import discover
from harness.scenario import Scenario
from tests.conftest import blocks_of

PAIR = discover()["workers_pool"]
LIMIT = PAIR.knobs["connection_limit"]


def rec(failure_rate: float, peak: int, rps: float = 200) -> dict[str, Any]:
    return {"status": "ok", "rps": rps, "failure_rate": failure_rate, "p99_ms": 80, "peak_connections": peak}


def decide(over: dict[str, Any], within: dict[str, Any] | None = None) -> Any:
    records = {"over-limit": over, "within-limit": within or rec(0.0, LIMIT)}
    return PAIR.decide(records, PAIR.knobs, blocks_of(records, (0.9, 1.0, 1.1)))


def test_holds_when_the_workers_reach_the_limit_and_the_surplus_fails() -> None:
    assert decide(rec(0.3, LIMIT)).outcome == "holds"


def test_partly_holds_when_they_reach_the_limit_but_nothing_fails() -> None:
    assert decide(rec(0.0, LIMIT)).outcome == "partly holds"


def test_does_not_hold_below_the_limit_without_failures() -> None:
    assert decide(rec(0.0, LIMIT - 4)).outcome == "does not hold"


def test_a_single_failure_within_the_limit_makes_it_inconclusive() -> None:
    assert decide(rec(0.3, LIMIT), within=rec(0.0001, LIMIT)).outcome == "inconclusive"


def test_the_pools_ask_for_more_than_the_limit_and_the_shares_fit_it() -> None:
    workers, pool = PAIR.knobs["workers"], PAIR.knobs["pool_size"]
    assert workers > 1 and workers * pool > LIMIT >= workers * (LIMIT // workers)


def answers_at_once(port: int, path: str, n: int) -> list[tuple[int, str]]:
    """`n` requests released together; each one's status and its body's detail (599: no answer)."""
    answers = [(599, "")] * n
    start = threading.Barrier(n)

    def one(i: int) -> None:
        start.wait()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path.format(id=i + 1)}", timeout=20) as resp:
                answers[i] = (resp.status, "")
        except urllib.error.HTTPError as err:
            answers[i] = (err.code, str(json.loads(err.read()).get("detail")))
        except OSError:
            pass

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


@pytest.mark.slow
@pytest.mark.parametrize("name", ["over-limit", "within-limit"])
def test_workers_share_one_port_and_the_limit_decides_who_fails(db: Database, tmp_path: Path, name: str) -> None:
    variant, folder = PAIR.variant(name), tmp_path / name
    server, port = runner.start_server(PAIR, variant, PAIR.knobs, db, folder, Scenario(name="test", rows=1000))
    try:
        children = psutil.Process(server.pid).children(recursive=True)
        spawned = [p for p in children if "multiprocessing" in " ".join(p.cmdline())]
        assert len(spawned) >= PAIR.knobs["workers"], [p.cmdline() for p in children]
        # Bursts of 40 at once: every worker's pool is asked for all its connections.
        answers = [a for _ in range(4) for a in answers_at_once(port, variant.path, 40)]
        with contextlib.closing(db.connect()) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (ROLE,))
            held = cur.fetchone()[0]
    finally:
        server.stop()
    runner.settle(db, 0, 10)
    assert held <= LIMIT
    statuses = [status for status, _ in answers]
    assert set(statuses) <= {200, 503}, statuses
    if name == "over-limit":
        assert statuses.count(503) > 0, "past the limit some requests are refused"
        # Each refusal says it was the role's limit (SQLSTATE 53300), not a pool timeout.
        refused = [detail for status, detail in answers if status == 503]
        others = [d for d in refused if not ("too many connections" in d and d.endswith("(SQLSTATE 53300)"))]
        assert not others, f"{len(others)} of {len(refused)} refusals had another cause: {sorted(set(others))}"
    else:
        assert statuses == [200] * len(statuses)
    # Each worker wrote its own loop-lag file; the analysis reads them together.
    files = analysis.loop_lag_files(folder)
    assert len(files) >= 2 and all(f.name.startswith("loop_lag-") for f in files), list(folder.iterdir())


def test_one_warning_about_sockets_on_different_ports_is_listed_once(tmp_path: Path) -> None:
    # uvicorn's supervisor leaves its listening socket to the collector: the same warning
    # every sample, naming that sample's port.
    log = tmp_path / "server.log"
    log.write_text(
        "".join(
            f"sys:1: ResourceWarning: unclosed <socket.socket fd=3, laddr=('127.0.0.1', {port})>\n"
            for port in (50011, 44445)
        )
    )
    assert runner.server_warnings(log) == ["ResourceWarning: unclosed <socket.socket fd=3, laddr=('127.0.0.1', ...)>"]
