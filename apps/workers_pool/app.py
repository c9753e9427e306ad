"""Variants for the `workers_pool` pair: uvicorn with several worker processes, each of
which imports this module and so builds its own engine and pool, connecting as a role
whose CONNECTION LIMIT the pair sets (harness: `prepare` in pair.py).

Each request holds its connection for `hold_ms` (pg_sleep in the transaction), so every
worker's pool is in full use at the load's concurrency, whatever this machine's speed.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Path, Request
from fastapi.responses import JSONResponse
from sqlalchemy import exc, make_url, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from apps import instruments
from apps.common import Item, knob, probe_router, variant
from apps.orm import BenchItem, answer_pool_timeouts, as_item

# over-limit: the pool as an app sizes it for one process. within-limit: the role's
# connection limit shared out over the workers.
POOL_SIZE = knob("pool_size") if variant() == "over-limit" else knob("connection_limit") // knob("workers")
engine = create_async_engine(
    make_url(os.environ["BENCH_LIMITED_DSN"]).set(drivername="postgresql+asyncpg"),
    pool_size=POOL_SIZE,
    max_overflow=0,
    pool_timeout=knob("pool_timeout_ms") / 1000,
)
HOLD_S = knob("hold_ms") / 1000


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    instruments.watch_pool(engine.sync_engine.pool)
    yield
    await engine.dispose()


app = FastAPI(title="workers_pool", lifespan=lifespan)
app.include_router(probe_router)
answer_pool_timeouts(app)
ItemId = Annotated[int, Path(ge=1, le=2**31 - 1)]


async def connect_failed(request: Request, error: Exception) -> JSONResponse:
    # 'too many connections for role "..."' when a pool opens a connection past the limit:
    # answered 503 with the driver's first line, not a 500 with a traceback per request.
    return JSONResponse({"detail": str(error).splitlines()[0][:200]}, status_code=503)


app.add_exception_handler(exc.DBAPIError, connect_failed)


async def get_session() -> AsyncIterator[AsyncSession]:
    async with AsyncSession(engine) as session:
        yield session


async def held_lookup(session: AsyncSession, item_id: int) -> Item:
    await session.execute(text("SELECT pg_sleep(:seconds)"), {"seconds": HOLD_S})
    return as_item(await session.get(BenchItem, item_id))


# over-limit: each worker's pool sized as if it were the only process.
@app.get("/over-limit/items/{item_id}")
async def over_limit_item(item_id: ItemId, session: AsyncSession = Depends(get_session)) -> Item:
    return await held_lookup(session, item_id)


# within-limit: the same code; each pool holds connection_limit / workers.
@app.get("/within-limit/items/{item_id}")
async def within_limit_item(item_id: ItemId, session: AsyncSession = Depends(get_session)) -> Item:
    return await held_lookup(session, item_id)
