"""A SQLModel app as project templates write it: `get_db` is a sync generator
(`with Session(engine) as session: yield session`) on a default `create_engine` pool
(QueuePool, 5 + 10 overflow), and one route calls the blocking driver inside `async def`.

The probe must name that route's function and line, and the pool's limit, at its default
settings. It creates and fills its own table at start-up, as many apps do. It needs SQLModel
and a PostgreSQL driver: psycopg2 for a `postgresql://` URL, psycopg 3 for `postgresql+psycopg://`.

    python bench.py probe --app examples.orm_app:app --path "/async-items/{id}" --ids 1-100
"""

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, HTTPException
from sqlmodel import Field, Session, SQLModel, create_engine, select

ROWS = 100
# How long the slow query holds the connection, and on the async route the event loop.
QUERY_S = 0.06

engine = create_engine(os.environ["DATABASE_URL"])


class Item(SQLModel, table=True):
    __tablename__ = "probe_example_items"
    id: int | None = Field(default=None, primary_key=True)
    name: str


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    SQLModel.metadata.create_all(engine)
    with Session(engine) as session:
        if session.exec(select(Item)).first() is None:
            session.add_all(Item(id=n, name=f"item-{n}") for n in range(1, ROWS + 1))
            session.commit()
    yield


app = FastAPI(lifespan=lifespan)


def get_db() -> Iterator[Session]:
    with Session(engine) as session:
        yield session


@app.get("/items/{item_id}")
def read_item(item_id: int, db: Session = Depends(get_db)) -> Item:
    item = db.get(Item, item_id)
    if item is None:
        raise HTTPException(status_code=404, detail="no such item")
    return item


@app.get("/async-items/{item_id}")
async def read_item_on_the_loop(item_id: int, db: Session = Depends(get_db)) -> Item:
    # A query that takes 60 ms (a report, a cold cache), through the sync driver, on the loop:
    # well past the watchdog's default trigger (its 10 ms heartbeat plus 25 ms).
    db.connection().exec_driver_sql(f"SELECT pg_sleep({QUERY_S})")  # the blocking driver call on the event loop
    item = db.get(Item, item_id)
    if item is None:
        raise HTTPException(status_code=404, detail="no such item")
    return item
