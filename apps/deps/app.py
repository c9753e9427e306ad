"""Variants for the `deps` pair: where a per-request database dependency runs.

All three open a connection per request, look up one row and close the connection;
they differ only in where FastAPI runs that code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import asyncpg
import psycopg2
from fastapi import Depends, FastAPI, Path

from apps.common import Item, dsn, fetch_item_asyncpg, fetch_item_psycopg, probe_router

app = FastAPI(title="deps")
app.include_router(probe_router)
ItemId = Annotated[int, Path(ge=1, le=2**31 - 1)]


# sync-dep: a sync generator dependency on a `def` endpoint. FastAPI runs both in
# anyio's worker threads (40 tokens), not on the event loop.
def get_db_sync() -> Iterator[Any]:
    conn = psycopg2.connect(dsn())
    try:
        yield conn
    finally:
        conn.close()


@app.get("/sync-dep/items/{item_id}")
def sync_dep_item(item_id: ItemId, conn: Any = Depends(get_db_sync)) -> Item:
    return fetch_item_psycopg(conn, item_id)


# async-dep: an async generator dependency with an async driver on an `async def`
# endpoint: everything awaits on the loop.
async def get_db_async() -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn())
    try:
        yield conn
    finally:
        await conn.close()


@app.get("/async-dep/items/{item_id}")
async def async_dep_item(item_id: ItemId, conn: asyncpg.Connection = Depends(get_db_async)) -> Item:
    return await fetch_item_asyncpg(conn, item_id)


# async-dep-blocking: an `async def` dependency that calls the blocking driver. FastAPI
# trusts `async def` to await, so connect, query and close all run on the loop itself.
async def get_db_async_blocking() -> AsyncIterator[Any]:
    conn = psycopg2.connect(dsn())
    try:
        yield conn
    finally:
        conn.close()


@app.get("/async-dep-blocking/items/{item_id}")
async def async_dep_blocking_item(item_id: ItemId, conn: Any = Depends(get_db_async_blocking)) -> Item:
    return fetch_item_psycopg(conn, item_id)
