"""Variants for the `semaphore` pair: a connection per request at more concurrent
requests than PostgreSQL admits connections, with no bound or with an asyncio.Semaphore
around the whole connect-query-close.

The query holds its connection for `query_ms` inside the database (pg_sleep), standing
in for a query that does real work: with a lookup of a fraction of a millisecond, the
connections would rarely overlap enough to reach the server's limit on 2 cores.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import asyncpg
from fastapi import FastAPI, HTTPException, Path

from apps.common import Item, count, dsn, item_or_404, knob, probe_router

app = FastAPI(title="semaphore")
app.include_router(probe_router)
ItemId = Annotated[int, Path(ge=1, le=2**31 - 1)]

# The row lookup, after holding the backend busy for query_ms.
SLOW_ITEM_SQL = "SELECT id, name, price_cents FROM bench_items, pg_sleep($2::float8 / 1000) WHERE id = $1"
# Created at import: since Python 3.10 an asyncio primitive binds to the loop on first use.
DB_SLOTS = asyncio.Semaphore(knob("db_concurrency", 20))


async def slow_lookup(item_id: int) -> Item:
    try:
        conn = await asyncpg.connect(dsn())
    except asyncpg.TooManyConnectionsError:
        # PostgreSQL refused the connection ("sorry, too many clients already"): say so.
        count("too_many_clients")
        raise HTTPException(status_code=503, detail="database refused the connection: too many clients") from None
    try:
        return item_or_404(await conn.fetchrow(SLOW_ITEM_SQL, item_id, knob("query_ms", 20)))
    finally:
        await conn.close()


# unbounded: every request connects at once, however many are in flight.
@app.get("/unbounded/items/{item_id}")
async def unbounded_item(item_id: ItemId) -> Item:
    return await slow_lookup(item_id)


# semaphore: at most db_concurrency requests connect, query and close at a time; the
# others wait on the loop without holding a connection.
@app.get("/semaphore/items/{item_id}")
async def semaphore_item(item_id: ItemId) -> Item:
    async with DB_SLOTS:
        return await slow_lookup(item_id)
