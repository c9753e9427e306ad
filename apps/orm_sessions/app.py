"""Variants for the `orm_sessions` pair: SQLAlchemy sessions as FastAPI apps write them.

A sync `Session` from a yield dependency on `def` endpoints, over the pool
`create_engine` gives by default (QueuePool: 5 connections plus 10 overflow), with the
driver the common templates use (psycopg 3, `postgresql+psycopg`). The variants differ
only in how the dependency ends the session: not at all, `db.close()` in `finally`, or
SQLModel's `with Session(engine) as session`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Path
from sqlalchemy import create_engine
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session

from apps import instruments
from apps.common import Item, knob, probe_router
from apps.orm import BenchItem, answer_pool_timeouts, as_item, engine_url

# Module-level engine and session factory, as the articles and templates write them.
# pool_size and max_overflow are SQLAlchemy's own defaults (the pair's knobs, so --set
# can change them); pool_timeout is short so that an exhausted pool answers within a
# sample instead of after the 30 s default.
engine = create_engine(
    engine_url("psycopg"),
    pool_size=knob("pool_size"),
    max_overflow=knob("max_overflow"),
    pool_timeout=knob("pool_timeout_ms") / 1000,
)
SessionLocal = sessionmaker(autocommit=False, autoflush=False, bind=engine)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Pool counts sampled beside loop lag; check-ins classified by what returned them.
    instruments.watch_pool(engine.pool)
    yield
    # Leaked sessions may still hold connections: dispose() closes only the idle ones.
    engine.dispose()


app = FastAPI(title="orm_sessions", lifespan=lifespan)
app.include_router(probe_router)
answer_pool_timeouts(app)
ItemId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def fetch_item(db: OrmSession, item_id: int) -> Item:
    # The session takes its connection here, at its first execute (autobegin).
    return as_item(db.get(BenchItem, item_id))


# never-closed: the session is created and never closed (articles 002 and 004 close it).
def get_db_never_closed() -> Iterator[OrmSession]:
    db = SessionLocal()
    try:
        yield db
    finally:
        pass  # forgot db.close()


@app.get("/never-closed/items/{item_id}")
def never_closed_item(item_id: ItemId, db: OrmSession = Depends(get_db_never_closed)) -> Item:
    return fetch_item(db, item_id)


# closed: the articles' dependency, closing in `finally`.
def get_db_closed() -> Iterator[OrmSession]:
    db = SessionLocal()
    try:
        yield db
    finally:
        db.close()


@app.get("/closed/items/{item_id}")
def closed_item(item_id: ItemId, db: OrmSession = Depends(get_db_closed)) -> Item:
    return fetch_item(db, item_id)


# with-session: FastAPI's full-stack template (SQLModel's Session in a `with` block).
def get_session() -> Iterator[Session]:
    with Session(engine) as session:
        yield session


@app.get("/with-session/items/{item_id}")
def with_session_item(item_id: ItemId, session: Session = Depends(get_session)) -> Item:
    return fetch_item(session, item_id)
