"""The `orm_sessions` pair (C7 on SQLAlchemy): its verdict rule on fixture records, the
in-server pool instruments on a real engine, and the leak itself on a real server."""

from __future__ import annotations

import csv
import gc
import inspect
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import QueuePool

from apps import instruments
from apps.orm_sessions.pair import returns_shown, waiting_shown
from apps.timeouts.pair import failures_with_status
from harness import analysis, report, runner, store
from harness.database import Database
from harness.pairs import claims_index, discover
from harness.procs import machine_load_lock
from harness.scenario import Scenario
from tests.conftest import blocks_of, write_manifest, write_variant
from tests.test_pair_stall import get_all_at_once
from tests.test_warmup import _locust, _tallies

PAIR = discover()["orm_sessions"]
FAILED = "failure_rate_total_never-closed"
RETURNED = "share_of_lent_connections_returned_to_the_pool_total_never-closed"


def counters(lent: int, close: int = 0, refcount: int = 0, cyclic_gc: int = 0) -> dict[str, int]:
    return {
        "pool_checkouts": lent,
        "pool_checkins_close": close,
        "pool_checkins_refcount": refcount,
        "pool_checkins_cyclic_gc": cyclic_gc,
    }


def rec(rps: float = 900, failure_rate: float = 0.0, **counts: Any) -> dict[str, Any]:
    lent = counts.pop("lent", 9000)
    return {
        "status": "ok",
        "rps": rps,
        "requests": 1000,
        "failure_rate": failure_rate,
        "p50_ms": 40,
        "counters": counters(lent, **counts),
    }


def closed_rec() -> dict[str, Any]:
    return rec(close=9000)


def decide(never_closed: dict[str, Any], closed: dict[str, Any] | None = None) -> Any:
    records = {"never-closed": never_closed, "closed": closed or closed_rec(), "with-session": closed_rec()}
    return PAIR.decide(records, PAIR.knobs, blocks_of(records))


def outcomes(verdict: Any) -> dict[str, str]:
    return {check["name"]: check["outcome"] for check in verdict.checks}


def test_holds_when_the_pool_runs_dry_and_keeps_its_connections_lent() -> None:
    # As on a real server: 15 connections lent and never returned, every later request timed out.
    verdict = decide(rec(rps=16, failure_rate=0.99, lent=16, cyclic_gc=1))
    assert verdict.outcome == "holds"
    assert verdict.figures[FAILED] == 0.99
    assert verdict.figures[RETURNED] == pytest.approx(1 / 16)


def test_partly_holds_when_a_collector_returns_the_connections_but_requests_still_fail() -> None:
    verdict = decide(rec(rps=200, failure_rate=0.3, lent=3000, cyclic_gc=2900))
    assert verdict.outcome == "partly holds"
    assert outcomes(verdict)[FAILED] == "clears" and outcomes(verdict)[RETURNED] == "misses"


def test_does_not_hold_when_the_connections_come_back_in_time() -> None:
    # Reference counting (no cycle) would return each connection as its request ends.
    verdict = decide(rec(failure_rate=0.0, refcount=9000))
    assert verdict.outcome == "does not hold"


def test_inconclusive_when_a_closed_session_fails_or_loses_connections() -> None:
    leaking = rec(rps=16, failure_rate=0.99, lent=16)
    assert decide(leaking, closed=rec(failure_rate=0.2, close=9000)).outcome == "inconclusive"
    assert decide(leaking, closed=rec(close=100)).outcome == "inconclusive"


def test_a_window_that_answered_no_request_measured_no_failure_rate() -> None:
    # Every request waited out a pool timeout longer than the window: 0 answered is not 0% failed.
    verdict = decide(rec(rps=0, failure_rate=0.0, lent=16) | {"requests": 0})
    assert verdict.outcome == "inconclusive" and "never-closed not measured" in verdict.headline


def test_inconclusive_without_the_pool_counters() -> None:
    verdict = decide(rec(rps=16, failure_rate=0.99) | {"counters": None})
    assert verdict.outcome == "inconclusive"


def shown_values(verdict: Any) -> dict[str, float]:
    return {figure["name"]: figure["value"] for figure in verdict.shown}


def test_the_section_accounts_for_every_lent_connection() -> None:
    # 16 lent: none back by reference counting, 1 by the collector after 120 ms, 15 never.
    leaking = rec(rps=16, failure_rate=0.99, lent=16, cyclic_gc=1)
    leaking["counters"]["pool_held_ms_cyclic_gc"] = 120
    refcount, by_gc, held, never, lent = (f.key for f in returns_shown("never-closed", "checkins"))
    values = shown_values(decide(leaking))
    assert (values[refcount], values[by_gc], values[held], values[never], values[lent]) == (0, 1, 120, 15, 16)


def test_a_return_path_nothing_took_reads_zero_not_missing() -> None:
    # Never connects: the counts exist before the first checkout.
    engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    try:
        found = instruments.PoolWatch(engine.pool).counts()
    finally:
        engine.dispose()
    causes = ("close", "refcount", "cyclic_gc")
    names = ["pool_checkouts", *(f"{kind}_{cause}" for kind in ("pool_checkins", "pool_detached") for cause in causes)]
    assert {name: found.get(name) for name in names} == dict.fromkeys(names, 0)


