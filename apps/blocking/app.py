"""Variants for the `blocking` pair: one blocking call of `block_ms` milliseconds (a
stand-in for a sync SDK or HTTP client) followed by a row lookup through a blocking
driver. The work is identical; only where it runs differs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import FastAPI, Path
from psycopg2.pool import ThreadedConnectionPool

from apps.common import Item, dsn, fetch_item_psycopg, knob, probe_router

# Enough connections for anyio's 40 worker threads, so the pool never decides the result.
POOL_SIZE = 40


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # minconn = maxconn: psycopg2 closes a returned connection beyond minconn, which
    # would turn every request into a fresh connect.
    app.state.pool = ThreadedConnectionPool(POOL_SIZE, POOL_SIZE, dsn())
    yield
    app.state.pool.closeall()


app = FastAPI(title="blocking", lifespan=lifespan)
app.include_router(probe_router)
ItemId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def blocking_lookup(pool: ThreadedConnectionPool, item_id: int) -> Item:
    time.sleep(knob("block_ms") / 1000)
    conn = pool.getconn()
    try:
        return fetch_item_psycopg(conn, item_id)
    finally:
        pool.putconn(conn)


# async-blocking: the blocking call made directly in an `async def` endpoint.
@app.get("/async-blocking/items/{item_id}")
async def async_blocking_item(item_id: ItemId) -> Item:
    return blocking_lookup(app.state.pool, item_id)


# async-to-thread: the same call handed to the loop's default thread pool.
@app.get("/async-to-thread/items/{item_id}")
async def async_to_thread_item(item_id: ItemId) -> Item:
    return await asyncio.to_thread(blocking_lookup, app.state.pool, item_id)


# sync-def: a plain `def` endpoint, which FastAPI runs in anyio's worker threads.
@app.get("/sync-def/items/{item_id}")
def sync_def_item(item_id: ItemId) -> Item:
    return blocking_lookup(app.state.pool, item_id)
