"""Variants for the `order` pair: yield dependencies whose setup awaits `setup_ms`
(a stand-in for opening a session or fetching a token). They record when they enter
and exit, so the run shows both the order and whether the setups overlapped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, FastAPI, Path

from apps.common import Item, computed_item, count, knob, note_once, probe_router

app = FastAPI(title="order")
app.include_router(probe_router)
ItemId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@dataclass
class Trace:
    events: list[str] = field(default_factory=list)  # "enter A", "exit A", ...
    setups: list[tuple[float, float]] = field(default_factory=list)  # (start, end) of each setup


# One trace per request: every dependency below shares it through the per-request
# cache. It is entered before them and exits after them, so at its teardown the trace
# is complete. Setup wall time vs the sum of setup times shows any overlap without
# relying on client latency: equal when sequential, half when two ran in parallel.
async def get_trace() -> AsyncIterator[Trace]:
    trace = Trace()
    yield trace
    count("requests")
    if trace.setups:
        count("setup_sum_ms", sum(end - start for start, end in trace.setups) * 1000)
        count("setup_wall_ms", (max(e for _, e in trace.setups) - min(s for s, _ in trace.setups)) * 1000)
    note_once("order", trace.events)


async def setup_work(trace: Trace, name: str) -> None:
    trace.events.append(f"enter {name}")
    count(f"setups_{name}")
    started = time.monotonic()
    await asyncio.sleep(knob("setup_ms") / 1000)
    trace.setups.append((started, time.monotonic()))


async def dep_a(trace: Trace = Depends(get_trace)) -> AsyncIterator[str]:
    await setup_work(trace, "A")
    try:
        yield "A"
    finally:
        trace.events.append("exit A")
        count("exits_A")


async def dep_b(trace: Trace = Depends(get_trace)) -> AsyncIterator[str]:
    await setup_work(trace, "B")
    try:
        yield "B"
    finally:
        trace.events.append("exit B")
        count("exits_B")


# two-deps: two yield dependencies, declared A then B. If FastAPI set them up in
# parallel the request would take one setup_ms, not two.
@app.get("/two-deps/items/{item_id}")
async def two_deps_item(item_id: ItemId, a: str = Depends(dep_a), b: str = Depends(dep_b)) -> Item:
    return computed_item(item_id)


# one-dep: the same with one dependency, the baseline for one setup_ms.
@app.get("/one-dep/items/{item_id}")
async def one_dep_item(item_id: ItemId, a: str = Depends(dep_a)) -> Item:
    return computed_item(item_id)
