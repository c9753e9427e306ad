"""The `cleanup` pair (C5): its verdict rule on fixture records, and the app's cleanup
counters on a real server: when a teardown runs and whether it runs at all."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from harness import database, runner
from harness.database import Database
from harness.pairs import discover
from harness.scenario import Scenario
from tests.conftest import blocks_of

PAIR = discover()["cleanup"]
KNOBS = dict(PAIR.knobs)


def counters(setups: int, cleanups: int | None = None, raised: int = 0, after_ms: float = 0.0) -> dict[str, Any]:
    done = setups if cleanups is None else cleanups
    return {
        "setups": setups,
        "cleanups": done,
        "hold_count": done,
        "hold_ms": 205.0 * done,
        "held_after_response_ms": after_ms * done,
        "wait_ms": 10.0 * setups,
        "raised": raised,
        "errors_seen": raised,
    }


def rec(
    p50: float = 200,
    failure_rate: float = 0.0,
    counted: dict[str, Any] | None = None,
    settled: int = 0,
    status: str = "ok",
) -> dict[str, Any]:
    return {
        "status": status,
        "p50_ms": p50,
        "failure_rate": failure_rate,
        "counters": counted,
        "baseline_connections": 0,
        "settled_connections": settled,
    }


def decide(
    raising: dict[str, Any] | None = None,
    no_finally: dict[str, Any] | None = None,
    request: dict[str, Any] | None = None,
    function: dict[str, Any] | None = None,
) -> Any:
    records = {
        "raises": raising or rec(counted=counters(2323, raised=2323)),
        "raises-no-finally": no_finally or rec(p50=2000, failure_rate=1.0, counted=counters(80, 0, raised=80)),
        "request-scope": request or rec(p50=130, counted=counters(3808, after_ms=200)),
        "function-scope": function or rec(p50=200, counted=counters(2363)),
    }
    return PAIR.decide(records, KNOBS, blocks_of(records))


def outcomes(verdict: Any) -> dict[str, str]:
    return {check["name"]: check["outcome"] for check in verdict.checks}


RAISES_LOST = "connections_never_returned_total_raises"
RAISES_LEFT = "backends_left_after_the_server_stopped_total_raises"


def test_holds_when_every_teardown_ran_on_the_error_path() -> None:
    verdict = decide()
    assert verdict.outcome == "holds"
    assert verdict.figures[RAISES_LOST] == 0 and verdict.figures[RAISES_LEFT] == 0
    assert verdict.figures["connections_never_returned_total_raises-no-finally"] == 80
    assert verdict.figures["time_held_after_the_response_total_request-scope"] == 200
    assert verdict.figures["p50_difference_function-scope_request-scope"] == pytest.approx(70)


def test_partly_holds_when_teardowns_go_missing_only_on_the_error_path() -> None:
    verdict = decide(raising=rec(counted=counters(2323, 2300, raised=2323)))
    assert verdict.outcome == "partly holds"
    assert verdict.figures[RAISES_LOST] == 23 and outcomes(verdict)[RAISES_LOST] == "misses"
    assert outcomes(verdict)["connections_never_returned_total_request-scope"] == "clears"


def test_does_not_hold_when_teardowns_go_missing_everywhere() -> None:
    verdict = decide(
        raising=rec(counted=counters(2323, 2300, raised=2323)),
        request=rec(p50=130, counted=counters(3808, 3790)),
    )
    assert verdict.outcome == "does not hold"


def test_partly_holds_when_backends_stay_open_after_the_run() -> None:
    verdict = decide(raising=rec(counted=counters(2323, raised=2323), settled=3))
    assert verdict.outcome == "partly holds"
    assert verdict.figures[RAISES_LEFT] == 3 and outcomes(verdict)[RAISES_LOST] == "clears"


def test_backends_the_runner_had_to_end_count_as_not_returned() -> None:
    raising = rec(counted=counters(2323, raised=2323))
    raising["terminated_backends"] = 2
    verdict = decide(raising=raising)
    assert verdict.outcome == "partly holds" and verdict.figures[RAISES_LEFT] == 2


def test_partly_holds_when_a_non_raising_variant_loses_teardowns() -> None:
    verdict = decide(request=rec(p50=130, counted=counters(3808, 3790)))
    assert verdict.outcome == "partly holds"
    assert outcomes(verdict)["connections_never_returned_total_request-scope"] == "misses"


def test_inconclusive_without_the_error_path_or_the_counters() -> None:
    unexercised = decide(raising=rec(counted=counters(2323, raised=0)))
    assert unexercised.outcome == "inconclusive" and unexercised.headline.startswith("control did not clear")
    assert decide(function=rec(counted=None)).outcome == "inconclusive"
    missing = decide(no_finally=rec(status="failed"))
    assert missing.outcome == "inconclusive" and "raises-no-finally" in missing.headline


def test_inconclusive_when_the_counters_miss_a_skipped_teardown() -> None:
    # The contrast: if the variant without `finally` counted its teardowns, the counters prove nothing.
    verdict = decide(no_finally=rec(p50=2000, failure_rate=1.0, counted=counters(80, raised=80)))
    assert verdict.outcome == "inconclusive"
    assert outcomes(verdict)["teardowns_per_checked-out_connection_total_raises-no-finally"] == "misses"


# --- the app's counters on a real server --------------------------------------------------

TEST_KNOBS = KNOBS | {"teardown_ms": 300, "pool_size": 4}


def get_json(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        assert resp.status == 200
        return json.loads(resp.read())


@pytest.mark.slow
def test_teardown_counts_and_timing_per_variant(db: Database, tmp_path: Path) -> None:
    scenario = Scenario(name="test", rows=1000)
    seen: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for variant in PAIR.variants:
        folder = tmp_path / variant.name
        folder.mkdir()
        server, port = runner.start_server(PAIR, variant, TEST_KNOBS, db, folder, scenario)
        try:
            for item_id in (1, 2, 3):
                assert get_json(port, variant.path.format(id=item_id)) == database.fetch_row(db, item_id)
            # Read right after the third response: a request-scoped teardown (300 ms) is still running.
            right_after = get_json(port, "/counters")
            drained = runner.read_counters(port, PAIR.drain_s(TEST_KNOBS))
        finally:
            server.stop()
        assert drained is not None
        seen[variant.name] = (right_after, drained)

    right_after, drained = seen["raises"]
    # Every raise passed through the dependency and its `finally` ran, before the response.
    assert drained["raised"] == drained["errors_seen"] == drained["setups"] == drained["cleanups"] == 3
    assert right_after["cleanups"] == 3 and drained["held_after_response_ms"] < 50

    right_after, drained = seen["request-scope"]
    assert right_after.get("cleanups", 0) < 3 and drained["cleanups"] == drained["setups"] == 3
    assert drained["held_after_response_ms"] / drained["hold_count"] >= 250  # ~teardown_ms after the response

    right_after, drained = seen["function-scope"]
    assert right_after["cleanups"] == drained["cleanups"] == drained["setups"] == 3
    assert drained["held_after_response_ms"] < 50

    _, drained = seen["raises-no-finally"]
    assert drained["setups"] == drained["raised"] == 3 and drained.get("cleanups", 0) == 0
