"""The gather pair (C14): its verdict rule on fixture records, and the calls each
variant makes."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from harness import runner
from harness.database import Database
from harness.pairs import discover
from harness.scenario import Scenario

PAIR = discover()["gather"]


def rec(p50: float, rps: float = 50, failure_rate: float = 0.0, status: str = "ok") -> dict[str, Any]:
    return {"status": status, "p50_ms": p50, "rps": rps, "failure_rate": failure_rate}


def decide(sequential: dict[str, Any], gathered: dict[str, Any], upstream_ms: int = 50) -> Any:
    return PAIR.decide({"sequential": sequential, "gather": gathered}, {"upstream_ms": upstream_ms})


def test_holds_when_gather_waits_for_one_call_instead_of_three() -> None:
    # The figures of a quick trial run at 5 users.
    verdict = decide(rec(170, rps=26.6), rec(79, rps=50.5))
    assert verdict.outcome == "holds"
    assert "floor 150 ms" in verdict.text and "floor 50 ms" in verdict.text and "0.46x the latency" in verdict.text
    assert verdict.headline == "p50 79 ms vs 170 ms (0.46x)"


def test_partly_holds_when_the_client_eats_most_of_the_overlap() -> None:
    # When the client has too little CPU to spare, the overlap shrinks.
    verdict = decide(rec(160, rps=53), rec(120, rps=61))
    assert verdict.outcome == "partly holds"


def test_does_not_hold_when_the_calls_do_not_overlap() -> None:
    # E.g. a client with one connection: gathered calls queue behind each other.
    assert decide(rec(160), rec(155)).outcome == "does not hold"


def test_floors_follow_the_knob() -> None:
    verdict = decide(rec(330), rec(115), upstream_ms=100)
    assert verdict.outcome == "holds" and verdict.figures["sequential_floor_ms"] == 300


def test_no_verdict_on_failed_requests() -> None:
    # Failed calls are fast: without this rule, a dead upstream would make gather "win".
    verdict = decide(rec(160), rec(21, rps=200, failure_rate=1.0))
    assert verdict.outcome == "inconclusive" and "gather failed 100.0%" in verdict.text


def test_inconclusive_when_a_variant_is_missing() -> None:
    assert decide(rec(160), rec(0, status="failed")).outcome == "inconclusive"


def get_json(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return json.loads(resp.read())


@pytest.mark.slow
def test_three_calls_per_request_and_their_waits_add_up_only_in_sequence(db: Database, tmp_path: Path) -> None:
    knobs = {"upstream_ms": 200}
    took: dict[str, list[float]] = {}
    for variant in PAIR.variants:
        folder = tmp_path / variant.name
        folder.mkdir()
        server, port = runner.start_server(PAIR, variant, knobs, db, folder, Scenario(name="test", rows=1000))
        try:
            took[variant.name] = []
            for item in (1, 2):
                started = time.monotonic()
                assert get_json(port, variant.path.format(id=item))["id"] == item
                took[variant.name].append(time.monotonic() - started)
            assert get_json(port, "/counters") == {"upstream_calls": 6}
        finally:
            server.stop()
    assert min(took["sequential"]) >= 0.6  # 3 x 200 ms, one after another
    assert max(took["gather"]) < 0.5  # 200 ms once, with room for a slow machine
