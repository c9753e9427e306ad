"""Runner pieces that need no load: knobs, ordering, resume checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness import cli, runner
from harness.pairs import BenchError, select
from harness.scenario import Scenario


def plan(seed: int | None, names: list[str] | None = None, **scenario: Any) -> runner.RunPlan:
    pairs = select(names)
    return runner.RunPlan(
        scenario=Scenario(name="t", **scenario), pairs=pairs, knobs=runner.resolve_knobs(pairs, []), dsn=None,
        run_dir=Path("/nonexistent"), write_top_report=False, shuffle_seed=seed,
    )  # fmt: skip


def labels(samples: list[runner.Sample]) -> list[str]:
    return [sample.label for sample in samples]


def test_declared_order_without_shuffle() -> None:
    order = labels(runner.sample_plan(plan(None)))
    # The control comes first (order 0), then deps.
    assert order[:5] == [
        "control/copy-a closed-u50-b1", "control/copy-b closed-u50-b1",
        "deps/sync-dep closed-u50-b1", "deps/async-dep closed-u50-b1", "deps/async-dep-blocking closed-u50-b1",
    ]  # fmt: skip


def test_shuffle_is_a_permutation_reproducible_from_its_seed() -> None:
    declared = labels(runner.sample_plan(plan(None)))
    shuffled = labels(runner.sample_plan(plan(7)))
    assert sorted(shuffled) == sorted(declared) and shuffled != declared
    assert shuffled == labels(runner.sample_plan(plan(7)))


def test_each_block_runs_every_variant_of_its_pair_once_back_to_back_in_its_own_order() -> None:
    samples = runner.sample_plan(plan(3, ["deps", "blocking"], repeats=3))
    by_block = [[f"{s.pair.name}/{s.variant.name}" for s in samples if s.block == b] for b in (1, 2, 3)]
    assert all(sorted(order) == sorted(by_block[0]) and len(order) == 6 for order in by_block)
    assert len({tuple(order) for order in by_block}) > 1, "the order is shuffled per block"
    for order in by_block:  # a pair's variants run back to back
        pairs = [label.split("/")[0] for label in order]
        assert pairs in (["deps"] * 3 + ["blocking"] * 3, ["blocking"] * 3 + ["deps"] * 3)
    assert all(s.primary for s in samples)


def progress(blocks: int, undecided: int, block_s: float = 10.0) -> runner.PairProgress:
    return runner.PairProgress(blocks, undecided, block_s)


def test_more_blocks_go_to_undecided_pairs_up_to_the_next_look_while_the_budget_lasts() -> None:
    looks = (3, 6, 12)
    standing = {"a": progress(3, 0), "b": progress(3, 2), "c": progress(3, 1, block_s=100.0)}
    more, stopped = runner.plan_more_blocks(standing, looks, left_s=100.0)
    # b is cheap: 3 more blocks at 10 s; c would need 300 s.
    assert more == {"b": 6} and stopped == {"a": "decided", "c": "budget spent"}
    more, stopped = runner.plan_more_blocks({"b": progress(12, 1)}, looks, left_s=1e9)
    assert more == {} and stopped == {"b": "undecided at the most blocks (12)"}
    # A control runs its fixed blocks whatever its checks say.
    more, _ = runner.plan_more_blocks({"aa": progress(3, 0)}, looks, left_s=1e9, fixed={"aa": 8})
    assert more == {"aa": 8}
    _, stopped = runner.plan_more_blocks({"aa": progress(8, 3)}, looks, left_s=1e9, fixed={"aa": 8})
    assert stopped == {"aa": "its fixed 8 blocks"}
    # Inconclusive with nothing straddling (a failed variant): more blocks would not help.
    _, stopped = runner.plan_more_blocks({"x": runner.PairProgress(3, 0, 10.0, "inconclusive")}, looks, left_s=1e9)
    assert stopped == {"x": "inconclusive; more blocks cannot decide it"}


def test_users_sweep_marks_the_primary_level_and_spares_pairs_that_fix_their_users() -> None:
    samples = runner.sample_plan(plan(None, ["deps"], users=50, levels=(1, 10, 50)))
    sync = [s for s in samples if s.variant.name == "sync-dep"]
    assert [(s.users, s.primary) for s in sync] == [(1, False), (10, False), (50, True)]
    # Without the scenario's users in the sweep, the highest level decides.
    assert next(s.users for s in runner.sample_plan(plan(None, ["deps"], users=30, levels=(1, 10))) if s.primary) == 10
    fixed = [p for p in select(None) if "users" in p.load]
    for pair in fixed:
        chosen = runner.sample_plan(plan(None, [pair.name], levels=(1, 10, 50)))
        assert {s.users for s in chosen} == {pair.load["users"]}


def test_open_loop_and_soak_samples_only_where_pairs_declare_them() -> None:
    samples = runner.sample_plan(plan(None, ["deps", "sessions", "blocking"], open_loop=1, soak_s=30.0))
    opened = {(s.pair.name, s.rate) for s in samples if s.mode == "open"}
    assert opened == {("deps", 60.0), ("blocking", 40.0)}  # blocking: 0.8 x 1000 / block_ms 20
    assert {s.pair.name for s in samples if s.mode == "soak"} == {"sessions"}
    assert not any(s.primary for s in samples if s.mode != "closed")
    # --rate makes every sample open loop, and those decide.
    rated = runner.sample_plan(plan(None, ["deps"], rate=120.0))
    assert {(s.mode, s.rate, s.primary) for s in rated} == {("open", 120.0, True)}


def test_knobs_apply_only_to_pairs_that_have_them() -> None:
    knobs = runner.resolve_knobs(select(None), ["block_ms=20", "pool_size=4"])
    assert knobs["blocking"] == {"block_ms": 20} and knobs["sessions"]["pool_size"] == 4 and knobs["deps"] == {}
    with pytest.raises(BenchError, match="greater than 0"):
        runner.resolve_knobs(select(None), ["block_ms=0"])


def test_a_run_with_repeats_is_always_shuffled(tmp_path: Path) -> None:
    def planned(*args: str) -> runner.RunPlan:
        out = tmp_path / str(len(list(tmp_path.iterdir())))
        return cli.plan_new(cli.build_parser().parse_args(["run", "--pairs", "deps", "--out", str(out), *args]))

    assert planned("--scenario", "quick").shuffle_seed is None
    assert planned("--scenario", "quick", "--shuffle").shuffle_seed is not None
    assert planned("--scenario", "quick", "--repeats", "2").shuffle_seed is not None
    assert planned("--scenario", "default").shuffle_seed is not None


def test_a_sample_with_no_request_in_its_window_gets_a_line_not_a_crash() -> None:
    # A variant slower than its window (a dry pool answering after its timeout) completes
    # no request inside it: its line says n/a where a figure could not be measured.
    record = {"rps": 0.0, "p99_ms": None, "failures": 0, "ping_p99_ms": None, "peak_connections": 80, "flags": []}
    line = runner.sample_line(record)  # type: ignore[arg-type]
    assert line.startswith("0 req/s, p99 n/a, 0 failures, /ping p99 n/a, peak 80 backends")


def test_variants_a_check_compares_run_back_to_back_within_a_block() -> None:
    # speedups decides on three disjoint comparisons among eight variants; two variants
    # are only shown. Each compared pair must be adjacent in every block, in any order.
    the_plan = plan(11, ["speedups"], repeats=12)
    pair = the_plan.pairs[0]
    groups = runner.compared_groups(pair, the_plan.knobs["speedups"])
    compared = [g for g in groups if len(g) > 1]
    assert sorted(sorted(g) for g in compared) == [
        ["as-dict", "orjson-response"], ["asyncio-h11", "uvloop-h11"], ["orjson-model", "response-model"],
    ]  # fmt: skip
    orders = []
    for block in range(1, 13):
        order = [s.variant.name for s in runner.block_samples(the_plan, pair, block)]
        assert sorted(order) == sorted(v.name for v in pair.variants)
        for group in compared:
            positions = sorted(order.index(name) for name in group)
            assert positions[1] - positions[0] == 1, (group, order)
        orders.append(tuple(order))
    assert len(set(orders)) > 6, "groups and the variants within them are still shuffled"
    assert len({order[0] for order in orders}) > 2


def test_a_controls_fixed_blocks_are_spread_over_the_rounds() -> None:
    # Measured alongside the other pairs' rounds, not after them, where the budget may be spent.
    adaptive = plan(None, ["control", "deps"], repeats=3, max_blocks=12)
    control = next(p for p in adaptive.pairs if p.name == "control")
    fixed = runner.fixed_blocks(adaptive, control)
    spread = [runner.round_blocks(adaptive, control, r) for r in (1, 2, 3)]
    assert sorted(b for blocks in spread for b in blocks) == list(range(1, fixed + 1))
    assert max(map(len, spread)) - min(map(len, spread)) <= 1
    samples = runner.sample_plan(adaptive)
    assert {s.block for s in samples if s.pair.name == "control"} == set(range(1, fixed + 1))
    assert {s.block for s in samples if s.pair.name == "deps"} == {1, 2, 3}
    # A scenario with no blocks beyond its minimum (quick): the control runs that minimum.
    single = plan(None, ["control"], repeats=1, max_blocks=1)
    assert {s.block for s in runner.sample_plan(single)} == {1}


def test_a_first_look_sizes_every_pairs_window_alike() -> None:
    """`timeouts` asks every block for the 500 requests its p99 needs, and the leak pairs
    for windows longer than two pool timeouts; a scenario with pair_windows = 0 (quick)
    keeps its own windows, but not the users an experiment is defined by."""
    [timeouts, leak] = select(["timeouts", "orm_sessions"])
    first_look = plan(None, ["timeouts", "orm_sessions"], min_requests=100, duration_s=0.5, pair_windows=0)
    assert first_look.scenario_for(timeouts).min_requests == 100
    assert first_look.scenario_for(leak).duration_s == 0.5
    assert first_look.scenario_for(timeouts).users == timeouts.load["users"] == 10
    deciding = plan(None, ["timeouts", "orm_sessions"], min_requests=100, duration_s=0.5)
    assert deciding.scenario_for(timeouts).min_requests == timeouts.load["min_requests"] > 100
    assert deciding.scenario_for(leak).duration_s == leak.load["duration_s"] > 0.5


def test_the_summary_is_rewritten_at_its_cadence_not_after_every_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[int] = []
    monkeypatch.setattr(runner, "write_summary", lambda plan, samples: written.append(len(samples)))
    clock = [100.0]
    monkeypatch.setattr(runner.time, "monotonic", lambda: clock[0])
    cadence = runner.SummaryCadence(every_s=30.0)
    samples: list[Any] = []
    for step in range(6):  # a sample every 10 s
        samples.append({"sample": step})
        cadence.after_sample(None, samples)  # type: ignore[arg-type]
        clock[0] += 10.0
    assert written == [1, 4]  # the first at once, then once 30 s have passed
