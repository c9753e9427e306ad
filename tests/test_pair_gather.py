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
from harness.pairs import Verdict, discover
from harness.scenario import Scenario
from tests.conftest import blocks_of

PAIR = discover()["gather"]


def rec(p50: float, rps: float = 50, failure_rate: float = 0.0, status: str = "ok") -> dict[str, Any]:
    return {"status": status, "p50_ms": p50, "rps": rps, "failure_rate": failure_rate, "requests": 300}


def decide(sequential: dict[str, Any], gathered: dict[str, Any], jitter: tuple[float, ...] | None = None) -> Verdict:
    records = {"sequential": sequential, "gather": gathered}
    blocks = blocks_of(records) if jitter is None else blocks_of(records, jitter)
    return PAIR.decide(records, PAIR.knobs, blocks)


def part_outcomes(verdict: Verdict) -> list[str]:
    # After the two failure checks of the control: the p50 share against 0.85x, then 0.6x.
    return [check["outcome"] for check in verdict.checks[2:]]


def test_holds_when_gather_waits_for_one_call_instead_of_three() -> None:
    # The figures of a default run at 5 users.
    verdict = decide(rec(160, rps=31), rec(57, rps=85))
    assert verdict.outcome == "holds" and part_outcomes(verdict) == ["clears", "clears"]
    assert verdict.figures["p50_ratio_gather_sequential"] == pytest.approx(57 / 160, rel=0.03)
    assert verdict.headline.startswith("p50 `gather` / `sequential` 0.36x")
    assert verdict.headline.count("p50 `gather` / `sequential`") == 1  # two parts, one figure: quoted once


def test_partly_holds_when_the_client_eats_most_of_the_overlap() -> None:
    # When the client has too little CPU to spare, the overlap shrinks.
    verdict = decide(rec(160, rps=53), rec(115, rps=61))
    assert verdict.outcome == "partly holds" and part_outcomes(verdict) == ["clears", "misses"]


def test_does_not_hold_when_the_calls_do_not_overlap() -> None:
    # E.g. a client with one connection: gathered calls queue behind each other.
    verdict = decide(rec(160), rec(155))
    assert verdict.outcome == "does not hold" and part_outcomes(verdict) == ["misses", "misses"]
    # On a quiet machine the interval fits inside +-10%: no measurable difference.
    verdict = decide(rec(160), rec(158), jitter=(0.99, 1.0, 1.01))
    assert verdict.outcome == "does not hold"
    assert part_outcomes(verdict) == ["no measurable difference", "no measurable difference"]


def test_inconclusive_while_the_share_straddles_a_threshold() -> None:
    verdict = decide(rec(160), rec(96), jitter=(0.5, 1.0, 2.0))
    assert verdict.outcome == "inconclusive" and "inconclusive" in part_outcomes(verdict)


def test_no_verdict_on_failed_requests() -> None:
    # Failed calls are fast: without this control, a dead upstream would make gather "win".
    verdict = decide(rec(160), rec(21, rps=200, failure_rate=1.0))
    assert verdict.outcome == "inconclusive"
    assert [check["outcome"] for check in verdict.checks[:2]] == ["clears", "misses"]


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
