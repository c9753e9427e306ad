"""Variants for the `startup` pair: one asyncpg pool opened at startup and closed at
shutdown, either by `@app.on_event` handlers or by a lifespan. The request path is the
same; only the way the app starts and stops differs.

The app is built for the variant the runner asks for (BENCH_VARIANT): an on_event
handler registered at import would also run (and warn) in the lifespan variant.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import asyncpg
from fastapi import Depends, FastAPI, HTTPException, Path, Request

from apps.common import Item, count, dsn, fetch_item_asyncpg, knob, probe_router, variant

if variant() == "on-event":
    # on-event: the pool opened and closed by event handlers, as the article shows.
    # FastAPI runs them only when no lifespan is passed; the probe router's lifespan is
    # merged around them.
    app = FastAPI(title="startup")

    @app.on_event("startup")
    async def open_pool_on_startup() -> None:
        size = knob("pool_size")
        app.state.pool = await asyncpg.create_pool(dsn(), min_size=size, max_size=size)
        count("pool_opened")

    @app.on_event("shutdown")
    async def close_pool_on_shutdown() -> None:
        await app.state.pool.close()

else:
    # lifespan: the same pool, opened before `yield` and closed after it.
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        size = knob("pool_size")
        async with asyncpg.create_pool(dsn(), min_size=size, max_size=size) as pool:
            app.state.pool = pool
            count("pool_opened")
            yield

    app = FastAPI(title="startup", lifespan=lifespan)


app.include_router(probe_router)
ItemId = Annotated[int, Path(ge=1, le=2**31 - 1)]


async def app_pool(request: Request) -> asyncpg.Pool:
    # `async def`: a plain `def` dependency would run in a worker thread. A startup
    # handler that never ran leaves no pool: say so instead of a bare 500.
    pool: asyncpg.Pool | None = getattr(request.app.state, "pool", None)
    if pool is None:
        raise HTTPException(status_code=503, detail="no pool: the startup code did not run")
    return pool


@app.get("/on-event/items/{item_id}")
async def on_event_item(item_id: ItemId, pool: asyncpg.Pool = Depends(app_pool)) -> Item:
    return await fetch_item_asyncpg(pool, item_id)


@app.get("/lifespan/items/{item_id}")
async def lifespan_item(item_id: ItemId, pool: asyncpg.Pool = Depends(app_pool)) -> Item:
    return await fetch_item_asyncpg(pool, item_id)
