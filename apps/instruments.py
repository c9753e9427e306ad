"""In-server instruments: event-loop lag, anyio's worker-thread tokens, SQLAlchemy pool
counts and the garbage collector, measured inside the process they describe.

Self-contained on purpose: only the standard library and anyio at import, SQLAlchemy
only once a pool is watched, and nothing from the harness, so that the same module can
be loaded into any FastAPI app. The harness reads what it writes: a CSV time series
(`record_loop`) and a dict of counts (`counts`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

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


class GCWatch:
    """Collections per generation, the time they took, and whether this thread is
    inside one right now (gc.callbacks run in the collecting thread, around the
    weakref callbacks and finalisers the collection triggers)."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.pause_s = 0.0
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
        self.pause_s += time.perf_counter() - getattr(self._local, "started", time.perf_counter())

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
        self._counts: dict[str, float] = {}
        self._lock = threading.Lock()
        event.listen(pool, "checkout", self._checkout)
        event.listen(pool, "checkin", self._checkin)
        # An async dialect's finaliser cannot check a connection in: it detaches it from
        # the pool (which frees the slot without a check-in event) and terminates it.
        event.listen(pool, "detach", self._detach)
        # The async finaliser's warning goes through the pool's logger as well (at ERROR);
        # Python's warning filter would show it only once per place, the logger every time.
        logging.getLogger("sqlalchemy.pool").addHandler(_CountWarnings(self))

    def add(self, name: str, amount: float = 1) -> None:
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + amount

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
        held_ms = (time.monotonic() - since) * 1000 if since is not None else 0.0
        with self._lock:
            counts = self._counts
            counts[f"{kind}_{cause}"] = counts.get(f"{kind}_{cause}", 0) + 1
            # A sum, so that counts from several servers add up (the harness sums counters).
            counts[f"pool_held_ms_{cause}"] = counts.get(f"pool_held_ms_{cause}", 0) + round(held_ms, 3)

    def returned_by_gc(self) -> float:
        """Connections whose proxy was garbage-collected, checked in or detached."""
        with self._lock:
            return sum(
                self._counts.get(f"{kind}_{cause}", 0)
                for kind in ("pool_checkins", "pool_detached")
                for cause in ("refcount", "cyclic_gc")
            )

    def sizes(self) -> tuple[int, int, int] | None:
        """(checked out, overflow, checked in) for a QueuePool; None for pools without them."""
        try:
            return int(self.pool.checkedout()), int(self.pool.overflow()), int(self.pool.checkedin())
        except AttributeError:
            return None

    def counts(self) -> dict[str, float]:
        with self._lock:
            return dict(self._counts)


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
    cause, SQLAlchemy's gc clean-up warnings, and full collections with the time spent in
    the collector. Collections of the young generations change with every request, so
    they are in the time series only, not here."""
    if _POOL is None:
        return {}
    return _POOL.counts() | {"gc_gen2_collections": GC.collections[2], "gc_pause_ms": round(GC.pause_s * 1000, 3)}


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


@asynccontextmanager
async def watch_loop(app: Any, path: str | None = None) -> AsyncIterator[None]:
    """A lifespan that records the time series to `path` (by default the file named in
    BENCH_LOOP_LAG_FILE; nothing without one) while the app runs."""
    path = path or os.environ.get("BENCH_LOOP_LAG_FILE")
    if not path:
        yield
        return
    task = asyncio.create_task(record_loop(path))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
