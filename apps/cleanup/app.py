"""Variants for the `cleanup` pair: a yield dependency that checks a connection out of an
asyncpg pool and returns it in a slow teardown (`teardown_ms`, an await standing in for a
commit or an audit write), counted by the app.

Counters (at /counters): setups (connections checked out), cleanups (returned), hold_ms
and hold_count (how long each was checked out), held_after_response_ms (the part of that
after the response had been sent), wait_ms (time spent waiting for the pool), raised
(endpoints that raised), errors_seen (exceptions the dependency saw).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, FastAPI, HTTPException, Path, Request
from fastapi.responses import JSONResponse

from apps.common import Item, MarkResponseSent, computed_item, count, dsn, fetch_item_asyncpg, knob, probe_router

TEARDOWN_S = knob("teardown_ms") / 1000
POOL_TIMEOUT_S = knob("pool_timeout_ms") / 1000


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    size = knob("pool_size")
    app.state.pool = await asyncpg.create_pool(dsn(), min_size=size, max_size=size)
    yield
    # A connection that was never returned would make close() wait for ever.
    try:
        await asyncio.wait_for(app.state.pool.close(), timeout=2)
    except TimeoutError:
        app.state.pool.terminate()


app = FastAPI(title="cleanup", lifespan=lifespan)
app.add_middleware(MarkResponseSent)
app.include_router(probe_router)
ItemId = Annotated[int, Path(ge=1, le=2**31 - 1)]


async def check_out(pool: asyncpg.Pool) -> tuple[asyncpg.Connection, float]:
    # Bounded wait: a dry pool answers 503 after pool_timeout_ms instead of hanging.
    asked = time.perf_counter()
    try:
        conn = await pool.acquire(timeout=POOL_TIMEOUT_S)
    except TimeoutError:
        count("pool_timeouts")
        raise HTTPException(status_code=503, detail="connection pool exhausted") from None
    got = time.perf_counter()
    count("wait_ms", (got - asked) * 1000)
    count("setups")
    return conn, got


async def slow_teardown(
    pool: asyncpg.Pool, conn: asyncpg.Connection, checked_out: float, scope: dict[str, Any]
) -> None:
    await asyncio.sleep(TEARDOWN_S)  # still holding the connection
    await pool.release(conn)
    released = time.perf_counter()
    count("hold_ms", (released - checked_out) * 1000)
    sent = scope.get("state", {}).get("response_sent_at", released)  # noted by MarkResponseSent
    count("held_after_response_ms", (released - sent) * 1000)
    count("hold_count")
    count("cleanups")


# The dependency of every variant but raises-no-finally: teardown in `finally`.
async def get_conn(request: Request) -> AsyncIterator[asyncpg.Connection]:
    pool: asyncpg.Pool = request.app.state.pool
    conn, checked_out = await check_out(pool)
    try:
        yield conn
    except Exception:
        count("errors_seen")  # the endpoint's exception reaches the dependency
        raise
    finally:
        await slow_teardown(pool, conn, checked_out, request.scope)


# request-scope: default scope. Since FastAPI 0.118 (PR #14099) the teardown runs after
# the response has been sent: the client does not wait for it, the pool does.
@app.get("/request-scope/items/{item_id}")
async def request_scope_item(item_id: ItemId, conn: asyncpg.Connection = Depends(get_conn)) -> Item:
    return await fetch_item_asyncpg(conn, item_id)


# function-scope: `scope="function"` (0.121, PR #14262) tears down when the endpoint
# returns, before the response is sent.
@app.get("/function-scope/items/{item_id}")
async def function_scope_item(item_id: ItemId, conn: asyncpg.Connection = Depends(get_conn, scope="function")) -> Item:
    return await fetch_item_asyncpg(conn, item_id)


class AfterQueryError(Exception):
    """Raised by an endpoint after its query; the app answers with a fallback."""

    def __init__(self, item_id: int) -> None:
        self.item_id = item_id


@app.exception_handler(AfterQueryError)
async def serve_fallback(request: Request, exc: AfterQueryError) -> JSONResponse:
    # Runs once the exception has left the endpoint and unwound the dependencies. The
    # fallback row is computed, not queried, so the 200 says nothing about the database.
    return JSONResponse(computed_item(exc.item_id).model_dump())


# raises: the endpoint uses the connection, then raises on every request. The exception
# passes through the dependency (errors_seen) to the app's handler, which answers 200
# with a computed fallback row: every request takes the error path, and load and
# verification still see the expected body.
@app.get("/raises/items/{item_id}")
async def raises_item(item_id: ItemId, conn: asyncpg.Connection = Depends(get_conn)) -> Item:
    await fetch_item_asyncpg(conn, item_id)
    count("raised")
    raise AfterQueryError(item_id)


# raises-no-finally: the same, with the teardown written after `yield` but outside
# `finally`: the exception is thrown in at the `yield`, so the teardown never runs.
async def get_conn_no_finally(request: Request) -> AsyncIterator[asyncpg.Connection]:
    pool: asyncpg.Pool = request.app.state.pool
    conn, checked_out = await check_out(pool)
    yield conn
    await slow_teardown(pool, conn, checked_out, request.scope)


@app.get("/raises-no-finally/items/{item_id}")
async def raises_no_finally_item(item_id: ItemId, conn: asyncpg.Connection = Depends(get_conn_no_finally)) -> Item:
    await fetch_item_asyncpg(conn, item_id)
    count("raised")
    raise AfterQueryError(item_id)
