"""The order pair (C3): its verdict rule on fixture records, and the order the real
app records."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from harness import runner
from harness.database import Database
from harness.pairs import discover
from harness.scenario import Scenario
from tests.conftest import blocks_of

PAIR = discover()["order"]
IN_ORDER = ["enter A", "enter B", "exit B", "exit A"]


def rec(p50: float, order: list[str] | None = None, wall: float = 100.0, summed: float = 100.0) -> dict[str, Any]:
    counters = {"setup_wall_ms": wall, "setup_sum_ms": summed, "setups_B": 10, "exits_B": 10}
    if order is not None:
        counters["order"] = order
    return {"status": "ok", "p50_ms": p50, "counters": counters}


def decide(
    two: dict[str, Any],
    one: dict[str, Any],
    setup_ms: int = PAIR.knobs["setup_ms"],
    jitter: tuple[float, ...] = (0.97, 1.0, 1.03),
) -> Any:
    records = {"two-deps": two, "one-dep": one}
    return PAIR.decide(records, {"setup_ms": setup_ms}, blocks_of(records, jitter))


ORDER = "recorded_order_as_expected_(1_yes,_0_no)_total_two-deps"
EXTRA = "p50_difference_two-deps_one-dep"
WALL = "setups'_wall_time_/_their_summed_time_total_two-deps"


def outcomes(verdict: Any) -> dict[str, str]:
    return {check["name"]: check["outcome"] for check in verdict.checks}


def test_holds_when_ordered_and_sequential() -> None:
    verdict = decide(rec(100, IN_ORDER), rec(52))  # the default run's medians
    assert verdict.outcome == "holds"
    assert verdict.figures[ORDER] == 1.0 and verdict.figures[EXTRA] == pytest.approx(48)
    assert verdict.figures[WALL] == 1.0


def test_partly_holds_when_cleanup_is_not_reversed() -> None:
    verdict = decide(rec(104, ["enter A", "enter B", "exit A", "exit B"]), rec(53))
    assert verdict.outcome == "partly holds"
    assert outcomes(verdict)[ORDER] == "misses" and outcomes(verdict)[EXTRA] == "clears"


def test_partly_holds_when_setups_overlap() -> None:
    verdict = decide(rec(55, IN_ORDER, wall=50, summed=100), rec(53))
    assert verdict.outcome == "partly holds"
    assert outcomes(verdict)[EXTRA] == "misses" and outcomes(verdict)[WALL] == "misses"


def test_does_not_hold_when_out_of_order_and_overlapped() -> None:
    verdict = decide(rec(55, ["enter B", "enter A", "exit A", "exit B"], wall=50, summed=100), rec(53))
    assert verdict.outcome == "does not hold"


def test_the_server_clock_catches_an_overlap_latency_misses() -> None:
    # Latency looks sequential, but the setups' wall time is only 0.6 of their sum.
    verdict = decide(rec(104, IN_ORDER, wall=60, summed=100), rec(53))
    assert verdict.outcome == "partly holds" and outcomes(verdict)[WALL] == "misses"


def test_inconclusive_when_the_server_is_saturated() -> None:
    # One setup already takes 3x setup_ms: latency is queueing, not the setups.
    verdict = decide(rec(260, IN_ORDER), rec(150))
    assert verdict.outcome == "inconclusive" and verdict.headline.startswith("control did not clear")


def test_inconclusive_while_the_latency_interval_straddles() -> None:
    verdict = decide(rec(80, IN_ORDER), rec(52), jitter=(0.5, 1.0, 2.0))
    assert verdict.outcome == "inconclusive"
    extra = next(c for c in verdict.checks if c["name"] == EXTRA)
    assert extra["outcome"] == "inconclusive" and extra["low"] < 25 < extra["high"]


def test_threshold_follows_the_knob() -> None:
    assert decide(rec(210, IN_ORDER), rec(105), setup_ms=100).outcome == "holds"
    slow_knob = decide(rec(120, IN_ORDER), rec(105), setup_ms=100)
    assert outcomes(slow_knob)[EXTRA] == "misses" and slow_knob.outcome == "partly holds"


def test_inconclusive_without_a_recorded_order() -> None:
    unrecorded = decide(rec(104), rec(53))
    assert unrecorded.outcome == "inconclusive" and "two-deps" in unrecorded.headline
    assert decide(rec(104, IN_ORDER), {"status": "failed"}).outcome == "inconclusive"


def get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return json.loads(resp.read())


@pytest.mark.slow
def test_app_records_declared_order_and_sequential_setups(db: Database, tmp_path: Path) -> None:
    variant = PAIR.variant("two-deps")
    server, port = runner.start_server(PAIR, variant, PAIR.knobs, db, tmp_path, Scenario(name="test", rows=1000))
    try:
        for item_id in (1, 2, 3):
            assert get(port, f"/two-deps/items/{item_id}")["id"] == item_id
        counters = runner.read_counters(port)
    finally:
        server.stop()
    assert counters is not None
    assert counters["order"] == IN_ORDER
    assert counters["requests"] == counters["setups_A"] == counters["exits_A"] == counters["exits_B"] == 3
    # One request at a time, so wall time equals summed time only if the setups ran one after another.
    assert counters["setup_wall_ms"] >= 0.95 * counters["setup_sum_ms"]
    assert counters["setup_sum_ms"] >= 0.95 * 3 * 2 * PAIR.knobs["setup_ms"]  # the loop clock may wake a bit early
