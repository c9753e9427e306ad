"""Variants for the `control` pair: two copies of one pooled row lookup, identical in
every way but their path. Whatever separates them is the noise floor of this machine
and this harness, against which every other pair's thresholds are read.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Path, Request

from apps.common import Item, fetch_item_asyncpg, pool_lifespan, probe_router

app = FastAPI(title="control", lifespan=pool_lifespan())
app.include_router(probe_router)
ItemId = Annotated[int, Path(ge=1, le=2**31 - 1)]


# Both paths are served by this one function: an `async def` endpoint borrowing a
# connection from the lifespan pool for one indexed lookup.
async def pooled_item(request: Request, item_id: ItemId) -> Item:
    return await fetch_item_asyncpg(request.app.state.pool, item_id)


app.get("/copy-a/items/{item_id}")(pooled_item)
app.get("/copy-b/items/{item_id}")(pooled_item)
