"""C10: do uvloop and orjson make FastAPI faster?"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from apps.speedups.app import LIST_LENGTH, list_ids
from harness import database
from harness.checks import CPU_PER_REQUEST, THROUGHPUT, Check, Metric, Part, Ratio, Rule, Total
from harness.database import Database
from harness.pairs import Pair, Role, Variant
from harness.records import Record

# A replacement counts as faster when it needs at most this share of the server CPU time
# per request of the variant it replaces (15% less): beyond the +-10% inside which an A/A
# pair of identical variants lands, so noise cannot pass for a speed-up.
SPEEDUP_RATIO = 0.85


def expected_rows(db: Database, item_id: int) -> list[dict[str, Any] | None]:
    """The rows the list variants must return, read from the database: LIST_LENGTH ids
    counting down from `item_id`, wrapping to the top of 1..LIST_LENGTH below 1."""
    ids = list_ids(item_id)
    with contextlib.closing(db.connect()) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT id, name, price_cents FROM {database.TABLE} WHERE id = ANY(%s)", (ids,))
        found = {row[0]: {"id": row[0], "name": row[1], "price_cents": row[2]} for row in cur.fetchall()}
    return [found.get(i) for i in ids]  # a missing row stays None and fails verification


def deprecation_warnings(record: Record) -> float | None:
    """How many distinct ORJSONResponse deprecation warnings the server printed (None:
    warnings were not recorded)."""
    lines = record.get("warnings")
    if lines is None:
        return None
    return float(sum(1 for line in lines if "ORJSONResponse" in line and "eprecat" in line))


ORJSON_DEPRECATIONS = Metric("ORJSONResponse deprecation warnings", "", deprecation_warnings)


def faster(new: str, old: str, short: str) -> Check:
    """`new` needs at most SPEEDUP_RATIO of `old`'s server CPU time per request."""
    return Check(Ratio(CPU_PER_REQUEST, new, old, short=short), "<=", SPEEDUP_RATIO)


def rule(knobs: Mapping[str, int]) -> Rule:
    # Each comparison stays inside its sub-experiment: server options on the one-row
    # route, JSON on the LIST_LENGTH-row lists, like with like.
    return Rule(
        parts=(
            Part(
                "`uvloop` makes FastAPI faster (the same h11 parser, only the event loop changes)",
                (faster("uvloop-h11", "asyncio-h11", "CPU per request uvloop / asyncio"),),
            ),
            Part(
                "ORJSONResponse makes a validated response faster than FastAPI's own serialization of it",
                (faster("orjson-model", "response-model", "CPU per request ORJSONResponse / response model"),),
            ),
            Part(
                "ORJSONResponse makes an unvalidated response faster than FastAPI's plain-dict path",
                (faster("orjson-response", "as-dict", "CPU per request ORJSONResponse / dicts"),),
            ),
        ),
        shown=(
            # httptools, which the article does not name, separately: alone and on top of uvloop.
            Ratio(CPU_PER_REQUEST, "asyncio-httptools", "asyncio-h11"),
            Ratio(CPU_PER_REQUEST, "uvloop-httptools", "uvloop-h11"),
            # uvicorn's own choice against the slowest stack: both together.
            Ratio(CPU_PER_REQUEST, "uvloop-httptools", "asyncio-h11"),
            # What the declared return type costs against plain dicts (validation included).
            Ratio(CPU_PER_REQUEST, "response-model", "as-dict"),
            Ratio(THROUGHPUT, "uvloop-h11", "asyncio-h11"),
            Ratio(THROUGHPUT, "orjson-model", "response-model"),
            Ratio(THROUGHPUT, "orjson-response", "as-dict"),
            Total(ORJSON_DEPRECATIONS, "orjson-model"),
            Total(ORJSON_DEPRECATIONS, "orjson-response"),
        ),
        note=(
            "Server CPU time per request decides, not throughput: these routes do no I/O, so it is their service "
            "time, while a closed loop with no wait saturates both cores and the load generator takes a different "
            "share of them from variants of different cost, which bends throughput ratios (shown beside, not "
            "deciding). Partly holds names which of uvloop and the two orjson comparisons saved CPU time."
        ),
    )


