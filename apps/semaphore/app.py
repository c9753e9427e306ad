"""Variants for the `semaphore` pair: a query through a pooled asyncpg engine, as article
003 writes it (`async with db_semaphore: await database.execute(...)`), with more users
than the pool has connections.

Both variants share one pool, created in the lifespan: `pool_size` connections, all
opened at start-up (PostgreSQL's active backends then show how many ran a query at once),
and `acquire_timeout_ms` on every acquire, as a service sets it so that a dry pool answers
503 instead of hanging. Opened on demand instead, a connect slower than the acquire
timeout is cancelled by it, and the pool can churn through new backends for the whole
window: stored runs failed 39-45% of the pool alone's requests in blocks where it did not
and 50-97% where it did, depending on how fast this machine forks a backend.

`unbounded` is the pool alone: requests queue inside pool.acquire. `semaphore` puts an
asyncio.Semaphore(db_concurrency) around acquire and query: the excess waits on the
semaphore, where no timeout applies.

The query holds its connection for `query_ms` inside the database (pg_sleep), standing
in for a query that does real work; the waits then follow from the knobs and the users,
not from this machine's speed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import asyncpg
from fastapi import FastAPI, HTTPException, Path, Request

from apps.common import Item, count, dsn, item_or_404, knob, probe_router


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Every connection at start-up, as a warmed service has them: the acquire timeout then
    # measures the queue for a connection, never a connect it cut short.
    size = knob("pool_size")
    async with asyncpg.create_pool(dsn(), min_size=size, max_size=size) as pool:
        app.state.pool = pool
        yield


app = FastAPI(title="semaphore", lifespan=lifespan)
app.include_router(probe_router)
ItemId = Annotated[int, Path(ge=1, le=2**31 - 1)]

# The row lookup, after holding the backend busy for query_ms.
SLOW_ITEM_SQL = "SELECT id, name, price_cents FROM bench_items, pg_sleep($2::float8 / 1000) WHERE id = $1"
# Created at import: since Python 3.10 an asyncio primitive binds to the loop on first use.
db_semaphore = asyncio.Semaphore(knob("db_concurrency"))


async def pooled_lookup(pool: asyncpg.Pool, item_id: int) -> Item:
    try:
        async with pool.acquire(timeout=knob("acquire_timeout_ms") / 1000) as conn:
            return item_or_404(await conn.fetchrow(SLOW_ITEM_SQL, item_id, knob("query_ms")))
    except TimeoutError:
        # Every connection stayed checked out for the whole acquire timeout: say so.
        count("acquire_timeouts")
        raise HTTPException(status_code=503, detail="no database connection within the acquire timeout") from None


# unbounded: the pool alone bounds the database work; the excess queues inside acquire.
@app.get("/unbounded/items/{item_id}")
async def unbounded_item(request: Request, item_id: ItemId) -> Item:
    return await pooled_lookup(request.app.state.pool, item_id)


# semaphore: at most db_concurrency requests acquire and query at a time; the others
# wait on the semaphore, holding no connection and outside the acquire's timeout.
@app.get("/semaphore/items/{item_id}")
async def semaphore_item(request: Request, item_id: ItemId) -> Item:
    async with db_semaphore:
        return await pooled_lookup(request.app.state.pool, item_id)
