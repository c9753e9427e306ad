"""The runner: a pipeline of small steps per variant.

    provision database -> for each variant:
        baseline -> start server -> verify -> load (warm-up + measured) with sampler
        and probe -> stop server -> settle backends -> store record
    -> summary -> report

Every step that can hang has a deadline. A variant that fails is recorded with its
reason and the run goes on; each variant's files are on disk before the next starts.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psycopg2

from harness import analysis, database, forkserver, stats, store
from harness.database import Database
from harness.forkserver import ForkServer
from harness.pairs import ROOT, BenchError, Pair, Variant
from harness.procs import (
    Interrupted,
    ManagedProcess,
    free_port,
    log_tail,
    machine_load_lock,
    python_bin,
)
from harness.records import Calibration, Counters, SampleMeta, SampleRecord, Verification
from harness.sampling import ConnectionSampler, Probe, SpeedProbe
from harness.scenario import Scenario, override, pair_load

LOCUSTFILE = ROOT / "scenarios" / "locustfile.py"
# Where the embedded server keeps its data between runs (git-ignored).
PG_HOME = Path(os.environ.get("BENCH_PG_HOME", ROOT / ".bench"))


@dataclass
class RunPlan:
    scenario: Scenario
    pairs: list[Pair]
    knobs: dict[str, dict[str, int]]  # pair -> knobs in force
    dsn: str | None
    run_dir: Path
    write_top_report: bool
    command: list[str] = field(default_factory=list)
    shuffle_seed: int | None = None  # None: declared order
    resume: bool = False  # keep variants already measured in run_dir

    def scenario_for(self, pair: Pair) -> Scenario:
        """The scenario with the fields the pair's experiment fixes (e.g. its users), as
        far as they apply in this scenario (harness.scenario.pair_load)."""
        return override(self.scenario, **pair_load(pair.load, self.scenario.to_dict()))


def resolve_knobs(pairs: list[Pair], settings: list[str]) -> dict[str, dict[str, int]]:
    """Each pair's default knobs with `--set KEY=VALUE` applied where the pair has KEY."""
    from harness.scenario import knob_bound, show  # the bounds live with the scenario's, in one place

    knobs = {pair.name: dict(pair.knobs) for pair in pairs}
    for setting in settings:
        key, sep, raw = setting.partition("=")
        if not sep or not key:
            raise BenchError(f"--set takes KEY=VALUE, got {setting!r}")
        owners = [name for name, values in knobs.items() if key in values]
        if not owners:
            known = sorted({k for values in knobs.values() for k in values})
            raise BenchError(f"unknown knob {key!r} for the selected pairs (knobs: {', '.join(known) or 'none'})")
        try:
            value = int(raw)
        except ValueError:
            raise BenchError(f"--set {key} needs a whole number, got {raw!r}") from None
        if value <= 0:
            raise BenchError(f"--set {key} must be greater than 0, got {value}")
        bound = knob_bound(key)
        if value > bound.maximum:
            raise BenchError(f"--set {key} must be {bound.text()}, got {show(value)}")
        for name in owners:
            knobs[name][key] = value
    return knobs


class Progress:
    """One line per phase, with the time the rest will take at the pace so far; while
    load runs, a countdown (in place on a terminal)."""

    def __init__(self, total: int) -> None:
        self.total, self.index = total, 0
        self.tty = sys.stderr.isatty()
        self.label = ""
        self._started = self._last_line = time.monotonic()

    def step(self, what: str, detail: str) -> None:
        done, self.index = self.index, self.index + 1
        pace = f", about {self._left(done)} left" if done else ""
        self.label = f"[{self.index}/{self.total}{pace}] {what} {detail}"

    def _left(self, done: int) -> str:
        seconds = (time.monotonic() - self._started) / done * (self.total - done)
        return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"

    def say(self, text: str) -> None:
        if self.tty:
            sys.stderr.write("\r\033[K")
        print(f"{self.label}  {text}", file=sys.stderr, flush=True)

    def tick(self, text: str) -> None:
        if self.tty:
            sys.stderr.write(f"\r\033[K{self.label}  {text}")
            sys.stderr.flush()
        elif time.monotonic() - self._last_line >= 10:  # logs get a line every 10 s
            print(f"{self.label}  {text}", file=sys.stderr, flush=True)
            self._last_line = time.monotonic()


# --- the steps --------------------------------------------------------------------------


