"""The `orm_cost` pair (C18): its verdict rule on fixture records (its variants verify
against the real database in test_variants)."""

from __future__ import annotations

from typing import Any

import pytest

from apps.orm_cost.pair import ORM_COST
from harness.pairs import discover
from tests.conftest import blocks_of, cpu_jitter

PAIR = discover()["orm_cost"]
ASYNC = "server_CPU_per_request_ratio_orm-async_raw-asyncpg"
SYNC = "server_CPU_per_request_ratio_orm-sync_raw-psycopg"


def rec(ms_per_request: float, rps: float = 1000) -> dict[str, Any]:
    # CPU % of one core = ms per request x requests per second / 10.
    return {"status": "ok", "rps": rps, "server_cpu_pct": ms_per_request * rps / 10}


def decide(orm_async: float, orm_sync: float, jitter: tuple[float, ...] = (0.99, 1.0, 1.01, 1.0)) -> Any:
    records = {"raw-asyncpg": rec(1.0), "orm-async": rec(orm_async), "raw-psycopg": rec(1.2), "orm-sync": rec(orm_sync)}
    return PAIR.decide(records, PAIR.knobs, cpu_jitter(blocks_of(records), jitter))


def outcomes(verdict: Any) -> dict[str, str]:
    return {check["name"]: check["outcome"] for check in verdict.checks}


def test_holds_when_both_orms_cost_more_cpu_per_request() -> None:
    verdict = decide(orm_async=1.9, orm_sync=1.8)
    assert verdict.outcome == "holds"
    assert verdict.figures[ASYNC] == pytest.approx(1.9, rel=0.05) and verdict.figures[SYNC] == pytest.approx(
        1.5, rel=0.05
    )


def test_partly_holds_when_only_the_async_orm_costs() -> None:
    verdict = decide(orm_async=1.9, orm_sync=1.25)
    assert verdict.outcome == "partly holds"
    assert outcomes(verdict)[SYNC] == "no measurable difference"


def test_does_not_hold_when_neither_costs_measurably() -> None:
    verdict = decide(orm_async=1.02, orm_sync=1.22)
    assert verdict.outcome == "does not hold" and verdict.text.startswith("Does not hold: no measurable difference")


def test_inconclusive_while_noise_straddles_the_threshold() -> None:
    verdict = decide(orm_async=ORM_COST, orm_sync=1.8, jitter=(0.7, 1.0, 1.4, 1.0))
    assert verdict.outcome == "inconclusive"
