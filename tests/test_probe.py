"""`bench.py probe`: the stack watchdog, the wrapper around a user's app, bad input, and
short probes of the test app (tests/probe_example/) and of the example apps users read
(examples/: a SQLModel app with a problem, and the same app without it)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
import pytest
from packaging.requirements import Requirement

from apps.instruments import StackWatchdog
from harness import analysis, database, probe, probe_report, store
from harness.database import Database
from harness.pairs import ROOT, discover
from harness.procs import ManagedProcess, free_port, http_ok
from tests.conftest import bench_here

EXAMPLE = ROOT / "tests" / "probe_example"
EXAMPLE_APP = EXAMPLE / "app.py"
EXAMPLES = ROOT / "examples"


def line_of(path: Path, marker: str) -> int:
    """The line number of the one line holding `marker`."""
    found = [n for n, line in enumerate(path.read_text().splitlines(), 1) if marker in line]
    assert len(found) == 1, f"{marker!r} must be on exactly one line of {path}"
    return found[0]


BLOCKING_LINE = line_of(EXAMPLE_APP, "# the blocking line")


def bench(*args: str, timeout: float = 180, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "bench.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=None if env is None else os.environ | env,
    )


def assert_one_line_exit_2(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr, result.stderr


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that name `text` (a run's unique folder)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info.get("cmdline") or [])
        if text in cmdline and proc.pid != psutil.Process().pid:
            found.append(cmdline)
    return found


# --- the watchdog, in this process ----------------------------------------------------


def _stalls(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _in_main(stall: dict[str, Any]) -> bool:
    """Whether the loop was inside this file's `main` coroutine when it stalled."""
    return any(frame[0] == __file__ and frame[2] == "main" for _, stack in stall["samples"] for frame in stack)


def test_watchdog_captures_the_line_that_blocked_the_loop_and_the_lag_it_caused(tmp_path: Path) -> None:
    out = tmp_path / "stalls.jsonl"

    async def main() -> None:
        watchdog = StackWatchdog(str(out), threshold_ms=20)
        watchdog.start()
        await asyncio.sleep(0.05)
        for _ in range(3):
            time.sleep(0.12)  # blocks the loop here
            await asyncio.sleep(0.05)  # the heartbeat comes back and ends the stall
        watchdog.stop()

    asyncio.run(main())
    # Only stalls inside main: a busy machine may delay the idle loop's own wake-ups too.
    stalls = [s for s in _stalls(out) if _in_main(s)]
    assert len(stalls) == 3
    here = line_of(Path(__file__), "# blocks the loop" + " here")  # split: this line must not match
    for stall in stalls:
        count, stack = stall["samples"][0]
        assert count >= 2  # sampled more than once while it lasted
        assert stack[0][:3] == [__file__, here, "main"]
        assert 100 <= stall["lag_ms"] <= 200  # 120 ms of blocking, less the heartbeat's period


def test_watchdog_stays_quiet_on_a_loop_that_only_awaits(tmp_path: Path) -> None:
    out = tmp_path / "stalls.jsonl"

    async def main() -> dict[str, Any]:
        watchdog = StackWatchdog(str(out), threshold_ms=20)
        watchdog.start()
        for _ in range(20):
            time.sleep(0.002)  # well under the threshold
            await asyncio.sleep(0.01)
        watchdog.stop()
        return watchdog.summary()

    summary = asyncio.run(main())
    assert [s for s in _stalls(out) if _in_main(s)] == []
    assert summary["stalls_captured"] == len(_stalls(out))


# --- what a run's stored files show --------------------------------------------------


def _sample_folder(run_dir: Path, sample: str, stalls: list[dict[str, Any]], info: dict[str, Any]) -> None:
    folder = run_dir / "samples" / sample
    folder.mkdir(parents=True)
    (folder / "phases.json").write_text(json.dumps({"measure_start": 1000.0, "load_stop": 1010.0}))
    (folder / "stalls.jsonl").write_text("".join(json.dumps(s) + "\n" for s in stalls) + '{"cut short')
    store.write_json(folder / "server_info.json", info)


def test_stalls_are_credited_to_the_apps_own_line_not_the_library_it_called(tmp_path: Path) -> None:
    app_dir = tmp_path / "project"
    (app_dir / "app").mkdir(parents=True)
    (app_dir / "app" / "crud.py").write_text("def get_user(db):\n    return db.execute('SELECT 1')\n")
    venv_lib = str(app_dir / ".venv" / "lib" / "python3.11" / "site-packages")
    driver = [f"{venv_lib}/psycopg/cursor.py", 732, "execute"]
    in_app = [str(app_dir / "app" / "crud.py"), 2, "get_user"]
    route = [str(app_dir / "app" / "main.py"), 10, "read_user"]
    other = [str(app_dir / "app" / "main.py"), 20, "slow"]
    stalls = [
        {"time": 1001.0, "lag_ms": 80.0, "samples": [[3, [driver, in_app, route]], [1, [route]]]},
        {"time": 1002.0, "lag_ms": 120.0, "samples": [[4, [driver, in_app, route]]]},
        {"time": 1003.0, "lag_ms": 30.0, "samples": [[1, [other]]]},
        {"time": 999.0, "lag_ms": 5000.0, "samples": [[9, [other]]]},  # start-up, before the window
    ]
    _sample_folder(tmp_path / "run", "closed-u10-b1", stalls, {"library_paths": [venv_lib], "watchdog": {}})
    found = probe.stall_sites(tmp_path / "run", [{"sample": "closed-u10-b1"}], app_dir)  # type: ignore[list-item]
    assert found["captured"] == 3
    top, second = found["sites"]
    assert (top["where"], top["function"], top["in_app"]) == ("app/crud.py:2", "get_user", True)
    assert top["code"] == "return db.execute('SELECT 1')"
    assert top["blocked_in"].endswith("psycopg/cursor.py:732 execute")
    assert (top["stalls"], top["lag_ms_total"], top["lag_ms_max"]) == (2, 200.0, 120.0)
    assert (second["where"], second["stalls"]) == ("app/main.py:20", 1)


def _summary(**overrides: Any) -> dict[str, Any]:
    level = {
        "status": "ok", "mode": "closed", "users": 10, "sample": "closed-u10-b1", "rps": 500.0, "p50_ms": 5.0,
        "p99_ms": 20.0, "failures": 0, "failure_rate": 0.0, "failure_kinds": [], "loop_lag_p99_ms": 2.0,
        "threads_busy_peak": 3, "threads_busy_mean": 1.0, "peak_connections": 5,
    }  # fmt: skip
    summary: dict[str, Any] = {
        "variants": [level | overrides.pop("level", {})],
        "server": {"thread_tokens": 40},
        "stalls": {"captured": 0, "missed": 0, "sites": []},
        "by_sample": {"closed-u10-b1": {"pools": [], "idle_in_transaction_peak": 0}},
        "knee": {"users": 10, "rps": 500.0, "p99_ms": 20.0},
    }
    return summary | overrides


MANIFEST = {"database": {"max_connections": "100"}, "target": {"p99_target_ms": 100.0}}


def test_a_healthy_app_gets_a_clean_bill_with_the_knee_as_information() -> None:
    findings = probe_report.diagnose(_summary(), MANIFEST)
    assert [f["kind"] for f in findings] == ["knee"]
    assert not findings[0]["problem"]


