"""Variants for the `orm_async_sessions` pair: an `AsyncSession` (asyncpg) from an async
yield dependency that is never closed, next to one in `async with`, over the pool
`create_async_engine` gives by default (AsyncAdaptedQueuePool: 5 plus 10 overflow).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Path
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from apps import instruments
from apps.common import Item, knob, probe_router
from apps.orm import BenchItem, answer_pool_timeouts, as_item, engine_url

engine = create_async_engine(
    engine_url("asyncpg"),
    pool_size=knob("pool_size"),
    max_overflow=knob("max_overflow"),
    pool_timeout=knob("pool_timeout_ms") / 1000,
)
SessionLocal = async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # The async engine's pool is the sync engine's underneath: the same events and counts.
    instruments.watch_pool(engine.sync_engine.pool)
    yield
    await engine.dispose()


app = FastAPI(title="orm_async_sessions", lifespan=lifespan)
app.include_router(probe_router)
answer_pool_timeouts(app)
ItemId = Annotated[int, Path(ge=1, le=2**31 - 1)]


async def fetch_item(db: AsyncSession, item_id: int) -> Item:
    return as_item(await db.get(BenchItem, item_id))


# async-never-closed: the AsyncSession is created and never closed.
async def get_db_never_closed() -> AsyncIterator[AsyncSession]:
    db = SessionLocal()
    try:
        yield db
    finally:
        pass  # forgot await db.close()


@app.get("/async-never-closed/items/{item_id}")
async def async_never_closed_item(item_id: ItemId, db: AsyncSession = Depends(get_db_never_closed)) -> Item:
    return await fetch_item(db, item_id)


# async-with: `async with` closes the session when the request's dependency ends.
async def get_db() -> AsyncIterator[AsyncSession]:
    async with SessionLocal() as db:
        yield db


@app.get("/async-with/items/{item_id}")
async def async_with_item(item_id: ItemId, db: AsyncSession = Depends(get_db)) -> Item:
    return await fetch_item(db, item_id)
