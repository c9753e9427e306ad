"""The warm-up and the measured window of the locustfile: when each may end, which requests
count, and short real Locust runs (one process, and a master with a worker) against the
stub upstream on loopback that check phases.json and the tallies."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import gevent
import pytest

from harness.pairs import ROOT
from harness.procs import ManagedProcess, free_port, machine_load_lock


def _import_locustfile() -> ModuleType:
    # Importing Locust patches the standard library for gevent (socket, threading, ssl...),
    # which would leak into the rest of the test session; the logic under test needs none
    # of it. The variable is set for the import only: the Locust processes the other tests
    # start must be patched as usual.
    previous = os.environ.get("LOCUST_SKIP_MONKEY_PATCH")
    os.environ["LOCUST_SKIP_MONKEY_PATCH"] = "1"
    try:
        return importlib.import_module("scenarios.locustfile")
    finally:
        if previous is None:
            del os.environ["LOCUST_SKIP_MONKEY_PATCH"]
        else:
            os.environ["LOCUST_SKIP_MONKEY_PATCH"] = previous


lf = _import_locustfile()


# --- the decisions ----------------------------------------------------------------------


def test_warmup_cap_is_the_warmup_plus_one_request_timeout() -> None:
    assert lf.warmup_cap_s(1.0, 10.0) == 1.0 + lf.WARMUP_GRACE_S
    assert lf.warmup_cap_s(0.0, 2.5) == 2.5
    assert lf.warmup_cap_s(-1.0, -1.0) == 0.0


@pytest.mark.parametrize(
    ("elapsed", "spawned", "users", "completed", "expected"),
    [
        (0.5, True, 50, 50, ""),  # every user answered, but the warm-up asked for is not over
        (1.0, True, 50, 50, "ready"),
        (3.0, False, 50, 50, ""),  # not all users spawned yet
        (3.0, True, 50, 49, ""),  # one user has not had an answer yet
        (3.0, True, 50, 51, "ready"),  # a master's sums may run ahead of the target
        (11.0, True, 50, 31, "capped"),  # some users never got an answer: the cap moves on
        (11.0, False, 50, 0, "capped"),
        (11.0, True, 50, 50, "ready"),  # at the cap with every user done it is not capped
        (5.0, True, 0, 0, ""),  # no users is never "every user answered"
        (11.0, True, 0, 0, "capped"),
    ],
)
def test_warmup_ends_once_every_user_answered_or_at_the_cap(
    elapsed: float, spawned: bool, users: int, completed: int, expected: str
) -> None:
    assert lf.warmup_end(elapsed, 1.0, 11.0, spawned, users, completed) == expected


@pytest.mark.parametrize(
    ("elapsed", "completed", "quiet", "expected"),
    [
        (5.0, 31, 0.5, ""),  # past the cap, but a user had its first answer half a second ago
        (5.0, 31, 2.9, ""),
        (5.0, 31, 3.0, "capped"),  # no first answer for the whole grace: the cap holds
        (3.9, 31, 10.0, ""),  # before the cap, quiet or not
        (30.9, 49, 0.1, ""),  # still arriving just before the limit
        (31.0, 49, 0.1, "capped"),  # the limit holds however steady the progress
        (31.0, 50, 0.1, "ready"),
    ],
)
def test_warmup_waits_past_the_cap_only_while_first_answers_still_arrive(
    elapsed: float, completed: int, quiet: float, expected: str
) -> None:
    cap = lf.warmup_cap_s(1.0, 10.0)
    limit = lf.warmup_limit_s(cap, 31.0)
    assert (cap, limit) == (4.0, 31.0)
    assert lf.warmup_end(elapsed, 1.0, cap, True, 50, completed, quiet, limit) == expected


def test_a_shorter_grace_ends_a_quiet_warmup_sooner() -> None:
    """The quick scenario's warmup_grace_s: one second without a first answer, not three."""
    cap = lf.warmup_cap_s(0.1, 10.0, 1.0)
    assert cap == pytest.approx(1.1)
    assert lf.warmup_end(2.0, 0.1, cap, True, 50, 31, 1.0, 20.0, 1.0) == "capped"
    assert lf.warmup_end(2.0, 0.1, cap, True, 50, 31, 0.5, 20.0, 1.0) == ""  # answers still arrive
    assert lf.warmup_end(2.0, 0.1, cap, True, 50, 31, 1.0, 20.0) == ""  # the default grace waits longer