def test_stalls_inside_garbage_collections_are_information_not_a_blocking_call() -> None:
    # The watchdog caught the loop inside the instruments' gc callback: the collector paused it.
    collection = {
        "file": str(ROOT / "apps" / "instruments.py"), "where": "apps/instruments.py:68", "function": "_callback",
        "code": "def _callback(self, phase, info):", "in_app": False, "blocked_in": "apps/instruments.py:68 _callback",
        "stalls": 6, "lag_ms_total": 320.0, "lag_ms_max": 66.0, "stack": ["apps/instruments.py:68 _callback"],
    }  # fmt: skip
    summary = _summary(level={"loop_lag_p99_ms": 70.0}, stalls={"captured": 6, "missed": 0, "sites": [collection]})
    findings = {f["kind"]: f for f in probe_report.diagnose(summary, MANIFEST)}
    assert [kind for kind, f in findings.items() if f["problem"]] == []
    assert "6 of the 6 stalls" in findings["gc pauses"]["text"]
    # A blocking call beside them still is one.
    blocking = collection | {"file": "/app/crud.py", "where": "app/crud.py:2", "function": "get_user", "in_app": True}
    summary["stalls"] = {"captured": 46, "missed": 0, "sites": [blocking | {"stalls": 40}, collection]}
    findings = {f["kind"]: f for f in probe_report.diagnose(summary, MANIFEST)}
    assert findings["loop stalls"]["problem"] and "`get_user` at app/crud.py:2" in findings["loop stalls"]["text"]
    assert not findings["gc pauses"]["problem"]


RUNNERS = "/usr/lib/python3.11/asyncio/runners.py:118"
# The healthy example at 50 users: the loop inside uvloop's C run, no Python frame of its own.
LOOP_WAIT = {
    "file": RUNNERS.split(":")[0], "where": RUNNERS, "function": "run", "in_app": False,
    "code": "return self._loop.run_until_complete(task)", "blocked_in": f"{RUNNERS} run", "stalls": 11,
    "lag_ms_total": 521.0, "lag_ms_max": 88.0, "stack": [f"{RUNNERS} run", "/venv/uvicorn/server.py:62 run"],
}  # fmt: skip


def test_a_cpu_bound_server_past_its_knee_waits_for_the_gil_and_that_is_information() -> None:
    # 40 threads busy and the loop late with nothing of its own on its stack, at a core's worth of CPU.
    past_knee = {"users": 50, "sample": "closed-u50-b1", "loop_lag_p99_ms": 53.0, "threads_busy_peak": 40,
                 "threads_busy_mean": 36.2, "server_cpu_pct": 101.8}  # fmt: skip
    summary = _summary(level=past_knee, stalls={"captured": 13, "missed": 0, "sites": [LOOP_WAIT]})
    findings = {f["kind"]: f for f in probe_report.diagnose(summary, MANIFEST)}
    assert [kind for kind, f in findings.items() if f["problem"]] == []
    assert findings["loop waits"]["text"].startswith("11 of the 13 stalls the watchdog caught were in the loop's own")
    assert "but the server used 102% CPU" in findings["worker threads"]["text"]
    # The same threads busy with CPU to spare were waiting on something: a problem, with its pattern.
    waiting = _summary(level=past_knee | {"server_cpu_pct": 35.0})
    threads = {f["kind"]: f for f in probe_report.diagnose(waiting, MANIFEST)}["worker threads"]
    assert threads["problem"] and threads["patterns"] == ["stall", "def_endpoint"]
    assert "while the server used 35% CPU" in threads["text"]
    # A machine whose CPUs are all in use (the server at 70% of one of them) is CPU-bound too.
    crowded = _summary(level=past_knee | {"server_cpu_pct": 70.0, "machine_cpu_pct": 190.0})
    machine = MANIFEST | {"environment": {"cpu_count": 2}}
    threads = {f["kind"]: f for f in probe_report.diagnose(crowded, machine)}["worker threads"]
    assert not threads["problem"] and "used 190% of 200% CPU" in threads["text"]


def test_a_loop_wait_beside_a_blocking_call_leaves_the_call_a_problem() -> None:
    blocking = LOOP_WAIT | {"file": "/app/crud.py", "where": "app/crud.py:2", "function": "get_user", "in_app": True,
                            "blocked_in": "/venv/psycopg/connection.py:495 wait", "stalls": 30}  # fmt: skip
    summary = _summary(level={"loop_lag_p99_ms": 60.0}, stalls={"captured": 41, "missed": 0,
                                                                "sites": [blocking, LOOP_WAIT]})  # fmt: skip
    findings = {f["kind"]: f for f in probe_report.diagnose(summary, MANIFEST)}
    assert findings["loop stalls"]["problem"] and "30 of 41 were in `get_user`" in findings["loop stalls"]["text"]
    assert not findings["loop waits"]["problem"]
    # A library's own frame innermost (not the loop's entry) is a blocking call, not a wait.
    assert not analysis.is_loop_wait(blocking | {"where": "/venv/psycopg/connection.py:495"})
    assert not analysis.is_loop_wait(LOOP_WAIT | {"blocked_in": f"{RUNNERS} main"})


def test_diagnosis_names_the_blocking_line_the_exhausted_pool_and_the_busy_threads() -> None:
    site = {
        "where": "app/crud.py:2", "function": "get_user", "code": "db.execute()", "in_app": True,
        "blocked_in": "/venv/site-packages/psycopg/cursor.py:732 execute", "stalls": 40, "lag_ms_total": 2400.0,
        "lag_ms_max": 90.0, "stack": ["/venv/site-packages/psycopg/cursor.py:732 execute", "app/crud.py:2 get_user"],
    }  # fmt: skip
    summary = _summary(
        level={"loop_lag_p99_ms": 85.0, "threads_busy_peak": 40, "failures": 7, "failure_rate": 0.01,
               "failure_kinds": [["QueuePool limit of size 5 overflow 10 reached", 7]]},
        stalls={"captured": 50, "missed": 2, "sites": [site]},
        by_sample={"closed-u10-b1": {"pools": [{"class": "QueuePool", "size": 5, "max_overflow": 10}],
                                     "pool_checked_out_peak": 15, "idle_in_transaction_peak": 3,
                                     "idle_in_transaction_mean": 2.4, "idle_in_transaction_held_share": 0.9,
                                     "idle_in_transaction_oldest_ms": 210.0}},
    )  # fmt: skip
    findings = {f["kind"]: f for f in probe_report.diagnose(summary, MANIFEST)}
    assert {"loop stalls", "worker threads", "pool", "idle in transaction", "failures", "knee"} <= set(findings)
    stall = findings["loop stalls"]
    assert "`get_user` at app/crud.py:2" in stall["text"] and "40 of 50" in stall["text"]
    assert stall["patterns"] == ["deps", "blocking"]  # a driver in the stack: the sync-dependency pattern
    assert "15 of its 15 connections checked out at peak" in findings["pool"]["text"]
    assert "7 checkouts timed out" in findings["pool"]["text"]
    assert findings["pool"]["patterns"][0] == "orm_pool_threads"  # a sync pool: checked out from worker threads
    held = findings["idle in transaction"]["text"]
    assert "In 90% of the samples at 10 users a backend had sat `idle in transaction` for 100 ms or more" in held
    assert findings["idle in transaction"]["patterns"][0] == "orm_idle_in_transaction"
    assert findings["failures"]["patterns"] == ["orm_pool_threads"]
    assert "max_connections" not in findings


def test_a_pool_that_touches_its_limit_once_is_information_and_one_that_stays_there_a_problem() -> None:
    def pool_finding(share: float) -> dict[str, Any]:
        by_sample = {"closed-u10-b1": {"pools": [{"class": "QueuePool", "size": 5, "max_overflow": 10}],
                                       "pool_checked_out_peak": 15, "pool_at_limit_share": share}}  # fmt: skip
        findings = {f["kind"]: f for f in probe_report.diagnose(_summary(by_sample=by_sample), MANIFEST)}
        return findings["pool"]

    burst = pool_finding(0.0024)  # one monitor sample in 423, as a healthy app measured at 350 req/s
    assert not burst["problem"] and "at its limit for 0.2% of the window" in burst["text"]
    queued = pool_finding(0.4)
    assert queued["problem"] and "at its limit for 40% of the window" in queued["text"]