def _uvicorn(app: str, port: int, *extra: str) -> list[str]:
    return [python_bin(), "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port), *extra]


UPSTREAM_STOP_GRACE_S = 0.2


def preloaded(kind: str = "server") -> ForkServer | None:
    """The process's fork server of `kind` (harness.forkserver): servers and Locust
    processes forked from it skip their imports (0.7 s and 0.8 s); None where it cannot
    start."""
    return forkserver.shared(python_bin(), ROOT, kind)


def start_upstream(folder: Path, scenario: Scenario) -> tuple[ManagedProcess, int]:
    """The stub upstream (harness.upstream) on a free loopback port, answering /ping;
    returns it and its port."""
    port = free_port()
    upstream = ManagedProcess(
        "stub upstream",
        _uvicorn("harness.upstream:app", port, "--log-level", "warning", "--no-access-log", "--backlog", "2048"),
        folder / "upstream.log",
        os.environ | {"PYTHONPATH": str(ROOT)},
        ROOT,
        preloaded(),
    )
    # Once its caller has stopped, nothing the stub holds is measured: its slow calls (3 s
    # in `timeouts`) are cut instead of waited out, which would add seconds to a sample.
    upstream.stop_grace_s = UPSTREAM_STOP_GRACE_S
    upstream.serve(f"http://127.0.0.1:{port}/ping", scenario.start_timeout_s)
    return upstream, port


def _start_once(
    pair: Pair,
    variant: Variant,
    knobs: dict[str, int],
    db: Database,
    folder: Path,
    scenario: Scenario,
    port: int,
    upstream_url: str,
) -> ManagedProcess:
    env = os.environ | {
        "BENCH_DSN": db.variant_dsn,
        "BENCH_VARIANT": variant.name,
        # Every knob the pair declares, with the run's values: the apps keep no defaults of their own.
        "BENCH_KNOBS": json.dumps(pair.knobs | knobs),
        "BENCH_LOOP_LAG_FILE": str(folder / "loop_lag.csv"),
        # The stack watchdog's stalls: the line that blocked the loop, caught at run time.
        "BENCH_STALLS_FILE": str(folder / analysis.STALLS_FILE),
        "BENCH_STALL_MS": f"{analysis.STALL_MS:g}",
        "BENCH_UPSTREAM_URL": upstream_url,
        "PYTHONPATH": str(ROOT),
        # Each warning once per place in server.log (deprecations, unclosed resources);
        # the runner keeps them with the variant.
        "PYTHONWARNINGS": "default",
        "BENCH_WORKERS": str(pair.workers(knobs)),
    }
    if pair.prepare is not None:
        env |= pair.prepare(db, pair.knobs | knobs)
    workers = ("--workers", str(pair.workers(knobs))) if pair.workers(knobs) > 1 else ()
    server = ManagedProcess(
        f"{pair.name}/{variant.name} server",
        _uvicorn(
            pair.app,
            port,
            "--log-level",
            "warning",
            "--no-access-log",
            "--timeout-keep-alive",
            "30",
            "--timeout-graceful-shutdown",
            "3",
            *workers,
            *variant.server_args,
        ),
        folder / "server.log",
        env,
        ROOT,
        # A fresh interpreter where the start-up is what is measured, and for uvicorn's
        # supervisor, whose workers are fresh interpreters anyway.
        None if pair.fresh_interpreter or pair.workers(knobs) > 1 else preloaded(),
    )
    server.serve(f"http://127.0.0.1:{port}/ping", scenario.start_timeout_s)
    if pair.workers(knobs) > 1:
        # /ping answers once one worker is up; the load's connections, all opened at once,
        # would then go to that worker alone while the others still import (measured: a
        # sample of 4 workers with 3 backends in all). Each worker writes its loop-lag file
        # from its lifespan, just before it accepts: wait for every worker's.
        try:
            server.wait_until(
                lambda: len(analysis.loop_lag_files(folder)) >= pair.workers(knobs),
                scenario.start_timeout_s,
                f"running all {pair.workers(knobs)} workers",
            )
        except BaseException:
            server.stop()
            raise
    return server


def start_server(
    pair: Pair,
    variant: Variant,
    knobs: dict[str, int],
    db: Database,
    folder: Path,
    scenario: Scenario,
    port: int | None = None,
) -> tuple[ManagedProcess, int]:
    """Start the variant's server on `port` or a free loopback port (and its stub
    upstream first, if the pair calls one; it stops with the server). Another process
    can take the port between the probe and uvicorn's bind; then try another one."""
    upstream, upstream_port = start_upstream(folder, scenario) if pair.upstream else (None, 0)
    upstream_url = f"http://127.0.0.1:{upstream_port}" if upstream else ""
    try:
        for attempt in range(3):
            port = port if port and attempt == 0 else free_port()
            try:
                server = _start_once(pair, variant, knobs, db, folder, scenario, port, upstream_url)
            except BenchError as err:
                if attempt == 2 or "address already in use" not in str(err).lower():
                    raise
                continue
            if upstream:
                server.companions.append(upstream)
            return server, port
    except BaseException:
        if upstream:
            upstream.stop()
        raise
    raise AssertionError("unreachable")


def verify(port: int, variant: Variant, db: Database, rows: int, timeout_s: float = 10.0) -> Verification:
    """One request for a random seeded row: status 200 and exactly the expected JSON
    (the row, unless the variant says otherwise). One only: the leaky pool variant
    loses a connection per request by design."""
    item_id = random.randint(1, rows)
    while variant.verify_ids is not None and not variant.verify_ids(item_id):
        item_id = random.randint(1, rows)
    expected = (variant.expect or database.fetch_row)(db, item_id)
    url = f"http://127.0.0.1:{port}{variant.path.format(id=item_id)}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, body = err.code, err.read()
    except OSError as err:
        raise BenchError(f"verification request to {variant.path} failed: {err}") from None
    try:
        got = json.loads(body)
    except ValueError:
        got = body[:200].decode(errors="replace")
    if status != 200 or got != expected:
        raise BenchError(f"verification failed for id {item_id}: status {status}, body {got!r}, expected {expected!r}")
    return {"id": item_id, "status": status, "body": got}


@dataclass(frozen=True)
class Sample:
    """One measurement: a variant under one load, in a fresh server."""

    pair: Pair
    variant: Variant
    mode: str  # "closed" (Locust's users), "open" (a fixed request rate) or "soak"
    users: int
    rate: float  # open loop: requests per second; 0 otherwise
    block: int  # which block of its pair (a block runs every variant of the pair once)
    primary: bool  # the measurement the verdict is decided on

    @property
    def id(self) -> str:
        load = f"rate{self.rate:g}-u{self.users}" if self.mode == "open" else f"u{self.users}"
        return f"{self.mode}-{load}-b{self.block}"

    @property
    def label(self) -> str:
        return f"{self.pair.name}/{self.variant.name} {self.id}"


def block_samples(plan: RunPlan, pair: Pair, block: int) -> list[Sample]:
    """One block of a pair: every variant once at each load the run measures, back to
    back, so the drift of a shared machine cancels in the ratios within the block. The
    order is shuffled per block (seeded); open-loop samples come with the first block only."""
    scenario = plan.scenario_for(pair)
    primary_users = primary_level(scenario, pair)
    # A pair that fixes its users for the experiment is not swept.
    levels = scenario.levels if scenario.levels and "users" not in pair.load else (primary_users,)
    batch = []
    for variant in pair.variants:
        if scenario.rate > 0:
            batch.append(Sample(pair, variant, "open", scenario.users, scenario.rate, block, True))
            continue
        for users in levels:
            batch.append(Sample(pair, variant, "closed", users, 0.0, block, users == primary_users))
        rate = pair.open_loop_rate(plan.knobs[pair.name]) if pair.open_loop_rate else 0.0
        if scenario.open_loop and rate > 0 and block == 1:  # shown beside the verdict, not deciding it
            batch.append(Sample(pair, variant, "open", scenario.users, rate, block, False))
    if plan.shuffle_seed is not None:
        batch = shuffled_together(
            batch, compared_groups(pair, plan.knobs[pair.name]), f"{plan.shuffle_seed}-{pair.name}-{block}"
        )
    return batch


def compared_groups(pair: Pair, knobs: Mapping[str, int]) -> list[set[str]]:
    """The variants the pair's deciding checks compare, joined into groups wherever a
    check links two of them (a variant in no comparison is a group of its own)."""
    group_of: dict[str, set[str]] = {v.name: {v.name} for v in pair.variants}
    checks = pair.rule(pair.knobs | dict(knobs)).checks if pair.rule else ()
    for check in checks:
        figure = check.figure
        if (
            figure.to
            and figure.of in group_of
            and figure.to in group_of
            and group_of[figure.of] is not group_of[figure.to]
        ):
            joined = group_of[figure.of] | group_of[figure.to]
            for name in joined:
                group_of[name] = joined
    return list({id(group): group for group in group_of.values()}.values())


def shuffled_together(batch: list[Sample], groups: list[set[str]], seed: str) -> list[Sample]:
    """The block's samples in a seeded random order in which the closed-loop samples a
    check compares run back to back: a shared machine's speed can change within a block
    of many variants (measured: twice the CPU per request within one 40 s block of
    `speedups`), and adjacent samples see the least of it. Groups, and the samples within
    each, are shuffled; open-loop samples, which decide nothing, are units of their own."""
    rng = random.Random(seed)
    units: dict[tuple[str, int], list[Sample]] = {}
    for index, sample in enumerate(batch):
        group = next(i for i, g in enumerate(groups) if sample.variant.name in g)
        units.setdefault(("closed", group) if sample.mode == "closed" else (sample.mode, -1 - index), []).append(sample)
    order = list(units.values())
    rng.shuffle(order)
    for unit in order:
        rng.shuffle(unit)
    return [sample for unit in order for sample in unit]


def pair_order(plan: RunPlan, pairs: list[Pair], block: int) -> list[Pair]:
    """The pairs in a round of blocks: declared order, or shuffled per round (seeded)."""
    ordered = list(pairs)
    if plan.shuffle_seed is not None:
        random.Random(plan.shuffle_seed + block).shuffle(ordered)
    return ordered


def fixed_blocks(plan: RunPlan, pair: Pair) -> int:
    """A control's fixed number of blocks where the scenario gives blocks beyond its
    minimum (adaptive runs); else the scenario's minimum, as for every pair."""
    adaptive = plan.scenario.max_blocks > plan.scenario.repeats
    return pair.fixed_blocks if pair.fixed_blocks and adaptive else plan.scenario.repeats


def round_blocks(plan: RunPlan, pair: Pair, round_: int) -> list[int]:
    """The pair's blocks in one round of the fixed part: one for most pairs; a control's
    fixed blocks spread evenly over the rounds, so they are measured alongside the
    others' and never left to a budget that the rounds may have spent."""
    total, rounds = fixed_blocks(plan, pair), plan.scenario.repeats
    per = -(-total // rounds)
    return [block for block in range((round_ - 1) * per + 1, round_ * per + 1) if block <= total]


def sample_plan(plan: RunPlan) -> list[Sample]:
    """The run's fixed part, in the order it runs: `repeats` rounds in which every pair
    runs one block (a control its share of its fixed blocks), then the soaks. Further
    blocks depend on what these show (`plan_more_blocks`)."""
    samples: list[Sample] = []
    for round_ in range(1, plan.scenario.repeats + 1):
        for pair in pair_order(plan, plan.pairs, round_):
            for block in round_blocks(plan, pair, round_):
                samples += block_samples(plan, pair, block)
    if plan.scenario.soak_s > 0:
        for pair in plan.pairs:
            if pair.soak:
                users = plan.scenario_for(pair).users
                samples += [Sample(pair, variant, "soak", users, 0.0, 1, False) for variant in pair.variants]
    return samples


@dataclass(frozen=True)
class PairProgress:
    """Where a pair stands after a look at its blocks."""

    blocks: int  # blocks measured
    undecided: int  # checks whose interval still straddles their threshold while the verdict is open
    block_s: float  # seconds one of its blocks took, on average
    outcome: str = ""  # the verdict at this look


def plan_more_blocks(
    standing: dict[str, PairProgress], looks: tuple[int, ...], left_s: float, fixed: dict[str, int] | None = None
) -> tuple[dict[str, int], dict[str, str]]:
    """Which pairs get more blocks, up to which look, and why the others stop.

    A pair goes on only while some check that could change its outcome still straddles
    its threshold; it then runs to the next planned look (never looking in between, so
    the error rate each look spends stays what stats.look_confidences assumes). Cheaper
    pairs go first while the run's time budget lasts. A control with a fixed number of
    blocks (`fixed`) runs them whatever its checks say, budget permitting."""
    more: dict[str, int] = {}
    stopped: dict[str, str] = {}
    fixed = fixed or {}
    for name, now in sorted(standing.items(), key=lambda item: (item[0] not in fixed, item[1].block_s)):
        if name in fixed:
            cost = (fixed[name] - now.blocks) * now.block_s
            if now.blocks >= fixed[name]:
                stopped[name] = f"its fixed {fixed[name]} blocks"
            elif cost > left_s:
                stopped[name] = "budget spent"
            else:
                more[name], left_s = fixed[name], left_s - cost
            continue
        later = [look for look in looks if look > now.blocks]
        if not now.undecided:
            # Inconclusive without a straddling interval (a variant failed, a control missed,
            # a figure too thin): more blocks would not change it.
            stopped[name] = "inconclusive; more blocks cannot decide it" if now.outcome == "inconclusive" else "decided"
        elif not later:
            stopped[name] = f"undecided at the most blocks ({looks[-1]})"
        else:
            cost = (later[0] - now.blocks) * now.block_s
            if cost > left_s:
                stopped[name] = "budget spent"
            else:
                more[name], left_s = later[0], left_s - cost
    return more, stopped


def primary_level(scenario: Scenario, pair: Pair) -> int:
    """The users the verdict is decided at: the scenario's (or the pair's own) users,
    or the highest level of a sweep that leaves them out."""
    if "users" in pair.load or not scenario.levels or scenario.users in scenario.levels:
        return scenario.users
    return max(scenario.levels)


def recovery_s(scenario: Scenario) -> float:
    """After a soak, how long the server stays up without load, to see what comes back."""
    return max(10.0, scenario.soak_s / 3)


@dataclass(frozen=True)
class LoadTarget:
    """What the load asks for beyond one suite path: several paths (one drawn per
    request), an id range, headers and a body check of the caller's own (bench.py probe)."""

    paths: tuple[str, ...] = ()
    id_min: int = 1
    id_max: int = 0  # 0: the scenario's rows
    expect: str = ""  # a 200 response must contain this text ("": status only)
    headers: dict[str, str] = field(default_factory=dict)  # sent in the environment, never on a command line
    connect_path: str = ""  # each user's first request, to open its connection before the load starts


def _locust_argv(role: list[str]) -> list[str]:
    return [python_bin(), "-m", "locust", "-f", str(LOCUSTFILE), *role]


def start_locust(
    port: int,
    path: str,
    scenario: Scenario,
    sample: Sample | None,
    folder: Path,
    run_time: float,
    measure: tuple[float, int, float] | None = None,
    target: LoadTarget | None = None,
    go_file: Path | None = None,
) -> ManagedProcess:
    """Locust headless against the server: one process, or a master with
    `locust_workers` worker processes (its companions), all on loopback. `measure` is
    (measured seconds, least requests, most measured seconds): the locustfile ends the
    warm-up once every user has completed a request, and stops the load itself once the
    measured phase may end; `run_time` (Locust's -t) is only the outer bound. `target`:
    a probed app's paths, ids, headers and body check instead of the suite's row check."""
    duration_s, min_requests, max_measure_s = measure or (scenario.duration_s, 0, scenario.duration_s)
    # The suite's variants answer with the seeded row, which the locustfile checks; a
    # probed app's bodies are its own, so only its --expect text is checked.
    check_body = "1" if sample and target is None else "0"
    options = [
        "--bench-path", path,
        "--bench-rows", str(target.id_max if target and target.id_max else scenario.rows),
        "--bench-warmup", str(scenario.warmup_s),
        "--bench-timeout", str(scenario.request_timeout_s),
        "--bench-warmup-max", str(scenario.warmup_max_s),
        "--bench-warmup-grace", str(scenario.warmup_grace_s),
        "--bench-phases", str(folder / "phases.json"),
        "--bench-rate", str(sample.rate if sample else 0.0),
        "--bench-check-body", check_body,
        "--bench-duration", str(duration_s),
        "--bench-min-requests", str(min_requests),
        "--bench-max-measure", str(max_measure_s),
        # Every user opens its connection before any sends load (the suite's /ping, or the probe's).
        "--bench-connect-path", target.connect_path if target else ("/ping" if sample else ""),
    ]  # fmt: skip
    if target is not None:
        options += ["--bench-paths", json.dumps(list(target.paths or (path,))), "--bench-id-min", str(target.id_min)]
        options += [f"--bench-expect={target.expect}"] if target.expect else []  # "=": the text may start with "-"
    workers = scenario.locust_workers
    users = sample.users if sample else scenario.users
    argv = [
        "--headless",
        "--host", f"http://127.0.0.1:{port}",
        "-u", str(users),
        "-r", str(max(scenario.spawn_rate, users) if sample and sample.mode == "open" else scenario.spawn_rate),
        "-t", f"{math.ceil(run_time)}s",
        "--csv", str(folder / "locust"),
        "--only-summary",
        "--loglevel", "WARNING",
        "--stop-timeout", str(math.ceil(scenario.request_timeout_s)),
        "--exit-code-on-error", "0",
        *options,
    ]  # fmt: skip
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    if target is not None and target.headers:
        env["BENCH_HEADERS"] = json.dumps(target.headers)
    master_port = free_port() if workers else 0
    if go_file is not None:  # the master (or the single process) waits for it; workers wait for the master
        argv += ["--bench-go", str(go_file)]
    if workers:
        argv += ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(master_port)]
        argv += ["--expect-workers", str(workers)]
    locust = ManagedProcess("locust", _locust_argv(argv), folder / "locust.log", env, ROOT, preloaded("locust"))
    locust.start()
    for index in range(workers):
        worker = ManagedProcess(
            f"locust worker {index + 1}",
            _locust_argv(["--worker", "--master-host", "127.0.0.1", "--master-port", str(master_port), *options]),
            folder / f"locust-worker-{index + 1}.log",
            env,
            ROOT,
            preloaded("locust"),
        )
        locust.companions.append(worker)
        worker.start()
    return locust


@dataclass(frozen=True)
class LoadLimits:
    """How long one Locust run may take: the measured phase is at least `measured_s`,
    longer until the tally holds `min_requests`, at most `max_measure_s` (a soak measures
    exactly its length); the warm-up ends once every user has completed a request, at the
    latest after warm-up + one request timeout or `warmup_max_s` (the locustfile's
    limits). Locust's -t (`run_time`) is the sum of the limits and a second, so the
    locustfile, not the timer, normally ends the load."""

    measured_s: float
    min_requests: int
    max_measure_s: float
    warmup_cap_s: float
    run_time: float
    deadline: float

    @classmethod
    def of(cls, scenario: Scenario, sample: Sample | None) -> LoadLimits:
        soak = bool(sample and sample.mode == "soak")
        measured_s = scenario.soak_s if soak else scenario.duration_s
        min_requests = 0 if soak else int(getattr(scenario, "min_requests", 0) or 0)
        max_measure_s = measured_s if soak else max(measured_s, float(getattr(scenario, "max_measure_s", 0) or 0))
        warmup_cap_s = max(scenario.warmup_s + scenario.request_timeout_s, scenario.warmup_max_s)
        run_time = math.ceil(warmup_cap_s + max_measure_s) + 1
        deadline = run_time + scenario.request_timeout_s + 30 + 10 * scenario.locust_workers
        return cls(measured_s, min_requests, max_measure_s, warmup_cap_s, run_time, deadline)

    @property
    def measure(self) -> tuple[float, int, float]:
        """What start_locust passes the locustfile about the measured phase."""
        return self.measured_s, self.min_requests, self.max_measure_s


def arm_load(port: int, path: str, scenario: Scenario, sample: Sample, folder: Path) -> ManagedProcess:
    """Locust started early and waiting for its go file (the locustfile's --bench-go):
    its start-up (0.7 s a sample of imports and set-up, measured) overlaps the server's instead
    of adding to every sample. Nothing is sent until run_load says go."""
    limits = LoadLimits.of(scenario, sample)
    return start_locust(port, path, scenario, sample, folder, limits.run_time, limits.measure, go_file=folder / GO_FILE)


# The file an armed Locust waits for (arm_load); the locustfile removes it when it starts.
GO_FILE = "go"


def run_load(
    port: int,
    path: str,
    scenario: Scenario,
    sample: Sample | None,
    folder: Path,
    progress: Progress,
    sampler: ConnectionSampler,
    server: ManagedProcess,
    target: LoadTarget | None = None,
    armed: ManagedProcess | None = None,
) -> None:
    """One Locust run to its end (warm-up + measured, or a soak), bounded by a deadline;
    a server that dies ends it at once. `sample` None: calibration. `armed`: a Locust
    from arm_load, told to go now; else one is started here."""
    soak = bool(sample and sample.mode == "soak")
    limits = LoadLimits.of(scenario, sample)
    measured_s, max_measure_s, warmup_cap_s = limits.measured_s, limits.max_measure_s, limits.warmup_cap_s
    deadline = limits.deadline
    started = time.monotonic()
    if armed is not None:
        locust = armed
        (folder / GO_FILE).touch()
    else:
        locust = start_locust(port, path, scenario, sample, folder, limits.run_time, limits.measure, target)
    try:
        sampler.watch_generator([locust, *locust.companions])
        while (code := locust.wait(1.0)) is None:
            elapsed = time.monotonic() - started
            if elapsed > deadline:
                raise BenchError(f"Locust did not finish within {deadline:g} s")
            if server.exited() is not None:  # a crashed server ends the variant at once
                raise BenchError(
                    f"server exited with status {server.exited()} during load: {log_tail(folder / 'server.log', 3)}"
                )
            phases = store.read_phases(folder)
            if "measure_start" in phases:  # the measured phase: its duration, and its cap
                measuring = time.time() - phases["measure_start"]
                left = f"measuring  {max(0, measured_s - measuring):3.0f} s left"
                if max_measure_s > measured_s:
                    left += f" (at most {max(0, max_measure_s - measuring):.0f})"
            else:  # the warm-up: its length, and its cap
                left = f"warm-up  {max(0, scenario.warmup_s - elapsed):3.0f} s left"
                left += f" (at most {max(0, warmup_cap_s - elapsed):.0f}) + {measured_s:.0f} s measured"
            progress.tick(f"{left}  {sampler.last_total} backends")
        if code != 0:
            raise BenchError(f"Locust exited with status {code}: {log_tail(folder / 'locust.log', 3)}")
        # Locust's master quits before its workers have finished their last requests
        # (up to the stop timeout); each worker writes its tally once they have.
        for worker in locust.companions:
            if worker.wait(scenario.request_timeout_s + 5) is None:
                progress.say(f"{worker.name} did not quit after the master; stopping it")
    finally:
        locust.stop()
    if not (folder / "locust_stats.csv").is_file():
        raise BenchError("Locust wrote no statistics")
    # The totals are the load processes' tallies: one missing is requests missing.
    tallies, expected = len(list(folder.glob("tally-*.json"))), max(1, scenario.locust_workers)
    if "measure_start" not in store.read_phases(folder) and not soak:
        raise BenchError(f"the load generator never ended its warm-up: {log_tail(folder / 'locust.log', 3)}")
    if "measure_start" in store.read_phases(folder) and tallies < expected:
        raise BenchError(f"{expected - tallies} of {expected} Locust load processes wrote no tally")


# Counters count as drained once unchanged for this long beyond the work a pair says may
# run after its responses (Pair.drain_s): a variant with none has finished with the load.
COUNTERS_QUIET_S = 0.1


def read_counters(port: int, drain_s: float = 0.0, timeout_s: float = 5.0) -> Counters | None:
    """The variant's own /counters once they have stopped changing."""
    quiet_s = drain_s + COUNTERS_QUIET_S
    deadline = time.monotonic() + max(timeout_s, 3 * quiet_s)
    last: Counters | None = None
    unchanged_since = time.monotonic()
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/counters", timeout=2) as resp:
                current = json.loads(resp.read())
        except (OSError, ValueError):
            return last
        now = time.monotonic()
        if current != last:
            last, unchanged_since = current, now
        elif now - unchanged_since >= quiet_s:
            return current
        time.sleep(min(0.2, quiet_s / 2))
    return last


WARNING_LINE = re.compile(r"\b[A-Z]\w*Warning: .*")
# Object addresses make one warning about many objects look like many warnings.
ADDRESS = re.compile(r"\bat 0x[0-9a-fA-F]+")
# So do ports: a socket's address names the sample's own port (laddr=('127.0.0.1', 50011)).
PORT = re.compile(r"(\('127\.0\.0\.1', )\d+\)")


def server_warnings(log: Path, limit: int = 10) -> list[str]:
    """Distinct warnings the server printed (PYTHONWARNINGS=default: once per place).
    A message that starts on the next line (FastAPI's deprecations do) is joined to it."""
    found: dict[str, None] = {}
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    for index, line in enumerate(lines):
        if not (match := WARNING_LINE.search(line)):
            continue
        text = match.group(0).strip()
        if text.endswith(":"):
            text += " " + next((rest.strip() for rest in lines[index + 1 : index + 4] if rest.strip()), "")
        found.setdefault(database.redact(PORT.sub(r"\1...)", ADDRESS.sub("at 0x...", text)))[:300])
    return list(found)[:limit]


def settle(db: Database, baseline: int, timeout_s: float) -> tuple[int, int]:
    """End the backends a variant left behind and wait for the count to reach baseline."""
    ended = database.terminate_app_backends(db)
    return ended, database.wait_for_backends(db, baseline, timeout_s)


def variant_meta(pair: Pair, variant: Variant, knobs: dict[str, int]) -> dict[str, Any]:
    """What ran, once per variant: role, route, the code shown in the report, knobs."""
    return {
        "pair": pair.name,
        "variant": variant.name,
        "role": variant.role,
        "path": variant.path,
        "summary": variant.summary,
        "code": pair.code_excerpt(variant),
        "knobs": knobs,
    }


def measure_sample(plan: RunPlan, db: Database, sample: Sample, progress: Progress) -> SampleRecord:
    pair, variant = sample.pair, sample.variant
    knobs = plan.knobs[pair.name]
    scenario = plan.scenario_for(pair)
    variant_folder = store.variant_dir(plan.run_dir, pair.name, variant.name)
    if not (variant_folder / "variant.json").is_file():
        store.write_json(variant_folder / "variant.json", variant_meta(pair, variant, knobs))
    folder = variant_folder / sample.id
    folder.mkdir(parents=True, exist_ok=True)
    meta: SampleMeta = {
        "pair": pair.name,
        "variant": variant.name,
        "role": variant.role,
        "sample": sample.id,
        "mode": sample.mode,
        "users": sample.users,
        "rate": sample.rate,
        "block": sample.block,
        "primary": sample.primary,
        "workers": scenario.locust_workers,
        "load_overrides": pair_load(pair.load, plan.scenario.to_dict()),
        "status": "running",
        "error": None,
    }
    if sample.mode == "soak":
        meta["recovery_s"] = recovery_s(scenario)
    store.write_json(folder / "sample.json", meta)
    # Seconds each phase took: what a sample costs beyond its load, for the budget.
    timings: dict[str, float] = meta.setdefault("timings", {})
    clock = [time.monotonic()]

    def lap(phase: str) -> None:
        now = time.monotonic()
        timings[phase] = round(now - clock[0], 3)
        clock[0] = now

    try:
        meta["baseline_connections"] = database.wait_for_backends(db, 0, scenario.settle_timeout_s)
        lap("baseline")
        progress.say("starting server")
        port = free_port()
        armed = arm_load(port, variant.path, scenario, sample, folder)
        try:
            server, started_on = start_server(pair, variant, knobs, db, folder, scenario, port)
        except BaseException:
            armed.stop()
            raise
        if started_on != port:  # the port was taken before the server bound it: re-arm on the new one
            armed.stop()
            port, armed = started_on, arm_load(started_on, variant.path, scenario, sample, folder)
        lap("start")
        try:
            meta["verification"] = verify(port, variant, db, scenario.rows, scenario.request_timeout_s)
            lap("verify")
            progress.say("verified; load running")
            sampler = ConnectionSampler(
                db,
                server.pid,
                folder / "connections.csv",
                scenario.sample_interval_s,
                db.server_pid,
                scenario.usage_interval_s,
                folder / analysis.SAMPLER_FILE,
            )
            with (
                machine_load_lock(progress.say),
                sampler,
                Probe("127.0.0.1", port, folder / "probe.csv", scenario.probe_rate, scenario.request_timeout_s),
                SpeedProbe(folder / "speed.csv"),
            ):
                lap("lock")
                run_load(port, variant.path, scenario, sample, folder, progress, sampler, server, armed=armed)
                if sample.mode == "soak":  # quiet recovery: the samplers keep running, no load
                    progress.say(f"load done; {meta['recovery_s']:.0f} s of recovery without load")
                    time.sleep(meta["recovery_s"])
                lap("load")
            # Several workers keep counters each, and /counters reaches one of them.
            meta["counters"] = read_counters(port, pair.drain_s(knobs)) if pair.workers(knobs) == 1 else {}
            lap("counters")
        finally:
            armed.stop()  # already gone after a load; still waiting if the sample failed first
            server.stop()
            lap("stop")
            meta["warnings"] = server_warnings(folder / "server.log")
        meta["status"] = "ok"
    except (BenchError, psycopg2.Error) as err:
        reason = str(err) if isinstance(err, BenchError) else f"database error: {database.first_line(err)}"
        meta |= {"status": "failed", "error": database.redact(reason)}
        meta["server_log_tail"] = log_tail(folder / "server.log", 15)
        progress.say(f"FAILED: {meta['error']}")
    finally:
        if meta["status"] == "running":  # interrupted: leave an honest record behind
            meta |= {"status": "failed", "error": "interrupted"}
        try:
            ended, meta["settled_connections"] = settle(
                db, meta.get("baseline_connections") or 0, scenario.settle_timeout_s
            )
            meta["terminated_backends"] = ended
            if meta["settled_connections"] > (meta.get("baseline_connections") or 0):
                progress.say(f"WARNING: {meta['settled_connections']} backends still open after settling")
        except Exception as err:  # the database itself may be what failed
            meta["settle_error"] = database.first_line(err)
        lap("settle")
        store.compress_raw(folder)
        store.write_json(folder / "sample.json", meta)
    record = analysis.summarize_sample(folder)
    if record["status"] == "ok":
        progress.say(sample_line(record))
    return record


def sample_line(record: SampleRecord) -> str:
    """What one measurement gave, in a line; a figure it could not measure (no request
    completed inside a short window, no /ping answered) reads n/a."""

    def show(value: float | None, unit: str) -> str:
        return "n/a" if value is None else f"{value:.0f}{unit}"

    flags = f"  FLAGGED: {'; '.join(record['flags'])}" if record["flags"] else ""
    return (
        f"{show(record['rps'], ' req/s')}, p99 {show(record['p99_ms'], ' ms')}, {record['failures']} failures, "
        f"/ping p99 {show(record['ping_p99_ms'], ' ms')}, peak {record['peak_connections']} backends{flags}"
    )


def calibrate(plan: RunPlan, db: Database, progress: Progress) -> Calibration:
    """What the load generator can drive on this machine: Locust, as configured for
    the run, against the bare ASGI stub's /ping (status checked, no body check)."""
    folder = plan.run_dir / "calibration"
    folder.mkdir(parents=True, exist_ok=True)
    scenario = replace(plan.scenario, warmup_s=1.0, duration_s=plan.scenario.calibrate_s)
    meta: SampleMeta = {"status": "running", "users": scenario.users, "workers": scenario.locust_workers}
    store.write_json(folder / "sample.json", meta)
    try:
        upstream, port = start_upstream(folder, scenario)  # already started: stop it, do not re-enter
        try:
            sampler = ConnectionSampler(db, upstream.pid, folder / "connections.csv", 0.5, db.server_pid)
            with machine_load_lock(progress.say), sampler:
                run_load(port, "/ping", scenario, None, folder, progress, sampler, upstream)
        finally:
            upstream.stop()
        meta["status"] = "ok"
    except BenchError as err:
        meta |= {"status": "failed", "error": str(err)}
        progress.say(f"calibration FAILED: {err}")
    finally:
        if meta["status"] == "running":
            meta |= {"status": "failed", "error": "interrupted"}
        store.compress_raw(folder)
        store.write_json(folder / "sample.json", meta)
    result = analysis.summarize_calibration(folder)
    if result.get("rps"):
        progress.say(
            f"load generator ceiling: {result['rps']:,.0f} req/s against a bare ASGI endpoint "
            f"(generator CPU {result['generator_cpu_pct'] or 0:.0f}%, "
            f"endpoint CPU {result['server_cpu_pct'] or 0:.0f}%)"
        )
    return result


def choose_workers(plan: RunPlan, ceiling_rps: float | None) -> tuple[int, str]:
    """Locust worker processes for the run, and why: as asked, or more when calibration
    shows one process cannot reach the requested open-loop rate and cores are free."""
    asked = plan.scenario.locust_workers
    if asked:
        return asked, f"{asked} worker processes, as asked"
    rate = plan.scenario.rate
    if not rate or not ceiling_rps or ceiling_rps >= rate:
        return 0, "one process: calibration shows it reaches the requested load" if rate else "one process"
    free = (os.cpu_count() or 1) - 2  # the server and PostgreSQL need a core each
    if free < 1:
        return 0, (
            f"one process: it reached {ceiling_rps:,.0f} req/s in calibration, below the requested {rate:g}, "
            f"but no core is free for workers ({os.cpu_count()} CPUs)"
        )
    workers = min(free, 4)
    return workers, f"{workers} workers: one process reached {ceiling_rps:,.0f} req/s, below the requested {rate:g}"


def write_summary(plan: RunPlan, samples: list[SampleRecord]) -> None:
    analysis.write_summary(plan.run_dir, plan.scenario.to_dict(), samples, plan.pairs, plan.knobs)


# summary.json is rebuilt from every sample so far, so its cost grows with the run (over a
# second per sample late in a default run of 270): during the run it is rewritten at most
# this often, and always once the run ends, however it ends (run's `finally`). Each
# sample's own files are complete as soon as it is measured, and `bench.py report`
# rebuilds the summary from them.
SUMMARY_EVERY_S = 30.0


@dataclass
class SummaryCadence:
    every_s: float = SUMMARY_EVERY_S
    last: float = -math.inf

    def after_sample(self, plan: RunPlan, samples: list[SampleRecord]) -> None:
        if time.monotonic() - self.last >= self.every_s:
            write_summary(plan, samples)
            self.last = time.monotonic()


def _completed(folder: Path) -> bool:
    try:
        return bool(store.read_json(folder / "sample.json").get("status") == "ok")
    except (OSError, ValueError):
        return False


def _measure_one(
    plan: RunPlan,
    db: Database,
    sample: Sample,
    progress: Progress,
    samples: list[SampleRecord],
    cadence: SummaryCadence,
) -> SampleRecord:
    """One sample, kept from an earlier attempt when resuming; its files are complete
    before the next starts, and the summary follows at its cadence."""
    progress.step(f"{sample.pair.name}/{sample.variant.name}", sample.id)
    folder = store.variant_dir(plan.run_dir, sample.pair.name, sample.variant.name) / sample.id
    if plan.resume and _completed(folder):
        progress.say("measured before; kept")
        record = analysis.summarize_sample(folder)
    else:
        shutil.rmtree(folder, ignore_errors=True)  # a half-measured sample starts over
        record = measure_sample(plan, db, sample, progress)
    samples.append(record)
    cadence.after_sample(plan, samples)
    return record


def _standing(
    plan: RunPlan, samples: list[SampleRecord], seconds: dict[str, float], confidence: Callable[[str, int], float]
) -> dict[str, PairProgress]:
    """Each pair's blocks so far, how many of its checks are still open (at the confidence
    of the look it stands at), and what a block costs."""
    standing = {}
    for pair in plan.pairs:
        mine = [s for s in samples if s["pair"] == pair.name]
        blocks = len({s.get("block") for s in mine if s.get("primary")})
        decision = analysis.decide_pair(pair, mine, plan.knobs[pair.name], confidence(pair.name, blocks))
        standing[pair.name] = PairProgress(
            blocks, len(decision.undecided), seconds[pair.name] / max(1, blocks), decision.verdict.outcome
        )
    return standing


def _measure_all(
    plan: RunPlan,
    db: Database,
    manifest: dict[str, Any],
    samples: list[SampleRecord],
) -> None:
    manifest["database"] = {
        "source": db.source,
        "dsn": db.redacted,
        "app_role": db.app_role or "same as dsn",
        **database.server_settings(db),
    }
    store.write_json(plan.run_dir / "manifest.json", manifest)
    database.prepare(db, plan.scenario.rows)
    print(f"run folder: {plan.run_dir}", file=sys.stderr)  # only once there is something to run
    started = time.monotonic()
    fixed = sample_plan(plan)
    progress = Progress(len(fixed) + (1 if plan.scenario.calibrate_s else 0))
    if plan.scenario.calibrate_s:
        progress.step("calibration", "load generator ceiling")
        calibration = (
            analysis.summarize_calibration(plan.run_dir / "calibration")
            if plan.resume and _completed(plan.run_dir / "calibration")
            else calibrate(plan, db, progress)
        )
        workers, why = choose_workers(plan, calibration.get("rps"))
        manifest["load_generator"] = {"workers": workers, "reason": why}
        store.write_json(plan.run_dir / "manifest.json", manifest)
        if workers != plan.scenario.locust_workers:
            progress.say(f"using Locust's distributed mode: {why}")
            plan.scenario = replace(plan.scenario, locust_workers=workers)
    looks = stats.looks(plan.scenario.repeats, max(plan.scenario.repeats, plan.scenario.max_blocks))
    levels = stats.look_confidences(looks)
    manifest["looks"], manifest["look_confidences"] = list(looks), list(levels)
    # A control measured in its fixed blocks is looked at once: the plain nominal level.
    controls = {p.name: fixed_blocks(plan, p) for p in plan.pairs if p.fixed_blocks}

    def confidence(name: str, blocks: int) -> float:
        return stats.CONFIDENCE if name in controls else stats.confidence_at(looks, levels, blocks)

    seconds = dict.fromkeys((pair.name for pair in plan.pairs), 0.0)
    cadence = SummaryCadence()
    soaks = [sample for sample in fixed if sample.mode == "soak"]
    for sample in (sample for sample in fixed if sample.mode != "soak"):
        began = time.monotonic()
        _measure_one(plan, db, sample, progress, samples, cadence)
        seconds[sample.pair.name] += time.monotonic() - began
    # More blocks where an interval still straddles its threshold, look by look, while
    # the budget lasts (the soaks' time is set aside for them).
    soak_s = sum(plan.scenario.soak_s + recovery_s(plan.scenario) + 15 for _ in soaks)
    stopped: dict[str, str] = {}
    while True:
        left_s = plan.scenario.budget_s - (time.monotonic() - started) - soak_s
        standing = _standing(plan, samples, seconds, confidence)
        # A control has run its own fixed blocks in the rounds (round_blocks).
        more, stopped_now = plan_more_blocks(standing, looks, left_s, controls)
        stopped |= stopped_now
        manifest["blocks"] = {
            name: {
                "blocks": now.blocks,
                "undecided_checks": now.undecided,
                "stopped": stopped.get(name, "running"),
                "confidence": confidence(name, now.blocks),
            }
            for name, now in standing.items()
        }
        store.write_json(plan.run_dir / "manifest.json", manifest)
        if not more:
            break
        going = [pair for pair in plan.pairs if pair.name in more]
        extra = [
            sample
            for block in range(min(standing[p.name].blocks for p in going) + 1, max(more.values()) + 1)
            for pair in pair_order(plan, going, block)
            if standing[pair.name].blocks < block <= more[pair.name]
            for sample in block_samples(plan, pair, block)
        ]
        progress.total += len(extra)
        progress.say(
            f"{len(going)} pairs still undecided ({', '.join(more)}): {len(extra)} more samples, "
            f"{max(0.0, left_s) / 60:.1f} min of budget left"
        )
        for sample in extra:
            began = time.monotonic()
            _measure_one(plan, db, sample, progress, samples, cadence)
            seconds[sample.pair.name] += time.monotonic() - began
    for sample in soaks:
        _measure_one(plan, db, sample, progress, samples, cadence)


def run(plan: RunPlan, db: Database | None = None) -> Path:
    """Measure the plan (on `db` if given, else one provisioned for the run), writing each
    sample's files as it goes and summary.json after each. Rendering is a separate step
    (harness.report), which reads only what this stored."""
    if plan.resume:
        manifest = store.read_json(plan.run_dir / "manifest.json")
        manifest.setdefault("resumed", []).append(store.now())
    else:
        manifest = store.new_manifest(plan.scenario.to_dict(), plan.knobs, plan.command)
        manifest["shuffle_seed"] = plan.shuffle_seed
        manifest["writes_top_report"] = plan.write_top_report
    manifest |= {"status": "running", "finished": None}
    manifest["variants"] = {pair.name: [v.name for v in pair.variants] for pair in plan.pairs}
    manifest["order"] = [sample.label for sample in sample_plan(plan)]  # the fixed part; more blocks may follow
    store.write_json(plan.run_dir / "manifest.json", manifest)
    samples: list[SampleRecord] = []
    try:
        with contextlib.nullcontext(db) if db else database.provision(plan.dsn, PG_HOME) as ready:
            _measure_all(plan, ready, manifest, samples)
        manifest["status"] = "complete"
    except (KeyboardInterrupt, Interrupted):
        manifest["status"] = "interrupted"
        raise
    except BaseException:
        manifest["status"] = "failed"
        raise
    finally:
        manifest["finished"] = store.now()
        store.write_json(plan.run_dir / "manifest.json", manifest)
        if samples:
            write_summary(plan, samples)
    return plan.run_dir
