"""The shared verdict vocabulary: outcomes from intervals, and prose from the same checks."""

from __future__ import annotations

from typing import Any

import pytest

from apps.blocking import pair as blocking_pair
from harness import checks
from harness.checks import P50, THROUGHPUT, Check, Level, Part, Ratio, Rule, Total
from harness.pairs import ROOT, discover
from harness.store import read_json
from tests.conftest import blocks_of


def blocks(*ratios: float) -> list[dict[str, Any]]:
    """Blocks in which variant b serves `ratio` times variant a's throughput."""
    return [{"a": {"status": "ok", "rps": 100.0}, "b": {"status": "ok", "rps": 100.0 * r}} for r in ratios]


FASTER = Check(Ratio(THROUGHPUT, "b", "a"), ">=", 1.5)


def judged(check: Check, found: list[dict[str, Any]], records: dict[str, Any] | None = None) -> checks.Judged:
    return check.judge(found, records or {}, 0.95)


def test_a_check_clears_misses_shows_no_difference_or_stays_open_by_its_interval() -> None:
    assert judged(FASTER, blocks(2.0, 2.1, 1.9)).outcome == "clears"
    assert judged(FASTER, blocks(1.2, 1.25, 1.15)).outcome == "misses"
    assert judged(FASTER, blocks(1.0, 1.01, 0.99)).outcome == "no measurable difference"
    assert judged(FASTER, blocks(1.0, 2.0, 3.0)).outcome == "inconclusive"
    # One block: a value but no interval, so nothing is decided on it.
    one = judged(FASTER, blocks(5.0))
    assert one.outcome == "inconclusive" and one.estimate.value == 5.0 and "one block" in one.why_open()
    assert judged(FASTER, []).outcome == "not measured"


def test_at_most_checks_and_levels_read_the_other_way() -> None:
    cheaper = Check(Ratio(THROUGHPUT, "b", "a"), "<=", 0.8)
    assert judged(cheaper, blocks(0.5, 0.55, 0.45)).outcome == "clears"
    assert judged(cheaper, blocks(0.88, 0.9, 0.86)).outcome == "misses"
    assert judged(cheaper, blocks(0.99, 1.0, 1.01)).outcome == "no measurable difference"
    level = Check(Level(THROUGHPUT, "b"), ">=", 120.0)
    assert judged(level, blocks(2.0, 2.1, 1.9)).outcome == "clears"


def test_totals_are_exact_and_thin_percentiles_cannot_decide() -> None:
    total = Check(Total(checks.counter("calls", "calls per request", per="requests"), "a"), "<=", 1.0)
    record = {"status": "ok", "counters": {"calls": 1000, "requests": 1000}}
    assert judged(total, [], {"a": record}).outcome == "clears"
    assert judged(total, [], {"a": record | {"counters": {"calls": 2000, "requests": 1000}}}).outcome == "misses"
    thin = Check(Ratio(checks.P99, "b", "a"), ">=", 1.5)
    few = [
        {"a": {"status": "ok", "p99_ms": 10.0, "requests": 200}, "b": {"status": "ok", "p99_ms": 30.0, "requests": 200}}
    ] * 3
    found = judged(thin, few)
    assert found.outcome == "inconclusive" and "200 requests" in (found.estimate.thin or "")


def test_the_ladder_climbs_from_the_parts() -> None:
    rule = Rule(
        parts=(
            Part("b is faster", (FASTER,)),
            Part("c is faster", (Check(Ratio(THROUGHPUT, "c", "a"), ">=", 1.5),)),
        )
    )

    def outcome(b: float, c: float, spread: tuple[float, ...] = (0.98, 1.0, 1.02)) -> str:
        found = [{"a": {"status": "ok", "rps": 100.0}, "b": {"status": "ok", "rps": 100 * b * f},
                  "c": {"status": "ok", "rps": 100 * c / f}} for f in spread]  # fmt: skip
        return checks.evaluate(rule, {}, found, 0.95).verdict.outcome

    assert outcome(3.0, 3.0) == "holds"
    assert outcome(3.0, 1.2) == "partly holds"
    assert outcome(1.2, 1.2) == "does not hold"
    assert outcome(3.0, 1.5, spread=(0.5, 1.0, 2.0)) == "inconclusive"


def test_an_open_part_that_cannot_move_the_outcome_leaves_it_decided() -> None:
    """One part clears and one misses: the third, still open, can only make it partly hold,
    so the verdict is partly holds and no further block is asked for. An open part beside
    parts that all clear, or all miss, could still move the outcome: inconclusive."""
    rule = Rule(parts=tuple(Part(f"{v} is faster", (Check(Ratio(THROUGHPUT, v, "a"), ">=", 1.5),)) for v in "bcd"))

    def decision(b: float, c: float, d: float) -> checks.Decision:
        spread, wide = (0.98, 1.0, 1.02), (0.5, 1.0, 2.0)  # d's blocks straddle 1.5x
        found = [{"a": {"status": "ok", "rps": 100.0}, "b": {"status": "ok", "rps": 100 * b * f},
                  "c": {"status": "ok", "rps": 100 * c / f}, "d": {"status": "ok", "rps": 100 * d * w}}
                 for f, w in zip(spread, wide, strict=True)]  # fmt: skip
        return checks.evaluate(rule, {}, found, 0.95)

    decided = decision(3.0, 1.2, 1.5)
    assert decided.verdict.outcome == "partly holds" and decided.undecided == []
    assert [j.outcome for j in decided.judged] == ["clears", "misses", "inconclusive"]
    for b, c in ((3.0, 3.0), (1.2, 1.2)):
        still = decision(b, c, 1.5)
        assert still.verdict.outcome == "inconclusive"
        assert [j.check.name for j in still.undecided] == [decided.judged[2].check.name]


