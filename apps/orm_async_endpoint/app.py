"""Variants for the `orm_async_endpoint` pair: the same SQLAlchemy lookup from a sync
`Session` inside an `async def` endpoint (article 004), inside a `def` endpoint, and
from an `AsyncSession` on asyncpg. Each request first waits `query_ms` in PostgreSQL
(pg_sleep), as a query or a network hop that is not instant would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import FastAPI, Path
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlmodel import Session

from apps import instruments
from apps.common import Item, knob, probe_router, variant
from apps.orm import BenchItem, answer_pool_timeouts, as_item, engine_url

POOL = {"pool_size": knob("pool_size"), "max_overflow": knob("max_overflow")}
WAIT = text("SELECT pg_sleep(:seconds)")
SECONDS = {"seconds": knob("query_ms") / 1000}
# Engines connect lazily: the one a variant does not use never opens a connection, so
# none of its idle connections shows in the backend counts.
sync_engine = create_engine(engine_url("psycopg"), **POOL)
async_engine = create_async_engine(engine_url("asyncpg"), **POOL)
USED_POOL = async_engine.sync_engine.pool if variant() == "async-session" else sync_engine.pool


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    instruments.watch_pool(USED_POOL)
    yield
    sync_engine.dispose()
    await async_engine.dispose()


app = FastAPI(title="orm_async_endpoint", lifespan=lifespan)
app.include_router(probe_router)
answer_pool_timeouts(app)
ItemId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def lookup(item_id: int) -> Item:
    with Session(sync_engine) as session:
        session.execute(WAIT, SECONDS)
        return as_item(session.get(BenchItem, item_id))


# sync-in-async: the sync session's round trips run on the event loop and hold it.
@app.get("/sync-in-async/items/{item_id}")
async def sync_in_async_item(item_id: ItemId) -> Item:
    return lookup(item_id)


# sync-in-def: the same code in a `def` endpoint, run on anyio's worker threads.
@app.get("/sync-in-def/items/{item_id}")
def sync_in_def_item(item_id: ItemId) -> Item:
    return lookup(item_id)


# async-session: AsyncSession on asyncpg; the loop serves others while PostgreSQL works.
@app.get("/async-session/items/{item_id}")
async def async_session_item(item_id: ItemId) -> Item:
    async with AsyncSession(async_engine) as session:
        await session.execute(WAIT, SECONDS)
        return as_item(await session.get(BenchItem, item_id))
