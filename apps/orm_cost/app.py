"""Variants for the `orm_cost` pair: one primary-key lookup through SQLAlchemy's ORM and
through the raw driver underneath it, async (AsyncSession vs asyncpg) and sync (Session vs
psycopg 3), each over a pool of `pool_size` connections opened before the load.
"""

from __future__ import annotations

import queue
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Annotated, Any

import asyncpg
import psycopg
from fastapi import FastAPI, Path, Request
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlmodel import Session

from apps.common import ITEM_SQL_PSYCOPG, Item, dsn, fetch_item_asyncpg, item_or_404, knob, probe_router, variant
from apps.orm import BenchItem, as_item, engine_url

SIZE = knob("pool_size")
# The ORM's pools: the same size, no overflow, so both sides hold as many connections.
sync_engine = create_engine(engine_url("psycopg"), pool_size=SIZE, max_overflow=0)
async_engine = create_async_engine(engine_url("asyncpg"), pool_size=SIZE, max_overflow=0)


class PsycopgPool:
    """psycopg 3 connections behind a queue (psycopg_pool is not a dependency): the raw
    side's counterpart of the ORM's QueuePool, with its wait."""

    def __init__(self, size: int) -> None:
        self._all = [psycopg.connect(dsn(), autocommit=True) for _ in range(size)]
        self._idle: queue.Queue[psycopg.Connection[Any]] = queue.Queue()
        for conn in self._all:
            self._idle.put(conn)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        conn = self._idle.get()
        try:
            yield conn
        finally:
            self._idle.put(conn)

    def close(self) -> None:
        for conn in self._all:
            conn.close()


async def _warm(size: int) -> None:
    """Open the ORM pool's connections before the load, as the raw pools do."""
    if variant() == "orm-async":
        held = [await async_engine.connect() for _ in range(size)]
        for conn in held:
            await conn.close()
    elif variant() == "orm-sync":
        connections = [sync_engine.connect() for _ in range(size)]
        for conn in connections:
            conn.close()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Only the variant's own pool opens connections; the others stay lazy.
    if variant() == "raw-asyncpg":
        async with asyncpg.create_pool(dsn(), min_size=SIZE, max_size=SIZE) as pool:
            app.state.pool = pool
            yield
        return
    if variant() == "raw-psycopg":
        app.state.pool = PsycopgPool(SIZE)
        yield
        app.state.pool.close()
        return
    await _warm(SIZE)
    yield
    sync_engine.dispose()
    await async_engine.dispose()


app = FastAPI(title="orm_cost", lifespan=lifespan)
app.include_router(probe_router)
ItemId = Annotated[int, Path(ge=1, le=2**31 - 1)]


# raw-asyncpg: one prepared-statement round trip on a pooled asyncpg connection.
@app.get("/raw-asyncpg/items/{item_id}")
async def raw_asyncpg_item(request: Request, item_id: ItemId) -> Item:
    async with request.app.state.pool.acquire() as conn:
        return await fetch_item_asyncpg(conn, item_id)


# orm-async: the same lookup as AsyncSession.get on the same driver.
@app.get("/orm-async/items/{item_id}")
async def orm_async_item(item_id: ItemId) -> Item:
    async with AsyncSession(async_engine) as session:
        return as_item(await session.get(BenchItem, item_id))


# raw-psycopg: the same query on a pooled psycopg 3 connection, in a `def` endpoint.
@app.get("/raw-psycopg/items/{item_id}")
def raw_psycopg_item(request: Request, item_id: ItemId) -> Item:
    with request.app.state.pool.connection() as conn, conn.cursor() as cur:
        cur.execute(ITEM_SQL_PSYCOPG, (item_id,))
        return item_or_404(cur.fetchone())


# orm-sync: Session.get on the same driver, in a `def` endpoint.
@app.get("/orm-sync/items/{item_id}")
def orm_sync_item(item_id: ItemId) -> Item:
    with Session(sync_engine) as session:
        return as_item(session.get(BenchItem, item_id))
