"""A bare ASGI app that blocks its event loop: `GET /block?ms=N` sleeps N ms with
time.sleep, as a loop-blocking variant does; `/ping` answers at once. Each request's
path and client port go, in arrival order, to the file named by LOOP_BLOCKER_LOG."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
LOG = os.environ.get("LOOP_BLOCKER_LOG", "")


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if LOG:
        with open(LOG, "a") as out:
            out.write(f"{scope['path']} {scope['client'][1]}\n")
    if scope["path"] == "/block":
        ms = float(parse_qs(scope["query_string"].decode()).get("ms", ["0"])[0])
        time.sleep(min(ms, 1000) / 1000)  # on the loop, on purpose
    body = b'{"id":1,"ok":true}'
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})
