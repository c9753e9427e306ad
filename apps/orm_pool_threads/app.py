"""Variants for the `orm_pool_threads` pair: `def` endpoints with the template's session
dependency (`with Session(engine) as session: yield session`) at more concurrent
requests than the pool has connections, and three ways to make the two agree.

anyio runs `def` endpoints on 40 worker threads; `create_engine`'s pool lends at most
5 + 10 connections. Every variant times its own checkout (`session.connection()`, the
first thing a query does), so the wait for a connection is counted exactly.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated

import anyio.to_thread
from fastapi import Depends, FastAPI, Path
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlmodel import Session

from apps import instruments
from apps.common import Item, count, knob, probe_router, variant
from apps.orm import BenchItem, answer_pool_timeouts, as_item, engine_url

DEFAULT_POOL = {
    "pool_size": knob("pool_size"),
    "max_overflow": knob("max_overflow"),
    "pool_timeout": knob("pool_timeout_ms") / 1000,
}
# pool-sized: as many connections as anyio has worker threads, so no thread waits for one.
SIZED_POOL = DEFAULT_POOL | {"pool_size": knob("sized_pool_size"), "max_overflow": 0}
# Engines connect lazily: those a variant does not use never open a connection.
engine = create_engine(engine_url("psycopg"), **(SIZED_POOL if variant() == "pool-sized" else DEFAULT_POOL))
async_engine = create_async_engine(engine_url("asyncpg"), **DEFAULT_POOL)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    if variant() == "limiter-to-pool":
        # As many worker threads as the pool has connections: a `def` endpoint then
        # waits for a thread token on the loop, never for a connection on a thread.
        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = knob("pool_size") + knob("max_overflow")
    instruments.watch_pool(async_engine.sync_engine.pool if variant() == "async-engine" else engine.pool)
    yield
    engine.dispose()
    await async_engine.dispose()


app = FastAPI(title="orm_pool_threads", lifespan=lifespan)
app.include_router(probe_router)
answer_pool_timeouts(app)
ItemId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def get_session() -> Iterator[Session]:
    with Session(engine) as session:
        yield session


def timed_lookup(session: Session, item_id: int) -> Item:
    started = time.perf_counter()
    session.connection()  # the checkout: waits while the pool has nothing to lend
    count("connection_wait_ms", (time.perf_counter() - started) * 1000)
    count("lookups")
    return as_item(session.get(BenchItem, item_id))


# default-pool: the template as written, on create_engine's default pool.
@app.get("/default-pool/items/{item_id}")
def default_pool_item(item_id: ItemId, session: Session = Depends(get_session)) -> Item:
    return timed_lookup(session, item_id)


# pool-sized: the same code; the engine has a connection for every worker thread.
@app.get("/pool-sized/items/{item_id}")
def pool_sized_item(item_id: ItemId, session: Session = Depends(get_session)) -> Item:
    return timed_lookup(session, item_id)


# limiter-to-pool: the same code and pool; anyio's limiter lowered to the pool's size.
@app.get("/limiter-to-pool/items/{item_id}")
def limiter_to_pool_item(item_id: ItemId, session: Session = Depends(get_session)) -> Item:
    return timed_lookup(session, item_id)


# async-engine: an AsyncSession on asyncpg with the same default pool; waits on the loop.
@app.get("/async-engine/items/{item_id}")
async def async_engine_item(item_id: ItemId) -> Item:
    async with AsyncSession(async_engine) as session:
        started = time.perf_counter()
        await session.connection()
        count("connection_wait_ms", (time.perf_counter() - started) * 1000)
        count("lookups")
        return as_item(await session.get(BenchItem, item_id))
