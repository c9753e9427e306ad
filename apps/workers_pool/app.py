"""Variants for the `workers_pool` pair: uvicorn with several worker processes, each of
which imports this module and so builds its own engine and pool, connecting as a role
whose CONNECTION LIMIT the pair sets (harness: `prepare` in pair.py).

Each request holds its connection for `hold_ms` (pg_sleep in the transaction), so every
worker's pool is in full use at the load's concurrency, whatever this machine's speed.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, cast

from fastapi import Depends, FastAPI, Path, Request
from fastapi.responses import JSONResponse
from sqlalchemy import exc, make_url, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from apps import instruments
from apps.common import Item, count, knob, probe_router, variant
from apps.orm import BenchItem, answer_pool_timeouts, as_item

# over-limit: the pool as an app sizes it for one process. within-limit: the role's
# connection limit shared out over the workers.
POOL_SIZE = knob("pool_size") if variant() == "over-limit" else knob("connection_limit") // knob("workers")
engine = create_async_engine(
    make_url(os.environ["BENCH_LIMITED_DSN"]).set(drivername="postgresql+asyncpg"),
    pool_size=POOL_SIZE,
    max_overflow=0,
    pool_timeout=knob("pool_timeout_ms") / 1000,
)
HOLD_S = knob("hold_ms") / 1000


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    instruments.watch_pool(engine.sync_engine.pool)
    yield
    await engine.dispose()


class CloseEachConnection:
    """Answers every response with `Connection: close`, so each request arrives on a new
    connection, accepted by whichever worker is free. The workers share one listening
    socket: with kept-alive connections, the 50 accepted at the start stay where they
    landed, and in stored runs one worker at times took all of them (3 backends in use,
    50 req/s and a pool timeout within the limit; no failure over it), so whether the
    pools' sum ever met the limit was left to the kernel's accept order."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[Any] = [*message.get("headers", []), (b"connection", b"close")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_closing)


app = FastAPI(title="workers_pool", lifespan=lifespan)
app.add_middleware(CloseEachConnection)
app.include_router(probe_router)
answer_pool_timeouts(app)
ItemId = Annotated[int, Path(ge=1, le=2**31 - 1)]


# PostgreSQL's SQLSTATE for a login past a role's (or the server's) connection limit,
# which asyncpg raises as TooManyConnectionsError.
TOO_MANY_CONNECTIONS = "53300"


def database_failure(error: exc.DBAPIError) -> tuple[str, str]:
    """(counter, detail): a refused login past the limit told apart from any other database
    error, by SQLSTATE; the detail is the driver's own first line with its SQLSTATE, so the
    load generator's failure kinds show which it was (a pool timeout answers 'QueuePool
    limit ...' from apps.orm)."""
    sqlstate = getattr(error.orig, "sqlstate", None)
    lines = str(error.orig).splitlines() or [type(error.orig).__name__]
    name = "too_many_connections" if sqlstate == TOO_MANY_CONNECTIONS else "database_errors"
    return name, f"{lines[0][:160]} (SQLSTATE {sqlstate})"


async def connect_failed(request: Request, error: Exception) -> JSONResponse:
    # Answered 503, not a 500 with a traceback per request. Counted per worker: the runner
    # reads /counters only from a single worker (several keep one each), so with several
    # workers the 503's detail is what tells the causes apart in the report.
    name, detail = database_failure(cast(exc.DBAPIError, error))
    count(name)
    return JSONResponse({"detail": detail}, status_code=503)


app.add_exception_handler(exc.DBAPIError, connect_failed)


async def get_session() -> AsyncIterator[AsyncSession]:
    async with AsyncSession(engine) as session:
        yield session


async def held_lookup(session: AsyncSession, item_id: int) -> Item:
    await session.execute(text("SELECT pg_sleep(:seconds)"), {"seconds": HOLD_S})
    return as_item(await session.get(BenchItem, item_id))


# over-limit: each worker's pool sized as if it were the only process.
@app.get("/over-limit/items/{item_id}")
async def over_limit_item(item_id: ItemId, session: AsyncSession = Depends(get_session)) -> Item:
    return await held_lookup(session, item_id)


# within-limit: the same code; each pool holds connection_limit / workers.
@app.get("/within-limit/items/{item_id}")
async def within_limit_item(item_id: ItemId, session: AsyncSession = Depends(get_session)) -> Item:
    return await held_lookup(session, item_id)
