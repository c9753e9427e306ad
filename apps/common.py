"""What every variant app shares: settings from the runner, the row model, the queries
and the /ping probe.

The runner starts one uvicorn process per variant and passes its settings in the
environment, so the DSN (and its password) never shows in a process listing.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from apps import instruments


def dsn() -> str:
    return os.environ["BENCH_DSN"]


def variant() -> str:
    return os.environ.get("BENCH_VARIANT", "")


@functools.cache
def _knobs() -> dict[str, int]:
    return {name: int(value) for name, value in json.loads(os.environ.get("BENCH_KNOBS", "{}")).items()}


def knob(name: str) -> int:
    """A knob in force for this server. The defaults live once, in the pair's `knobs`;
    the runner passes them all (with any `--set`) in BENCH_KNOBS."""
    # Parsed once per process: knobs are read on the request path.
    knobs = _knobs()
    if name not in knobs:
        raise RuntimeError(f"knob {name!r} was not passed in BENCH_KNOBS (declare it in the pair's knobs)")
    return knobs[name]


class Item(BaseModel):
    id: int
    name: str
    price_cents: int


# An indexed primary-key lookup of one seeded row: real work, not SELECT 1.
ITEM_SQL_ASYNCPG = "SELECT id, name, price_cents FROM bench_items WHERE id = $1"
ITEM_SQL_PSYCOPG = "SELECT id, name, price_cents FROM bench_items WHERE id = %s"


def computed_row(item_id: int) -> dict[str, Any]:
    """The seeded row for `item_id`, computed instead of queried (harness.database seeds
    name 'item-<id>' and price (id * 7919) % 100000): for routes that must not touch the
    database, yet still pass the same verification."""
    return {"id": item_id, "name": f"item-{item_id}", "price_cents": (item_id * 7919) % 100_000}


def computed_item(item_id: int) -> Item:
    """`computed_row` as the row model."""
    return Item(**computed_row(item_id))


# What a variant's own code observed (calls, cleanups, order of events), served at
# /counters; the runner stores it with the variant after the load has drained.
COUNTERS: dict[str, Any] = {}
# `def` endpoints and sync dependencies count from worker threads: += is not atomic.
_COUNTERS_LOCK = threading.Lock()


def count(name: str, amount: float = 1) -> None:
    with _COUNTERS_LOCK:
        COUNTERS[name] = COUNTERS.get(name, 0) + amount


def note_once(name: str, value: Any) -> None:
    """Keep the first value seen, e.g. the order of events in the first request."""
    COUNTERS.setdefault(name, value)


def item_or_404(row: Any) -> Item:
    if row is None:
        raise HTTPException(status_code=404, detail="no such item")
    return Item(id=row[0], name=row[1], price_cents=row[2])


def fetch_item_psycopg(conn: Any, item_id: int) -> Item:
    with conn.cursor() as cur:
        cur.execute(ITEM_SQL_PSYCOPG, (item_id,))
        return item_or_404(cur.fetchone())


def pool_lifespan() -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """A lifespan that opens an asyncpg pool of exactly `pool_size` connections (the
    pair's knob) before the load, as app.state.pool, and closes it after: for pairs
    where the pool is plumbing, not the pattern measured."""

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        import asyncpg  # only the apps that pool pay for the import

        size = knob("pool_size")
        async with asyncpg.create_pool(dsn(), min_size=size, max_size=size) as pool:
            app.state.pool = pool
            yield

    return lifespan


async def fetch_item_asyncpg(conn: Any, item_id: int) -> Item:
    return item_or_404(await conn.fetchrow(ITEM_SQL_ASYNCPG, item_id))


# The loop-lag, token and pool instruments live in apps.instruments, which imports
# nothing from the suite; the probe router runs them in every variant's lifespan.
watch_loop_lag = instruments.watch_loop


class MarkResponseSent:
    """Pure ASGI middleware (a few attribute writes per request): notes in the request's
    state, as `response_sent_at` (time.perf_counter), when the response's last body
    message has been handed to the server, so a teardown or a background task can tell
    how long after the client's answer it ran."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_and_mark(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                scope.setdefault("state", {})["response_sent_at"] = time.perf_counter()

        await self.app(scope, receive, send_and_mark)


# Every variant app includes this router: /ping, and the loop-lag monitor in its lifespan.
probe_router = APIRouter(lifespan=watch_loop_lag)


@probe_router.get("/ping")
async def ping() -> dict[str, bool]:
    # Runs on the event loop and does nothing else: its latency is how long the loop
    # took to get to it.
    return {"pong": True}


@probe_router.get("/counters")
async def counters() -> dict[str, Any]:
    # The instruments' counts (pool check-ins by cause, full collections) when a pool is watched.
    return COUNTERS | instruments.counts()
