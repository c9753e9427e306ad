"""An app that reads a required variable at import: without it the probe says which."""

import os

from fastapi import FastAPI

SECRET = os.environ["PROBE_EXAMPLE_SECRET"]

app = FastAPI()


@app.get("/secret-length")
async def secret_length() -> dict[str, int]:
    return {"length": len(SECRET)}
