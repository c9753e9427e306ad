"""Variants for the `pool` pair: the same row lookup with a connection opened for each
request, or borrowed from a pool the app opened once at startup.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import asyncpg
from fastapi import Depends, FastAPI, Path, Request

from apps.common import Item, dsn, fetch_item_asyncpg, knob, probe_router, variant


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Only the pool variant opens a pool: idle pooled connections would otherwise count
    # as backends of the connect-per-request variant.
    if variant() == "lifespan-pool":
        size = knob("pool_size")
        # min_size = max_size: every connection is opened here, none during the load.
        async with asyncpg.create_pool(dsn(), min_size=size, max_size=size) as pool:
            app.state.pool = pool
            yield
    else:
        yield


app = FastAPI(title="pool", lifespan=lifespan)
app.include_router(probe_router)
ItemId = Annotated[int, Path(ge=1, le=2**31 - 1)]


# connect-per-request: a yield dependency opens a connection (TCP, startup packet,
# password authentication, a new backend process) and closes it after the request.
async def get_conn_per_request() -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn())
    try:
        yield conn
    finally:
        await conn.close()


@app.get("/connect-per-request/items/{item_id}")
async def connect_per_request_item(item_id: ItemId, conn: asyncpg.Connection = Depends(get_conn_per_request)) -> Item:
    return await fetch_item_asyncpg(conn, item_id)


# lifespan-pool: a yield dependency borrows a connection from the pool opened in the
# lifespan and gives it back (asyncpg resets it with one extra round trip).
async def get_pooled_conn(request: Request) -> AsyncIterator[asyncpg.Connection]:
    pool: asyncpg.Pool = request.app.state.pool
    async with pool.acquire() as conn:
        yield conn


@app.get("/lifespan-pool/items/{item_id}")
async def lifespan_pool_item(item_id: ItemId, conn: asyncpg.Connection = Depends(get_pooled_conn)) -> Item:
    return await fetch_item_asyncpg(conn, item_id)
