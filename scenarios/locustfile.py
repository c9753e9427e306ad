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

Every process that sends requests (the single process, or each worker) keeps its own
tally from the end of its warm-up to the end of its last request, and writes it as
`tally-<pid>.json` when it stops. The runner merges them. A master's totals would not
do: Locust's master quits 0.5 s after asking its workers to stop, while they may still
be finishing requests for up to the stop timeout, so their last reports are lost.
"""

from __future__ import annotations

import json
import os
import random
import time
from typing import Any

import gevent
from locust import FastHttpUser, events, task
from locust.runners import MasterRunner, WorkerRunner
from locust.stats import RequestStats, StatsError

# A send later than this after its due time is "late": the generator could not keep up.
LATE_MS = 10.0
RESET_MESSAGE = "bench_reset_stats"
phases: dict[str, float] = {}


@events.init_command_line_parser.add_listener
def add_options(parser: Any) -> None:
    parser.add_argument("--bench-path", default="/ping", help="URL template with {id}")
    parser.add_argument("--bench-rows", type=int, default=1, help="ids are drawn from 1..rows")
    parser.add_argument("--bench-warmup", type=float, default=0.0, help="seconds before statistics reset")
    parser.add_argument("--bench-timeout", type=float, default=10.0, help="a request slower than this fails")
    parser.add_argument("--bench-phases", default="", help="where the master writes phase times")
    parser.add_argument("--bench-rate", type=float, default=0.0, help="open loop: requests per second in all")
    parser.add_argument("--bench-check-body", type=int, default=1, help="0: status only (calibration)")


def _options(environment: Any) -> Any:
    return environment.parsed_options


def _write_json(path: str, data: dict[str, Any]) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as out:
        json.dump(data, out)
    os.replace(tmp, path)


class Tally:
    """What this process measured: Locust's own statistics, fed by the same request
    events, so response times are bucketed and failures counted exactly as Locust does."""

    def __init__(self) -> None:
        self.stats = RequestStats()
        self.start: float | None = None
        self.stop: float | None = None

    def reset(self) -> None:
        self.stats.reset_all()
        self.start, self.stop = time.time(), None

    def on_request(
        self, request_type: str, name: str, response_time: float, response_length: int, exception: Any = None, **_: Any
    ) -> None:
        if self.start is None:  # still in the warm-up
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
            # Locust's buckets (ms, rounded as Locust rounds) and their counts: tallies
            # merge by adding them, and percentiles come from the merged buckets.
            "response_times": {str(ms): n for ms, n in total.response_times.items()},
            "max_ms": total.max_response_time if total.num_requests else None,
            "errors": [[StatsError.parse_error(e.error), e.occurrences] for e in self.stats.errors.values()],
        }


TALLY = Tally()


def _reset_stats(environment: Any, msg: Any = None, **_: Any) -> None:
    environment.runner.stats.reset_all()
    if not isinstance(environment.runner, MasterRunner):
        TALLY.reset()
        SCHEDULE.reset()


@events.init.add_listener
def on_init(environment: Any, **_: Any) -> None:
    if not isinstance(environment.runner, MasterRunner):
        environment.events.request.add_listener(TALLY.on_request)
    if isinstance(environment.runner, WorkerRunner):
        # Workers report what they measured every few seconds; the warm-up's requests
        # must be dropped where they are counted, not only on the master.
        environment.runner.register_message(RESET_MESSAGE, _reset_stats)


def end_warmup(environment: Any, warmup_s: float, phases_file: str) -> None:
    gevent.sleep(warmup_s)
    if isinstance(environment.runner, MasterRunner):
        environment.runner.send_message(RESET_MESSAGE)
    _reset_stats(environment)
    phases["measure_start"] = time.time()
    _write_json(phases_file, phases)


def _is_master_or_local(environment: Any) -> bool:
    return not isinstance(environment.runner, WorkerRunner)


@events.test_start.add_listener
def on_test_start(environment: Any, **_: Any) -> None:
    options = _options(environment)
    if _is_master_or_local(environment) and options.bench_phases:
        phases["load_start"] = time.time()
        _write_json(options.bench_phases, phases)
        gevent.spawn(end_warmup, environment, options.bench_warmup, options.bench_phases)


@events.test_stop.add_listener
def on_test_stop(environment: Any, **_: Any) -> None:
    options = _options(environment)
    if not options.bench_phases:
        return
    if _is_master_or_local(environment):
        phases["load_stop"] = time.time()
        _write_json(options.bench_phases, phases)
    if isinstance(environment.runner, MasterRunner):
        return
    # test_stop fires once this process's users have finished their last requests.
    folder = os.path.dirname(options.bench_phases)
    if TALLY.start is not None:
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
        self.due += 1
        return due

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

    def on_start(self) -> None:
        options = _options(self.environment)
        self.path, self.rows = options.bench_path, options.bench_rows
        self.check_body = bool(options.bench_check_body)
        # Locust's statistics group requests by this name, not by the random URL.
        self.label = self.path.replace("{id}", ":id")
        self.rate = _rate_share(self.environment)
        if self.rate > 0:
            SCHEDULE.start(self.rate)

    @task
    def get_item(self) -> None:
        due = None
        if self.rate > 0:
            due = SCHEDULE.take()
            wait = due - time.perf_counter()
            if wait > 0:
                gevent.sleep(wait)
            elif -wait * 1000 > LATE_MS:
                SCHEDULE.late += 1
        item_id = random.randint(1, self.rows)
        with self.client.get(self.path.format(id=item_id), name=self.label, catch_response=True) as resp:
            # Status is checked by Locust; a cheap body check catches a wrong row under load.
            if self.check_body and resp.status_code == 200 and f'"id":{item_id},'.encode() not in (resp.content or b""):
                resp.failure(f"wrong body for id {item_id}")
            if due is not None:
                # Open loop: the latency a client sending on schedule would have seen.
                resp.request_meta["response_time"] = (time.perf_counter() - due) * 1000
