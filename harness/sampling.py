"""Samplers that run beside the load: PostgreSQL backends by state every `interval_s`
and server, PostgreSQL and generator CPU and memory every `usage_interval_s`, the /ping
probe at a fixed rate, and the machine's speed. Each streams its rows to a CSV as it
goes, so a crash keeps what was sampled.
"""

from __future__ import annotations

import contextlib
import csv
import http.client
import json
import os
import queue
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

from harness.database import Database, backends_and_ages, sessions_started

CONNECTION_FIELDS = [
    "time",
    "total",
    "active",
    "idle",
    "idle_in_transaction",
    "other",
    "sessions",  # pg_stat_database.sessions: backends ever started on the database
    "server_cpu_pct",
    "server_rss_mb",
    "server_fds",
    "generator_cpu_pct",  # the busiest Locust process: over 90% means the generator limited the load
    "postgres_cpu_pct",  # the whole PostgreSQL process tree, short-lived backends included
    # The whole machine, from /proc/stat: every process's CPU (the suite's own and anyone
    # else's), and the time a hypervisor ran other guests on this machine's cores (steal).
    "host_busy_pct",
    "host_steal_pct",
    # How long the longest-waiting backend has sat idle in transaction: a held transaction
    # (across a slow call) from one caught between its statements.
    "idle_in_transaction_oldest_ms",
    "error",
]
PROBE_FIELDS = ["intended", "latency_ms", "status", "error"]
SPEED_FIELDS = ["time", "unit_ms"]
# The speed probe's work unit: pure-Python arithmetic, about 1 ms of one core here.
SPEED_UNIT_STEPS = 25_000


class _Thread:
    """A daemon thread with a stop event, used as a context manager."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=type(self).__name__)

    def _run(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self) -> _Thread:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


class HostCPU:
    """The machine's busy and stolen CPU (100 = one core) since the last call, from
    psutil's system-wide CPU times; nothing where the system reports no steal (not
    Linux). Steal is the time a hypervisor gave this machine's cores to other guests: a
    shared host that slows one sample of a block shows here, where the suite's own
    processes cannot show it."""

    def __init__(self) -> None:
        self._last = self._read()

    def _read(self) -> tuple[float, float, float] | None:
        try:
            times = psutil.cpu_times()
        except (OSError, RuntimeError):
            return None
        steal = getattr(times, "steal", None)
        if steal is None:
            return None
        idle = times.idle + getattr(times, "iowait", 0.0)
        # Guest time is already inside user and nice, so it is not added again.
        total = times.user + times.nice + times.system + idle + times.irq + times.softirq + steal
        return total, total - idle - steal, steal

    def percent(self) -> dict[str, str]:
        now, last = self._read(), self._last
        self._last = now
        if now is None or last is None or now[0] <= last[0]:
            return {}
        cores = 100.0 * (os.cpu_count() or 1)
        share = cores / (now[0] - last[0])
        return {
            "host_busy_pct": f"{(now[1] - last[1]) * share:.1f}",
            "host_steal_pct": f"{(now[2] - last[2]) * share:.1f}",
        }


class TreeCPU:
    """CPU share (100 = one core) of a process and all its descendants since the last
    call, counting children that exited in between: their time moves into the parent's
    children_user/children_system when it reaps them."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self._last = (time.monotonic(), self._seconds())

    def _seconds(self) -> float:
        times = self.root.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in self.root.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child_times = child.cpu_times()
                total += child_times.user + child_times.system
        return total

    def percent(self) -> float:
        now, seconds = time.monotonic(), self._seconds()
        last_now, last_seconds = self._last
        self._last = (now, seconds)
        return max(0.0, (seconds - last_seconds) / max(now - last_now, 1e-6) * 100)


class _BackendCPU:
    """CPU seconds the sampler's own PostgreSQL backends used: its query cost, paid by
    PostgreSQL. None when the server runs elsewhere (a Docker or remote DSN)."""

    def __init__(self) -> None:
        self.done_s: float | None = 0.0
        self.current: tuple[psutil.Process, float] | None = None

    def watch(self, conn: Any) -> None:
        self.close()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_backend_pid()")
                process = psutil.Process(int(cur.fetchone()[0]))
            self.current = (process, self._seconds(process))
        except Exception:  # psutil's, or the query's: one backend unknown, the total unknown
            self.done_s = None

    def close(self) -> None:
        if self.current is None:
            return
        process, start = self.current
        self.current = None
        try:
            if self.done_s is not None:
                self.done_s += self._seconds(process) - start
        except psutil.Error:
            self.done_s = None

    @staticmethod
    def _seconds(process: psutil.Process) -> float:
        times = process.cpu_times()
        return float(times.user + times.system)


