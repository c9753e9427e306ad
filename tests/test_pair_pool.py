"""The pool pair (C12): its verdict rule on fixture records."""

from __future__ import annotations

from typing import Any

from harness.pairs import discover

PAIR = discover()["pool"]


def rec(rps: float, p50: float, new_backends: float | None = 0.0, status: str = "ok") -> dict[str, Any]:
    return {"status": status, "rps": rps, "p50_ms": p50, "new_backends_per_s": new_backends}


def decide(connect: dict[str, Any], pooled: dict[str, Any]) -> Any:
    return PAIR.decide({"connect-per-request": connect, "lifespan-pool": pooled}, {"pool_size": 10})


def test_holds_when_the_pool_serves_far_more_at_a_lower_median() -> None:
    # The figures of a quick trial run on 2 cores.
    verdict = decide(rec(212, 200, new_backends=240.7), rec(1392, 22))
    assert verdict.outcome == "holds"
    assert "6.57x the throughput" in verdict.text and "0.0 vs 240.7 new backends per second" in verdict.text
    assert verdict.headline == "6.57x throughput, p50 22.0 ms vs 200.0 ms"


def test_does_not_hold_when_connecting_costs_nothing_measurable() -> None:
    # As on a server where connections are cheap (e.g. trust auth, a pooler in front).
    verdict = decide(rec(1000, 20, new_backends=1000), rec(1050, 19.5))
    assert verdict.outcome == "does not hold" and "1.05x" in verdict.text


def test_does_not_hold_when_the_pool_is_slower() -> None:
    assert decide(rec(1000, 20), rec(700, 30)).outcome == "does not hold"


def test_partly_holds_on_a_modest_gain() -> None:
    verdict = decide(rec(1000, 20), rec(1300, 16))
    assert verdict.outcome == "partly holds" and "less than the claim suggests" in verdict.text


def test_throughput_alone_does_not_make_it_hold() -> None:
    # 2x the throughput but the same median: not the latency cost the claim is about.
    assert decide(rec(500, 20), rec(1000, 19)).outcome == "partly holds"


def test_missing_backend_counts_are_shown_as_na() -> None:
    verdict = decide(rec(212, 200, new_backends=None), rec(1392, 22, new_backends=None))
    assert verdict.outcome == "holds" and "n/a vs n/a new backends" in verdict.text


def test_inconclusive_when_a_variant_failed() -> None:
    verdict = decide(rec(212, 200), rec(0, 0, status="failed"))
    assert verdict.outcome == "inconclusive" and "lifespan-pool" in verdict.text