def test_the_wait_is_shown_against_pool_timeout() -> None:
    timeout_ms = PAIR.knobs["pool_timeout_ms"]
    leaking = rec(rps=16, failure_rate=0.99, lent=16) | {"p50_ms": timeout_ms * 1.02, "max_ms": timeout_ms * 2.1}
    per_timeout, slowest = waiting_shown("never-closed", PAIR.knobs)
    values = shown_values(decide(leaking))
    assert values[per_timeout.key] == pytest.approx(1.02, rel=0.05)  # blocks jitter the p50 by a few percent
    assert values[slowest.key] == timeout_ms * 2.1


def test_the_knobs_are_create_engines_default_pool() -> None:
    defaults = inspect.signature(QueuePool.__init__).parameters
    assert PAIR.knobs["pool_size"] == defaults["pool_size"].default
    assert PAIR.knobs["max_overflow"] == defaults["max_overflow"].default
    # Short, so a dry pool fails inside a sample; SQLAlchemy's own default is 30 s.
    assert PAIR.knobs["pool_timeout_ms"] < defaults["timeout"].default * 1000


def test_rule_thresholds_follow_the_knobs() -> None:
    described = PAIR.how_decided({"pool_timeout_ms": 1500})
    assert "1.5 s here" in described and "3 s here" in PAIR.how_decided({})


@pytest.mark.slow
def test_instruments_tell_close_from_reference_counting_from_the_cyclic_collector(db: Database) -> None:
    engine = create_engine(make_url(db.variant_dsn).set(drivername="postgresql+psycopg"))
    watch = instruments.PoolWatch(engine.pool)
    try:
        with engine.connect() as conn:  # closed by the code
            conn.execute(text("SELECT 1"))
        instruments.GC.install()
        was_enabled = gc.isenabled()
        gc.disable()  # only the explicit collection below may free what sits in a cycle
        try:
            # The pool's own proxy is in no cycle: freed when its last name goes. (An
            # unclosed engine.connect() is not: its transaction refers back to it.)
            dropped = engine.raw_connection()
            dropped.cursor().execute("SELECT 1")
            del dropped
            session = Session(engine)
            session.execute(text("SELECT 1"))
            del session
            assert watch.counts().get("pool_checkins_cyclic_gc", 0) == 0, "a Session is not freed by refcount"
            gc.collect()
        finally:
            if was_enabled:
                gc.enable()
        found = watch.counts()
    finally:
        engine.dispose()
    assert found["pool_checkouts"] == 3
    assert (found["pool_checkins_close"], found["pool_checkins_refcount"], found["pool_checkins_cyclic_gc"]) == (
        1,
        1,
        1,
    )
    assert watch.returned_by_gc() == 2 and watch.sizes() == (0, -5, 0)  # disposed: nothing lent, none opened


def loop_rows(folder: Path) -> list[dict[str, str]]:
    with open(store.raw(folder, "loop_lag.csv")) as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_a_session_never_closed_keeps_the_pool_dry_and_a_closed_one_does_not(db: Database, tmp_path: Path) -> None:
    knobs = PAIR.knobs | {"pool_timeout_ms": 1000}
    slots = knobs["pool_size"] + knobs["max_overflow"]
    found: dict[str, Any] = {}
    for name in ("never-closed", "closed"):
        variant, folder = PAIR.variant(name), tmp_path / name
        server, port = runner.start_server(PAIR, variant, knobs, db, folder, Scenario(name="test", rows=1000))
        try:
            statuses = [s for _ in range(2) for s in get_all_at_once(port, variant.path, 50)]
            found[name] = (statuses, runner.read_counters(port) or {})
        finally:
            server.stop()
        runner.settle(db, 0, 10)
        found[name] += (loop_rows(folder),)
    statuses, counts, rows = found["never-closed"]
    assert set(statuses) <= {200, 503} and statuses.count(503) >= len(statuses) - 2 * slots
    assert counts["pool_timeouts"] == statuses.count(503)
    assert counts["pool_checkins_close"] == 0
    assert counts["pool_checkins_refcount"] == 0, "a dropped Session sits in a reference cycle"
    lent_now = counts["pool_checkouts"] - counts.get("pool_checkins_cyclic_gc", 0)
    assert lent_now >= slots - 1, counts
    assert max(int(r["pool_checked_out"]) for r in rows if r["pool_checked_out"]) == slots
    statuses, counts, rows = found["closed"]
    assert statuses == [200] * len(statuses)
    assert counts["pool_checkins_close"] == counts["pool_checkouts"] >= len(statuses)
    assert "pool_timeouts" not in counts
    assert max(int(r["pool_overflow"]) for r in rows if r["pool_overflow"]) <= knobs["max_overflow"]


