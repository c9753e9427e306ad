"""A bare ASGI app with no lifespan support, as the ASGI spec allows: it raises on any
scope but HTTP, and uvicorn (lifespan "auto") carries on without start-up or shut-down
events. The probe's instruments must still run, started by the first request."""

import json
import time


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        raise RuntimeError(f"this app serves HTTP only, not {scope['type']}")
    if scope["path"].startswith("/blocking/"):
        time.sleep(0.06)  # the raw blocking line: the probe must name it
    body = json.dumps({"path": scope["path"]}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