def test_warmup_limit_is_never_shorter_than_the_cap() -> None:
    assert lf.warmup_limit_s(4.0, 0.0) == 4.0
    assert lf.warmup_limit_s(4.0, 40.0) == 40.0


def test_max_measure_is_never_shorter_than_the_duration() -> None:
    assert lf.max_measure_s(4.0, 0.0) == 4.0
    assert lf.max_measure_s(4.0, 2.0) == 4.0
    assert lf.max_measure_s(4.0, 30.0) == 30.0


@pytest.mark.parametrize(
    ("elapsed", "requests", "min_requests", "max_measure", "expected"),
    [
        (3.9, 10_000, 0, 0.0, ""),  # the duration is a floor, however many requests
        (4.0, 0, 0, 0.0, "done"),  # no minimum: the duration alone
        (4.0, 199, 200, 30.0, ""),  # 40 req/s: the window grows until it holds N
        (9.0, 200, 200, 30.0, "done"),
        (29.9, 150, 200, 30.0, ""),
        (30.0, 150, 200, 30.0, "capped"),  # never longer than the cap
        (4.0, 150, 200, 0.0, "capped"),  # no cap given: the duration is the cap
        (4.0, 150, 200, 2.0, "capped"),  # a cap below the duration is the duration
    ],
)
def test_measured_phase_ends_after_the_duration_with_n_requests_or_at_the_cap(
    elapsed: float, requests: int, min_requests: int, max_measure: float, expected: str
) -> None:
    assert lf.measure_end(elapsed, 4.0, requests, min_requests, max_measure) == expected


def test_without_a_duration_locusts_run_time_decides() -> None:
    assert lf.measure_end(1e6, 0.0, 10**6, 0, 0.0) == ""


def test_a_request_counts_if_it_was_sent_inside_the_window() -> None:
    start, stop = 100.0, 104.0
    assert not lf.sent_in_window(101.0, 0.0, None, None), "no window yet: the warm-up"
    # Completed inside the window, but sent 1.5 s before its start: the warm-up's backlog.
    assert not lf.sent_in_window(101.0, 1500.0, start, None)
    assert lf.sent_in_window(101.0, 1000.0, start, None), "sent exactly at the start"
    assert lf.sent_in_window(101.0, 999.0, start, None)
    # Completed after the stop, sent before it: its users were finishing it.
    assert lf.sent_in_window(106.0, 2500.0, start, stop)
    assert not lf.sent_in_window(106.0, 1000.0, start, stop), "sent after the stop"


# --- the tally and the schedule ---------------------------------------------------------


@pytest.fixture
def fresh() -> Iterator[None]:
    """The locustfile's module state, fresh for each test."""
    lf.TALLY.__init__()
    lf.SCHEDULE.__init__()
    lf.PROGRESS.__init__()
    lf.WORKER_STATUS.clear()
    lf.phases.clear()
    yield
    lf.TALLY.__init__()
    lf.SCHEDULE.__init__()
    lf.PROGRESS.__init__()
    lf.WORKER_STATUS.clear()
    lf.phases.clear()


def test_the_tally_drops_requests_sent_before_its_start(fresh: None) -> None:
    tally = lf.Tally()
    tally.on_request("GET", "/x", 5.0, 10)
    assert tally.requests == 0, "nothing counts in the warm-up"
    tally.reset()
    assert tally.start is not None
    tally.start -= 3.0  # the window started 3 s ago
    tally.on_request("GET", "/x", 5_000.0, 10)  # took 5 s: sent long before the reset
    tally.on_request("GET", "/x", 20.0, 10)
    tally.on_request("GET", "/x", 30.0, 10, exception=RuntimeError("boom"))
    assert tally.requests == 2 and tally.stats.total.num_failures == 1
    assert tally.outside == 1
    tally.stop = time.time() - 1.0  # the users were told to stop a second ago
    tally.on_request("GET", "/x", 20.0, 10)  # sent after that
    tally.on_request("GET", "/x", 1_500.0, 10)  # sent before it, finished since
    data = tally.as_dict("local")
    assert data["requests"] == 3 and data["failures"] == 1 and data["not_counted_sent_outside_window"] == 2
    assert sum(data["response_times"].values()) == 3 and data["max_ms"] == 1_500.0


