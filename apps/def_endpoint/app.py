"""Variants for the `def_endpoint` pair: one async generator dependency that looks up
the row through a lifespan asyncpg pool, used by a `def` endpoint and by an `async def`
endpoint. Only the kind of endpoint differs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import asyncpg
from fastapi import Depends, FastAPI, Path, Request

from apps.common import Item, count, fetch_item_asyncpg, pool_lifespan, probe_router

# At least as many connections as users, so the pool never decides the result.
app = FastAPI(title="def_endpoint", lifespan=pool_lifespan())
app.include_router(probe_router)
ItemId = Annotated[int, Path(ge=1, le=2**31 - 1)]


# The shared dependency: FastAPI solves it on the event loop before either endpoint
# runs. It does the async I/O itself and yields plain data, so a `def` endpoint never
# touches the asyncpg connection from a worker thread (asyncpg is bound to its loop).
# The connection stays checked out until teardown, as a request-scoped session would.
async def get_item(request: Request, item_id: ItemId) -> AsyncIterator[Item]:
    pool: asyncpg.Pool = request.app.state.pool
    count("setups")
    async with pool.acquire() as conn:
        try:
            yield await fetch_item_asyncpg(conn, item_id)
        finally:
            count("teardowns")


# def-endpoint: a plain `def` endpoint (run in anyio's worker threads) taking the
# async generator dependency.
@app.get("/def-endpoint/items/{item_id}")
def def_endpoint_item(item: Item = Depends(get_item)) -> Item:
    return item


# async-endpoint: the same dependency on an `async def` endpoint (runs on the loop).
@app.get("/async-endpoint/items/{item_id}")
async def async_endpoint_item(item: Item = Depends(get_item)) -> Item:
    return item
