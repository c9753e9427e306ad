"""Variants for the `speedups` pair: what uvloop, httptools and orjson change.

The server variants serve one computed row; only uvicorn's event loop and HTTP parser
differ (set by the runner on the command line), in all four combinations so that the
loop and the parser can be told apart. The JSON variants serve the same list of 100
rows, built the same way, and differ only in how FastAPI turns it into bytes: two with
validation against `list[Item]` (pydantic or orjson writing the bytes) and two without
(json.dumps or orjson). No variant queries the database: serialization and the server
are what is measured.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Path
from fastapi.responses import ORJSONResponse

from apps.common import Item, computed_item, computed_row, note_once, probe_router


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # The event loop uvicorn actually started, in /counters: shows that the server
    # options took effect, at no cost on the request path.
    loop = asyncio.get_running_loop()
    note_once("event_loop", f"{type(loop).__module__}.{type(loop).__name__}")
    yield


app = FastAPI(title="speedups", lifespan=lifespan)
app.include_router(probe_router)
ItemId = Annotated[int, Path(ge=1, le=2**31 - 1)]

# Rows in each list response.
LIST_LENGTH = 100


# The four server variants: one route each, identical bodies; only uvicorn's options
# (`--loop`, `--http`, set by the runner) differ.


# asyncio-h11: `--loop asyncio --http h11` (pure-Python loop and parser).
@app.get("/asyncio-h11/items/{item_id}")
async def asyncio_h11_item(item_id: ItemId) -> Item:
    return computed_item(item_id)


# uvloop-h11: `--loop uvloop --http h11`: uvloop alone, what the article names.
@app.get("/uvloop-h11/items/{item_id}")
async def uvloop_h11_item(item_id: ItemId) -> Item:
    return computed_item(item_id)


# asyncio-httptools: `--loop asyncio --http httptools`: the C parser alone.
@app.get("/asyncio-httptools/items/{item_id}")
async def asyncio_httptools_item(item_id: ItemId) -> Item:
    return computed_item(item_id)


# uvloop-httptools: `--loop uvloop --http httptools`, what uvicorn picks by itself
# when uvicorn[standard] is installed.
@app.get("/uvloop-httptools/items/{item_id}")
async def uvloop_httptools_item(item_id: ItemId) -> Item:
    return computed_item(item_id)


def list_ids(item_id: int) -> list[int]:
    """LIST_LENGTH ids counting down from `item_id`, wrapping to the top of 1..LIST_LENGTH
    below 1, so every id is seeded whenever the table holds LIST_LENGTH rows or more."""
    return [item_id - k if item_id - k >= 1 else item_id - k + LIST_LENGTH for k in range(LIST_LENGTH)]


def item_rows(item_id: int) -> list[dict[str, Any]]:
    # Plain dicts, as a driver hands rows over; every JSON variant starts from these.
    return [computed_row(i) for i in list_ids(item_id)]


# as-dict: no return type and no response_model: FastAPI runs jsonable_encoder over
# the list, then Starlette's JSONResponse calls json.dumps.
@app.get("/as-dict/items/{item_id}")
async def as_dict_items(item_id: ItemId):  # no return type, on purpose
    return item_rows(item_id)


# response-model: a declared return type: pydantic validates the rows and writes the
# JSON bytes itself, in Rust (FastAPI >= 0.130).
@app.get("/response-model/items/{item_id}")
async def response_model_items(item_id: ItemId) -> list[Item]:
    return item_rows(item_id)  # type: ignore[return-value]  # FastAPI validates the dicts into Items


# orjson-model: the same declared return type, but with ORJSONResponse as the response
# class: FastAPI validates the rows exactly as for response-model, dumps them to Python
# objects (a custom response class turns off pydantic's JSON fast path), and orjson
# writes the bytes. Like for like with response-model.
@app.get("/orjson-model/items/{item_id}", response_class=ORJSONResponse)
async def orjson_model_items(item_id: ItemId) -> list[Item]:
    return item_rows(item_id)  # type: ignore[return-value]  # FastAPI validates the dicts into Items


# orjson-response: the rows handed straight to ORJSONResponse, as FastAPI's docs showed
# for speed: no validation, no jsonable_encoder, orjson writes the bytes. Like for like
# with as-dict (neither validates). Deprecated since FastAPI 0.131 in favour of the
# declared return type.
@app.get("/orjson-response/items/{item_id}", response_class=ORJSONResponse)
async def orjson_response_items(item_id: ItemId) -> ORJSONResponse:
    return ORJSONResponse(item_rows(item_id))