@pytest.mark.slow
def test_the_load_generator_records_the_pool_timeouts_message(db: Database, tmp_path: Path) -> None:
    knobs = PAIR.knobs | {"pool_timeout_ms": 500}
    variant = PAIR.variant("never-closed")
    server, port = runner.start_server(PAIR, variant, knobs, db, tmp_path, Scenario(name="test", rows=1000))
    try:
        with machine_load_lock(lambda _: None):
            # 30 users against 15 connections that never come back: most requests time out.
            _locust(tmp_path, port, variant.path, "--bench-timeout", "5", "--bench-duration", "1.5", users=30)
    finally:
        server.stop()
    runner.settle(db, 0, 10)
    [tally] = _tallies(tmp_path)
    kinds = [[analysis.failure_kind(error), n] for error, n in tally["errors"]]
    pool = f"QueuePool limit of size {knobs['pool_size']} overflow {knobs['max_overflow']} reached"
    timed_out = sum(n for kind, n in kinds if pool in kind)
    assert tally["failures"] > 0 and timed_out == tally["failures"], kinds
    # The status stays where readers of failure kinds find it (the timeouts pair counts 504s so).
    assert failures_with_status({"failure_kinds": kinds}, 503) == timed_out


def test_pool_and_idle_in_transaction_figures_come_from_the_raw_files(tmp_path: Path) -> None:
    folder = write_variant(tmp_path, "orm_sessions", "never-closed", "bad", backends=[15] * 20)
    header = ["time", "lag_ms", "threads_busy", *instruments.LOOP_FIELDS[3:]]
    rows = [[1000 + i * 0.5, 1.0, 40, 15 if i else 3, 10, 0, i, 100 + i, 10, 1 + i // 10] for i in range(20)]
    with open(folder / "loop_lag.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    with open(folder / "connections.csv") as handle:
        lines = list(csv.reader(handle))
    for line in lines[2:]:  # every sampled backend idle in transaction, as a leaked session's
        line[4], line[2] = line[2], "0"
    with open(folder / "connections.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(lines)
    record = analysis.summarize_sample(folder)
    assert record["pool_checked_out_peak"] == 15 and record["pool_checked_out_mean"] == pytest.approx(14.4)
    assert record["pool_overflow_peak"] == 10
    assert record["pool_returned_by_gc"] == 19 and record["gc_full_collections"] == 1
    assert record["peak_idle_in_transaction"] == 15


def write_pooled(folder: Path, checked_out: int) -> None:
    """Give a fixture sample the instruments' pool columns, `checked_out` throughout."""
    header = ["time", "lag_ms", "threads_busy", *instruments.LOOP_FIELDS[3:]]
    rows = [[1000 + i * 0.5, 1.0, 40, checked_out, checked_out - 5, 0, 0, i, 0, 0] for i in range(20)]
    with open(folder / "loop_lag.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])


def test_the_report_shows_the_pool_table_and_chart_row(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_manifest(run_dir, {"orm_sessions": dict(PAIR.knobs)})
    for block in (1, 2, 3):
        for name, role, checked_out in (
            ("never-closed", "bad", 15),
            ("closed", "good", 6),
            ("with-session", "good", 6),
        ):
            write_pooled(write_variant(run_dir, "orm_sessions", name, role, repeat=block), checked_out)
    text = report.rebuild(run_dir, write_top_report=False).read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `never-closed` | 15.0 / 15 |"))
    assert "| 10 |" in row  # overflow peak: 15 checked out = 5 + 10 overflow
    # Every pair's section has the backends by state: the fixture's five are all active.
    assert "**Backends by state** (pg_stat_activity every 0.5 s, mean / peak):" in text
    assert "| `never-closed` | 5.0 / 5 | 0.0 / 0 | 0.0 / 0 | 5.0 / 5 |" in text
    chart = run_dir / "charts" / "orm_sessions.png"
    assert chart.is_file() and chart.read_bytes()[:4] == b"\x89PNG"


def test_references_outside_the_known_projects_link_to_their_thread() -> None:
    assert report.reference_link("hasadna/open-bus#387") == (
        "[hasadna/open-bus#387](https://github.com/hasadna/open-bus/issues/387)"
    )
    assert report.reference_link("https://sqlalche.me/e/21/3o7r") == "https://sqlalche.me/e/21/3o7r"


def test_c7_is_decided_on_sqlalchemy_with_the_raw_driver_row_beside_it(tmp_path: Path) -> None:
    assert claims_index(discover())["C7"] == ["orm_sessions", "orm_async_sessions", "sessions"]
    run_dir = tmp_path / "run"
    raw = discover()["sessions"]
    write_manifest(run_dir, {"orm_sessions": dict(PAIR.knobs), "sessions": dict(raw.knobs)})
    for pair in (PAIR, raw):
        for variant in pair.variants:
            write_variant(run_dir, pair.name, variant.name, variant.role)
    text = report.rebuild(run_dir, write_top_report=False).read_text()
    rows = [line for line in text.splitlines() if line.startswith("| C7: ")]
    assert [row.rsplit("[`", 1)[1].split("`")[0] for row in rows] == ["orm_sessions", "sessions"]
