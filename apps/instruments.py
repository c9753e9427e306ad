"""In-server instruments: event-loop lag, anyio's worker-thread tokens, SQLAlchemy pool
counts, the garbage collector, and the stack watchdog that catches what blocked the
loop, measured inside the process they describe.

Self-contained on purpose: only the standard library and anyio at import, SQLAlchemy
only once a pool is watched, and nothing from the harness, so that the same module can
be loaded into any FastAPI app. The harness reads what it writes: a CSV time series
(`record_loop`) and a dict of counts (`counts`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import sys
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType
from typing import IO, Any

import anyio.to_thread

# How often the loop monitor asks to be woken; its lateness is the loop's lag.
LAG_PERIOD_S = 0.01
# Columns of the time series, one row per wake-up. The pool columns stay empty until an
# app watches a pool; the gc and returned-by-gc columns are running totals.
LOOP_FIELDS = (
    "time",
    "lag_ms",
    "threads_busy",
    "pool_checked_out",
    "pool_overflow",
    "pool_checked_in",
    "pool_returned_by_gc",
    "gc_gen0",
    "gc_gen1",
    "gc_gen2",
)
# SQLAlchemy's words when its finaliser terminates a connection it cannot return
# (sqlalchemy/pool/base.py, _finalize_fairy; async dialects only).
GC_CLEANUP_MESSAGE = "garbage collector is trying to clean up"
# What can free a connection's proxy other than the code closing it.
GC_CAUSES = ("refcount", "cyclic_gc")
# Every way a lent connection comes back: checked in (or, async, detached) by each cause.
RETURN_KINDS = ("pool_checkins", "pool_detached")
RETURN_CAUSES = ("close", *GC_CAUSES)


class GCWatch:
    """Collections per generation, the time they took, and whether this thread is
    inside one right now (gc.callbacks run in the collecting thread, around the
    weakref callbacks and finalisers the collection triggers)."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.full_pause_s = 0.0  # full collections only: the young ones run every few requests
        self._local = threading.local()

    def install(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._local.started = time.perf_counter()
            self._local.collecting = True
            return
        self._local.collecting = False
        self.collections[info["generation"]] += 1
        if info["generation"] == 2:
            self.full_pause_s += time.perf_counter() - getattr(self._local, "started", time.perf_counter())

    def collecting(self) -> bool:
        return bool(getattr(self._local, "collecting", False))


GC = GCWatch()


def _no_op(_ref: Any) -> None:
    """A weakref with a callback is cleared before any finaliser runs (see SQLAlchemy's
    note on cpython gh-135552 in pool/base.py), so a finaliser sees it dead."""


class _CountWarnings(logging.Handler):
    def __init__(self, watch: PoolWatch) -> None:
        super().__init__(logging.ERROR)
        self.watch = watch

    def emit(self, record: logging.LogRecord) -> None:
        if GC_CLEANUP_MESSAGE in record.getMessage():
            self.watch.add("pool_gc_cleanup_warnings")


class PoolWatch:
    """Checked-out, overflow and checked-in counts of one SQLAlchemy pool, and every
    check-in (or, for async dialects, detach) classified by what returned the connection:

    - `close`: the code closed its session or connection (the proxy was still alive);
    - `refcount`: the proxy was freed when its last reference went, outside a collection;
    - `cyclic_gc`: the proxy was freed by the cyclic garbage collector.

    SQLAlchemy's pool gives back a connection whose proxy was garbage-collected from a
    `weakref.finalize` on the proxy (pool/base.py, `_ConnectionFairy.__init__` and
    `_finalize_fairy(..., is_gc_cleanup=True)`); the check-in event fires from there.
    """

    def __init__(self, pool: Any) -> None:
        from sqlalchemy import event  # only apps that watch a pool import SQLAlchemy

        self.pool = pool
        # Events go into a deque and are added up when read. The listeners run inside
        # finalisers, which the collector can start in any thread at any allocation, also
        # while that thread holds a lock of ours: a lock here could deadlock, and a plain
        # `counts[name] += 1` could lose an update. deque.append is atomic and takes no lock.
        self._events: deque[tuple[str, float]] = deque()
        # Zeros from the start, so a return path nothing took reads 0 in /counters (and in
        # the report's figures) instead of being missing, which reads as "not measured".
        self._counts: dict[str, float] = {"pool_checkouts": 0}
        self._counts |= {f"{kind}_{cause}": 0 for kind in RETURN_KINDS for cause in RETURN_CAUSES}
        self._lock = threading.RLock()  # between readers only; no listener takes it
        event.listen(pool, "checkout", self._checkout)
        event.listen(pool, "checkin", self._checkin)
        # An async dialect's finaliser cannot check a connection in: it detaches it from
        # the pool (which frees the slot without a check-in event) and terminates it.
        event.listen(pool, "detach", self._detach)
        # The async finaliser's warning goes through the pool's logger as well (at ERROR);
        # Python's warning filter would show it only once per place, the logger every time.
        logging.getLogger("sqlalchemy.pool").addHandler(_CountWarnings(self))

    def add(self, name: str, amount: float = 1) -> None:
        self._events.append((name, amount))

    def _checkout(self, dbapi_connection: Any, record: Any, proxy: Any) -> None:
        record.info["instruments.proxy"] = weakref.ref(proxy, _no_op)
        record.info["instruments.checked_out_at"] = time.monotonic()
        self.add("pool_checkouts")

    def _checkin(self, dbapi_connection: Any, record: Any) -> None:
        self._returned(record, "pool_checkins")

    def _detach(self, dbapi_connection: Any, record: Any) -> None:
        self._returned(record, "pool_detached")

    def _returned(self, record: Any, kind: str) -> None:
        proxy = record.info.pop("instruments.proxy", None)
        since = record.info.pop("instruments.checked_out_at", None)
        if proxy is None:  # checked out before the watch began, or already counted
            return
        cause = "close" if proxy() is not None else "cyclic_gc" if GC.collecting() else "refcount"
        self.add(f"{kind}_{cause}")
        # A sum, so that counts from several servers add up (the harness sums counters).
        if since is not None:
            self.add(f"pool_held_ms_{cause}", round((time.monotonic() - since) * 1000, 3))

    def counts(self) -> dict[str, float]:
        with self._lock:
            while self._events:
                name, amount = self._events.popleft()
                self._counts[name] = self._counts.get(name, 0) + amount
            return dict(self._counts)

    def returned_by_gc(self) -> float:
        """Connections whose proxy was garbage-collected, checked in or detached."""
        found = self.counts()
        return sum(found.get(f"{kind}_{cause}", 0) for kind in RETURN_KINDS for cause in GC_CAUSES)

    def sizes(self) -> tuple[int, int, int] | None:
        """(checked out, overflow, checked in) for a QueuePool; None for pools without them."""
        try:
            return int(self.pool.checkedout()), int(self.pool.overflow()), int(self.pool.checkedin())
        except AttributeError:
            return None


_POOL: PoolWatch | None = None


def watch_pool(pool: Any) -> PoolWatch:
    """Watch this SQLAlchemy pool (e.g. `engine.pool`, or `async_engine.sync_engine.pool`)
    from now on; one pool per process, as the suite's variants have."""
    global _POOL
    GC.install()
    _POOL = PoolWatch(pool)
    return _POOL


def counts() -> dict[str, float]:
    """What the instruments counted since start-up: the pool's check-outs and check-ins by
    cause, SQLAlchemy's gc clean-up warnings, and full collections with the time they
    took. Collections of the young generations happen every few requests, and even on
    an idle server (the loop monitor allocates), so they are in the time series only:
    here they would keep the counters from ever settling after the load."""
    if _POOL is None:
        return {}
    full = {"gc_gen2_collections": GC.collections[2], "gc_full_pause_ms": round(GC.full_pause_s * 1000, 3)}
    return _POOL.counts() | full


def _row(woke: float, due: float, limiter: Any) -> str:
    cells = [f"{time.time():.3f}", f"{(woke - due) * 1000:.2f}", str(limiter.borrowed_tokens)]
    sizes = None if _POOL is None else _POOL.sizes()
    if _POOL is not None and sizes is not None:
        cells += [*map(str, sizes), f"{_POOL.returned_by_gc():.0f}"]
    else:
        cells += ["", "", "", ""]
    cells += map(str, GC.collections)
    return ",".join(cells) + "\n"


async def record_loop(path: str) -> None:
    """Every LAG_PERIOD_S: how late the loop woke this task (its lag), how many of anyio's
    worker-thread tokens are borrowed (40 by default: `def` endpoints and sync
    dependencies), and the watched pool's counts."""
    limiter = anyio.to_thread.current_default_thread_limiter()
    GC.install()
    buffered: list[str] = []
    with open(path, "w") as out:
        out.write(",".join(LOOP_FIELDS) + "\n")
        last_flush = time.monotonic()
        try:
            while True:
                # time.monotonic(), not loop.time(): uvloop caches loop time per iteration,
                # which would hide a callback that blocked earlier in the same iteration.
                due = time.monotonic() + LAG_PERIOD_S
                await asyncio.sleep(LAG_PERIOD_S)
                woke = time.monotonic()
                buffered.append(_row(woke, due, limiter))
                if woke - last_flush >= 0.5:  # batch the writes: this task runs on the loop it measures
                    out.writelines(buffered)
                    out.flush()
                    buffered.clear()
                    last_flush = woke
        finally:
            out.writelines(buffered)


# --- the stack watchdog ------------------------------------------------------------
# When the event loop is late, capture what it is doing. The loop-lag monitor above
# measures how late the loop woke, after the fact, when whatever blocked it has already
# returned. The watchdog catches it in the act: a heartbeat on the loop notes each
# pass, and a thread beside it checks the heartbeat's age every few milliseconds. Once
# the heartbeat is overdue by more than `threshold_ms`, the thread reads the loop
# thread's current stack with `sys._current_frames()` (the line the loop is stuck on,
# from a stack captured at run time) and keeps sampling it until the loop comes back.
# When the next heartbeat arrives, its lateness is the lag that stall caused, and one
# JSON line goes to the output file:
#
#     {"time": 1733093000.123, "lag_ms": 48.7, "samples": [[3, [[file, line, function], ...]], ...]}
#
# `samples` holds each distinct stack seen during the stall, innermost frame first, with
# how many times it was seen; a stall too short to be caught is counted in `missed` of
# `summary()` instead.
#
# Cost: one thread that wakes every `threshold_ms / 3` to compare two floats (it takes
# the GIL for a few microseconds), and a heartbeat callback on the loop every `period_ms`.

# Frames kept per stack, innermost first: deep enough for FastAPI's dependency and
# middleware layers between a route and the server loop.
MAX_FRAMES = 60
# Distinct stacks kept per stall: a stall that wanders through more is summarised by these.
MAX_STACKS_PER_STALL = 20

Frame = tuple[str, int, str]  # file, line, function
Stack = tuple[Frame, ...]


def stack_of(frame: FrameType | None, limit: int = MAX_FRAMES) -> Stack:
    """The stack from `frame` outwards, innermost first."""
    frames: list[Frame] = []
    while frame is not None and len(frames) < limit:
        code = frame.f_code
        # f_lineno is None while a frame runs an instruction with no line (3.11+): 0 then.
        frames.append((code.co_filename, frame.f_lineno or 0, code.co_name))
        frame = frame.f_back
    return tuple(frames)


class StackWatchdog:
    """Heartbeat on the loop, watcher in a thread; `start()` on the loop, `stop()` at the end."""

    def __init__(
        self, out_path: str, threshold_ms: float = 25.0, period_ms: float = 10.0, max_frames: int = MAX_FRAMES
    ) -> None:
        self.out_path = out_path
        self.max_frames = max_frames
        self.threshold_s = threshold_ms / 1000
        self.period_s = period_ms / 1000
        self.poll_s = max(0.002, self.threshold_s / 3)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_thread_id = 0
        # Written by the heartbeat (on the loop), read by the watcher thread: single
        # attribute stores and loads, atomic under the GIL.
        self._beats = 0
        self._last_beat = 0.0
        # Late heartbeats, as (beat number, lateness in s); deque.append is thread-safe.
        self._late: deque[tuple[int, float]] = deque()
        self._handle: asyncio.TimerHandle | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._out: IO[str] | None = None
        self.stalls = 0  # stalls captured with their stacks
        self.missed = 0  # late heartbeats whose stall ended before the watcher saw it
        self.lag_ms_captured = 0.0

    # --- on the loop -----------------------------------------------------------------
    def start(self) -> None:
        """Call from the event loop's thread (e.g. in the app's lifespan)."""
        if self._thread is not None:
            return
        self.loop = asyncio.get_running_loop()
        self.loop_thread_id = threading.get_ident()
        self._out = open(self.out_path, "a")  # noqa: SIM115 - closed in stop()
        self._last_beat = time.monotonic()
        self._handle = self.loop.call_later(self.period_s, self._beat, self._last_beat + self.period_s)
        self._thread = threading.Thread(target=self._watch, name="stack-watchdog", daemon=True)
        self._thread.start()

    def _beat(self, due: float) -> None:
        now = time.monotonic()
        late = now - due
        self._beats += 1
        if late > self.threshold_s:
            self._late.append((self._beats, late))
        self._last_beat = now
        assert self.loop is not None
        self._handle = self.loop.call_later(self.period_s, self._beat, now + self.period_s)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._out is not None:
            with contextlib.suppress(OSError, ValueError):
                self._out.close()
            self._out = None

    # --- in the watcher thread -------------------------------------------------------
    def _watch(self) -> None:
        stall: dict[str, Any] | None = None  # the stall in progress: since which beat, stacks seen
        while not self._stop.wait(self.poll_s):
            beats, last = self._beats, self._last_beat
            if stall is not None and beats != stall["beat"]:
                self._finish(stall)  # the loop came back: its next beat carries the lag
                stall = None
            if time.monotonic() - last - self.period_s > self.threshold_s:
                frame = sys._current_frames().get(self.loop_thread_id)
                if frame is not None and self._beats != beats:  # it beat in between: not stalled after all
                    frame = None
                if frame is not None:
                    if stall is None:  # it began after the last beat: that is when the loop was last seen
                        stall = {"beat": beats, "time": time.time() - (time.monotonic() - last), "stacks": Counter()}
                    stack = stack_of(frame, self.max_frames)
                    del frame  # a frame reference keeps the loop thread's locals alive
                    stacks: Counter[Stack] = stall["stacks"]
                    if stack in stacks or len(stacks) < MAX_STACKS_PER_STALL:
                        stacks[stack] += 1
            # Late beats up to here that no stall in progress explains were too short to catch.
            self._take_late(stall["beat"] if stall is not None else beats)
        if stall is not None:
            self._finish(stall)

    def _take_late(self, beat: int) -> float | None:
        """Pop late beats up to `beat`: its lateness, if it was late; earlier ones were
        stalls over before a check saw them. Only this thread pops, only the loop appends."""
        while self._late:
            number, late = self._late[0]
            if number > beat:
                return None
            self._late.popleft()
            if number == beat:
                return late
            self.missed += 1
        return None

    def _finish(self, stall: dict[str, Any]) -> None:
        # The beat after a stall is at least as late as the watcher saw the loop blocked,
        # so it is among the late ones; if it is not, the loop was never stalled.
        lag_s = self._take_late(stall["beat"] + 1)
        if lag_s is None:
            return
        self.stalls += 1
        self.lag_ms_captured += lag_s * 1000
        line = {
            "time": round(stall["time"], 3),
            "lag_ms": round(lag_s * 1000, 2),
            "samples": [[count, [list(f) for f in stack]] for stack, count in stall["stacks"].most_common()],
        }
        if self._out is not None:
            with contextlib.suppress(OSError, ValueError):
                self._out.write(json.dumps(line) + "\n")
                self._out.flush()

    def summary(self) -> dict[str, Any]:
        return {
            "threshold_ms": self.threshold_s * 1000,
            "period_ms": self.period_s * 1000,
            "stalls_captured": self.stalls,
            "stalls_missed": self.missed,
            "lag_ms_captured": round(self.lag_ms_captured, 2),
        }


# Frames kept per stack in the suite's own servers: the blocking call and the route
# around it are innermost; the framework's frames beyond them say nothing new.
SUITE_FRAMES = 12


def per_process(path: str) -> str:
    """`path` for this process: with several uvicorn workers (BENCH_WORKERS), each writes
    its own file, `loop_lag-<pid>.csv`, rather than all of them one."""
    if int(os.environ.get("BENCH_WORKERS") or 1) <= 1:
        return path
    stem, dot, suffix = path.rpartition(".")
    return f"{stem}-{os.getpid()}.{suffix}" if dot else f"{path}-{os.getpid()}"


@asynccontextmanager
async def watch_loop(app: Any, path: str | None = None) -> AsyncIterator[None]:
    """A lifespan that records the time series to `path` (by default the file named in
    BENCH_LOOP_LAG_FILE; nothing without one) while the app runs, and runs the stack
    watchdog where BENCH_STALLS_FILE names its output (at BENCH_STALL_MS, 25 by default)."""
    path = path or os.environ.get("BENCH_LOOP_LAG_FILE")
    stalls = os.environ.get("BENCH_STALLS_FILE")
    watchdog = None
    if stalls:
        threshold_ms = float(os.environ.get("BENCH_STALL_MS") or 25)
        watchdog = StackWatchdog(stalls, threshold_ms=threshold_ms, max_frames=SUITE_FRAMES)
        watchdog.start()
    task = asyncio.create_task(record_loop(per_process(path))) if path else None
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if watchdog is not None:
            watchdog.stop()
