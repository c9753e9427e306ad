"""Variants for the `sessions` pair: a dependency that forgets to close or release its
connection, next to one that does, for connect-per-request and for a pool.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import asyncpg
from fastapi import Depends, FastAPI, HTTPException, Path, Request

from apps.common import Item, dsn, fetch_item_asyncpg, knob, probe_router, variant


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Only the pool variants hold a pool: its idle connections would otherwise show in
    # the connection counts of the connect-per-request variants.
    if variant().startswith("pool-"):
        size = knob("pool_size")
        app.state.pool = await asyncpg.create_pool(dsn(), min_size=size, max_size=size)
        yield
        # A leaked connection is never released, so close() would wait for it forever.
        app.state.pool.terminate()
    else:
        yield


app = FastAPI(title="sessions", lifespan=lifespan)
app.include_router(probe_router)
ItemId = Annotated[int, Path(ge=1, le=2**31 - 1)]


# connect-leaky: opens a connection per request and never closes it.
async def get_conn_leaky() -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn())
    try:
        yield conn
    finally:
        pass  # forgot conn.close()


@app.get("/connect-leaky/items/{item_id}")
async def connect_leaky_item(item_id: ItemId, conn: asyncpg.Connection = Depends(get_conn_leaky)) -> Item:
    return await fetch_item_asyncpg(conn, item_id)


# connect-closed: the same, closing in `finally`.
async def get_conn_closed() -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn())
    try:
        yield conn
    finally:
        await conn.close()


@app.get("/connect-closed/items/{item_id}")
async def connect_closed_item(item_id: ItemId, conn: asyncpg.Connection = Depends(get_conn_closed)) -> Item:
    return await fetch_item_asyncpg(conn, item_id)


async def acquire(pool: asyncpg.Pool) -> asyncpg.Connection:
    # Bounded wait: a dry pool answers 503 after pool_timeout_s instead of hanging.
    try:
        return await pool.acquire(timeout=knob("pool_timeout_ms") / 1000)
    except TimeoutError:
        raise HTTPException(status_code=503, detail="connection pool exhausted") from None


# pool-leaky: acquires from the lifespan pool and never releases.
async def get_pooled_leaky(request: Request) -> AsyncIterator[asyncpg.Connection]:
    conn = await acquire(request.app.state.pool)
    try:
        yield conn
    finally:
        pass  # forgot pool.release(conn)


@app.get("/pool-leaky/items/{item_id}")
async def pool_leaky_item(item_id: ItemId, conn: asyncpg.Connection = Depends(get_pooled_leaky)) -> Item:
    return await fetch_item_asyncpg(conn, item_id)


# pool-closed: acquires and always releases back to the pool.
async def get_pooled_closed(request: Request) -> AsyncIterator[asyncpg.Connection]:
    pool: asyncpg.Pool = request.app.state.pool
    conn = await acquire(pool)
    try:
        yield conn
    finally:
        await pool.release(conn)


@app.get("/pool-closed/items/{item_id}")
async def pool_closed_item(item_id: ItemId, conn: asyncpg.Connection = Depends(get_pooled_closed)) -> Item:
    return await fetch_item_asyncpg(conn, item_id)
