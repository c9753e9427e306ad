"""What every variant app shares: settings from the runner, the row model, the queries
and the /ping probe.

The runner starts one uvicorn process per variant and passes its settings in the
environment, so the DSN (and its password) never shows in a process listing.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel


def dsn() -> str:
    return os.environ["BENCH_DSN"]


def variant() -> str:
    return os.environ.get("BENCH_VARIANT", "")


@functools.cache
def _knobs() -> dict[str, int]:
    return {name: int(value) for name, value in json.loads(os.environ.get("BENCH_KNOBS", "{}")).items()}


def knob(name: str, default: int) -> int:
    # Parsed once per process: knobs are read on the request path.
    return _knobs().get(name, default)


class Item(BaseModel):
    id: int
    name: str
    price_cents: int


# An indexed primary-key lookup of one seeded row: real work, not SELECT 1.
ITEM_SQL_ASYNCPG = "SELECT id, name, price_cents FROM bench_items WHERE id = $1"
ITEM_SQL_PSYCOPG = "SELECT id, name, price_cents FROM bench_items WHERE id = %s"


def item_or_404(row: Any) -> Item:
    if row is None:
        raise HTTPException(status_code=404, detail="no such item")
    return Item(id=row[0], name=row[1], price_cents=row[2])


def fetch_item_psycopg(conn: Any, item_id: int) -> Item:
    with conn.cursor() as cur:
        cur.execute(ITEM_SQL_PSYCOPG, (item_id,))
        return item_or_404(cur.fetchone())


async def fetch_item_asyncpg(conn: Any, item_id: int) -> Item:
    return item_or_404(await conn.fetchrow(ITEM_SQL_ASYNCPG, item_id))


probe_router = APIRouter()


@probe_router.get("/ping")
async def ping() -> dict[str, bool]:
    # Runs on the event loop and does nothing else: its latency is how long the loop
    # took to get to it.
    return {"pong": True}
