"""Variants for the `stall` pair: a small connection pool that makes callers wait, used
from anyio's 40 worker threads in different ways.

Every variant looks up one row through a pool of `pool_size` connections; a caller that
finds the pool empty waits up to `pool_timeout_ms` and then gets a 503, so nothing hangs
for ever. They differ only in where the waiting for a connection happens.
"""

from __future__ import annotations

import queue
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Annotated, Any

import asyncpg
import psycopg2
from fastapi import Depends, FastAPI, HTTPException, Path, Request

from apps.common import Item, count, dsn, fetch_item_asyncpg, fetch_item_psycopg, knob, probe_router, variant

POOL_SIZE = knob("pool_size")
POOL_TIMEOUT_S = knob("pool_timeout_ms") / 1000


class BlockingPool:
    """A fixed set of psycopg2 connections behind a queue: an empty pool makes the caller
    wait (up to the timeout) for a returned connection, as SQLAlchemy's QueuePool does.
    psycopg2's own ThreadedConnectionPool raises at once instead, which cannot stall."""

    def __init__(self, size: int, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._all = [psycopg2.connect(dsn()) for _ in range(size)]
        self._idle: queue.Queue[Any] = queue.Queue()
        for conn in self._all:
            conn.autocommit = True  # a returned connection carries no open transaction
            self._idle.put(conn)

    def get(self) -> Any:
        try:
            return self._idle.get(timeout=self.timeout_s)  # blocks the calling thread
        except queue.Empty:
            count("pool_timeouts")
            raise HTTPException(status_code=503, detail="connection pool exhausted") from None

    def put(self, conn: Any) -> None:
        self._idle.put(conn)

    @contextmanager
    def connection(self) -> Iterator[Any]:
        conn = self.get()
        try:
            yield conn
        finally:
            self.put(conn)

    def close(self) -> None:
        for conn in self._all:
            conn.close()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # One pool per process, of the kind the variant uses, so backend counts compare.
    if variant() == "async-driver":
        app.state.pool = await asyncpg.create_pool(dsn(), min_size=POOL_SIZE, max_size=POOL_SIZE)
        yield
        await app.state.pool.close()
    else:
        app.state.pool = BlockingPool(POOL_SIZE, POOL_TIMEOUT_S)
        yield
        app.state.pool.close()


app = FastAPI(title="stall", lifespan=lifespan)
app.include_router(probe_router)
ItemId = Annotated[int, Path(ge=1, le=2**31 - 1)]


# The sync generator dependency of the `sync-dep` and `max-concurrency` variants. FastAPI
# runs its setup in a worker thread (one of anyio's 40 tokens), so the wait for a free
# connection holds that token; its teardown runs on a limiter of its own (PR #5122).
def get_conn(request: Request) -> Iterator[Any]:
    pool: BlockingPool = request.app.state.pool
    conn = pool.get()
    try:
        yield conn
    finally:
        pool.put(conn)


# sync-dep: a `def` endpoint with the sync dependency. With more requests than tokens +
# pool slots, every token is held by a setup waiting for the pool, while the requests
# that hold the connections wait for a token to run their endpoint (fastapi#3205).
@app.get("/sync-dep/items/{item_id}")
def sync_dep_item(item_id: ItemId, conn: Any = Depends(get_conn)) -> Item:
    return fetch_item_psycopg(conn, item_id)


# in-endpoint: the `def` endpoint takes the connection itself, so the thread that waited
# for the connection is the one that uses and returns it: no token needed in between.
@app.get("/in-endpoint/items/{item_id}")
def in_endpoint_item(item_id: ItemId, request: Request) -> Item:
    with request.app.state.pool.connection() as conn:
        return fetch_item_psycopg(conn, item_id)


# max-concurrency: the same dependency with FastAPI's per-dependency limit (>= 0.163). At
# most pool_size calls are inside it (setup to teardown), so a setup always finds a free
# connection; the others wait on an async semaphore, which takes no worker thread. (Each
# Depends(...) object has a limit of its own: routes sharing a pool must share the object.)
@app.get("/max-concurrency/items/{item_id}")
def max_concurrency_item(item_id: ItemId, conn: Annotated[Any, Depends(get_conn, max_concurrency=POOL_SIZE)]) -> Item:
    return fetch_item_psycopg(conn, item_id)


# async-driver: an asyncpg pool in an `async def` dependency and endpoint: waiting for a
# connection is an await on the loop, no thread involved.
async def get_conn_async(request: Request) -> AsyncIterator[asyncpg.Connection]:
    pool: asyncpg.Pool = request.app.state.pool
    try:
        conn = await pool.acquire(timeout=POOL_TIMEOUT_S)
    except TimeoutError:
        count("pool_timeouts")
        raise HTTPException(status_code=503, detail="connection pool exhausted") from None
    try:
        yield conn
    finally:
        await pool.release(conn)


@app.get("/async-driver/items/{item_id}")
async def async_driver_item(item_id: ItemId, conn: asyncpg.Connection = Depends(get_conn_async)) -> Item:
    return await fetch_item_asyncpg(conn, item_id)
