"""The same SQLModel app as `orm_app.py`, written so that nothing blocks the event loop:
the sync `get_db` feeds only `def` routes, which FastAPI runs in anyio's worker threads,
each read ends its transaction before the response is written (so no backend waits `idle
in transaction` meanwhile), every session goes back to the pool when its request ends, and
the pool holds one connection per worker thread, so no thread queues for a connection.

Up to its knee the probe must give it a clean bill: no finding but the knee (and
garbage-collection pauses, if it caught any), which are information. Far past the knee
(50 users against 40 worker threads) its threads are all busy, which the probe reports.

    python bench.py probe --app examples.healthy_app:app --path "/items/{id}" --ids 1-100 --users 1,4
"""

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, HTTPException
from sqlmodel import Field, Session, SQLModel, create_engine, select

ROWS = 100

# 40 = anyio's worker threads: on create_engine's default 5 + 10, threads beyond the 15th
# wait for a connection whenever more than 15 requests are in flight.
engine = create_engine(os.environ["DATABASE_URL"], pool_size=40, max_overflow=0)


class Item(SQLModel, table=True):
    __tablename__ = "healthy_example_items"  # its own table: both examples may share a database
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
    # Loaded objects stay readable after their transaction ends, so it can end early.
    with Session(engine, expire_on_commit=False) as session:
        yield session


@app.get("/items/{item_id}")
def read_item(item_id: int, db: Session = Depends(get_db)) -> Item:
    # `def`, not `async def`: the blocking driver runs in a worker thread, off the loop.
    with db.begin():  # the transaction ends here, not after the response is sent
        item = db.get(Item, item_id)
    if item is None:
        raise HTTPException(status_code=404, detail="no such item")
    return item