def test_an_open_loop_behind_its_rate_is_shown_with_its_backlog_but_not_judged() -> None:
    # 25 users in flight on a 15-connection pool: the generator's backlog, not the app at its rate.
    opened = {"mode": "open", "users": 25, "rate": 500.0, "sample": "open-rate500-u25-b1", "threads_busy_peak": 40}
    exhausted = {"pools": [{"class": "QueuePool", "size": 5, "max_overflow": 10}], "pool_checked_out_peak": 15,
                 "pool_at_limit_share": 0.6}  # fmt: skip

    def findings(achieved: float) -> dict[str, Any]:
        summary = _summary(level=opened | {"achieved_rps": achieved}, by_sample={opened["sample"]: exhausted})
        return {f["kind"]: f for f in probe_report.diagnose(summary, MANIFEST)}

    behind = findings(400.0)  # 80% of its rate
    assert [kind for kind, f in behind.items() if f["problem"]] == []
    assert "open loop at 500 req/s achieved 400 req/s" in behind["open loop"]["text"]
    assert "25 users" in behind["open loop"]["text"]
    held = findings(490.0)  # 98%: the app at its rate, so its exhausted pool and busy threads are its own
    assert held["pool"]["problem"] and held["worker threads"]["problem"] and "open loop" not in held
    table = probe_report._levels_section(_summary(level=opened | {"achieved_rps": 400.0, "ping_p99_ms": 3.0}))
    assert "| open loop at 500 req/s (fell behind) |" in "\n".join(table)


def test_an_open_loop_that_falls_behind_runs_once_more_at_half_its_rate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    capacity = 300.0  # the fake app's ceiling, below the closed sweep's knee

    def measure(run: Any, db: Any, env: Any, sample: Any, progress: Any, first: bool) -> dict[str, Any]:
        record = {"status": "ok", "sample": sample.id, "mode": sample.mode, "users": sample.users, "rate": sample.rate}
        if sample.mode == "closed":
            return record | {"rps": 150.0 * sample.users, "p99_ms": 10.0}
        achieved = min(sample.rate, capacity)
        return record | {"rps": achieved, "achieved_rps": achieved, "p99_ms": 10.0}

    monkeypatch.setattr(probe, "measure", measure)
    monkeypatch.setattr(probe, "write_summary", lambda run, manifest: None)
    target = probe.Target(app="app:app", app_dir=tmp_path, paths=("/",), python=sys.executable, python_given=False,
                          levels=(1, 4))  # fmt: skip
    run = probe.ProbeRun(target, tmp_path, [])
    manifest: dict[str, Any] = {}
    assert probe._measure_all(run, None, {}, manifest)  # type: ignore[arg-type]
    closed = [r for r in run.samples if r["mode"] == "closed"]
    rate, _ = probe.knee_rate(closed, target.p99_target_ms)  # type: ignore[arg-type]
    assert rate > capacity / analysis.RATE_SHARE_LIMIT  # so the first open loop falls behind
    assert [r["rate"] for r in run.samples if r["mode"] == "open"] == [rate, round(rate / 2, 1)]
    assert manifest["open_loop"]["retry"] == {
        "rate": round(rate / 2, 1), "why": f"50% of {rate:g} req/s, where it achieved {capacity:.0f}",
    }  # fmt: skip
    # An open loop that holds its rate runs once.
    capacity = 0.951 * rate
    run, manifest = probe.ProbeRun(target, tmp_path, []), {}
    probe._measure_all(run, None, {}, manifest)  # type: ignore[arg-type]
    assert [r["rate"] for r in run.samples if r["mode"] == "open"] == [rate] and "retry" not in manifest["open_loop"]


def _site(where: str, function: str, in_app: bool, stalls: int, stack: list[str] | None = None) -> dict[str, Any]:
    return {
        "file": f"/project/{where.split(':')[0]}", "where": where, "function": function, "code": "", "in_app": in_app,
        "blocked_in": where, "stalls": stalls, "lag_ms_total": 40.0 * stalls, "lag_ms_max": 60.0,
        "stack": stack or [f"{where} {function}"],
    }  # fmt: skip


def test_loop_stalls_name_the_apps_own_site_before_a_more_frequent_library_one() -> None:
    library = _site("/venv/site-packages/logging_lib/handlers.py:88", "emit", False, 30)
    route = _site("app/main.py:12", "read_item", True, 8)
    summary = _summary(level={"loop_lag_p99_ms": 70.0}, stalls={"captured": 38, "missed": 0, "sites": [library, route]})
    stall = next(f for f in probe_report.diagnose(summary, MANIFEST) if f["kind"] == "loop stalls")
    assert "8 of 38 were in `read_item` at app/main.py:12" in stall["text"]
    text = stall["text"]
    assert "More stalls (30) were caught in library code at /venv/site-packages/logging_lib/handlers.py:88" in text
    # No site in the app: the library's, and the finding says so.
    summary["stalls"]["sites"] = [library]
    stall = next(f for f in probe_report.diagnose(summary, MANIFEST) if f["kind"] == "loop stalls")
    text = stall["text"]
    assert "30 of 38 were in `emit`" in text and "No stack the watchdog caught has a frame in the app" in text


def test_a_sync_session_on_the_loop_matches_the_orm_async_endpoint_pair() -> None:
    stack = ["/venv/site-packages/psycopg/cursor.py:113 execute",
             "/venv/site-packages/sqlalchemy/orm/session.py:2351 execute", "app/main.py:12 read_item"]  # fmt: skip
    summary = _summary(
        level={"loop_lag_p99_ms": 70.0},
        stalls={"captured": 9, "missed": 0, "sites": [_site("app/main.py:12", "read_item", True, 9, stack)]},
    )
    stall = next(f for f in probe_report.diagnose(summary, MANIFEST) if f["kind"] == "loop stalls")
    assert stall["patterns"] == ["orm_async_endpoint", "deps", "blocking"]


def test_idle_in_transaction_is_a_finding_when_held_not_when_caught_between_statements() -> None:
    def idle(held_share: float) -> list[str]:
        extra = {"pools": [], "idle_in_transaction_peak": 4, "idle_in_transaction_mean": 1.5,
                 "idle_in_transaction_held_share": held_share}  # fmt: skip
        summary = _summary(by_sample={"closed-u10-b1": extra})
        return [f["kind"] for f in probe_report.diagnose(summary, MANIFEST) if f["problem"]]

    # Many backends between a query and its commit, none for long: the Pool section shows the peak.
    assert idle(0.1) == []
    assert idle(probe_report.HELD_TRANSACTION_SHARE) == ["idle in transaction"]


def test_crowded_max_connections_matches_the_workers_pool_pair() -> None:
    summary = _summary(level={"peak_connections": 90})
    found = next(f for f in probe_report.diagnose(summary, MANIFEST) if f["kind"] == "max_connections")
    assert found["patterns"][0] == "workers_pool"


def _anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces as '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_pattern_links_to_its_pairs_section_of_the_top_level_report() -> None:
    pairs = discover()
    anchors = {_anchor(line[3:]) for line in (ROOT / "REPORT.md").read_text().splitlines() if line.startswith("## ")}
    for name, (claim_id, _, anchor) in probe_report.PATTERNS.items():
        assert pairs[name].claim_id == claim_id, name
        assert anchor in anchors, f"{name}: no section #{anchor} in REPORT.md"
        assert _anchor(f"`{name}`: {claim_id}") == anchor  # how harness/report.py writes a pair's heading


