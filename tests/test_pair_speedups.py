"""The `speedups` pair: its verdict rule on fixture records (both ways), and the list
variants checked against the database (tests/test_variants.py compares every variant
with a single row; these return a list)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from apps.speedups import pair as speedups
from harness import runner
from harness.database import Database
from harness.scenario import Scenario

PAIR = speedups.PAIR
SCENARIO = Scenario(name="test", rows=1000)
DEPRECATION = "FastAPIDeprecationWarning: ORJSONResponse is deprecated, FastAPI now serializes data directly"


def rec(rps: float, cpu: float | None = 90.0, warnings: list[str] | None = None, status: str = "ok") -> dict[str, Any]:
    return {"status": status, "rps": rps, "p50_ms": 50_000 / rps, "server_cpu_pct": cpu, "warnings": warnings or []}


def decide(**records: dict[str, Any]) -> Any:
    """Records by variant name (underscores for hyphens); unnamed ones are equal at 1,000 req/s."""
    named = {name.replace("_", "-"): record for name, record in records.items()}
    names = ["asyncio-h11", "uvloop-httptools", "as-dict", "response-model", "orjson-response"]
    return PAIR.decide({name: named.get(name, rec(1000)) for name in names}, PAIR.knobs)


# A trial run (quick scenario, 6 s): both cost less per request and served more.
TRIAL = {
    "asyncio_h11": rec(4298, 96.5),
    "uvloop_httptools": rec(6133, 83.8),
    "as_dict": rec(637, 89.1),
    "response_model": rec(1346, 74.2),
    "orjson_response": rec(1776, 83.5, warnings=[DEPRECATION]),
}


def test_holds_when_both_need_less_server_time_as_in_the_trial_run() -> None:
    verdict = decide(**TRIAL)
    assert verdict.outcome == "holds"
    assert (
        verdict.headline
        == "CPU per request: uvloop+httptools 1.64x less; ORJSONResponse 1.17x less than a response model"
    )
    assert "served 1.43x its throughput" in verdict.text
    assert "warned that ORJSONResponse is deprecated" in verdict.text
    assert verdict.figures["orjson_deprecation_warnings"] == 1


def test_partly_holds_for_uvloop_only_when_orjson_costs_what_the_response_model_costs() -> None:
    # What FastAPI's deprecation note predicts: the Rust path as cheap as orjson.
    verdict = decide(**TRIAL | {"response_model": rec(1700, 80.0), "orjson_response": rec(1750, 82.0)})
    assert verdict.outcome == "partly holds" and "uvloop + httptools only" in verdict.text
    assert "No deprecation warning" in verdict.text


def test_partly_holds_for_orjson_only_when_the_server_options_do_not_matter() -> None:
    verdict = decide(**TRIAL | {"asyncio_h11": rec(6000, 85.0), "uvloop_httptools": rec(6100, 84.0)})
    assert verdict.outcome == "partly holds" and "orjson only" in verdict.text


def test_does_not_hold_when_neither_saves_server_time() -> None:
    verdict = decide(
        asyncio_h11=rec(6000, 85.0),
        uvloop_httptools=rec(6100, 84.0),
        response_model=rec(1800),
        orjson_response=rec(1700),
    )
    assert verdict.outcome == "does not hold"
    assert verdict.figures["orjson_vs_model_rps_ratio"] == pytest.approx(1700 / 1800)


def test_less_cpu_per_request_counts_even_when_a_busy_machine_cut_the_throughput() -> None:
    # Another trial run: ORJSONResponse starved to 58% CPU, yet 1.26x cheaper per request.
    verdict = decide(**TRIAL | {"response_model": rec(1276, 79.1), "orjson_response": rec(1186, 58.4)})
    assert verdict.outcome == "holds"
    assert "does not explain" in verdict.text and "served 0.93x its throughput" in verdict.text


def test_more_throughput_without_less_cpu_per_request_is_not_a_speedup() -> None:
    # orjson at 1.3x the throughput but at 1.3x the CPU: the response-model run was starved.
    verdict = decide(**TRIAL | {"response_model": rec(1300, 60.0), "orjson_response": rec(1690, 78.0)})
    assert verdict.outcome == "partly holds" and "uvloop + httptools only" in verdict.text
    assert verdict.figures["orjson_vs_model_cpu_saving"] == pytest.approx(1.0)


def test_costlier_responses_are_said_to_need_more_cpu_not_less() -> None:
    # As in a default run: ORJSONResponse at 1,579 req/s and 99% CPU, the return type at
    # 1,950 req/s and 100%: 0.627 against 0.513 ms per request.
    verdict = decide(**TRIAL | {"response_model": rec(1950, 100.0), "orjson_response": rec(1579, 99.0)})
    assert verdict.outcome == "partly holds"
    assert verdict.headline.endswith("ORJSONResponse 1.22x more than a response model"), verdict.headline
    assert "ORJSONResponse needed 1.22x more server CPU per request" in verdict.text
    assert "0.82x less" not in verdict.text


def test_without_cpu_figures_throughput_stands_in() -> None:
    verdict = decide(asyncio_h11=rec(4000, None), uvloop_httptools=rec(6000, None))
    assert verdict.figures["server_cpu_saving"] == pytest.approx(1.5)
    assert verdict.outcome == "partly holds"


def test_inconclusive_when_a_variant_failed() -> None:
    verdict = decide(orjson_response=rec(1000, status="failed"))
    assert verdict.outcome == "inconclusive" and "orjson-response" in verdict.text


def test_list_rule_matches_the_app() -> None:
    from apps.speedups import app

    assert app.LIST_LENGTH == speedups.LIST_LENGTH
    assert app.list_ids(150) == list(range(150, 50, -1))
    assert app.list_ids(3) == [3, 2, 1, *range(100, 3, -1)]
    assert sorted(app.list_ids(3)) == list(range(1, 101))  # a wrapped list stays within the first 100 rows


@pytest.mark.slow
def test_expected_rows_come_from_the_database(db: Database) -> None:
    rows = speedups.expected_rows(db, 2)
    assert [row["id"] for row in rows if row] == [2, 1, *range(100, 2, -1)]
    assert rows[0] == {"id": 2, "name": "item-2", "price_cents": 2 * 7919 % 100_000}
    assert speedups.expected_rows(db, 1001)[0] is None  # not seeded: verification would fail


@pytest.mark.slow
@pytest.mark.parametrize("name", ["as-dict", "response-model", "orjson-response"])
def test_list_variant_verifies(db: Database, tmp_path: Path, name: str) -> None:
    variant = PAIR.variant(name)
    server, port = runner.start_server(PAIR, variant, PAIR.knobs, db, tmp_path, SCENARIO)
    try:
        checked = runner.verify(port, variant, db, rows=1000)
        hostile = {
            item: status(port, variant.path.replace("{id}", urllib.parse.quote(item, safe="%"))) for item in HOSTILE
        }
        listening = {c.laddr.ip for c in psutil.Process(server.pid).net_connections("inet") if c.status == "LISTEN"}
    finally:
        server.stop()
    assert len(checked["body"]) == speedups.LIST_LENGTH and checked["body"][0]["id"] == checked["id"]
    assert all(400 <= code < 500 for code in hostile.values()), hostile
    assert listening == {"127.0.0.1"}
    deprecated = [line for line in runner.server_warnings(tmp_path / "server.log") if "ORJSONResponse" in line]
    assert bool(deprecated) == (name == "orjson-response")


HOSTILE = ["1;DROP TABLE bench_items", "abc", "0", "-1", "9" * 40, "1.5"]


def status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "loop"), [("asyncio-h11", "asyncio"), ("uvloop-httptools", "uvloop")])
def test_server_options_take_effect(db: Database, tmp_path: Path, name: str, loop: str) -> None:
    variant = PAIR.variant(name)
    server, port = runner.start_server(PAIR, variant, PAIR.knobs, db, tmp_path, SCENARIO)
    try:
        runner.verify(port, variant, db, rows=1000)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/counters", timeout=10) as resp:
            counters = json.loads(resp.read())
    finally:
        server.stop()
    assert counters["event_loop"].split(".")[0] == loop
