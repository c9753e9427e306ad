"""The `speedups` pair: its verdict rule on fixture records (every way), and the list
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
from harness.checks import CPU_PER_REQUEST, THROUGHPUT, Ratio, Total
from harness.database import Database
from harness.scenario import Scenario
from tests.conftest import blocks_of, cpu_jitter

PAIR = speedups.PAIR
SCENARIO = Scenario(name="test", rows=1000)
DEPRECATION = "FastAPIDeprecationWarning: ORJSONResponse is deprecated, FastAPI now serializes data directly"
SERVERS = ["asyncio-h11", "uvloop-h11", "asyncio-httptools", "uvloop-httptools"]
LISTS = ["as-dict", "response-model", "orjson-model", "orjson-response"]
UVLOOP = Ratio(CPU_PER_REQUEST, "uvloop-h11", "asyncio-h11").key
ORJSON_MODEL = Ratio(CPU_PER_REQUEST, "orjson-model", "response-model").key
ORJSON_MODEL_RPS = Ratio(THROUGHPUT, "orjson-model", "response-model").key
ORJSON_DICT = Ratio(CPU_PER_REQUEST, "orjson-response", "as-dict").key


def rec(rps: float, cpu: float | None = 90.0, warnings: list[str] | None = None, status: str = "ok") -> dict[str, Any]:
    """A variant's record: `cpu` % of a core at `rps` is cpu / rps * 10 ms per request."""
    return {"status": status, "rps": rps, "server_cpu_pct": cpu, "failure_rate": 0.0, "warnings": warnings or []}


def decide(jitter: tuple[float, ...] | None = None, **records: dict[str, Any]) -> Any:
    """Records by variant name (underscores for hyphens); unnamed ones are equal at 1,000 req/s."""
    named = {name.replace("_", "-"): record for name, record in records.items()}
    full = {name: named.get(name, rec(1000)) for name in SERVERS + LISTS}
    blocks = blocks_of(full)
    return PAIR.decide(full, PAIR.knobs, cpu_jitter(blocks, jitter) if jitter else blocks)


# After a trial run (quick scenario): uvloop alone 0.72x the CPU per request of asyncio,
# ORJSONResponse on the validated route 1.22x that of the response model, and without
# validation 0.34x that of plain dicts.
TRIAL = {
    "asyncio_h11": rec(4300, 96.0),  # 0.223 ms
    "uvloop_h11": rec(5300, 85.0),  # 0.160 ms
    "asyncio_httptools": rec(5000, 90.0),
    "uvloop_httptools": rec(6100, 84.0),
    "as_dict": rec(640, 89.0),  # 1.39 ms
    "response_model": rec(1950, 100.0),  # 0.513 ms
    "orjson_model": rec(1579, 99.0, warnings=[DEPRECATION]),  # 0.627 ms
    "orjson_response": rec(1780, 84.0, warnings=[DEPRECATION]),  # 0.472 ms
}


def test_partly_holds_when_uvloop_and_unvalidated_orjson_save_but_validated_orjson_does_not() -> None:
    verdict = decide(**TRIAL)
    assert verdict.outcome == "partly holds"
    assert [check["outcome"] for check in verdict.checks] == ["clears", "misses", "clears"]
    assert verdict.figures[UVLOOP] == pytest.approx((85.0 / 5300) / (96.0 / 4300))
    assert verdict.figures[ORJSON_MODEL] == pytest.approx((99.0 / 1579) / (100.0 / 1950))
    assert verdict.figures[ORJSON_DICT] == pytest.approx((84.0 / 1780) / (89.0 / 640))
    # Shown, not deciding: throughput, httptools apart, and the deprecation warnings.
    assert verdict.figures[ORJSON_MODEL_RPS] == pytest.approx(1579 / 1950)
    assert verdict.figures[Ratio(CPU_PER_REQUEST, "asyncio-httptools", "asyncio-h11").key] == pytest.approx(
        (90.0 / 5000) / (96.0 / 4300)
    )
    assert verdict.figures[Total(speedups.ORJSON_DEPRECATIONS, "orjson-model").key] == 1
    assert verdict.figures[Total(speedups.ORJSON_DEPRECATIONS, "orjson-response").key] == 1


def test_holds_when_every_replacement_needs_less_cpu_per_request() -> None:
    verdict = decide(**TRIAL | {"orjson_model": rec(2200, 80.0)})  # 0.364 ms: 0.71x
    assert verdict.outcome == "holds"
    assert all(check["outcome"] == "clears" for check in verdict.checks)


