"""Variants for the `orm_idle_in_transaction` pair: a `def` endpoint reads its row through
the template's session, then calls a slow upstream (the stub, `upstream_ms`) before it
answers. The session either still holds its transaction during the call, or has
committed first, which ends the transaction and gives the connection back to the pool.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated

import httpx
from fastapi import Depends, FastAPI, HTTPException, Path, Request
from sqlalchemy import create_engine
from sqlmodel import Session

from apps import instruments
from apps.common import Item, count, knob, probe_router
from apps.orm import BenchItem, answer_pool_timeouts, as_item, engine_url

engine = create_engine(
    engine_url("psycopg"),
    pool_size=knob("pool_size"),
    max_overflow=knob("max_overflow"),
    pool_timeout=knob("pool_timeout_ms") / 1000,
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    instruments.watch_pool(engine.pool)
    # One sync client, shared by the worker threads (httpx.Client is thread-safe), with
    # more connections than threads, so the upstream side never queues.
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    with httpx.Client(base_url=os.environ["BENCH_UPSTREAM_URL"], limits=limits, timeout=None) as client:
        app.state.client = client
        yield
    engine.dispose()


app = FastAPI(title="orm_idle_in_transaction", lifespan=lifespan)
app.include_router(probe_router)
answer_pool_timeouts(app)
ItemId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def get_session() -> Iterator[Session]:
    with Session(engine) as session:
        yield session


def call_upstream(client: httpx.Client, item_id: int) -> None:
    resp = client.get("/delay", params={"ms": knob("upstream_ms"), "id": item_id})
    # A wrong or failed answer must not pass for a fast one.
    if resp.status_code != 200 or resp.json().get("id") != item_id:
        raise HTTPException(status_code=502, detail=f"upstream answered {resp.status_code}")
    count("upstream_calls")


# held-across-call: the read's transaction stays open (autobegin, no commit) while the
# upstream answers; the dependency closes the session only after the response.
@app.get("/held-across-call/items/{item_id}")
def held_across_call_item(request: Request, item_id: ItemId, session: Session = Depends(get_session)) -> Item:
    item = as_item(session.get(BenchItem, item_id))
    call_upstream(request.app.state.client, item_id)
    return item


# commit-before-call: the same read, then commit(), which ends the transaction and
# returns the connection before the call. (The Item is built first: commit() expires the
# row, and touching it again would take a connection for a new transaction.)
@app.get("/commit-before-call/items/{item_id}")
def commit_before_call_item(request: Request, item_id: ItemId, session: Session = Depends(get_session)) -> Item:
    item = as_item(session.get(BenchItem, item_id))
    session.commit()
    call_upstream(request.app.state.client, item_id)
    return item