class ConnectionSampler(_Thread):
    """Backends by state every `interval_s`; CPU, memory and descriptors of server,
    PostgreSQL and generator every `usage_interval_s` (walking every PostgreSQL process
    costs far more than one pg_stat_activity query, and CPU shares need a span to mean
    anything). With `cost_file`, it writes what it cost itself when it stops."""

    def __init__(
        self,
        db: Database,
        server_pid: int,
        out: Path,
        interval_s: float,
        postgres_pid: int | None = None,
        usage_interval_s: float | None = None,
        cost_file: Path | None = None,
    ) -> None:
        super().__init__()
        self.db, self.out, self.interval_s = db, out, interval_s
        self.usage_interval_s = max(interval_s, usage_interval_s or interval_s)
        self.cost_file = cost_file
        self.last_total: int | str = "?"  # for the progress line
        # The whole process tree: uvicorn with several workers is a supervisor and its children.
        try:
            self.server: psutil.Process | None = psutil.Process(server_pid)
            self.server_cpu: TreeCPU | None = TreeCPU(server_pid)
        except psutil.Error:
            self.server, self.server_cpu = None, None
        self.host = HostCPU()
        self.postgres: TreeCPU | None = None
        if postgres_pid:
            with contextlib.suppress(psutil.Error):
                self.postgres = TreeCPU(postgres_pid)
        self.generator: list[psutil.Process] = []

    def watch_generator(self, processes: list[Any]) -> None:
        """Sample these load-generator processes (anything with a .pid) from now on."""
        watched = []
        for process in processes:
            with contextlib.suppress(psutil.Error, AssertionError):
                watched.append(psutil.Process(process.pid))
                watched[-1].cpu_percent(None)
        self.generator = watched

    def _load_usage(self) -> dict[str, str]:
        row = {}
        busiest = None
        for process in self.generator:
            with contextlib.suppress(psutil.Error):
                busiest = max(busiest or 0.0, process.cpu_percent(None))
        if busiest is not None:
            row["generator_cpu_pct"] = f"{busiest:.1f}"
        if self.postgres is not None:
            with contextlib.suppress(psutil.Error):
                row["postgres_cpu_pct"] = f"{self.postgres.percent():.1f}"
        return row

    def _server_usage(self) -> dict[str, str]:
        """CPU share, resident memory and open file descriptors of the server's process
        tree, summed (descriptors include its sockets: a connection leak shows here too)."""
        if self.server is None or self.server_cpu is None:
            return {}
        try:
            rss, fds = 0, 0
            for process in [self.server, *self.server.children(recursive=True)]:
                with contextlib.suppress(psutil.Error), process.oneshot():
                    rss, fds = rss + process.memory_info().rss, fds + process.num_fds()
            return {
                "server_cpu_pct": f"{self.server_cpu.percent():.1f}",
                "server_rss_mb": f"{rss / 2**20:.1f}",
                "server_fds": str(fds),
            }
        except psutil.Error:
            return {}

    def _run(self) -> None:
        conn: Any = None
        backend = _BackendCPU()
        started, started_cpu, ticks = time.monotonic(), time.thread_time(), 0
        with open(self.out, "w", newline="") as handle:
            writer = csv.DictWriter(handle, CONNECTION_FIELDS)
            writer.writeheader()
            next_at = usage_at = time.monotonic()
            while not self._stop.is_set():
                row: dict[str, Any] = {"time": f"{time.time():.3f}"}
                try:
                    if conn is None:
                        conn = self.db.connect(timeout_s=2)
                        backend.watch(conn)
                    with conn.cursor() as cur:
                        states, ages = backends_and_ages(cur)
                        row["sessions"] = sessions_started(cur)
                    known = {"active", "idle", "idle in transaction"}
                    row |= {
                        "total": sum(states.values()),
                        "active": states.get("active", 0),
                        "idle": states.get("idle", 0),
                        "idle_in_transaction": states.get("idle in transaction", 0),
                        "other": sum(n for s, n in states.items() if s not in known),
                        "idle_in_transaction_oldest_ms": ages.get("idle in transaction", ""),
                    }
                    self.last_total = row["total"]
                except Exception as err:  # a sample that failed is recorded, not fatal
                    row["error"] = type(err).__name__
                    backend.close()
                    with contextlib.suppress(Exception):
                        conn.close()
                    conn = None
                if next_at >= usage_at - 1e-6:  # this tick is due for usage too
                    row |= self._server_usage() | self._load_usage() | self.host.percent()
                    usage_at += self.usage_interval_s
                writer.writerow(row)
                handle.flush()
                ticks += 1
                next_at += self.interval_s
                self._stop.wait(max(0.0, next_at - time.monotonic()))
        backend.close()
        if self.cost_file is not None:
            seconds = time.monotonic() - started
            cost = {
                "interval_s": self.interval_s,
                "usage_interval_s": self.usage_interval_s,
                "ticks": ticks,
                "seconds": round(seconds, 3),
                "runner_cpu_s": round(time.thread_time() - started_cpu, 4),
                "postgres_cpu_s": None if backend.done_s is None else round(backend.done_s, 4),
            }
            with contextlib.suppress(OSError):
                self.cost_file.write_text(json.dumps(cost))
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


