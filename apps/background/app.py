"""Variants for the `background` pair: a request that looks up the row through a pooled
asyncpg connection from a yield dependency, then does `work_ms` of slow follow-up work
(a stand-in for sending a notification), either before returning or in BackgroundTasks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated

import asyncpg
from fastapi import BackgroundTasks, Depends, FastAPI, Path, Request

from apps.common import Item, MarkResponseSent, count, fetch_item_asyncpg, knob, pool_lifespan, probe_router

# More connections than users, so inline never waits for one. A held connection
# outlives its response, so the background variant can still run the pool dry.
app = FastAPI(title="background", lifespan=pool_lifespan())
app.add_middleware(MarkResponseSent)
app.include_router(probe_router)
ItemId = Annotated[int, Path(ge=1, le=2**31 - 1)]


# The yield dependency every variant uses. It counts how long a request waited for a
# connection and how long it kept it, in all and after the endpoint returned.
async def get_conn(request: Request) -> AsyncIterator[asyncpg.Connection]:
    pool: asyncpg.Pool = request.app.state.pool
    asked = time.monotonic()
    async with pool.acquire() as conn:
        acquired = time.monotonic()
        count("acquire_wait_ms", (acquired - asked) * 1000)
        try:
            yield conn
        finally:
            released = time.monotonic()
            count("holds")
            count("held_ms", (released - acquired) * 1000)
            returned = getattr(request.state, "returned_at", None)
            if returned is not None:
                count("held_after_return_ms", (released - returned) * 1000)


def mark_returned(request: Request) -> None:
    # The response goes out right after the endpoint returns (serialising one row).
    request.state.returned_at = time.monotonic()


async def follow_up(request: Request) -> None:
    # Counted as it starts: whether the client's answer had already gone out.
    count("follow_ups_started")
    if getattr(request.state, "response_sent_at", None) is not None:
        count("follow_ups_after_response")
    # Slow I/O that needs neither the connection nor the client: awaits work_ms.
    await asyncio.sleep(knob("work_ms") / 1000)
    count("follow_ups")


# inline: the follow-up is awaited before the response is returned.
@app.get("/inline/items/{item_id}")
async def inline_item(item_id: ItemId, request: Request, conn: asyncpg.Connection = Depends(get_conn)) -> Item:
    item = await fetch_item_asyncpg(conn, item_id)
    await follow_up(request)
    mark_returned(request)
    return item


# background: the same follow-up handed to BackgroundTasks. Starlette runs it after the
# body is sent but inside the same request, so get_conn's (request-scoped, the default)
# teardown waits for it: the connection stays checked out while the task runs.
@app.get("/background/items/{item_id}")
async def background_item(
    item_id: ItemId, request: Request, tasks: BackgroundTasks, conn: asyncpg.Connection = Depends(get_conn)
) -> Item:
    item = await fetch_item_asyncpg(conn, item_id)
    tasks.add_task(follow_up, request)
    mark_returned(request)
    return item


# background-function-scope: the same, with the dependency declared scope="function":
# FastAPI closes it when the endpoint returns, before the response and the task, so the
# task holds no connection.
@app.get("/background-function-scope/items/{item_id}")
async def background_function_scope_item(
    item_id: ItemId,
    request: Request,
    tasks: BackgroundTasks,
    conn: asyncpg.Connection = Depends(get_conn, scope="function"),
) -> Item:
    item = await fetch_item_asyncpg(conn, item_id)
    tasks.add_task(follow_up, request)
    mark_returned(request)
    return item
