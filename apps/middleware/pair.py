"""C9: do many middleware layers add latency?"""

from __future__ import annotations

from collections.abc import Mapping

from harness.checks import CPU_PER_REQUEST, THROUGHPUT, Check, Difference, Level, Part, Ratio, Rule
from harness.pairs import Pair, Role, Variant

# Ten layers of a kind add latency when they add at least this much server CPU time per
# request to the bare route: a cost a real endpoint would notice, not microseconds that
# are large only next to a route that does nothing.
ADDED_CPU_MS = 0.25
# Inside this many ms of the bare route, ten layers make "no measurable difference".
ADDED_CPU_BAND_MS = 0.05
# ...and when ten layers cost at least this many times one layer's CPU per request: the
# cost grows with the number of layers (the claim's "many"), well beyond the +-10% noise.
MANY_FACTOR = 1.5
# The deepest stack measured, and the one the article's fix keeps.
DEEPEST = 10
ONE = 1
KINDS = {"base": "BaseHTTPMiddleware", "asgi": "pure ASGI"}


def kind_part(kind: str) -> Part:
    deep, one = f"{kind}-{DEEPEST}", f"{kind}-{ONE}"
    return Part(
        f"{DEEPEST} {KINDS[kind]} layers add server time per request, growing with the number of layers",
        (
            Check(
                Difference(CPU_PER_REQUEST, deep, "none", short=f"CPU per request added by {DEEPEST} {KINDS[kind]}"),
                ">=",
                ADDED_CPU_MS,
                band=ADDED_CPU_BAND_MS,
            ),
            Check(Ratio(CPU_PER_REQUEST, deep, one), ">=", MANY_FACTOR),
        ),
    )


def rule(knobs: Mapping[str, int]) -> Rule:
    return Rule(
        parts=tuple(kind_part(kind) for kind in KINDS),
        shown=(
            Level(CPU_PER_REQUEST, "none"),
            # The curve: what 1 and 5 layers add, per kind.
            *(Difference(CPU_PER_REQUEST, f"{kind}-{n}", "none") for kind in KINDS for n in (ONE, 5)),
            *(Ratio(THROUGHPUT, f"{kind}-{DEEPEST}", "none") for kind in KINDS),
        ),
        note=(
            "Server CPU time per request decides, not throughput: the route does no I/O, so the layers' cost is "
            "CPU time, while a closed loop with no wait saturates both cores and the load generator takes a "
            "different share of them from stacks of different cost, which bends throughput ratios (shown "
            "beside, not deciding). Partly holds names the kind whose layers cost."
        ),
    )


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
    rule=rule,
    order=90,
    sweep_label="middleware layers",
    references=("starlette#1678", "starlette docs/middleware.md"),
)