POOL_TIMEOUT_LOG = """\
WARNING:  a warning the app printed
ERROR:    Exception in ASGI application
Traceback (most recent call last):
  File "/venv/site-packages/sqlalchemy/pool/impl.py", line 170, in _do_get
    raise exc.TimeoutError(
sqlalchemy.exc.TimeoutError: QueuePool limit of size 5 overflow 10 reached, connection timed out, timeout 30.00

During handling of the above exception, another exception occurred:

  + Exception Group Traceback (most recent call last):
  | sqlalchemy.exc.TimeoutError: QueuePool limit of size 5 overflow 10 reached, connection timed out, timeout 30.00
ERROR:    Exception in ASGI application
Traceback (most recent call last):
sqlalchemy.exc.TimeoutError: QueuePool limit of size 5 overflow 10 reached, connection timed out, timeout 30.00
ERROR:    Exception in ASGI application
Traceback (most recent call last):
psycopg.OperationalError: connection failed: server closed the connection unexpectedly
"""


def test_pool_timeouts_in_the_servers_log_are_counted_once_each_and_make_the_pool_exhausted(tmp_path: Path) -> None:
    (tmp_path / "server.log").write_text(POOL_TIMEOUT_LOG)
    counted = probe.pool_timeouts(tmp_path)
    assert counted == {"pool_timeouts": 2, "pool_timeout_limits": {"size": 5, "max_overflow": 10}}
    assert probe.pool_timeouts(tmp_path / "absent") == {"pool_timeouts": 0}
    # An engine the wrapper did not find: the finding takes the limits from the message.
    summary = _summary(
        level={"failures": 2, "failure_rate": 0.01, "failure_kinds": [["HTTPError('500 Server Error')", 2]]},
        by_sample={"closed-u10-b1": {"pools": [], "idle_in_transaction_peak": 0, **counted}},
    )
    findings = {f["kind"]: f for f in probe_report.diagnose(summary, MANIFEST)}
    pool = findings["pool"]
    assert pool["problem"] and "(QueuePool, size 5, overflow 10) was exhausted at 10 users" in pool["text"]
    assert "2 checkouts timed out" in pool["text"] and pool["patterns"][0] == "orm_pool_threads"
    assert findings["failures"]["patterns"] == ["orm_pool_threads"]
    assert "logged 2 SQLAlchemy pool timeouts" in findings["failures"]["text"]


# --- the pieces that read what the user gave ------------------------------------------


