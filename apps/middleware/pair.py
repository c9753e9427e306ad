"""C9: do many middleware layers add latency?"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.pairs import (
    Pair,
    Records,
    Role,
    Variant,
    Verdict,
    cpu_ms_per_request,
    fmt,
    inconclusive,
    missing_variants,
    ratio,
)

# Ten layers of a kind add latency when they cost at least this share of the
# no-middleware throughput and at least this much server CPU time per request. The
# second keeps two things from deciding: a busy machine (throughput lost without more
# work per request) and a cost that is large only next to a route that does nothing.
THROUGHPUT_LOSS = 0.15
ADDED_CPU_MS = 0.25
# The deepest stack measured: the verdict compares it with no middleware.
DEEPEST = 10
KINDS = {"base": "BaseHTTPMiddleware", "asgi": "pure ASGI"}


def stack_cost(deep: Mapping[str, Any], bare: Mapping[str, Any]) -> dict[str, float | None]:
    """What `DEEPEST` layers cost against none: throughput ratio, p50 added per layer,
    server CPU time added per request (ms) and per layer (us)."""
    deep_cpu, bare_cpu = cpu_ms_per_request(deep), cpu_ms_per_request(bare)
    added_cpu = None if deep_cpu is None or bare_cpu is None else deep_cpu - bare_cpu
    return {
        "rps_ratio": ratio(deep["rps"], bare["rps"]),
        "p50_ms_per_layer": (deep["p50_ms"] - bare["p50_ms"]) / DEEPEST,
        "added_cpu_ms": added_cpu,
        "cpu_us_per_layer": None if added_cpu is None else added_cpu * 1000 / DEEPEST,
    }


def costs(cost: Mapping[str, float | None]) -> bool:
    # Without a CPU figure (no sampler), the throughput decides alone.
    loses = (cost["rps_ratio"] or 1.0) <= 1 - THROUGHPUT_LOSS
    return loses and (cost["added_cpu_ms"] is None or cost["added_cpu_ms"] >= ADDED_CPU_MS)


def describe(label: str, cost: Mapping[str, float | None], deep: Mapping[str, Any], bare: Mapping[str, Any]) -> str:
    says = (
        f"{DEEPEST} {label} layers served {fmt(cost['rps_ratio'], 'x')} the throughput of none "
        f"({fmt(deep['rps'], 'req/s')} vs {fmt(bare['rps'], 'req/s')}), "
        f"{fmt(cost['p50_ms_per_layer'], 'ms', 2)} of p50 and {fmt(cost['cpu_us_per_layer'], 'us')} of server CPU "
        "per layer"
    )
    if (cost["rps_ratio"] or 1.0) <= 1 - THROUGHPUT_LOSS and not costs(cost):
        says += (
            f" (but only {fmt(cost['added_cpu_ms'], 'ms', 2)} more server CPU per request, under the "
            f"{ADDED_CPU_MS:g} ms that counts: the rest of the drop is not the layers' work)"
        )
    return says


def decide(records: Records, knobs: Mapping[str, Any]) -> Verdict:
    missing = missing_variants(records, ["none", f"base-{DEEPEST}", f"asgi-{DEEPEST}"])
    if missing:
        return inconclusive(missing)
    bare = records["none"]
    cost = {kind: stack_cost(records[f"{kind}-{DEEPEST}"], bare) for kind in KINDS}
    figures = {f"{kind}_{name}": value for kind, c in cost.items() for name, value in c.items()}
    figures["none_rps"] = bare["rps"]
    figures["none_server_cpu_pct"] = bare.get("server_cpu_pct")
    figures["none_cpu_ms_per_request"] = cpu_ms_per_request(bare)
    said = {kind: describe(label, cost[kind], records[f"{kind}-{DEEPEST}"], bare) for kind, label in KINDS.items()}
    headline = (
        f"{DEEPEST} BaseHTTPMiddleware layers: {fmt(cost['base']['rps_ratio'], 'x')} throughput; "
        f"{DEEPEST} ASGI layers: {fmt(cost['asgi']['rps_ratio'], 'x')}"
    )
    base_costs, asgi_costs = costs(cost["base"]), costs(cost["asgi"])
    if base_costs and asgi_costs:
        return Verdict("holds", f"Holds for both kinds: {said['base']}; {said['asgi']}.", figures, headline)
    if base_costs:
        return Verdict(
            "partly holds",
            f"Holds only for BaseHTTPMiddleware: {said['base']}, while {said['asgi']}.",
            figures,
            headline,
        )
    if asgi_costs:
        return Verdict(
            "partly holds",
            f"Holds only for pure ASGI middleware: {said['asgi']}, while {said['base']}.",
            figures,
            headline,
        )
    return Verdict("does not hold", f"Does not hold in this run: {said['base']}; {said['asgi']}.", figures, headline)


def sweep_variant(kind: str, layers: int, role: Role) -> Variant:
    code = ("stamp_layer_http",) if kind == "base" else ("stamp_layer_asgi",)
    return Variant(
        f"{kind}-{layers}",
        role,
        f"/{kind}-{layers}/items/{{id}}",
        f"the same route behind {layers} {KINDS[kind]} layer{'s' if layers > 1 else ''} "
        "(each appends an `x-layer` header)",
        (*code, "layered_app"),
        sweep=(KINDS[kind], layers),
    )


PAIR = Pair(
    name="middleware",
    claim_id="C9",
    claim="Many middleware layers add latency; keep only the middleware you need.",
    sources=("004",),
    mechanism=(
        '`@app.middleware("http")` and `add_middleware` with a `BaseHTTPMiddleware` subclass run '
        "`call_next` in a new anyio task group and pass the response back through a memory object "
        "stream, so every layer adds a task, a stream and several awaits per request (starlette#1678; "
        "Starlette's docs/middleware.md recommends pure ASGI middleware for this reason). A pure ASGI "
        "layer only wraps `send`: one more function call per ASGI message."
    ),
    decided_by=(
        f"Throughput and server CPU time per request of the trivial route behind {DEEPEST} layers against "
        "none, per kind. "
        f"A kind adds latency when {DEEPEST} layers lose >= {100 * THROUGHPUT_LOSS:g}% of the throughput "
        f"and add >= {ADDED_CPU_MS:g} ms of server CPU time per request (CPU % / req/s), so that neither a "
        "busy machine nor microseconds on an empty route decide it. Holds if both kinds do; holds only for "
        "BaseHTTPMiddleware (or only for pure ASGI) if one does; does not hold if neither. "
        "Per-layer costs (p50, CPU) are the differences divided by the layer count; 1 and 5 layers draw the curve."
    ),
    variants=(
        Variant(
            "none",
            "good",
            "/none/items/{id}",
            "the trivial route (row computed, no database) with no middleware",
            ("trivial_item", "layered_app"),
            sweep=("none", 0),
        ),
        # The article's fix keeps one essential layer: "good"; its problem is many: "bad".
        # It does not tell the two kinds apart, so neither do the roles.
        sweep_variant("base", 1, "good"),
        sweep_variant("base", 5, "bad"),
        sweep_variant("base", 10, "bad"),
        sweep_variant("asgi", 1, "good"),
        sweep_variant("asgi", 5, "bad"),
        sweep_variant("asgi", 10, "bad"),
    ),
    decide=decide,
    order=90,
    sweep_label="middleware layers",
    references=("starlette#1678", "starlette docs/middleware.md"),
)
