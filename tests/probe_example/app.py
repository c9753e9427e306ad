"""An app for the probe's tests, written as a user would: one healthy route, one that
blocks the event loop with a sync call inside `async def`, and one behind a token
(401 without one, 403 with a wrong one).

It needs only FastAPI and uvicorn: the tests also run it in a virtualenv holding just those.
"""

import asyncio
import os
import time

from fastapi import FastAPI, Header, HTTPException

# How long the blocking route holds the loop.
BLOCK_S = float(os.environ.get("PROBE_EXAMPLE_BLOCK_MS", "60")) / 1000

app = FastAPI()


@app.get("/healthy/{item_id}")
async def healthy(item_id: int) -> dict[str, int]:
    await asyncio.sleep(0)
    return {"id": item_id}


@app.get("/blocking/{item_id}")
async def blocking(item_id: int) -> dict[str, int]:
    time.sleep(BLOCK_S)  # the blocking line: the probe must name it
    return {"id": item_id}


@app.get("/private")
async def private(authorization: str | None = Header(default=None)) -> dict[str, bool]:
    if authorization is None:
        raise HTTPException(status_code=401, detail="no token")
    if authorization != "Bearer let-me-in":
        raise HTTPException(status_code=403, detail="not this token")
    return {"ok": True}