def server_variant(name: str, role: Role, summary: str, code: str) -> Variant:
    loop, http = name.split("-")
    return Variant(
        name,
        role,
        f"/{name}/items/{{id}}",
        f"{summary}; uvicorn with `--loop {loop} --http {http}`",
        (code,),
        server_args=("--loop", loop, "--http", http),
    )


def list_variant(name: str, role: Role, summary: str, code: str) -> Variant:
    # Verification compares the whole list with the rows read from the database.
    return Variant(name, role, f"/{name}/items/{{id}}", summary, (code, "item_rows"), expect=expected_rows)


PAIR = Pair(
    name="speedups",
    claim_id="C10",
    claim="uvloop and orjson make FastAPI faster.",
    sources=("003",),
    mechanism=(
        "uvicorn already uses uvloop and httptools when they are installed (`uvicorn[standard]`), so a gain "
        "is only against `--loop asyncio` and `--http h11`: the article names uvloop only, so the loop and the "
        "HTTP parser are measured apart (uvloop replaces asyncio's scheduling and socket handling; httptools "
        "replaces h11's pure-Python parsing). For JSON, FastAPI 0.130+ hands a declared return type or "
        "response_model to pydantic, which validates and writes the bytes in Rust (fastapi#14962); returning "
        "plain dicts goes through jsonable_encoder and json.dumps in Python. With `response_class=ORJSONResponse` "
        "on the same return type FastAPI still validates, but dumps to Python objects for orjson to encode; an "
        "ORJSONResponse returned directly skips validation and jsonable_encoder altogether. ORJSONResponse is "
        "deprecated in the FastAPI measured here (since 0.131, fastapi#14964): fastapi/responses.py wraps the "
        'class in `@deprecated("ORJSONResponse is deprecated, FastAPI now serializes data directly to JSON bytes '
        "via Pydantic when a return type or response model is set, which is faster and doesn't need a custom "
        'response class. ...", category=FastAPIDeprecationWarning)`, so each server that builds one prints that '
        "warning."
    ),
    variants=(
        server_variant("asyncio-h11", "bad", "one computed row", "asyncio_h11_item"),
        server_variant("uvloop-h11", "good", "the same route with uvloop alone", "uvloop_h11_item"),
        server_variant(
            "asyncio-httptools", "reference", "the same route with httptools alone", "asyncio_httptools_item"
        ),
        server_variant(
            "uvloop-httptools", "reference", "the same route as uvicorn runs it by default", "uvloop_httptools_item"
        ),
        list_variant(
            "as-dict",
            "bad",
            f"{LIST_LENGTH} computed rows as plain dicts, no return type: not validated (jsonable_encoder + "
            "json.dumps)",
            "as_dict_items",
        ),
        list_variant(
            "response-model",
            "reference",
            f"the same {LIST_LENGTH} rows with a declared `list[Item]` return type: validated, and pydantic writes "
            "the JSON",
            "response_model_items",
        ),
        list_variant(
            "orjson-model",
            "good",
            f"the same {LIST_LENGTH} rows and `list[Item]` return type with `response_class=ORJSONResponse`: "
            "validated as for response-model, then orjson writes the JSON (like for like with response-model)",
            "orjson_model_items",
        ),
        list_variant(
            "orjson-response",
            "good",
            f"the same {LIST_LENGTH} rows returned in an ORJSONResponse: not validated, orjson writes the JSON "
            "(like for like with as-dict)",
            "orjson_response_items",
        ),
    ),
    rule=rule,
    order=100,
    # Its differences are a few percent of CPU per request: at 2 s windows a block's
    # log-ratio varied by 0.05-0.15 and 3 blocks did not decide in two runs of three; at
    # 6 s it varied by 0.04-0.08, and 3 blocks decided in one run of two
    # (results/20261208-020659-default, -023530-default), 6 blocks in both experiments
    # (results/20261207-234557-speedups-6s, results/20261208-speedups-6blocks-no-httptools).
    load={"duration_s": 6},
    references=("fastapi#14962", "fastapi#14964"),
)
