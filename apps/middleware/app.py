"""Variants for the `middleware` pair: one trivial route (no database) behind 0, 1, 5
and 10 layers of middleware, of two kinds.

A FastAPI app has one middleware stack, so each variant is its own small FastAPI app
mounted under its prefix on the main app: every variant pays the same mount hop, and
only the layers in its own stack differ. Each layer does the same small, real thing:
it appends an `x-layer` header to the response.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import FastAPI, Path, Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from apps.common import Item, computed_item, probe_router

app = FastAPI(title="middleware")
app.include_router(probe_router)
ItemId = Annotated[int, Path(ge=1, le=2**31 - 1)]


# The route every variant serves: the row computed, not queried, so the middleware is
# the only thing that differs and the database never decides the result.
async def trivial_item(item_id: ItemId) -> Item:
    return computed_item(item_id)


# A BaseHTTPMiddleware layer: the function `@app.middleware("http")` takes. Starlette
# runs `call_next` in a task group and streams the body back through a memory object
# stream, per layer and per request (starlette#1678).
async def stamp_layer_http(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    response = await call_next(request)
    response.headers.append("x-layer", "base")
    return response


# A pure ASGI layer doing the same: it wraps the app and its `send`, and adds the
# header to the response start message; no task, no stream, one extra call per message.
def stamp_layer_asgi(app: ASGIApp) -> ASGIApp:
    async def stamped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def send_stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-layer", b"asgi")]
            await send(message)

        await app(scope, receive, send_stamped)

    return stamped


def layered_app(kind: str, layers: int) -> FastAPI:
    """The trivial route behind `layers` middleware of `kind` ("base" or "asgi")."""
    sub = FastAPI(openapi_url=None)
    sub.get("/items/{item_id}")(trivial_item)
    for _ in range(layers):
        if kind == "base":
            sub.middleware("http")(stamp_layer_http)
        else:
            sub.add_middleware(stamp_layer_asgi)
    return sub


# Every variant: its prefix, the kind of middleware and how many layers.
STACKS = {
    "none": ("none", 0),
    "base-1": ("base", 1),
    "base-5": ("base", 5),
    "base-10": ("base", 10),
    "asgi-1": ("asgi", 1),
    "asgi-5": ("asgi", 5),
    "asgi-10": ("asgi", 10),
}
for prefix, (kind, layers) in STACKS.items():
    app.mount(f"/{prefix}", layered_app(kind, layers))