def test_changing_a_threshold_changes_both_the_outcome_and_the_prose(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule's wording comes from its checks: one constant moves both."""
    pair = discover()["blocking"]
    lag = {"loop_lag_p99_ms": 300.0, "ping_p99_ms": 300.0, "failure_rate": 0.0}
    records = {
        "async-blocking": {"status": "ok", "rps": 50.0} | lag,
        "async-to-thread": {"status": "ok", "rps": 150.0, "loop_lag_p99_ms": 3.0, "ping_p99_ms": 3.0},
        "sync-def": {"status": "ok", "rps": 500.0, "loop_lag_p99_ms": 3.0, "ping_p99_ms": 3.0},
    }
    before_prose = pair.how_decided({})
    assert pair.decide(records, {}, blocks_of(records)).outcome == "holds"  # 3x >= 1.5x
    monkeypatch.setattr(blocking_pair, "FIX_FACTOR", 5.0)
    after_prose = pair.how_decided({})
    assert pair.decide(records, {}, blocks_of(records)).outcome == "partly holds"  # 3x < 5x
    assert "at least 1.50x" in before_prose and "at least 5.00x" in after_prose


def test_every_ratio_threshold_lies_outside_the_stored_noise_floor() -> None:
    """The A/A control of the newest stored default run: no rule may set a ratio
    threshold that identical variants can reach on the same figure."""
    runs = sorted(p for p in (ROOT / "results").glob("*-default") if (p / "summary.json").is_file())
    assert runs, "no stored default run"
    control = read_json(runs[-1] / "summary.json")["verdicts"].get("control")
    assert control, f"{runs[-1].name} has no A/A control"
    floors = checks.ratio_floors([*control["checks"], *(control.get("shown") or [])])
    assert {"server_CPU_per_request", "throughput", "p50", "p99"} <= set(floors), sorted(floors)
    inside = [
        (pair.name, check.figure.metric.label, check.threshold, checks.floor_of(check, floors))
        for pair in discover().values()
        if pair.rule is not None and pair.name != "control"
        for check in pair.rule(pair.knobs).checks
        if checks.inside_floor(check, floors)
    ]
    assert not inside, f"thresholds inside the A/A floor of {runs[-1].name}: {inside}"


def test_a_threshold_is_read_against_its_own_figures_floor_or_the_widest() -> None:
    p50 = Check(Ratio(P50, "b", "a"), "<=", 0.85)
    lag = Check(Ratio(checks.LOOP_LAG, "b", "a"), "<=", 0.85)
    floors = {"p50": (0.95, 1.05), "p99": (0.84, 1.01)}
    assert checks.floor_of(p50, floors) == (0.95, 1.05) and not checks.inside_floor(p50, floors)
    assert checks.floor_of(lag, floors) == (0.84, 1.05) and checks.inside_floor(lag, floors)  # not measured: widest
    stored = [{"name": "p50_ratio_copy-a_copy-b", "unit": "x", "low": 0.95, "high": 1.05},
              {"name": "p99_ratio_copy-a_copy-b", "unit": "x", "low": 0.84, "high": 1.01},
              {"name": "failure_rate_total_copy-a", "unit": "%", "low": 0.0, "high": 1.0}]  # fmt: skip
    assert checks.ratio_floors(stored) == floors
    assert checks.floor_of(p50, {}) is None


def test_only_an_open_verdict_asks_for_more_blocks() -> None:
    """A straddling check inside a part another check clearly misses cannot change the
    verdict, so it asks for no more blocks; the same check alone does."""
    straddling = Check(Ratio(THROUGHPUT, "c", "a"), ">=", 1.5)
    found = [{"a": {"status": "ok", "rps": 100.0}, "b": {"status": "ok", "rps": 100.0 * f},
              "c": {"status": "ok", "rps": 150.0 * f * f}} for f in (0.6, 1.0, 1.6)]  # fmt: skip
    missed = Check(Ratio(THROUGHPUT, "b", "a"), ">=", 5.0)
    closed = checks.evaluate(Rule(parts=(Part("both", (missed, straddling)),)), {}, found, 0.95)
    assert closed.verdict.outcome == "does not hold" and closed.undecided == []
    open_ = checks.evaluate(Rule(parts=(Part("c alone", (straddling,)),)), {}, found, 0.95)
    assert open_.verdict.outcome == "inconclusive" and len(open_.undecided) == 1