def work_unit() -> float:
    """CPU milliseconds this thread spends on a fixed piece of work. Thread CPU time, not
    wall time: waiting for a core (the load's own saturation) does not count, so it
    changes only when the same instructions cost more CPU time, as when a shared host's
    neighbours take the core's caches or its cycles (time a hypervisor takes from a guest
    without a steal clock is charged to whatever was running, this thread included)."""
    started = time.thread_time()
    total = 0
    for step in range(SPEED_UNIT_STEPS):
        total += step * step % 7
    return (time.thread_time() - started) * 1000


class SpeedProbe(_Thread):
    """The work unit every `interval_s`, beside the load: the machine's speed during the
    window. Every process on a slowed machine is charged more CPU per request (measured:
    server, PostgreSQL and Locust all about twice as much within one run), so CPU per
    request is read in units of this probe's work (pairs.speed_adjusted_cpu)."""

    def __init__(self, out: Path, interval_s: float = 0.05) -> None:
        super().__init__()
        self.out, self.interval_s = out, interval_s

    def _run(self) -> None:
        with open(self.out, "w", newline="") as handle:
            writer = csv.DictWriter(handle, SPEED_FIELDS)
            writer.writeheader()
            while not self._stop.is_set():
                writer.writerow({"time": f"{time.time():.3f}", "unit_ms": f"{work_unit():.4f}"})
                handle.flush()
                self._stop.wait(self.interval_s)


class Probe:
    """GET /ping on a fixed schedule, open-loop, its latency counted from the scheduled
    time. Senders each own a keep-alive connection opened before the load starts, as
    Locust's users do: a single connection would queue pings behind each other (the
    probe's own backlog), and a new connection per ping would measure how long a
    busy server takes to accept, not how late its loop answers."""

    def __init__(
        self, host: str, port: int, out: Path, rate: float, timeout_s: float, senders: int = 16, path: str = "/ping"
    ) -> None:
        self.host, self.port, self.out = host, port, out
        self.path = path  # a probed app's /ping lives under a prefix of its own
        self.period_s, self.timeout_s = 1.0 / rate, timeout_s
        self.senders = senders
        self._due: queue.Queue[tuple[float, float] | None] = queue.Queue()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def _connect(self) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        conn.connect()
        return conn

    def _sender(self, conn: http.client.HTTPConnection | None, writer: Any, handle: Any) -> None:
        while (due := self._due.get()) is not None:
            intended_mono, intended_wall = due
            row: dict[str, Any] = {"intended": f"{intended_wall:.3f}", "status": 0, "error": ""}
            try:
                conn = conn or self._connect()
                conn.request("GET", self.path)
                resp = conn.getresponse()
                resp.read()
                row["status"] = resp.status
            except (OSError, http.client.HTTPException) as err:
                row["error"] = type(err).__name__
                if conn is not None:
                    conn.close()
                conn = None
            row["latency_ms"] = f"{(time.monotonic() - intended_mono) * 1000:.2f}"
            with self._lock:
                writer.writerow(row)
                handle.flush()
        if conn is not None:
            conn.close()

    def _schedule(self) -> None:
        intended_mono, intended_wall = time.monotonic(), time.time()
        while not self._stop.is_set():
            delay = intended_mono - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            self._due.put((intended_mono, intended_wall))
            intended_mono += self.period_s
            intended_wall += self.period_s
        for _ in range(self.senders):
            self._due.put(None)

    def __enter__(self) -> Probe:
        self._handle = open(self.out, "w", newline="")  # closed in __exit__
        writer = csv.DictWriter(self._handle, PROBE_FIELDS)
        writer.writeheader()
        for _ in range(self.senders):
            try:
                conn: http.client.HTTPConnection | None = self._connect()
            except OSError:
                conn = None  # the sender retries on its first ping
            self._threads.append(threading.Thread(target=self._sender, args=(conn, writer, self._handle), daemon=True))
        self._threads.append(threading.Thread(target=self._schedule, daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        # Senders finish the pings already due (each bounded by timeout_s), then stop.
        for thread in self._threads:
            thread.join(timeout=self.timeout_s + 5)
        with self._lock:
            self._handle.close()
