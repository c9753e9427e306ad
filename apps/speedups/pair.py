"""C10: do uvloop and orjson make FastAPI faster?"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from apps.speedups.app import LIST_LENGTH, list_ids
from harness import database
from harness.database import Database
from harness.pairs import (
    Outcome,
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

# A speed-up counts when the server spends at most 1/SPEEDUP_FACTOR of the CPU time per
# request that the variant it replaces spends. These routes do no I/O, so CPU time per
# request is their service time; throughput on this 2-core machine also moves with the
# load generator's ceiling and with other processes, so it is reported, not decisive.
SPEEDUP_FACTOR = 1.10


def expected_rows(db: Database, item_id: int) -> list[dict[str, Any] | None]:
    """The rows the list variants must return, read from the database: LIST_LENGTH ids
    counting down from `item_id`, wrapping to the top of 1..LIST_LENGTH below 1."""
    ids = list_ids(item_id)
    with contextlib.closing(db.connect()) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT id, name, price_cents FROM {database.TABLE} WHERE id = ANY(%s)", (ids,))
        found = {row[0]: {"id": row[0], "name": row[1], "price_cents": row[2]} for row in cur.fetchall()}
    return [found.get(i) for i in ids]  # a missing row stays None and fails verification


def deprecation_warnings(record: Mapping[str, Any]) -> list[str]:
    return [line for line in record.get("warnings") or [] if "ORJSONResponse" in line and "eprecat" in line]


def speedup(new: Mapping[str, Any], old: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """How much less server CPU time per request `new` needs than `old` (old / new), and
    its throughput ratio. Without CPU figures the throughput ratio stands in."""
    rps_ratio = ratio(new["rps"], old["rps"])
    cpu_saving = ratio(cpu_ms_per_request(old), cpu_ms_per_request(new))
    return (rps_ratio if cpu_saving is None else cpu_saving), rps_ratio


def cpu_change(saving: float | None) -> str:
    """A CPU saving (old / new) in words: "1.56x less", or "1.23x more" below 1."""
    if saving is None or saving >= 1:
        return f"{fmt(saving, 'x')} less"
    return f"{fmt(1 / saving, 'x')} more"


def compared(what: str, than: str, saving: float | None, rps_ratio: float | None, new: Any, old: Any) -> str:
    says = (
        f"{what} needed {cpu_change(saving)} server CPU per request than {than} "
        f"({fmt(cpu_ms_per_request(new), 'ms', 2)} vs {fmt(cpu_ms_per_request(old), 'ms', 2)}) "
        f"and served {fmt(rps_ratio, 'x')} its throughput ({fmt(new['rps'], 'req/s')} vs {fmt(old['rps'], 'req/s')})"
    )
    if (saving or 0.0) >= SPEEDUP_FACTOR and (rps_ratio or 0.0) < 1:
        says += ", a throughput its own CPU time does not explain (the load or the machine limited it)"
    return says


def decide(records: Records, knobs: Mapping[str, Any]) -> Verdict:
    missing = missing_variants(
        records, ["asyncio-h11", "uvloop-httptools", "as-dict", "response-model", "orjson-response"]
    )
    if missing:
        return inconclusive(missing)
    slow_server, fast_server = records["asyncio-h11"], records["uvloop-httptools"]
    as_dict, model, orjson = records["as-dict"], records["response-model"], records["orjson-response"]
    warned = deprecation_warnings(orjson)
    server_saving, server_rps_ratio = speedup(fast_server, slow_server)
    orjson_saving, orjson_rps_ratio = speedup(orjson, model)
    figures = {
        "server_cpu_saving": server_saving,
        "server_rps_ratio": server_rps_ratio,
        "orjson_vs_model_cpu_saving": orjson_saving,
        "orjson_vs_model_rps_ratio": orjson_rps_ratio,
        "orjson_vs_dict_cpu_saving": speedup(orjson, as_dict)[0],
        "model_vs_dict_cpu_saving": speedup(model, as_dict)[0],
        "asyncio_h11_server_cpu_pct": slow_server.get("server_cpu_pct"),
        "uvloop_httptools_server_cpu_pct": fast_server.get("server_cpu_pct"),
        "as_dict_cpu_ms_per_request": cpu_ms_per_request(as_dict),
        "model_cpu_ms_per_request": cpu_ms_per_request(model),
        "orjson_cpu_ms_per_request": cpu_ms_per_request(orjson),
        "orjson_deprecation_warnings": len(warned),
    }
    server_faster = (server_saving or 0.0) >= SPEEDUP_FACTOR
    orjson_faster = (orjson_saving or 0.0) >= SPEEDUP_FACTOR
    server_says = compared(
        "uvloop + httptools", "asyncio + h11", server_saving, server_rps_ratio, fast_server, slow_server
    )
    orjson_says = (
        compared("ORJSONResponse", "the `list[Item]` return type", orjson_saving, orjson_rps_ratio, orjson, model)
        + f"; against plain dicts ORJSONResponse needed {cpu_change(figures['orjson_vs_dict_cpu_saving'])} and "
        f"the return type {cpu_change(figures['model_vs_dict_cpu_saving'])}"
    )
    warning_says = (
        " FastAPI warned that ORJSONResponse is deprecated." if warned else " No deprecation warning was recorded."
    )
    headline = (
        f"CPU per request: uvloop+httptools {cpu_change(server_saving)}; "
        f"ORJSONResponse {cpu_change(orjson_saving)} than a response model"
    )
    outcome: Outcome
    if server_faster and orjson_faster:
        text = f"Holds: {server_says}; {orjson_says}."
        outcome = "holds"
    elif server_faster:
        text = f"Holds for uvloop + httptools only: {server_says}; but {orjson_says}."
        outcome = "partly holds"
    elif orjson_faster:
        text = f"Holds for orjson only: {orjson_says}; but {server_says}."
        outcome = "partly holds"
    else:
        text = f"Does not hold in this run: {server_says}; {orjson_says}."
        outcome = "does not hold"
    return Verdict(outcome, text + warning_says, figures, headline)


def list_variant(name: str, role: Role, summary: str, code: str) -> Variant:
    # Verification compares the whole list with the rows read from the database.
    return Variant(name, role, f"/{name}/items/{{id}}", summary, (code, "item_rows"), expect=expected_rows)


PAIR = Pair(
    name="speedups",
    claim_id="C10",
    claim="uvloop and orjson make FastAPI faster.",
    sources=("003",),
    mechanism=(
        "uvicorn already uses uvloop and httptools when they are installed (`uvicorn[standard]`), so the "
        "gain is against `--loop asyncio --http h11`, pure-Python parsing and scheduling. For JSON, FastAPI "
        "0.130+ hands a declared return type or response_model to pydantic, which validates and writes the "
        "bytes in Rust (fastapi#14962); returning plain dicts goes through jsonable_encoder and json.dumps "
        "in Python. An ORJSONResponse returned directly skips FastAPI's serialization and validation "
        "altogether; it is deprecated since 0.131 (fastapi#14964) as the return-type path made it redundant."
    ),
    decided_by=(
        "Server CPU time per request (CPU % / req/s): these routes do no I/O, so it is their service time, "
        "unlike throughput, which the load generator's ceiling and other processes also move (reported "
        f"alongside). A replacement counts as faster when it needs <= 1/{SPEEDUP_FACTOR:g} of the CPU time "
        "per request: uvloop + httptools against asyncio + h11 on the one-row route, "
        f"ORJSONResponse against the declared `list[Item]` return type on the {LIST_LENGTH}-row list "
        "(plain dicts are shown for reference). Holds if both are faster, partly holds if one is, does not "
        "hold if neither. ORJSONResponse deprecation warnings in the server log are reported."
    ),
    variants=(
        Variant(
            "asyncio-h11",
            "bad",
            "/asyncio-h11/items/{id}",
            "one computed row; uvicorn with `--loop asyncio --http h11`",
            ("asyncio_h11_item",),
            server_args=("--loop", "asyncio", "--http", "h11"),
        ),
        Variant(
            "uvloop-httptools",
            "good",
            "/uvloop-httptools/items/{id}",
            "the same route; uvicorn with `--loop uvloop --http httptools`",
            ("uvloop_httptools_item",),
            server_args=("--loop", "uvloop", "--http", "httptools"),
        ),
        list_variant(
            "as-dict",
            "bad",
            f"{LIST_LENGTH} computed rows as plain dicts, no return type (jsonable_encoder + json.dumps)",
            "as_dict_items",
        ),
        list_variant(
            "response-model",
            "reference",
            f"the same {LIST_LENGTH} rows with a declared `list[Item]` return type (pydantic writes the JSON)",
            "response_model_items",
        ),
        list_variant(
            "orjson-response",
            "good",
            f"the same {LIST_LENGTH} rows returned in an ORJSONResponse (orjson writes the JSON)",
            "orjson_response_items",
        ),
    ),
    decide=decide,
    order=100,
    references=("fastapi#14962", "fastapi#14964"),
)
