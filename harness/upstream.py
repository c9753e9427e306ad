"""The stub upstream service for pairs that call another service (`Pair.upstream`).

A bare ASGI app, so its own cost stays far below the variants': `GET /delay?ms=N&id=K`
waits N milliseconds without blocking and answers `{"id": K, "delay_ms": N}`. The runner
starts it on 127.0.0.1 beside each variant that needs it and passes its address in
BENCH_UPSTREAM_URL.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
# Longer than any experiment asks for, short enough that a typo cannot park a request.
MAX_DELAY_MS = 60_000


async def _answer(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] == "/ping":
        await _answer(send, 200, {"pong": True})
        return
    if scope["path"] != "/delay":
        await _answer(send, 404, {"detail": "not found"})
        return
    query = parse_qs(scope["query_string"].decode())
    try:
        delay_ms = float(query.get("ms", ["0"])[0])
        item_id = int(query.get("id", ["0"])[0])
    except ValueError:
        await _answer(send, 400, {"detail": "ms and id must be numbers"})
        return
    if not 0 <= delay_ms <= MAX_DELAY_MS:
        await _answer(send, 400, {"detail": f"ms must be within 0..{MAX_DELAY_MS}"})
        return
    await asyncio.sleep(delay_ms / 1000)
    await _answer(send, 200, {"id": item_id, "delay_ms": delay_ms})