def test_the_schedule_counts_the_sends_the_tally_counts(fresh: None) -> None:
    schedule = lf.Schedule()
    schedule.start(100.0)
    due = schedule.take()
    schedule.count(due, late=True)
    assert schedule.due == 0, "due in the warm-up"
    lf.TALLY.reset()
    time.sleep(0.01)
    for late in (False, True, False):
        schedule.count(schedule.take(), late=late)
    schedule.count(due, late=True)  # fell due before the reset: not counted, as in the tally
    assert (schedule.due, schedule.late) == (3, 1)


class FakeRunner:
    """What `control` uses of a LocalRunner."""

    def __init__(self, users: int) -> None:
        self.target_user_count = users
        self.stats = lf.RequestStats()
        self.quit_at: float | None = None

    def quit(self) -> None:
        self.quit_at = time.time()


def _environment(users: int, **options: Any) -> SimpleNamespace:
    defaults = {
        "bench_warmup": 0.05, "bench_timeout": 0.3, "bench_duration": 0.1,
        "bench_min_requests": 0, "bench_max_measure": 0.0, "bench_warmup_max": 0.0, "bench_warmup_grace": 3.0,
    }  # fmt: skip
    return SimpleNamespace(runner=FakeRunner(users), parsed_options=SimpleNamespace(**(defaults | options)))


def test_control_ends_the_warmup_once_every_user_answered_then_stops_the_load(fresh: None, tmp_path: Path) -> None:
    env, phases_file = _environment(3), tmp_path / "phases.json"
    lf.PROGRESS.spawned = True
    lf.PROGRESS.completed = 2
    started = time.time()
    control = gevent.spawn(lf.control, env, str(phases_file))
    gevent.sleep(0.2)  # past the warm-up asked for: one user still waits for its answer
    assert "measure_start" not in lf.phases
    lf.PROGRESS.first_completion()
    control.join(timeout=5)
    assert control.successful(), control.exception
    phases = json.loads(phases_file.read_text())
    assert phases["warmup_capped"] is False and phases["warmup_users"] == phases["warmup_users_completed"] == 3
    assert phases["measure_start"] - started >= 0.2 and phases["warmup_cap_s"] == pytest.approx(0.35)
    assert 0.1 <= phases["measure_stop"] - phases["measure_start"] < 1.0
    assert phases["measure_capped"] is False and phases["measure_requests"] == 0
    assert env.runner.quit_at is not None and lf.TALLY.start == pytest.approx(phases["measure_start"], abs=0.05)


def test_control_waits_past_the_cap_while_first_answers_still_arrive(fresh: None, tmp_path: Path) -> None:
    # The cap is 0.35 s (0.05 s warm-up + the 0.3 s timeout), the limit 3 s: users that
    # get their first answers 0.25 s apart keep the warm-up going until the last one.
    env, phases_file = _environment(4, bench_warmup_max=3.0), tmp_path / "phases.json"
    lf.PROGRESS.spawned = True
    lf.PROGRESS.completed = 1

    def answer_slowly() -> None:
        for _ in range(3):
            gevent.sleep(0.25)
            lf.PROGRESS.first_completion()

    answers = gevent.spawn(answer_slowly)
    control = gevent.spawn(lf.control, env, str(phases_file))
    control.join(timeout=5)
    answers.join(timeout=1)
    assert control.successful(), control.exception
    phases = json.loads(phases_file.read_text())
    assert phases["warmup_capped"] is False and phases["warmup_users_completed"] == 4
    assert phases["warmup_limit_s"] == 3.0 and 0.7 <= phases["warmup_s"] < 2.0, "past the 0.35 s cap, not the limit"


