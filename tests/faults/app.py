"""Variants that misbehave on purpose, for the harness's fault tests."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from fastapi import FastAPI

from apps.common import Item, dsn, fetch_item_asyncpg, probe_router, variant

held: list[Any] = []
served = 0


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    if variant() == "hang-start":
        await asyncio.sleep(3600)  # never finishes starting
    yield


app = FastAPI(lifespan=lifespan)
app.include_router(probe_router)


@app.get("/hang-start/items/{item_id}")
async def hang_start(item_id: int) -> Item:
    raise AssertionError("never reached")


@app.get("/hang-request/items/{item_id}")
async def hang_request(item_id: int) -> Item:
    await asyncio.sleep(3600)  # never answers
    raise AssertionError("never reached")


@app.get("/crash-load/items/{item_id}")
async def crash_load(item_id: int) -> Item:
    global served
    served += 1
    if served > 20:  # passes verification, dies under load
        os._exit(3)
    return await ok(item_id)


@app.get("/hog-connections/items/{item_id}")
async def hog_connections(item_id: int) -> Item:
    # Takes every connection PostgreSQL will give an ordinary role, and keeps them.
    while True:
        try:
            held.append(await asyncpg.connect(dsn()))
        except (asyncpg.TooManyConnectionsError, asyncpg.CannotConnectNowError, OSError):
            break
        except asyncpg.PostgresError:
            break
    return await fetch_item_asyncpg(held[0], item_id)


@app.get("/ok/items/{item_id}")
async def ok(item_id: int) -> Item:
    conn = await asyncpg.connect(dsn())
    try:
        return await fetch_item_asyncpg(conn, item_id)
    finally:
        await conn.close()


@app.get("/ok-again/items/{item_id}")
async def ok_again(item_id: int) -> Item:
    return await ok(item_id)
