"""The pool pair (C12): its verdict rule on fixture records."""

from __future__ import annotations

from typing import Any

import pytest

from harness.pairs import discover
from tests.conftest import blocks_of

PAIR = discover()["pool"]
RPS = "throughput_ratio_lifespan-pool_connect-per-request"
P50 = "p50_ratio_lifespan-pool_connect-per-request"


def rec(rps: float, p50: float, new_backends: float | None = 0.0, status: str = "ok") -> dict[str, Any]:
    return {"status": status, "rps": rps, "p50_ms": p50, "new_backends_per_s": new_backends}


def decide(connect: dict[str, Any], pooled: dict[str, Any], jitter: tuple[float, ...] = (0.97, 1.0, 1.03)) -> Any:
    records = {"connect-per-request": connect, "lifespan-pool": pooled}
    return PAIR.decide(records, PAIR.knobs, blocks_of(records, jitter))


def outcomes(verdict: Any) -> dict[str, str]:
    return {check["name"]: check["outcome"] for check in verdict.checks}


def test_holds_when_the_pool_serves_far_more_at_a_lower_median() -> None:
    # The figures of a quick trial run on 2 cores.
    verdict = decide(rec(212, 200, new_backends=240.7), rec(1392, 22))
    assert verdict.outcome == "holds"
    assert verdict.figures[RPS] == pytest.approx(1392 / 212) and verdict.figures[P50] == pytest.approx(22 / 200)
    assert verdict.figures["new_backends_per_second_level_connect-per-request"] == pytest.approx(240.7)
    assert verdict.figures["new_backends_per_second_level_lifespan-pool"] == 0.0


def test_does_not_hold_when_connecting_costs_nothing_measurable() -> None:
    # As on a server where connections are cheap (e.g. trust auth, a pooler in front).
    verdict = decide(rec(1000, 20, new_backends=1000), rec(1050, 19.5), jitter=(0.99, 1.0, 1.01))
    assert verdict.outcome == "does not hold" and verdict.text.startswith("Does not hold: no measurable difference")
    assert set(outcomes(verdict).values()) == {"no measurable difference"}


def test_does_not_hold_when_the_pool_is_slower() -> None:
    verdict = decide(rec(1000, 20), rec(700, 30))
    assert verdict.outcome == "does not hold" and set(outcomes(verdict).values()) == {"misses"}


def test_does_not_hold_on_a_modest_gain() -> None:
    # 1.2x the throughput and 0.85x the median: the pool helped, but connecting was not costly.
    verdict = decide(rec(1000, 20), rec(1200, 17))
    assert verdict.outcome == "does not hold"
    assert verdict.figures[RPS] == pytest.approx(1.2)


def test_throughput_alone_does_not_make_it_hold() -> None:
    # 2x the throughput but the same median: not the latency cost the claim is about.
    verdict = decide(rec(500, 20), rec(1000, 19))
    assert verdict.outcome == "partly holds"
    assert outcomes(verdict) == {RPS: "clears", P50: "misses"}


def test_inconclusive_while_an_interval_straddles() -> None:
    verdict = decide(rec(1000, 20), rec(1500, 13), jitter=(0.5, 1.0, 2.0))
    assert verdict.outcome == "inconclusive"
    rps = next(c for c in verdict.checks if c["name"] == RPS)
    assert rps["outcome"] == "inconclusive" and rps["low"] < 1.5 < rps["high"]


def test_missing_backend_counts_do_not_decide() -> None:
    verdict = decide(rec(212, 200, new_backends=None), rec(1392, 22, new_backends=None))
    assert verdict.outcome == "holds"
    assert "new_backends_per_second_level_connect-per-request" not in verdict.figures


def test_inconclusive_when_a_variant_failed() -> None:
    verdict = decide(rec(212, 200), rec(0, 0, status="failed"))
    assert verdict.outcome == "inconclusive" and "lifespan-pool" in verdict.headline