def test_control_caps_a_warmup_that_stopped_making_progress(fresh: None, tmp_path: Path) -> None:
    env, phases_file = _environment(4, bench_warmup_max=3.0), tmp_path / "phases.json"
    lf.PROGRESS.spawned = True
    lf.PROGRESS.completed = 1  # the others never get an answer
    control = gevent.spawn(lf.control, env, str(phases_file))
    control.join(timeout=5)
    assert control.successful(), control.exception
    phases = json.loads(phases_file.read_text())
    assert phases["warmup_capped"] is True and phases["warmup_s"] < 1.5, "capped near 0.35 s, not at the 3 s limit"


def test_control_caps_the_warmup_and_the_measured_phase(fresh: None, tmp_path: Path) -> None:
    env = _environment(4, bench_min_requests=10**6, bench_max_measure=0.3)
    phases_file = tmp_path / "phases.json"
    lf.PROGRESS.spawned = True
    lf.PROGRESS.completed = 1  # three users never get an answer
    control = gevent.spawn(lf.control, env, str(phases_file))
    control.join(timeout=5)
    assert control.successful(), control.exception
    phases = json.loads(phases_file.read_text())
    assert phases["warmup_capped"] is True and phases["warmup_users_completed"] == 1 and phases["warmup_users"] == 4
    assert phases["measure_capped"] is True
    assert 0.3 <= phases["measure_stop"] - phases["measure_start"] < 1.0, "stopped by the 0.3 s cap"
    assert env.runner.quit_at is not None


def test_a_master_decides_on_its_workers_summed_reports(fresh: None) -> None:
    master = lf.MasterRunner.__new__(lf.MasterRunner)  # its state only: no sockets
    master.target_user_count = 6
    master.greenlet = None  # what its finaliser looks at
    env = SimpleNamespace(runner=master)
    assert lf._totals(env) == (6, 0, 0), "no reports yet: nobody has answered"
    lf._on_status(env, SimpleNamespace(node_id="w1", data={"users": 3, "completed": 3, "requests": 40}))
    lf._on_status(env, SimpleNamespace(node_id="w2", data={"users": 3, "completed": 1, "requests": 7}))
    assert lf._totals(env) == (6, 4, 47)
    lf._on_status(env, SimpleNamespace(node_id="w2", data={"users": 3, "completed": 3, "requests": 9}))
    assert lf._totals(env) == (6, 6, 49), "the latest report of each worker counts, once"


# --- real Locust runs against the stub upstream -----------------------------------------


