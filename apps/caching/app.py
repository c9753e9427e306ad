"""Variants for the `caching` pair: one dependency that looks the row up through a
lifespan asyncpg pool is needed twice in a request, by the endpoint and by a
sub-dependency that derives an ETag from it. Only `use_cache` differs.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import Depends, FastAPI, Path, Request, Response

from apps.common import Item, count, fetch_item_asyncpg, pool_lifespan, probe_router

# At least as many connections as users, so the pool never decides the result.
app = FastAPI(title="caching", lifespan=pool_lifespan())
app.include_router(probe_router)
ItemId = Annotated[int, Path(ge=1, le=2**31 - 1)]


# The dependency both variants use twice per request: a pool acquire and a query,
# counted so the run shows how often FastAPI called it.
async def load_item(request: Request, item_id: ItemId) -> Item:
    count("lookups")
    return await fetch_item_asyncpg(request.app.state.pool, item_id)


def etag_of(item: Item) -> str:
    return '"' + hashlib.blake2b(item.model_dump_json().encode(), digest_size=8).hexdigest() + '"'


# cached: the sub-dependency and the endpoint both ask for load_item with the default
# use_cache=True, so FastAPI's per-request cache hands the second one the first result.
async def item_etag_cached(item: Item = Depends(load_item)) -> str:
    return etag_of(item)


@app.get("/cached/items/{item_id}")
async def cached_item(
    response: Response, item: Item = Depends(load_item), etag: str = Depends(item_etag_cached)
) -> Item:
    count("requests")
    response.headers["ETag"] = etag
    return item


# no-cache: the same, with use_cache=False on both: FastAPI calls load_item each time.
async def item_etag_uncached(item: Item = Depends(load_item, use_cache=False)) -> str:
    return etag_of(item)


@app.get("/no-cache/items/{item_id}")
async def no_cache_item(
    response: Response,
    item: Item = Depends(load_item, use_cache=False),
    etag: str = Depends(item_etag_uncached),
) -> Item:
    count("requests")
    response.headers["ETag"] = etag
    return item
