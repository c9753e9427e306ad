"""The background pair (C13): its verdict rule on fixture records."""

from __future__ import annotations

from typing import Any

from harness.pairs import discover

PAIR = discover()["background"]


def rec(p50: float, held: float = 105.0, after: float = 0.2, wait: float = 0.1, rps: float = 400) -> dict[str, Any]:
    holds = 100
    return {
        "status": "ok",
        "p50_ms": p50,
        "rps": rps,
        "server_rss_mb_peak": 80.0,
        "server_rss_slope_mb_per_min": 0.1,
        "counters": {
            "holds": holds,
            "held_ms": holds * held,
            "held_after_return_ms": holds * after,
            "acquire_wait_ms": holds * wait,
        },
    }


def decide(
    inline: dict[str, Any], background: dict[str, Any], unheld: dict[str, Any] | None = None, work_ms: int = 100
) -> Any:
    records = {"inline": inline, "background": background}
    if unheld is not None:
        records["background-function-scope"] = unheld
    return PAIR.decide(records, {"work_ms": work_ms, "pool_size": 60})


def test_holds_when_work_leaves_the_response_and_the_connection_is_held_through_it() -> None:
    # The request-scoped hold runs the pool dry: background p50 is pool wait, while the
    # function-scope variant shows the task itself runs after the response.
    verdict = decide(rec(110), rec(88, held=104, after=100, wait=85, rps=500), rec(4, held=2, after=-0.1))
    assert verdict.outcome == "holds"
    assert "(background-function-scope) took client p50 from 110.0 ms to 4.0 ms" in verdict.text
    assert "100.0 ms of it after the endpoint returned" in verdict.text and "waited 85.0 ms" in verdict.text


def test_judges_with_the_background_variant_when_the_reference_is_not_measured() -> None:
    verdict = decide(rec(104), rec(4, held=104, after=100))
    assert verdict.outcome == "holds" and "(background)" in verdict.text
    assert decide(rec(104), rec(4, after=100), {"status": "failed"}).outcome == "holds"


def test_does_not_hold_when_latency_matches_inline_and_nothing_is_held() -> None:
    # As if tasks were awaited before the response and teardown ran right after it.
    assert decide(rec(104), rec(100, after=0.2), rec(101, after=0.1)).outcome == "does not hold"


def test_partly_holds_when_the_work_leaves_but_the_connection_is_not_held() -> None:
    verdict = decide(rec(104), rec(4, held=3, after=0.1), rec(4))
    assert verdict.outcome == "partly holds" and "the work left the response path" in verdict.text


def test_partly_holds_when_the_connection_is_held_but_latency_does_not_drop() -> None:
    verdict = decide(rec(104), rec(100, after=100), rec(100))
    assert verdict.outcome == "partly holds" and "held the connection" in verdict.text


def test_gain_is_measured_in_units_of_the_knob() -> None:
    assert decide(rec(204), rec(104, after=200), work_ms=200).outcome == "partly holds"
    assert decide(rec(204), rec(4, after=200), work_ms=200).figures["gain_share_of_work"] == 1.0


def test_inconclusive_when_a_variant_is_missing() -> None:
    assert decide(rec(104), {"status": "failed"}).outcome == "inconclusive"
