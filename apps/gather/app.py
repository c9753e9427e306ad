"""Variants for the `gather` pair: three independent calls to the stub upstream per
request, awaited one after another or all at once with asyncio.gather. Each call
waits `upstream_ms` at the upstream; the answer is the row, once every call has echoed
the request's id.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import httpx
from fastapi import FastAPI, HTTPException, Path, Request

from apps.common import Item, computed_item, count, knob, probe_router

CALLS = 3


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # One client for the app's life: it keeps connections to the upstream open. Its
    # pool is far larger than users x calls, so waiting for a free connection never
    # decides the result; no client timeout either, the upstream's delay is fixed.
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
    async with httpx.AsyncClient(base_url=os.environ["BENCH_UPSTREAM_URL"], limits=limits, timeout=None) as client:
        app.state.client = client
        yield


app = FastAPI(title="gather", lifespan=lifespan)
app.include_router(probe_router)
ItemId = Annotated[int, Path(ge=1, le=2**31 - 1)]


async def call_upstream(client: httpx.AsyncClient, item_id: int) -> None:
    resp = await client.get("/delay", params={"ms": knob("upstream_ms"), "id": item_id})
    # A wrong or failed answer must not pass for a fast one.
    if resp.status_code != 200 or resp.json().get("id") != item_id:
        raise HTTPException(status_code=502, detail=f"upstream answered {resp.status_code}")
    count("upstream_calls")


# sequential: each call awaited before the next starts, so their waits add up.
@app.get("/sequential/items/{item_id}")
async def sequential_item(request: Request, item_id: ItemId) -> Item:
    client: httpx.AsyncClient = request.app.state.client
    for _ in range(CALLS):
        await call_upstream(client, item_id)
    return computed_item(item_id)


# gather: the same calls started together; the request waits for the slowest one.
@app.get("/gather/items/{item_id}")
async def gather_item(request: Request, item_id: ItemId) -> Item:
    client: httpx.AsyncClient = request.app.state.client
    await asyncio.gather(*(call_upstream(client, item_id) for _ in range(CALLS)))
    return computed_item(item_id)
