"""The background pair (C13): its verdict rule on fixture blocks, and when the follow-up
runs on a real server."""

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

PAIR = discover()["background"]
UNHELD = "background-function-scope"


def rec(
    p50: float,
    held: float = 105.0,
    after: float = 0.2,
    wait: float = 0.1,
    rps: float = 400,
    after_response: int = 100,
) -> dict[str, Any]:
    holds = 100
    return {
        "status": "ok",
        "p50_ms": p50,
        "rps": rps,
        "server_rss_mb_peak": 80.0,
        "counters": {
            "holds": holds,
            "held_ms": holds * held,
            "held_after_return_ms": holds * after,
            "acquire_wait_ms": holds * wait,
            "follow_ups_started": holds,
            "follow_ups_after_response": after_response,
        },
    }


def decide(
    inline: dict[str, Any],
    background: dict[str, Any],
    unheld: dict[str, Any],
    work_ms: int = 100,
    jitter: tuple[float, ...] | None = None,
) -> Verdict:
    records = {"inline": inline, "background": background, UNHELD: unheld}
    blocks = blocks_of(records) if jitter is None else blocks_of(records, jitter)
    return PAIR.decide(records, PAIR.knobs | {"work_ms": work_ms}, blocks)


INLINE = rec(110, after_response=0)
# The request-scoped hold runs the pool dry: background p50 is pool wait, while the
# function-scope variant shows the client need not wait for the task.
HELD = rec(88, held=104, after=100, wait=85, rps=500)
UNHELD_FAST = rec(4, held=2, after=-0.1)


def test_holds_when_tasks_run_after_the_response_and_the_connection_is_held_through_them() -> None:
    verdict = decide(INLINE, HELD, UNHELD_FAST)
    assert verdict.outcome == "holds"
    assert [check["outcome"] for check in verdict.checks] == ["clears", "clears", "clears"]
    assert verdict.figures["share_of_follow-ups_started_after_the_response_was_sent_total_background"] == 1.0
    assert verdict.figures["p50_difference_inline_background-function-scope"] == pytest.approx(106, rel=0.05)
    # The ledger quotes the BackgroundTasks variant, not the function-scope reference.
    assert verdict.headline.startswith("follow-ups started after the response, `background` 100%")
    assert "connection held after return, `background` 100 ms" in verdict.headline


def test_does_not_hold_when_tasks_run_before_the_response_and_nothing_is_held() -> None:
    # As if tasks were awaited before the response and teardown ran right after it.
    verdict = decide(INLINE, rec(104, after=0.2, after_response=0), rec(105, after=0.1, after_response=0))
    assert verdict.outcome == "does not hold"
    # A 5 ms gain lies inside the +-20 ms band: no measurable difference.
    assert [check["outcome"] for check in verdict.checks] == ["misses", "no measurable difference", "misses"]


def test_no_measurable_difference_in_latency_on_a_quiet_machine() -> None:
    verdict = decide(INLINE, rec(110, after_response=0), rec(108, after_response=0), jitter=(0.99, 1.0, 1.01))
    assert verdict.checks[1]["outcome"] == "no measurable difference"
    assert verdict.outcome == "does not hold"


def test_partly_holds_when_the_work_leaves_but_the_connection_is_not_held() -> None:
    verdict = decide(INLINE, rec(4, held=3, after=0.1), UNHELD_FAST)
    assert verdict.outcome == "partly holds"
    assert verdict.checks[2]["outcome"] == "misses"


def test_partly_holds_when_the_connection_is_held_but_the_client_still_waits() -> None:
    # 40 ms off the response path, of 100: short of 60, outside the band.
    verdict = decide(INLINE, HELD, rec(70))
    assert verdict.outcome == "partly holds"
    assert [check["outcome"] for check in verdict.checks] == ["clears", "misses", "clears"]


def test_gain_and_hold_are_measured_in_units_of_the_knob() -> None:
    # 106 ms off the response path is 1.06 x work_ms at 100 ms, 0.53 x at 200 ms.
    assert decide(INLINE, HELD, UNHELD_FAST, work_ms=200).outcome == "does not hold"
    assert decide(INLINE, HELD, UNHELD_FAST, work_ms=100).outcome == "holds"


def test_inconclusive_while_the_gain_straddles_its_threshold() -> None:
    verdict = decide(INLINE, HELD, rec(30), jitter=(0.5, 1.0, 2.0))
    assert verdict.outcome == "inconclusive" and verdict.checks[1]["outcome"] == "inconclusive"


def test_inconclusive_when_a_variant_is_missing() -> None:
    # Without the function-scope reference the gain cannot be judged free of the pool's queue.
    records = {"inline": INLINE, "background": HELD, UNHELD: {"status": "failed"}}
    verdict = PAIR.decide(records, PAIR.knobs | {"work_ms": 100}, blocks_of(records))
    assert verdict.outcome == "inconclusive" and UNHELD in verdict.headline


def get_json(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return json.loads(resp.read())


@pytest.mark.slow
def test_the_follow_up_starts_after_the_response_only_in_background_tasks(db: Database, tmp_path: Path) -> None:
    knobs = {"work_ms": 300, "pool_size": 2}
    for variant in PAIR.variants:
        folder = tmp_path / variant.name
        folder.mkdir()
        server, port = runner.start_server(PAIR, variant, knobs, db, folder, Scenario(name="test", rows=1000))
        try:
            started = time.monotonic()
            assert get_json(port, variant.path.format(id=7))["id"] == 7
            took = time.monotonic() - started
            time.sleep(0.5)  # the task's 300 ms, after the answer
            counters = get_json(port, "/counters")
        finally:
            server.stop()
        assert counters["follow_ups_started"] == counters["follow_ups"] == 1
        if variant.name == "inline":
            assert took >= 0.3 and "follow_ups_after_response" not in counters
        else:
            assert took < 0.3 and counters["follow_ups_after_response"] == 1
        held_after = counters.get("held_after_return_ms", 0)
        assert held_after >= 250 if variant.name == "background" else held_after < 100
