"""What the SQLAlchemy pairs share: the seeded table as a SQLModel model, the engine URL
for a driver, the row lookup, and the answer to a pool timeout."""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from sqlalchemy import URL, exc, make_url
from sqlmodel import Field, SQLModel

from apps.common import Item, count, dsn


class BenchItem(SQLModel, table=True):
    """The seeded table (harness.database creates and fills it) as a SQLModel model."""

    __tablename__ = "bench_items"
    id: int = Field(primary_key=True)
    name: str
    price_cents: int


def engine_url(driver: str) -> URL:
    """The variant's DSN for SQLAlchemy with `driver`: "psycopg" (psycopg 3, the
    templates' sync driver) or "asyncpg"."""
    return make_url(dsn()).set(drivername=f"postgresql+{driver}")


def as_item(row: BenchItem | None) -> Item:
    if row is None:
        raise HTTPException(status_code=404, detail="no such item")
    return Item(id=row.id, name=row.name, price_cents=row.price_cents)


async def pool_timed_out(request: Request, error: Exception) -> JSONResponse:
    # "QueuePool limit of size 5 overflow 10 reached, connection timed out, timeout 3.00":
    # counted exactly, answered 503 instead of a 500 with a traceback per request.
    count("pool_timeouts")
    return JSONResponse({"detail": str(error).splitlines()[0]}, status_code=503)


def answer_pool_timeouts(app: FastAPI) -> None:
    app.add_exception_handler(exc.TimeoutError, pool_timed_out)
