"""Variants for the `timeouts` pair: one call to the stub upstream per request, slow for
some ids (every `slow_every`-th id waits `slow_ms`, the others `upstream_ms`), awaited
without a bound or bounded by asyncio.wait_for.
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


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # One client for the app's life, with a pool far larger than the users and no client
    # timeout of its own: only the variant's code decides how long a call may take.
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
    async with httpx.AsyncClient(base_url=os.environ["BENCH_UPSTREAM_URL"], limits=limits, timeout=None) as client:
        app.state.client = client
        yield


app = FastAPI(title="timeouts", lifespan=lifespan)
app.include_router(probe_router)
ItemId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def upstream_delay_ms(item_id: int) -> int:
    # Which ids are slow is fixed by the id, so both variants meet the same slow share.
    return knob("slow_ms") if item_id % knob("slow_every") == 0 else knob("upstream_ms")


async def call_upstream(client: httpx.AsyncClient, item_id: int) -> Item:
    resp = await client.get("/delay", params={"ms": upstream_delay_ms(item_id), "id": item_id})
    if resp.status_code != 200 or resp.json().get("id") != item_id:
        raise HTTPException(status_code=502, detail=f"upstream answered {resp.status_code}")
    return computed_item(item_id)


# no-timeout: the request waits as long as the upstream takes.
@app.get("/no-timeout/items/{item_id}")
async def no_timeout_item(request: Request, item_id: ItemId) -> Item:
    return await call_upstream(request.app.state.client, item_id)


# wait-for: the call is cancelled after `timeout_ms` and the client gets 504 at once.
@app.get("/wait-for/items/{item_id}")
async def wait_for_item(request: Request, item_id: ItemId) -> Item:
    try:
        return await asyncio.wait_for(call_upstream(request.app.state.client, item_id), knob("timeout_ms") / 1000)
    except TimeoutError:
        count("timeouts")
        raise HTTPException(status_code=504, detail="upstream timed out") from None