def test_httptools_alone_does_not_count_for_uvloop() -> None:
    # The whole gain from the parser: uvicorn's default stack is faster, uvloop alone is not.
    verdict = decide(**TRIAL | {"uvloop_h11": rec(4300, 96.0), "uvloop_httptools": rec(7000, 80.0)})
    assert verdict.checks[0]["outcome"] == "no measurable difference"
    assert verdict.outcome == "partly holds"
    assert verdict.figures[Ratio(CPU_PER_REQUEST, "uvloop-httptools", "asyncio-h11").key] == pytest.approx(
        (80.0 / 7000) / (96.0 / 4300)
    )


def test_does_not_hold_when_no_replacement_saves_cpu_time() -> None:
    verdict = decide(
        asyncio_h11=rec(6000, 85.0), uvloop_h11=rec(6100, 84.0), as_dict=rec(1000), orjson_response=rec(1010)
    )
    assert verdict.outcome == "does not hold"
    assert [check["outcome"] for check in verdict.checks] == ["no measurable difference"] * 3


def test_more_throughput_without_less_cpu_per_request_is_not_a_speedup() -> None:
    # orjson at 1.3x the throughput but at 1.3x the CPU: the response-model run was starved.
    verdict = decide(**TRIAL | {"response_model": rec(1300, 60.0), "orjson_model": rec(1690, 78.0)})
    assert verdict.figures[ORJSON_MODEL] == pytest.approx(1.0)
    assert verdict.figures[ORJSON_MODEL_RPS] == pytest.approx(1.3)
    assert verdict.checks[1]["outcome"] == "no measurable difference"


def test_less_cpu_per_request_counts_even_when_a_busy_machine_cut_the_throughput() -> None:
    # ORJSONResponse starved to 58% CPU, yet 1.26x cheaper per request.
    verdict = decide(**TRIAL | {"response_model": rec(1276, 79.1), "orjson_model": rec(1186, 58.4)})
    assert verdict.checks[1]["outcome"] == "clears"
    assert verdict.figures[ORJSON_MODEL_RPS] < 1


def test_inconclusive_when_an_interval_straddles_the_threshold() -> None:
    # uvloop at 0.85x on average, but the blocks spread from half to double.
    verdict = decide(jitter=(0.5, 1.0, 2.0), **TRIAL | {"uvloop_h11": rec(4300, 96.0 * 0.85)})
    assert verdict.outcome == "inconclusive"
    assert verdict.checks[0]["outcome"] == "inconclusive"
    assert verdict.checks[0]["low"] < speedups.SPEEDUP_RATIO < verdict.checks[0]["high"]


def test_inconclusive_when_a_variant_failed() -> None:
    verdict = decide(**TRIAL | {"orjson_model": rec(1000, status="failed")})
    assert verdict.outcome == "inconclusive" and "orjson-model" in verdict.headline


def test_each_comparison_stays_inside_its_sub_experiment() -> None:
    rule = PAIR.rule(PAIR.knobs) if PAIR.rule else None
    assert rule is not None
    for figure in [check.figure for check in rule.checks] + list(rule.shown):
        if figure.to:
            assert (figure.of in SERVERS) == (figure.to in SERVERS), (figure.of, figure.to)
    assert [v.name for v in PAIR.variants] == SERVERS + LISTS
    for name in SERVERS:
        loop, http = name.split("-")
        assert PAIR.variant(name).server_args == ("--loop", loop, "--http", http)


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
@pytest.mark.parametrize("name", LISTS)
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
    assert bool(deprecated) == name.startswith("orjson-")


HOSTILE = ["1;DROP TABLE bench_items", "abc", "0", "-1", "9" * 40, "1.5"]


def status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


@pytest.mark.slow
@pytest.mark.parametrize("name", SERVERS)
def test_server_options_take_effect(db: Database, tmp_path: Path, name: str) -> None:
    loop = name.split("-")[0]
    variant = PAIR.variant(name)
    server, port = runner.start_server(PAIR, variant, PAIR.knobs, db, tmp_path, SCENARIO)
    try:
        runner.verify(port, variant, db, rows=1000)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/counters", timeout=10) as resp:
            counters = json.loads(resp.read())
    finally:
        server.stop()
    assert counters["event_loop"].split(".")[0] == loop
