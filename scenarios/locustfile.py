"""The load on one variant: Locust users asking for random seeded rows.

Closed loop (the default): each user sends its next request as soon as the last one
returned, so a stalled server also stalls its load, and the stall is under-counted.
Open loop (`--bench-rate R`): requests are due on a fixed schedule of R per second,
whether or not earlier ones returned; each user takes the next due time, and latency is
counted from that time, so time spent waiting for a free user counts too. A request
sent more than LATE_MS after its due time is counted as late.

Settings arrive as Locust options (`--bench-*`), which Locust's master also hands to its
workers, so a distributed run measures exactly what a single process does. The
wall-clock times of start, end of warm-up and stop go to `--bench-phases` so the runner
can cut its own samples to the same window.

The warm-up ends once `--bench-warmup` seconds have passed, every user has been spawned
and every user has completed at least one request (so connection set-up and the first
queue of requests stay out of the measured window). A variant where some user never
completes ends it at the cap: the warm-up plus `--bench-warmup-grace` (the scenario's
`warmup_grace_s`; or `--bench-timeout`, if shorter), or, while users are still getting
their first answers, at `--bench-warmup-max` (the scenario's `warmup_max_s`);
phases.json says whether the cap was hit and how many users had completed. The measured phase then
lasts `--bench-duration` seconds and, with `--bench-min-requests N`, until the tally holds
N requests, but never longer than `--bench-max-measure` seconds; then the locustfile stops
the load itself (Locust's `-t` is only the outer bound). In distributed mode the workers
report their users and counts to the master (`bench_status`, a few times a second), and the
master decides both ends on the sums.

Every process that sends requests (the single process, or each worker) keeps its own
tally of the requests SENT between the end of its warm-up and the moment its users were
told to stop (send time = completion - response time; in open loop that is the due
time), and writes it as `tally-<pid>.json` when its users have finished. A request sent
in the warm-up that completes after it is not counted, so no warm-up backlog lands in the
window, and the window ends when sending stopped, so requests per second are sends per
second of the window. The runner merges the tallies. A master's totals would not do:
Locust's master quits 0.5 s after asking its workers to stop, while they may still be
finishing requests for up to the stop timeout, so their last reports are lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sys
import time
from typing import Any

import gevent
import gevent.event
from locust import FastHttpUser, events, task
from locust.contrib.fasthttp import LocustBadStatusCode
from locust.runners import MasterRunner, WorkerRunner
from locust.stats import RequestStats, StatsError

# A send later than this after its due time is "late": the generator could not keep up.
LATE_MS = 10.0
RESET_MESSAGE = "bench_reset_stats"
STATUS_MESSAGE = "bench_status"  # worker -> master: its users, how many completed once, its tally's count
STATUS_INTERVAL_S = 0.2  # how often workers report it
POLL_S = 0.05  # how often the master (or the single process) checks whether a phase may end
phases: dict[str, float] = {}


@events.init_command_line_parser.add_listener
def add_options(parser: Any) -> None:
    parser.add_argument("--bench-path", default="/ping", help="URL template with {id}")
    parser.add_argument("--bench-paths", default="", help="a JSON list of URL templates, one drawn per request (probe)")
    parser.add_argument("--bench-rows", type=int, default=1, help="ids are drawn from 1..rows")
    parser.add_argument("--bench-id-min", type=int, default=1, help="ids are drawn from id-min..rows")
    parser.add_argument("--bench-expect", default="", help="a 200 response must contain this text")
    parser.add_argument("--bench-warmup", type=float, default=0.0, help="seconds before statistics reset")
    parser.add_argument("--bench-timeout", type=float, default=10.0, help="a request slower than this fails")
    parser.add_argument(
        "--bench-warmup-max", type=float, default=0.0, help="warm-up seconds at most while users still get answers"
    )
    parser.add_argument(
        "--bench-warmup-grace",
        type=float,
        default=WARMUP_GRACE_S,
        help="end the warm-up once no user got a first answer for this long",
    )
    parser.add_argument("--bench-phases", default="", help="where the master writes phase times")
    parser.add_argument("--bench-rate", type=float, default=0.0, help="open loop: requests per second in all")
    parser.add_argument("--bench-check-body", type=int, default=1, help="0: status only (calibration)")
    parser.add_argument(
        "--bench-duration", type=float, default=0.0, help="measured seconds, then stop (0: Locust's -t decides)"
    )
    parser.add_argument(
        "--bench-min-requests", type=int, default=0, help="measure until the tally holds this many (0: off)"
    )
    parser.add_argument(
        "--bench-max-measure", type=float, default=0.0, help="measured seconds at most (0: --bench-duration)"
    )
    parser.add_argument(
        "--bench-connect-path",
        default="",
        help="each user first opens its connection with one request here, and all start together",
    )
    parser.add_argument("--bench-go", default="", help="wait for this file before the load starts (armed early)")


def _options(environment: Any) -> Any:
    return environment.parsed_options


def _write_json(path: str, data: dict[str, Any]) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as out:
        json.dump(data, out)
    os.replace(tmp, path)


# --- the decisions, as pure functions ---------------------------------------------------


# How long past the asked warm-up a warm-up waits for every user's first answer when
# none arrives any more, unless `--bench-warmup-grace` says otherwise.
WARMUP_GRACE_S = 3.0


def warmup_cap_s(warmup_s: float, timeout_s: float, grace_s: float = WARMUP_GRACE_S) -> float:
    """The warm-up's cap while no user gets a first answer: the warm-up asked for plus the
    grace (or one request timeout, if shorter), by which every user's first request has
    completed or failed, unless the server never takes it in."""
    return max(0.0, warmup_s) + min(max(0.0, grace_s), max(0.0, timeout_s))


def warmup_limit_s(cap_s: float, max_s: float) -> float:
    """The longest warm-up, however steadily users still get their first answers:
    `--bench-warmup-max`, never shorter than the cap."""
    return max(cap_s, max_s)


def warmup_end(
    elapsed_s: float,
    warmup_s: float,
    cap_s: float,
    spawned: bool,
    users: int,
    completed: int,
    quiet_s: float = float("inf"),
    limit_s: float = 0.0,
    grace_s: float = WARMUP_GRACE_S,
) -> str:
    """Whether the warm-up may end: "ready" once `warmup_s` have passed, all users are
    spawned and each has completed a request; "capped" at `cap_s` if no user got a first
    answer in the last `grace_s` (`quiet_s`: seconds since the latest), and at
    `limit_s` (the `warmup_limit_s`) whatever they did; "" to go on."""
    if elapsed_s >= warmup_s and spawned and users > 0 and completed >= users:
        return "ready"
    if elapsed_s >= max(cap_s, limit_s):
        return "capped"
    if elapsed_s >= cap_s and quiet_s >= min(grace_s, cap_s):
        return "capped"
    return ""


def max_measure_s(duration_s: float, max_measure: float) -> float:
    """The longest measured phase: `max_measure` when given, never shorter than the duration."""
    return max(duration_s, max_measure)


def measure_end(elapsed_s: float, duration_s: float, requests: int, min_requests: int, max_measure: float) -> str:
    """Whether the measured phase may end: "done" once `duration_s` have passed and the
    tally holds `min_requests`; "capped" at the longest measured phase; "" to go on
    (always "" with no duration: Locust's run time decides)."""
    if duration_s <= 0:
        return ""
    if elapsed_s >= duration_s and requests >= min_requests:
        return "done"
    if elapsed_s >= max_measure_s(duration_s, max_measure):
        return "capped"
    return ""


def sent_in_window(completed_at: float, response_time_ms: float, start: float | None, stop: float | None) -> bool:
    """Whether a request counts: sent (completion minus response time, which in open loop
    runs from the due time) at or after the window's start and, once it has one, not
    after its stop."""
    if start is None:
        return False
    sent = completed_at - response_time_ms / 1000
    return sent >= start and (stop is None or sent <= stop)


# --- what this process measured ---------------------------------------------------------


class Tally:
    """What this process measured: Locust's own statistics, fed by the same request
    events, so response times are bucketed and failures counted exactly as Locust does;
    only requests sent inside the window count."""

    def __init__(self) -> None:
        self.stats = RequestStats()
        self.start: float | None = None
        self.stop: float | None = None
        self.outside = 0  # completed inside the window, sent outside it: mostly the warm-up's backlog

    def reset(self) -> None:
        self.stats.reset_all()
        self.start, self.stop, self.outside = time.time(), None, 0

    @property
    def requests(self) -> int:
        return int(self.stats.total.num_requests)

    def counts(self, sent: float) -> bool:
        return sent_in_window(sent, 0.0, self.start, self.stop)

    def on_request(
        self, request_type: str, name: str, response_time: float, response_length: int, exception: Any = None, **_: Any
    ) -> None:
        if self.start is None:  # still in the warm-up
            return
        if not sent_in_window(time.time(), response_time, self.start, self.stop):
            self.outside += 1
            return
        if exception:
            self.stats.log_error(request_type, name, exception)
        self.stats.log_request(request_type, name, response_time, response_length)

    def as_dict(self, role: str) -> dict[str, Any]:
        total = self.stats.total
        return {
            "role": role,
            "start": self.start,
            "stop": self.stop,
            "requests": total.num_requests,
            "failures": total.num_failures,
            "not_counted_sent_outside_window": self.outside,
            # Locust's buckets (ms, rounded as Locust rounds) and their counts: tallies
            # merge by adding them, and percentiles come from the merged buckets.
            "response_times": {str(ms): n for ms, n in total.response_times.items()},
            "max_ms": total.max_response_time if total.num_requests else None,
            "errors": [[StatsError.parse_error(e.error), e.occurrences] for e in self.stats.errors.values()],
        }


TALLY = Tally()


class Progress:
    """This process's users: how many have had an answer to a request since they started,
    and how many have opened their connection (`--bench-connect-path`)."""

    def __init__(self) -> None:
        self.completed = 0
        self.spawned = False  # spawning_complete fired (on the master: on every worker)
        self.connected = 0
        self.all_connected = gevent.event.Event()

    def first_completion(self) -> None:
        self.completed += 1

    def connection_opened(self, users: int) -> None:
        """One more user has its connection; once this process's `users` all have theirs,
        they start together."""
        self.connected += 1
        if users > 0 and self.connected >= users:
            self.all_connected.set()


PROGRESS = Progress()
# The master's view of its workers: their latest bench_status, by worker id.
WORKER_STATUS: dict[str, dict[str, Any]] = {}


def _reset_stats(environment: Any, msg: Any = None, **_: Any) -> None:
    environment.runner.stats.reset_all()
    if not isinstance(environment.runner, MasterRunner):
        TALLY.reset()
        SCHEDULE.reset()


def _on_status(environment: Any, msg: Any, **_: Any) -> None:
    WORKER_STATUS[str(msg.node_id)] = dict(msg.data or {})


def _report_status(environment: Any) -> None:
    """A worker's reports to the master, until its users stop."""
    while True:
        environment.runner.send_message(
            STATUS_MESSAGE,
            {"users": environment.runner.user_count, "completed": PROGRESS.completed, "requests": TALLY.requests},
        )
        gevent.sleep(STATUS_INTERVAL_S)


def _totals(environment: Any) -> tuple[int, int, int]:
    """Users, users completed once and requests tallied: this process's, or on a master
    the sums of its workers' latest reports. Users are the target once spawning is done."""
    users = int(environment.runner.target_user_count or 0)
    if isinstance(environment.runner, MasterRunner):
        reports = list(WORKER_STATUS.values())
        return users, sum(int(r.get("completed", 0)) for r in reports), sum(int(r.get("requests", 0)) for r in reports)
    return users, PROGRESS.completed, TALLY.requests


# An armed process gives up on its go file after this long (the runner stops it sooner).
GO_WAIT_S = 120.0


def wait_for_go(go_file: str, limit_s: float = GO_WAIT_S) -> None:
    """Armed early (started while the server starts, so Locust's own start-up costs the
    run nothing): wait until the runner has verified the server and taken the machine,
    then start. Exit if the runner that armed it is gone or never says go."""
    parent, deadline = os.getppid(), time.monotonic() + limit_s
    while not os.path.exists(go_file):
        if os.getppid() != parent or time.monotonic() > deadline:
            sys.exit(f"never told to start ({go_file})")
        time.sleep(0.01)
    with contextlib.suppress(OSError):
        os.unlink(go_file)


@events.init.add_listener
def on_init(environment: Any, **_: Any) -> None:
    if _options(environment).bench_go and not isinstance(environment.runner, WorkerRunner):
        wait_for_go(_options(environment).bench_go)
    if not isinstance(environment.runner, MasterRunner):
        environment.events.request.add_listener(TALLY.on_request)
    if isinstance(environment.runner, WorkerRunner):
        # Workers report what they measured every few seconds; the warm-up's requests
        # must be dropped where they are counted, not only on the master.
        environment.runner.register_message(RESET_MESSAGE, _reset_stats)
    if isinstance(environment.runner, MasterRunner):
        environment.runner.register_message(STATUS_MESSAGE, _on_status)


@events.spawning_complete.add_listener
def on_spawning_complete(**_: Any) -> None:
    PROGRESS.spawned = True


def control(environment: Any, phases_file: str) -> None:
    """The master's (or the single process's) phases: warm-up until it may end, reset,
    measure until that may end, stop the load."""
    options = _options(environment)
    started = time.monotonic()
    grace = float(options.bench_warmup_grace)
    cap = warmup_cap_s(options.bench_warmup, options.bench_timeout, grace)
    limit = warmup_limit_s(cap, options.bench_warmup_max)
    answered, answered_at = 0, started
    while True:
        users, completed, _ = _totals(environment)
        now = time.monotonic()
        if completed > answered:  # another user's first answer: the warm-up is still making progress
            answered, answered_at = completed, now
        quiet = now - answered_at
        verdict = warmup_end(
            now - started, options.bench_warmup, cap, PROGRESS.spawned, users, completed, quiet, limit, grace
        )
        if verdict:
            break
        gevent.sleep(POLL_S)
    phases["warmup_s"] = round(time.monotonic() - started, 3)
    # The window's start first: every load process's tally starts at or after it.
    phases["measure_start"] = time.time()
    if isinstance(environment.runner, MasterRunner):
        environment.runner.send_message(RESET_MESSAGE)
    _reset_stats(environment)
    phases.update(warmup_capped=verdict == "capped", warmup_cap_s=cap, warmup_limit_s=limit)
    phases.update(warmup_users=users, warmup_users_completed=min(completed, users))
    _write_json(phases_file, phases)
    duration, min_requests = float(options.bench_duration), int(options.bench_min_requests)
    if duration <= 0:
        return  # Locust's run time ends the load
    measuring = time.monotonic()
    while True:
        _, _, requests = _totals(environment)
        verdict = measure_end(time.monotonic() - measuring, duration, requests, min_requests, options.bench_max_measure)
        if verdict:
            break
        gevent.sleep(POLL_S)
    phases.update(measure_stop=time.time(), measure_requests=requests, measure_capped=verdict == "capped")
    _write_json(phases_file, phases)
    environment.runner.quit()


def _is_master_or_local(environment: Any) -> bool:
    return not isinstance(environment.runner, WorkerRunner)


@events.test_start.add_listener
def on_test_start(environment: Any, **_: Any) -> None:
    options = _options(environment)
    if isinstance(environment.runner, WorkerRunner):
        environment.bench_reporter = gevent.spawn(_report_status, environment)
    if _is_master_or_local(environment) and options.bench_phases:
        phases["load_start"] = time.time()
        _write_json(options.bench_phases, phases)
        gevent.spawn(control, environment, options.bench_phases)


@events.test_stopping.add_listener
def on_test_stopping(environment: Any, **_: Any) -> None:
    """The users are told to stop: no request sent from now on counts, and the window
    ends here (the users' requests in flight still complete and count)."""
    now = time.time()
    if not isinstance(environment.runner, MasterRunner) and TALLY.start is not None and TALLY.stop is None:
        TALLY.stop = now
    options = _options(environment)
    if _is_master_or_local(environment) and options.bench_phases and "load_stop" not in phases:
        phases["load_stop"] = now
        _write_json(options.bench_phases, phases)


@events.test_stop.add_listener
def on_test_stop(environment: Any, **_: Any) -> None:
    reporter = getattr(environment, "bench_reporter", None)
    if reporter is not None:
        reporter.kill(block=False)
    options = _options(environment)
    if not options.bench_phases:
        return
    if _is_master_or_local(environment) and "load_stop" not in phases:
        phases["load_stop"] = time.time()
        _write_json(options.bench_phases, phases)
    if isinstance(environment.runner, MasterRunner):
        return
    # test_stop fires once this process's users have finished their last requests.
    folder = os.path.dirname(options.bench_phases)
    if TALLY.start is not None:
        if TALLY.stop is None:
            TALLY.stop = time.time()
        role = "worker" if isinstance(environment.runner, WorkerRunner) else "local"
        _write_json(os.path.join(folder, f"tally-{os.getpid()}.json"), TALLY.as_dict(role))
    if SCHEDULE.due:
        # Each load process says how many requests were due and how many went out late.
        _write_json(os.path.join(folder, f"schedule-{os.getpid()}.json"), SCHEDULE.as_dict())


class Schedule:
    """Due times at a fixed rate, shared by this process's users."""

    def __init__(self) -> None:
        self.period_s = 0.0
        self.next_due: float | None = None
        self.due = 0
        self.late = 0

    def start(self, rate_per_s: float) -> None:
        if self.period_s == 0.0:
            self.period_s = 1.0 / rate_per_s

    def reset(self) -> None:
        """Count from the end of the warm-up, as the tally does; the schedule goes on."""
        self.due = self.late = 0

    def take(self) -> float:
        """The next due time (time.perf_counter); the caller waits until then."""
        now = time.perf_counter()
        if self.next_due is None:
            self.next_due = now
        due, self.next_due = self.next_due, self.next_due + self.period_s
        return due

    def count(self, due: float, late: bool) -> None:
        """A send due at `due` (time.perf_counter): counted if the tally counts it, that is
        if it fell due inside the window, so due, late and tallied requests agree."""
        if TALLY.counts(time.time() - (time.perf_counter() - due)):
            self.due += 1
            self.late += int(late)

    def as_dict(self) -> dict[str, Any]:
        return {"due": self.due, "late": self.late, "late_ms": LATE_MS, "rate_per_s": 1 / self.period_s}


SCHEDULE = Schedule()


def _rate_share(environment: Any) -> float:
    """This process's share of the open-loop rate: workers split it evenly."""
    options = _options(environment)
    workers = max(1, int(getattr(options, "expect_workers", 1) or 1))
    return float(options.bench_rate) / (workers if isinstance(environment.runner, WorkerRunner) else 1)


class ItemUser(FastHttpUser):
    # No wait time: closed loop sends the next request at once; open loop waits for its due time.
    def __init__(self, environment: Any) -> None:
        # Set before FastHttpUser builds its client, which reads them once.
        self.network_timeout = self.connection_timeout = _options(environment).bench_timeout
        super().__init__(environment)
        self.completed_once = False

    def on_start(self) -> None:
        options = _options(self.environment)
        self.paths = json.loads(options.bench_paths) if options.bench_paths else [options.bench_path]
        self.id_min, self.rows = options.bench_id_min, options.bench_rows
        self.check_body = bool(options.bench_check_body)
        self.expect = options.bench_expect.encode()
        # Headers come in the environment, not on the command line, where any process
        # listing would show a token.
        self.headers = json.loads(os.environ.get("BENCH_HEADERS") or "{}")
        # Locust's statistics group requests by this name, not by the random URL.
        self.labels = {path: path.replace("{id}", ":id") for path in self.paths}
        self.rate = _rate_share(self.environment)
        if self.rate > 0:
            SCHEDULE.start(self.rate)
        if options.bench_connect_path:
            self.connect_first(options.bench_connect_path, float(options.bench_warmup_max or options.bench_timeout))

    def connect_first(self, path: str, limit_s: float) -> None:
        """Open this user's connection with one cheap request, then wait until every user
        of this process has one. Without it, users connecting to a loop that is already
        blocked by the first users' requests get in one per loop pass: 50 users took 26 s
        of warm-up at block_ms=20 (measured), most of it spent on connection set-up."""
        with self.client.get(path, name="connect", catch_response=True) as resp:
            resp.success()  # only the connection counts; its answer is not the variant's
        PROGRESS.connection_opened(int(self.environment.runner.target_user_count or 0))
        PROGRESS.all_connected.wait(timeout=limit_s)

    @task
    def get_item(self) -> None:
        due = None
        if self.rate > 0:
            due = SCHEDULE.take()
            wait = due - time.perf_counter()
            if wait > 0:
                gevent.sleep(wait)
            SCHEDULE.count(due, late=-wait * 1000 > LATE_MS)
        item_id = random.randint(self.id_min, self.rows)
        path = random.choice(self.paths) if len(self.paths) > 1 else self.paths[0]
        with self.client.get(
            path.format(id=item_id), name=self.labels[path], headers=self.headers or None, catch_response=True
        ) as resp:
            # Status is checked by Locust; a cheap body check catches a wrong row under load.
            if self.check_body and resp.status_code == 200 and f'"id":{item_id},'.encode() not in (resp.content or b""):
                resp.failure(f"wrong body for id {item_id}")
            elif self.expect and resp.status_code == 200 and self.expect not in (resp.content or b""):
                resp.failure("body without the expected text")
            elif resp.status_code >= 500 and resp.content:
                # The apps answer a 5xx with its cause's first line ('QueuePool limit ... reached',
                # 'too many connections ...'): kept, so failure kinds name the cause, not only the
                # status. Locust's own exception, the reason before the code, so the kind still
                # ends "code=503)" as readers of stored runs expect. Read for failures only, bounded.
                try:
                    detail = json.loads(resp.content[:4096]).get("detail")  # a longer body: not parsed
                except (ValueError, AttributeError):
                    detail = None
                lines = str(detail or resp.content[:1000].decode(errors="replace")).splitlines()
                reason = lines[0][:200] if lines else ""
                resp.failure(LocustBadStatusCode(resp.url, reason=reason, code=resp.status_code))
            if due is not None:
                # Open loop: the latency a client sending on schedule would have seen.
                resp.request_meta["response_time"] = (time.perf_counter() - due) * 1000
        # This user's first answer (any status): its connection is set up and it got through
        # the first queue. A timeout or a refused connection does not count; the user's
        # next request opens a new connection, and its set-up would land in the window.
        if not self.completed_once and resp.status_code:
            self.completed_once = True
            PROGRESS.first_completion()