def _locust(folder: Path, port: int, path: str, *options: str, workers: int = 0, users: int = 4) -> dict[str, Any]:
    """Locust headless on loopback (with `workers` worker processes), bounded; returns
    phases.json. Its tallies are left in `folder`."""
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    base = [sys.executable, "-m", "locust", "-f", str(ROOT / "scenarios" / "locustfile.py")]
    bench = ["--bench-path", path, "--bench-check-body", "0", "--bench-phases", str(folder / "phases.json"), *options]
    argv = [
        *base, "--headless", "--host", f"http://127.0.0.1:{port}", "-u", str(users), "-r", "100", "-t", "15s",
        "--only-summary", "--loglevel", "WARNING", "--stop-timeout", "2", "--exit-code-on-error", "0", *bench,
    ]  # fmt: skip
    master_port = free_port() if workers else 0
    if workers:
        argv += ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(master_port)]
        argv += ["--expect-workers", str(workers)]
    procs = [subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)]
    for _ in range(workers):
        worker = [*base, "--worker", "--master-host", "127.0.0.1", "--master-port", str(master_port), *bench]
        procs.append(subprocess.Popen(worker, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        _, err = procs[0].communicate(timeout=40)
        for proc in procs[1:]:
            proc.wait(timeout=15)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert procs[0].returncode == 0, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    return dict(json.loads((folder / "phases.json").read_text()))


def _tallies(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(f.read_text()) for f in sorted(folder.glob("tally-*.json"))]


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[int]:
    """The stub upstream (answers /delay?ms=N after N ms without blocking) on loopback, with
    the machine's load lock held so no other benchmark's load runs meanwhile."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "harness.upstream:app", "--host", "127.0.0.1", "--port", str(port)]
    server = ManagedProcess(
        "stub upstream", [*argv, "--log-level", "warning"], tmp_path / "upstream.log", os.environ, ROOT
    )
    with machine_load_lock(lambda _: None):
        server.serve(f"http://127.0.0.1:{port}/ping", 20)
        try:
            yield port
        finally:
            server.stop()


@pytest.mark.slow
def test_one_process_warms_every_user_then_measures_the_duration(upstream: int, tmp_path: Path) -> None:
    phases = _locust(
        tmp_path, upstream, "/delay?ms=20&id={id}", "--bench-warmup", "0.5", "--bench-timeout", "2",
        "--bench-duration", "1.5",
    )  # fmt: skip
    assert phases["warmup_capped"] is False and phases["warmup_users"] == phases["warmup_users_completed"] == 4
    measured = phases["measure_stop"] - phases["measure_start"]
    assert 1.5 <= measured < 3.0, "the locustfile stopped the load, not the 15 s run time"
    assert phases["load_stop"] - phases["measure_stop"] < 0.5
    [tally] = _tallies(tmp_path)
    # 4 users, 20 ms each: about 200 req/s; the window is when they were sending.
    assert tally["stop"] == pytest.approx(phases["load_stop"], abs=0.2) and tally["start"] >= phases["measure_start"]
    assert tally["requests"] >= phases["measure_requests"] > 100 and tally["failures"] == 0
    assert tally["not_counted_sent_outside_window"] >= 1, "the requests in flight at the reset"
    assert tally["max_ms"] < 1000


@pytest.mark.slow
def test_a_minimum_of_requests_stretches_the_window_up_to_its_cap(upstream: int, tmp_path: Path) -> None:
    # 2 users, 100 ms each: 20 req/s; 30 requests need 1.5 s, more than the 0.5 s duration.
    (tmp_path / "stretched").mkdir()
    phases = _locust(
        tmp_path / "stretched", upstream, "/delay?ms=100&id={id}", "--bench-warmup", "0.2", "--bench-timeout", "2",
        "--bench-duration", "0.5", "--bench-min-requests", "30", "--bench-max-measure", "6", users=2,
    )  # fmt: skip
    measured = phases["measure_stop"] - phases["measure_start"]
    assert phases["measure_capped"] is False and phases["measure_requests"] >= 30
    assert 1.2 <= measured < 4.0, f"stretched to hold 30 requests, took {measured:.2f} s"
    # The same with a minimum it cannot reach: the cap ends it.
    (tmp_path / "capped").mkdir()
    phases = _locust(
        tmp_path / "capped", upstream, "/delay?ms=100&id={id}", "--bench-warmup", "0.2", "--bench-timeout", "2",
        "--bench-duration", "0.5", "--bench-min-requests", "100000", "--bench-max-measure", "1.5", users=2,
    )  # fmt: skip
    assert phases["measure_capped"] is True
    assert 1.5 <= phases["measure_stop"] - phases["measure_start"] < 2.5


@pytest.mark.slow
def test_a_warmup_where_no_user_gets_an_answer_ends_at_its_cap(upstream: int, tmp_path: Path) -> None:
    # Every request outlasts the 1 s timeout: no user ever gets an answer.
    phases = _locust(
        tmp_path, upstream, "/delay?ms=5000&id={id}", "--bench-warmup", "0.2", "--bench-timeout", "1",
        "--bench-duration", "0.5", users=2,
    )  # fmt: skip
    assert phases["warmup_capped"] is True and phases["warmup_users_completed"] == 0
    assert phases["warmup_cap_s"] == pytest.approx(1.2)
    assert 1.2 <= phases["measure_start"] - phases["load_start"] < 2.5


@pytest.mark.slow
def test_distributed_mode_decides_on_the_workers_reports(upstream: int, tmp_path: Path) -> None:
    phases = _locust(
        tmp_path, upstream, "/delay?ms=20&id={id}", "--bench-warmup", "0.5", "--bench-timeout", "2",
        "--bench-duration", "1", "--bench-min-requests", "50", "--bench-max-measure", "5", workers=2,
    )  # fmt: skip
    assert phases["warmup_capped"] is False and phases["warmup_users"] == phases["warmup_users_completed"] == 4
    assert phases["measure_capped"] is False and 1.0 <= phases["measure_stop"] - phases["measure_start"] < 3.0
    tallies = _tallies(tmp_path)
    assert [t["role"] for t in tallies] == ["worker", "worker"]
    # The master stopped on the workers' summed counts, reported a moment before the stop.
    assert sum(t["requests"] for t in tallies) >= phases["measure_requests"] >= 50
    assert all(t["requests"] > 0 and t["start"] >= phases["measure_start"] for t in tallies)


def test_an_armed_process_waits_for_its_go_file_and_removes_it(tmp_path: Path) -> None:
    go = tmp_path / "go"
    started = time.monotonic()
    with pytest.raises(SystemExit, match="never told to start"):
        lf.wait_for_go(str(go), limit_s=0.1)
    assert time.monotonic() - started >= 0.1
    go.touch()
    lf.wait_for_go(str(go), limit_s=5)
    assert not go.exists()


@pytest.mark.slow
def test_an_armed_locust_sends_nothing_until_told_to_go(upstream: int, tmp_path: Path) -> None:
    # Armed early (the runner overlaps Locust's start-up with the server's): no phase, no
    # request until the go file appears; then a normal run.
    go, phases = tmp_path / "go", tmp_path / "phases.json"
    argv = [
        sys.executable, "-m", "locust", "-f", str(ROOT / "scenarios" / "locustfile.py"), "--headless",
        "--host", f"http://127.0.0.1:{upstream}", "-u", "2", "-r", "100", "-t", "15s", "--only-summary",
        "--loglevel", "WARNING", "--stop-timeout", "2", "--bench-path", "/delay?ms=5&id={id}",
        "--bench-check-body", "0", "--bench-phases", str(phases), "--bench-duration", "0.5", "--bench-go", str(go),
    ]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE)
    try:
        time.sleep(3)  # well past Locust's start-up
        assert proc.poll() is None and not phases.exists()
        go.touch()
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    written = json.loads(phases.read_text())
    assert written["measure_requests"] > 0 and not go.exists()


@pytest.mark.slow
def test_every_user_opens_its_connection_before_any_loads_a_blocked_loop(tmp_path: Path) -> None:
    """With a connect path, each user's first request is the connect request, and every
    user has its connection before the first request that blocks the loop arrives: none
    of the warm-up goes to users getting in one per blocked loop pass."""
    port, log = free_port(), tmp_path / "requests.log"
    argv = [sys.executable, "-m", "uvicorn", "tests.loop_blocker:app", "--host", "127.0.0.1", "--port", str(port)]
    server = ManagedProcess(
        "loop blocker", [*argv, "--log-level", "warning"], tmp_path / "server.log",
        os.environ | {"LOOP_BLOCKER_LOG": str(log)}, ROOT,
    )  # fmt: skip
    users = 20
    with machine_load_lock(lambda _: None):
        server.serve(f"http://127.0.0.1:{port}/ping", 20)
        log.unlink(missing_ok=True)  # the readiness pings are not the load's
        try:
            phases = _locust(
                tmp_path, port, "/block?ms=20&id={id}", "--bench-warmup", "0", "--bench-timeout", "10",
                "--bench-duration", "0.5", "--bench-connect-path", "/ping", users=users,
            )  # fmt: skip
        finally:
            server.stop()
    requests = [line.split() for line in log.read_text().splitlines()]
    first_by_client: dict[str, str] = {}
    for path, client in requests:
        first_by_client.setdefault(client, path)
    assert len(first_by_client) == users, "one connection per user, kept for the load"
    assert set(first_by_client.values()) == {"/ping"}
    first_block = next(i for i, (path, _) in enumerate(requests) if path == "/block")
    assert sum(path == "/ping" for path, _ in requests[:first_block]) == users
    # One loop pass serves every user's first request: 20 x 20 ms, not 20 x 21 / 2 x 20 ms.
    assert phases["warmup_users_completed"] == users and phases["warmup_s"] < 2.0