def test_env_file_reads_dotenv_lines(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("# settings\n\nexport A=1\nB = \"two words\"\nC='x=y'\nD=plain # a comment\nE=\n")
    assert probe.parse_env_file(env) == {"A": "1", "B": "two words", "C": "x=y", "D": "plain", "E": ""}


@pytest.mark.parametrize(
    ("body", "expect", "found"),
    [
        (b'{"id": 3, "user": {"name": "x"}}', "json:user.name", True),
        (b'{"id": 3, "user": {"name": "x"}}', "json:user.email", False),
        (b'[{"id": 3}, {"id": 4}]', "json:id", True),
        (b"not json", "json:id", False),
        (b"<h1>Welcome</h1>", "Welcome", True),
        (b"<h1>Welcome</h1>", "Goodbye", False),
    ],
)
def test_expect_checks_a_json_key_or_a_text(body: bytes, expect: str, found: bool) -> None:
    assert probe.check_expect(body, expect) is found


def test_sqlalchemy_urls_are_read_as_libpq_urls() -> None:
    assert probe.harness_dsn("postgresql+psycopg://u:p@h:5/db") == "postgresql://u:p@h:5/db"
    assert probe.harness_dsn("postgresql+asyncpg://u@h/db") == "postgresql://u@h/db"
    assert probe.harness_dsn("postgres://u@h/db") == "postgres://u@h/db"


def test_the_embedded_servers_url_names_the_driver_the_app_asks_for(tmp_path: Path) -> None:
    """An app whose interpreter has psycopg 3 but not psycopg2 gets postgresql+psycopg://
    from the embedded server; the harness still reads it as libpq does."""
    assert probe.with_driver("postgresql://u:p@h:5/db", "psycopg") == "postgresql+psycopg://u:p@h:5/db"
    assert probe.with_driver("postgresql://u:p@h:5/db", "") == "postgresql://u:p@h:5/db"
    checks = {"users": lambda v: [1], "duration": lambda v: 1.0}
    target = probe.build_target(
        {"app": "app:app", "app_dir": str(tmp_path), "paths": ["/"], "dsn_driver": "psycopg"}, checks
    )
    assert target.dsn is None and target.dsn_driver == "psycopg" and target.shown()["dsn_driver"] == "psycopg"
    url = probe.with_driver("postgresql://bench_app:pw@127.0.0.1:5432/probe", target.dsn_driver)
    env = probe.app_environment(target, url)
    assert env["DATABASE_URL"] == "postgresql+psycopg://bench_app:pw@127.0.0.1:5432/probe"
    assert probe.harness_dsn(env["DATABASE_URL"]) == "postgresql://bench_app:pw@127.0.0.1:5432/probe"


def test_a_probed_suite_variant_takes_its_pairs_knobs_from_set() -> None:
    options = probe.variant_options("blocking/async-blocking", ["block_ms=50"])
    assert options["knobs"]["block_ms"] == 50
    assert probe.variant_options("blocking/async-blocking")["knobs"] == discover()["blocking"].knobs


def test_stored_commands_hide_header_values_and_passwords() -> None:
    from harness.cli import _hide_headers

    argv = ["bench.py", "probe", "--header", "Authorization: Bearer s3cret", "--header=X-Key: k3y",
            "--dsn", "postgresql://u:pw@h/db"]  # fmt: skip
    shown = " ".join(_hide_headers(argv))
    assert "s3cret" not in shown and "k3y" not in shown and "pw@" not in shown
    assert "Authorization: ***" in shown and "--header=X-Key: ***" in shown


def test_a_start_failure_is_explained_in_one_line(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("ERROR:    [Errno 98] error while attempting to bind on address: address already in use\n")
    assert probe.explain_start_failure(log, 8123, "x") == (
        "127.0.0.1:8123 is in use; choose another --port, or leave --port out"
    )
    log.write_text(
        'ERROR:    Traceback (most recent call last):\n  File "db.py", line 3, in startup\n'
        'psycopg.errors.FeatureNotSupported: extension "uuid-ossp" is not available\n'
        "ERROR:    Application startup failed. Exiting.\n"
    )
    assert "needs the PostgreSQL extension uuid-ossp" in probe.explain_start_failure(log, 1, "x")
    log.write_text(
        "ERROR:    Traceback (most recent call last):\n    raise RuntimeError('no')\n"
        "RuntimeError: the cache is not configured\nERROR:    Application startup failed. Exiting.\n"
    )
    assert (
        probe.explain_start_failure(log, 1, "x")
        == "the app's start-up failed: RuntimeError: the cache is not configured"
    )
    log.write_text("nothing useful\nat all\n")
    assert probe.explain_start_failure(log, 1, "it exited\nwith status 1") == "it exited with status 1"


@pytest.mark.slow
def test_the_sampler_tells_a_held_transaction_by_how_long_it_has_been_idle(db: Database) -> None:
    import psycopg2

    with contextlib.closing(psycopg2.connect(db.variant_dsn)) as app_conn, contextlib.closing(db.connect()) as conn:
        app_conn.cursor().execute("SELECT 1")  # psycopg2 opens a transaction and leaves it open
        time.sleep(0.3)
        with conn.cursor() as cur:
            states, ages = database.backends_and_ages(cur)
        assert states.get("idle in transaction") == 1
        assert 250 <= ages["idle in transaction"] < 5000


# --- bad input, before anything starts ------------------------------------------------


BASE = ["probe", "--app", "app:app", "--app-dir", str(EXAMPLE)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["probe"], "name the app with --app"),
        (["probe", "--app", "nocolon", "--path", "/"], "--app must be package.module:attribute"),
        (["probe", "--app", "app:app", "--app-dir", "/no/such/folder", "--path", "/"], "is not a folder"),
        (BASE, "name at least one --path"),
        ([*BASE, "--path", "healthy"], "--path must start with '/'"),
        ([*BASE, "--path", "/items/{item_id}", "--ids", "1-5"], "only {id} is filled in, not {item_id}"),
        ([*BASE, "--path", "/healthy/{id}"], "give the range it is drawn from with --ids A-B"),
        ([*BASE, "--path", "/healthy/{id}", "--ids", "10-1"], "the first id must not be above the last"),
        ([*BASE, "--path", "/healthy/{id}", "--ids", "many"], "--ids must be a range A-B"),
        ([*BASE, "--path", "/", "--header", "NoColonHere"], "--header must be 'Name: value'"),
        ([*BASE, "--path", "/", "--env-file", "/no/such/.env"], "--env-file /no/such/.env: cannot read"),
        ([*BASE, "--path", "/", "--python", "/no/such/python"], "--python /no/such/python: no such interpreter"),
        ([*BASE, "--path", "/", "--dsn", "mysql://u:secret@h/db"], "--dsn must be a postgresql:// URL"),
        ([*BASE, "--path", "/", "--dsn-driver", "mysqldb"], "--dsn-driver must be one of asyncpg, pg8000, psycopg"),
        (
            [*BASE, "--path", "/", "--dsn", "postgresql://u:secret@h/db", "--dsn-driver", "psycopg"],
            "--dsn-driver names the driver in the embedded server's URL",
        ),
        ([*BASE, "--path", "/", "--users", "0"], "argument --users: must be greater than 0"),
        ([*BASE, "--path", "/", "--users", "1,99999"], "argument --users: must be at most 2000 users"),
        ([*BASE, "--path", "/", "--duration", "inf"], "argument --duration: expected a finite number"),
        ([*BASE, "--path", "/", "--port", "99999"], "--port must be at most 65535"),
        ([*BASE, "--path", "/", "--stall-ms", "0"], "--stall-ms must be greater than 0"),
        (["probe", "/no/such/target.toml"], "/no/such/target.toml: cannot read"),
        ([*BASE, "--path", "/", "--ui-minutes", "5"], "--ui-minutes goes with --ui"),
        (["probe", "--variant", "blocking/async-blockin"], "did you mean 'async-blocking'"),
        (["probe", "--variant", "timeouts/wait-for"], "answers only some ids with the row"),
        (["probe", "--variant", "blocking"], "--variant takes pair/variant"),
        ([*BASE, "--path", "/", "--set", "block_ms=50"], "--set sets a knob of one of the suite's variants"),
        (["probe", "--variant", "blocking/async-blocking", "--set", "pool_size=5"], "unknown knob 'pool_size'"),
        (["probe", "--variant", "blocking/async-blocking", "--set", "block_ms=1e9"], "--set block_ms needs a whole"),
        ([*BASE, "--path", "/", "--ui", "--ui-minutes", "1e6"], "--ui-minutes must be at most 600 minutes"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = bench_here(*args)
    assert_one_line_exit_2(result, message)
    assert "secret" not in result.stderr  # a DSN's password is never shown


def test_env_file_errors_name_the_line_but_not_its_content(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("# comment\nGOOD=1\nthis line holds a token-like secret\n")
    result = bench_here(*BASE, "--path", "/", "--env-file", str(env))
    assert_one_line_exit_2(result, f"{env}:3: expected NAME=VALUE")
    assert "secret" not in result.stderr


def test_target_file_fields_are_checked_like_options(tmp_path: Path) -> None:
    target = tmp_path / "target.toml"
    target.write_text('app = "app:app"\npaths = ["/healthy/{id}"]\nuserz = [1, 10]\n')
    assert_one_line_exit_2(bench_here("probe", str(target)), "unknown field 'userz'")
    target.write_text('app = "app:app"\npaths = ["/healthy/{id}"]\nids = "1-9"\nusers = [0]\n')
    assert_one_line_exit_2(bench_here("probe", str(target)), "argument --users: must be greater than 0")


def test_a_busy_port_is_refused_before_anything_starts() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = bench(*BASE, "--path", "/", "--port", str(port))
    assert_one_line_exit_2(result, f"127.0.0.1:{port} is in use")


def test_an_unreachable_database_is_one_line_and_leaves_no_run_behind(tmp_path: Path) -> None:
    out = tmp_path / "run"
    dsn = f"postgresql://probe:hunter2@127.0.0.1:{free_port()}/app"
    result = bench(*BASE, "--path", "/", "--dsn", dsn, "--out", str(out))
    assert_one_line_exit_2(result, "cannot reach PostgreSQL at postgresql://probe:***@127.0.0.1")
    assert "hunter2" not in result.stderr
    assert not out.exists() or not any(out.iterdir())


def test_target_file_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    target = tmp_path / "target.toml"
    target.write_text(f'app = "app:app"\napp_dir = "{EXAMPLE}"\npaths = ["/x"]\nenv_file = "missing.env"\n')
    assert_one_line_exit_2(bench_here("probe", str(target)), f"--env-file {tmp_path / 'missing.env'}: cannot read")


# --- the wrapper around a real server -------------------------------------------------


@pytest.fixture
def wrapped(tmp_path: Path) -> Iterator[tuple[int, str, Path]]:
    """The example app under the wrapper with the suite's interpreter: (port, prefix, out)."""
    with _serve(sys.executable, tmp_path) as served:
        yield served


@contextlib.contextmanager
def _serve(python: str, tmp_path: Path, app: str = "app:app") -> Iterator[tuple[int, str, Path]]:
    port, prefix, out = free_port(), "/__bench_probe_test__", tmp_path / "out"
    argv = [python, str(probe.WRAPPER), "--app", app, "--app-dir", str(EXAMPLE), "--port", str(port),
            "--prefix", prefix, "--out", str(out), "--stall-ms", "20"]  # fmt: skip
    server = ManagedProcess("wrapped example", argv, tmp_path / "server.log", {"PATH": "/usr/bin:/bin"}, EXAMPLE)
    with server:
        server.wait_until(lambda: http_ok(f"http://127.0.0.1:{port}{prefix}/ping"), 30, "answering /ping")
        yield port, prefix, out


def _get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return json.loads(resp.read())


def _exercise_and_check(port: int, prefix: str, out: Path) -> dict[str, Any]:
    """/ping, the app's own routes unchanged, three blocking requests; returns /counts."""
    assert _get(port, f"{prefix}/ping") == {"pong": True}
    assert _get(port, "/healthy/7") == {"id": 7}
    for item in range(3):
        assert _get(port, f"/blocking/{item}") == {"id": item}
        time.sleep(0.05)  # the heartbeat ends the stall before the next one
    counts = _get(port, f"{prefix}/counts")
    assert counts["thread_tokens"] == 40
    assert counts["watchdog"]["stalls_captured"] >= 3
    stalls = _stalls(out / "stalls.jsonl")
    blocking = [s for s in stalls if s["samples"][0][1][0][:3] == [str(EXAMPLE_APP), BLOCKING_LINE, "blocking"]]
    assert len(blocking) >= 3, stalls
    assert all(40 <= s["lag_ms"] <= 200 for s in blocking)  # 60 ms of blocking each
    return counts


@pytest.mark.slow
def test_wrapper_serves_the_app_unchanged_with_ping_counts_and_the_blocking_line(
    wrapped: tuple[int, str, Path],
) -> None:
    port, prefix, out = wrapped
    counts = _exercise_and_check(port, prefix, out)
    assert counts["pools"] == []  # the example has no SQLAlchemy engine
    assert "fastapi" in counts["packages"]
    deadline = time.monotonic() + 3  # the monitor writes in batches, every 0.5 s
    while len(lags := (out / "loop_lag.csv").read_text().splitlines()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert lags[0].startswith("time,lag_ms,threads_busy") and len(lags) > 1


@pytest.mark.slow
def test_an_app_without_lifespan_support_gets_its_instruments_from_the_first_request(tmp_path: Path) -> None:
    raw = EXAMPLE / "raw_asgi.py"
    with _serve(sys.executable, tmp_path, app="raw_asgi:app") as (port, prefix, out):
        for item in range(3):
            assert _get(port, f"/blocking/{item}") == {"path": f"/blocking/{item}"}
            time.sleep(0.05)
        counts = _get(port, f"{prefix}/counts")
        assert counts["watchdog"]["stalls_captured"] >= 3
        assert (out / "server_info.json").is_file()
        deadline = time.monotonic() + 3  # the monitor writes in batches, every 0.5 s
        while len(lags := (out / "loop_lag.csv").read_text().splitlines()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(lags) > 1, "the loop-lag monitor runs without a lifespan"
    line = line_of(raw, "# the raw blocking line")
    assert any(s["samples"][0][1][0][:2] == [str(raw), line] for s in _stalls(out / "stalls.jsonl"))


def _minimal_venv(root: Path, packages: tuple[str, ...]) -> str:
    """A virtualenv holding only `packages` and what they require (no extras): linked
    from this suite's environment, so no download is needed, but nothing else (no
    Locust, pandas, psycopg2 or the suite itself) is importable."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=60)
    site = next((root / "lib").glob("python3*/site-packages"))
    wanted, seen = list(packages), set()
    while wanted:
        name = wanted.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        dist = metadata.distribution(name)
        for requirement in map(Requirement, dist.requires or []):
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                wanted.append(requirement.name)
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")} - {"__pycache__"}
        for top in tops:
            source = Path(str(dist.locate_file(top)))
            if source.exists() and not (site / top).exists():
                (site / top).symlink_to(source)
    return str(root / "bin" / "python")


@pytest.mark.slow
def test_wrapper_needs_only_fastapi_and_uvicorn_in_the_apps_own_interpreter(tmp_path: Path) -> None:
    python = _minimal_venv(tmp_path / "venv", ("fastapi", "uvicorn"))
    for absent in ("locust", "pandas", "psycopg2", "harness", "sqlalchemy"):
        check = subprocess.run([python, "-c", f"import {absent}"], capture_output=True, cwd=tmp_path, check=False)
        assert check.returncode != 0, f"{absent} must not be importable in the minimal venv"
    with _serve(python, tmp_path) as (port, prefix, out):
        counts = _exercise_and_check(port, prefix, out)
    assert counts["executable"] == python


@pytest.mark.slow
def test_probe_runs_a_project_under_its_own_interpreter_holding_only_its_dependencies(tmp_path: Path) -> None:
    """`bench.py probe --python`: the SQLModel example, copied into a project folder of its
    own, under a venv with only FastAPI, uvicorn, SQLModel and psycopg 3 (no psycopg2,
    Locust, pandas or the suite), against the embedded PostgreSQL with the psycopg driver."""
    pytest.importorskip("sqlmodel")
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(EXAMPLES / "healthy_app.py", project / "main.py")
    python = _minimal_venv(tmp_path / "venv", ("fastapi", "uvicorn", "sqlmodel", "psycopg", "psycopg-binary"))
    for absent in ("locust", "pandas", "psycopg2", "harness"):
        check = subprocess.run([python, "-c", f"import {absent}"], capture_output=True, cwd=project, check=False)
        assert check.returncode != 0, f"{absent} must not be importable in the project's venv"
    out = tmp_path / "run"
    result = bench(
        "probe", "--app", "main:app", "--app-dir", str(project), "--python", python, "--dsn-driver", "psycopg",
        "--path", "/items/{id}", "--ids", "1-100", "--users", "1", "--duration", "1", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = store.read_json(out / "summary.json")
    assert summary["server"]["executable"] == python
    closed = [r for r in summary["variants"] if r["mode"] == "closed"]
    assert closed and all(r["status"] == "ok" and r["requests"] > 0 and r["failures"] == 0 for r in closed)
    assert processes_mentioning(str(out)) == []


# --- bad input that needs the app started ---------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--app", "broken:app", "--path", "/"],
         "broken does not import: ModuleNotFoundError: No module named 'a_module_that_is_not_installed_anywhere'"),
        (["--app", "needs_env:app", "--path", "/"], "needs the environment variable PROBE_EXAMPLE_SECRET"),
        (["--app", "app:nothing", "--path", "/"], "app has no attribute 'nothing'"),
        (["--app", "nowhere:app", "--path", "/"], "No module named 'nowhere' (is --app-dir the project's folder?"),
        (["--app", "app:app", "--path", "/missing/{id}", "--ids", "1-9"], "answered 404"),
        (["--app", "app:app", "--path", "/private"], "GET /private answered 401: the app wants credentials"),
        (["--app", "app:app", "--path", "/private", "--header", "Authorization: Bearer not-the-token"],
         "GET /private answered 403: the app refuses the credentials sent"),
        (["--app", "app:app", "--path", "/", "--seed-sql", str(EXAMPLE / "broken_seed.sql")],
         "broken_seed.sql failed: syntax error at or near \"TABEL\""),
        (["--app", "app:app", "--path", "/", "--seed-cmd", "echo migrating; echo 'no revision abc' >&2; exit 3"],
         "--seed-cmd exited with status 3: no revision abc"),
        (["--app", "app:app", "--path", "/healthy/{id}", "--ids", "1-9", "--expect", "json:name"],
         "answered 200 without 'json:name' in its body"),
    ],
)  # fmt: skip
def test_an_app_that_cannot_be_probed_is_one_line_and_leaves_no_process(
    db: Database, tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "run"
    result = bench("probe", "--app-dir", str(EXAMPLE), *args, "--dsn", db.dsn, "--out", str(out), "--users", "1")
    assert_one_line_exit_2(result, message)
    assert processes_mentioning(str(out)) == []
    assert not any(out.iterdir())  # nothing measured: nothing kept


@pytest.mark.slow
def test_an_interpreter_without_uvicorn_is_named_with_the_package_that_brings_it(db: Database, tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True, timeout=60)
    python = str(tmp_path / "bare" / "bin" / "python")
    out = tmp_path / "run"
    result = bench(*BASE, "--path", "/", "--python", python, "--dsn", db.dsn, "--out", str(out))
    assert_one_line_exit_2(result, f"{python} has no uvicorn")
    assert "fastapi[standard]" in result.stderr
    assert processes_mentioning(str(out)) == []


# --- a probe run, short --------------------------------------------------------------


@pytest.mark.slow
def test_probe_names_the_blocking_line_with_its_lag_in_a_run_of_its_own(db: Database, tmp_path: Path) -> None:
    top_report = (ROOT / "REPORT.md").read_text()
    out = tmp_path / "run"
    result = bench(
        *BASE, "--path", "/healthy/{id}", "--path", "/blocking/{id}", "--path", "/private", "--ids", "1-100",
        "--header", "Authorization: Bearer let-me-in", "--users", "1,4", "--duration", "2", "--stall-ms", "20",
        "--dsn", db.dsn, "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"report: {out / 'REPORT.md'}" in result.stdout
    # The header reached the app (verification and load passed), and its value was stored nowhere.
    manifest = store.read_json(out / "manifest.json")
    assert "let-me-in" not in json.dumps(manifest) and manifest["target"]["headers"] == ["Authorization"]
    summary = store.read_json(out / "summary.json")
    assert [r["variant"].split("-b")[0] for r in summary["variants"]][:2] == ["closed-u1", "closed-u4"]
    assert summary["variants"][-1]["mode"] == "open" and summary["variants"][-1]["status"] == "ok"
    top = summary["stalls"]["sites"][0]
    assert (top["where"], top["function"], top["in_app"]) == (f"app.py:{BLOCKING_LINE}", "blocking", True)
    assert top["stalls"] >= 10 and top["lag_ms_max"] >= 40
    stall = next(f for f in summary["diagnosis"] if f["kind"] == "loop stalls")
    assert f"`blocking` at app.py:{BLOCKING_LINE}" in stall["text"]
    four = summary["variants"][1]
    assert four["failures"] == 0  # /private too: the token went with every request
    assert four["loop_lag_p99_ms"] >= 40 and four["ping_p99_ms"] >= 40  # the healthy route's loop waits too
    report = (out / "REPORT.md").read_text()
    assert f"`app.py:{BLOCKING_LINE}` `blocking`" in report and "time.sleep(BLOCK_S)" in report
    assert (out / "charts" / "sweep.png").is_file() and "charts/over_time.png" in report
    assert (ROOT / "REPORT.md").read_text() == top_report  # never the top-level report
    # The read-only promise: nothing was created in the database the probe sampled.
    assert manifest["database"]["prepared"].startswith("not by the probe")
    # Before and after: compare reads two probe runs like any others.
    compared = bench("compare", str(out), str(out))
    assert compared.returncode == 0, compared.stderr
    assert "probe/closed-u4-b1" in compared.stdout


# Findings that are information, not a problem: a clean bill may have these.
INFORMATION = {"knee", "gc pauses", "loop waits", "brief stalls", "pool", "open loop"}


@pytest.mark.slow
def test_a_healthy_app_gets_a_clean_bill(db: Database, tmp_path: Path) -> None:
    """examples/healthy_app.py: the SQLModel app of the next test without its problem."""
    pytest.importorskip("sqlmodel")
    out = tmp_path / "run"
    result = bench(
        "probe", "--app", "examples.healthy_app:app", "--path", "/items/{id}", "--ids", "1-100", "--users", "1,4",
        "--duration", "2", "--dsn", db.dsn, "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = store.read_json(out / "summary.json")
    findings = {f["kind"]: f for f in summary["diagnosis"]}
    assert [f["text"] for f in findings.values() if f["problem"]] == []
    assert set(findings) <= INFORMATION and "knee" in findings, sorted(findings)
    assert "QueuePool, size 40, overflow 0" in findings["pool"]["text"]  # the pool is named, as information
    # A busy 2-core machine can delay the loop past the threshold now and then; never in the app's code.
    assert [site["where"] for site in summary["stalls"]["sites"] if site["in_app"]] == []
    assert "No problem found" in (out / "REPORT.md").read_text()


def _diagnosis(report: str) -> str:
    return report.split("## Diagnosis", 1)[1].split("\n## ", 1)[0]


@pytest.mark.slow
def test_probe_of_a_sqlmodel_app_names_the_blocking_route_and_the_pool_limit(db: Database, tmp_path: Path) -> None:
    """The issue's template app: sync `get_db` on a default pool, and a driver call inside `async def`,
    on the user's database through psycopg 3 (postgresql+psycopg://), at the default stall settings."""
    pytest.importorskip("sqlmodel")
    pytest.importorskip("psycopg")
    orm_app = EXAMPLES / "orm_app.py"
    line = line_of(orm_app, "# the blocking driver call on the event loop")
    out = tmp_path / "run"
    url = db.dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    result = bench(
        "probe", "--app", "orm_app:app", "--app-dir", str(EXAMPLES), "--path", "/items/{id}",
        "--path", "/async-items/{id}", "--ids", "1-100", "--users", "4", "--duration", "2",
        "--dsn", url, "--out", str(out),  # one level: the stall and the pool show at any
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = store.read_json(out / "summary.json")
    in_app = [site for site in summary["stalls"]["sites"] if site["in_app"]]
    assert (in_app[0]["where"], in_app[0]["function"]) == (f"orm_app.py:{line}", "read_item_on_the_loop")
    assert "psycopg" in in_app[0]["blocked_in"] or "sqlalchemy" in in_app[0]["blocked_in"]
    pool = next(f for f in summary["diagnosis"] if f["kind"] == "pool")
    assert "QueuePool, size 5, overflow 10" in pool["text"]
    stall = next(f for f in summary["diagnosis"] if f["kind"] == "loop stalls")
    assert stall["patterns"][0] == "orm_async_endpoint"  # a sync Session's connection on the loop


@pytest.mark.slow
def test_on_a_fresh_clone_the_example_command_names_the_route_its_line_and_the_pool_limit(tmp_path: Path) -> None:
    """The issue's "Done when", as a user types it in the repository: no --dsn (the embedded
    PostgreSQL, a fresh database the app fills at start-up), no --app-dir, default stall settings."""
    pytest.importorskip("sqlmodel")
    line = line_of(EXAMPLES / "orm_app.py", "# the blocking driver call on the event loop")
    out = tmp_path / "run"
    result = bench(
        "probe", "--app", "examples.orm_app:app", "--path", "/async-items/{id}", "--ids", "1-100",
        "--users", "1,4", "--duration", "2", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert store.read_json(out / "manifest.json")["database"]["source"] == "embedded"
    diagnosis = _diagnosis((out / "REPORT.md").read_text())
    assert f"`read_item_on_the_loop` at examples/orm_app.py:{line}" in diagnosis, diagnosis
    assert "QueuePool, size 5, overflow 10" in diagnosis, diagnosis
    assert "**Loop stalls.**" in diagnosis


@pytest.mark.slow
def test_ui_serves_locusts_web_ui_on_loopback_and_stops_at_its_time_limit(db: Database, tmp_path: Path) -> None:
    started = time.monotonic()
    result = bench(
        *BASE, "--path", "/healthy/{id}", "--ids", "1-9", "--dsn", db.dsn, "--ui", "--ui-minutes", "0.05",
        env={"TMPDIR": str(tmp_path)},  # the session's log folder
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    url = re.search(r"Locust's web UI: (http://127\.0\.0\.1:\d+)", result.stderr)
    assert url, result.stderr
    assert time.monotonic() - started < 60
    folder = re.search(r"logs and stalls in (\S+)\)", result.stderr)
    assert folder and processes_mentioning(folder.group(1)) == []
    assert not http_ok(url.group(1))  # stopped with the session
    assert "stopped by the time limit (0.05 min)" in result.stderr


@pytest.mark.slow
def test_ui_on_a_suite_variant_stops_on_ctrl_c_with_exit_0_and_no_process_left(db: Database, tmp_path: Path) -> None:
    """Ctrl-C is how a session by hand ends: both servers go, the command says so, and it is
    not reported as an interruption. The variant's table is the test database's 1,000 rows."""
    proc = subprocess.Popen(
        [sys.executable, "bench.py", "probe", "--variant", "blocking/async-blocking", "--ids", "1-1000",
         "--dsn", db.dsn, "--ui", "--ui-minutes", "5"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=os.environ | {"TMPDIR": str(tmp_path)},  # the session's log folder
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr or []], daemon=True).start()
    try:
        said, url = "", None
        deadline = time.monotonic() + 90
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(queue.Empty):
                said += lines.get(timeout=1)
                url = re.search(r"Locust's web UI: (http://127\.0\.0\.1:\d+) against blocking/async-blocking", said)
        assert url, said
        folder = re.search(r"logs and stalls in (\S+)\)", said)
        assert folder and folder.group(1).startswith(str(tmp_path))
        assert http_ok(url.group(1)) and processes_mentioning(folder.group(1)) != []
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:  # SIGTERM first: the command stops its servers; a kill would leave them
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    time.sleep(0.5)  # the reader thread's last lines
    while not lines.empty():
        said += lines.get()
    assert "stopped by Ctrl-C: Locust's web UI and the app are down" in said, said
    assert "Traceback" not in said and "interrupted" not in said
    assert processes_mentioning(folder.group(1)) == []
    assert not http_ok(url.group(1))


@pytest.mark.slow
def test_a_project_with_its_own_url_variable_env_file_and_seed_steps_is_prepared_then_probed(
    db: Database, tmp_path: Path
) -> None:
    """--dsn-env, a working --env-file, --seed-sql and --seed-cmd together: the probe reads
    the database URL from the variable the project names, in its .env file (no --dsn);
    prepares the database as asked, SQL first, the command with the app's environment; and
    the app sees the file's variables (tests/probe_example/shop.py)."""
    env_file = tmp_path / ".env"
    env_file.write_text(
        f"# the shop's settings\nexport SHOP_DATABASE_URL={db.dsn}\nSHOP_GREETING='hello from .env'\nSHOP_ROWS=5\n"
        "SHOP_API_KEY=k-31337  # unused by the app; a secret the manifest must not hold\n"
    )
    seed_sql = tmp_path / "schema.sql"
    seed_sql.write_text(
        "DROP TABLE IF EXISTS probe_shop_products;\nCREATE TABLE probe_shop_products (id int PRIMARY KEY, name text);\n"
    )
    out = tmp_path / "run"
    try:
        result = bench(
            "probe", "--app", "shop:app", "--app-dir", str(EXAMPLE), "--path", "/products/{id}", "--ids", "1-5",
            "--env-file", str(env_file), "--dsn-env", "SHOP_DATABASE_URL", "--seed-sql", str(seed_sql),
            "--seed-cmd", f"{sys.executable} shop_fill.py", "--expect", '"greeting":"hello from .env"',
            "--users", "1", "--duration", "1", "--out", str(out),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        manifest = store.read_json(out / "manifest.json")
        assert manifest["database"]["source"] != "embedded" and manifest["target"]["dsn_env"] == "SHOP_DATABASE_URL"
        assert manifest["database"]["prepared"] == "--seed-sql schema.sql, then --seed-cmd"
        assert manifest["target"]["environment"] == ["SHOP_API_KEY", "SHOP_DATABASE_URL", "SHOP_GREETING", "SHOP_ROWS"]
        assert "k-31337" not in json.dumps(manifest)  # names are kept, values never
        summary = store.read_json(out / "summary.json")
        assert summary["variants"] and all(v["status"] == "ok" and v["failures"] == 0 for v in summary["variants"])
        with contextlib.closing(db.connect()) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM probe_shop_products")
            assert cur.fetchone() == (5,)  # the command's rows, in the database the probe sampled
    finally:
        with contextlib.closing(db.connect()) as conn, conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS probe_shop_products")
            conn.commit()


@pytest.mark.slow
def test_probe_of_the_suites_own_async_blocking_variant_shows_the_stack_that_blocked(
    db: Database, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = bench(
        "probe", "--variant", "blocking/async-blocking", "--users", "4", "--duration", "2", "--dsn", db.dsn,
        "--ids", "1-1000", "--out", str(out),  # the test database's 1,000 rows: no reseeding
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    top = store.read_json(out / "summary.json")["stalls"]["sites"][0]
    sleep_line = line_of(ROOT / "apps" / "blocking" / "app.py", 'time.sleep(knob("block_ms") / 1000)')
    assert (top["where"], top["function"]) == (f"apps/blocking/app.py:{sleep_line}", "blocking_lookup")
    assert any("async_blocking_item" in frame for frame in top["stack"])  # the endpoint that called it


@pytest.mark.slow
def test_probe_of_a_variant_that_calls_the_stub_upstream_starts_one_beside_it(db: Database, tmp_path: Path) -> None:
    """`gather` calls the stub upstream three times a request: the probe starts one, the
    variant answers with the row, and both are gone afterwards."""
    out = tmp_path / "run"
    result = bench(
        "probe", "--variant", "gather/gather", "--set", "upstream_ms=5", "--users", "1", "--duration", "1",
        "--dsn", db.dsn, "--ids", "1-1000", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifest = store.read_json(out / "manifest.json")
    assert manifest["target"]["knobs"]["upstream_ms"] == 5
    summary = store.read_json(out / "summary.json")
    [level] = [r for r in summary["variants"] if r["mode"] == "closed"]
    assert level["requests"] > 0 and level["failure_rate"] == 0
    # Three 5 ms calls in parallel: one request takes at least 5 ms, far less than three in a row.
    assert level["p50_ms"] >= 5
    assert not [p for p in psutil.process_iter(["cmdline"]) if "harness.upstream" in " ".join(p.info["cmdline"] or [])]


def _probe_run(run_dir: Path, open_rate: float, open_users: int, open_rps: float) -> Path:
    """A stored probe run as harness.probe writes it, for compare: a closed level and its
    open loop, named by sample (the open one by its rate and users)."""
    run_dir.mkdir(parents=True)
    manifest = store.new_manifest({"name": "probe"}, {}, ["bench.py", "probe"])
    manifest |= {"kind": "probe", "status": "complete", "target": {"app": "app:app"}, "open_loop": {"rate": open_rate}}
    store.write_json(run_dir / "manifest.json", manifest)
    closed = {"pair": "probe", "variant": "closed-u4-b1", "mode": "closed", "users": 4, "rate": 0.0, "status": "ok",
              "rps": 100.0, "p50_ms": 10.0, "p99_ms": 40.0}  # fmt: skip
    opened = closed | {"variant": f"open-rate{open_rate:g}-u{open_users}-b1", "mode": "open", "users": open_users,
                       "rate": open_rate, "rps": open_rps}  # fmt: skip
    store.write_json(run_dir / "summary.json", {"format_version": store.FORMAT_VERSION, "variants": [closed, opened]})
    return run_dir


def test_compare_matches_two_probe_runs_open_loops_whatever_their_rates(tmp_path: Path) -> None:
    from harness import compare

    before = _probe_run(tmp_path / "before", 70.0, 10, 70.0)
    after = _probe_run(tmp_path / "after", 140.0, 12, 140.0)  # the change doubled the knee
    changes = {(c.variant, c.figure): c for c in compare.compare(before, after)}
    assert changes[("open-loop-b1", "rps")].ratio == pytest.approx(2.0)
    assert changes[("closed-u4-b1", "rps")].ratio == pytest.approx(1.0)
    assert "probe open-loop rate: 70.0 vs 140.0 req/s" in " ".join(compare.differences(before, after))
    # A suite run's records are named by variant, open loop or not: matched as they are.
    assert compare.matched_name({"variant": "sync-dep", "mode": "open"}) == "sync-dep"  # type: ignore[typeddict-item]
