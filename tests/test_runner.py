"""Runner pieces that need no load: knobs, ordering, resume checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import runner
from harness.pairs import BenchError, select
from harness.scenario import Scenario


def plan(seed: int | None) -> runner.RunPlan:
    pairs = select(None)
    return runner.RunPlan(
        scenario=Scenario(name="t"), pairs=pairs, knobs=runner.resolve_knobs(pairs, []), dsn=None,
        run_dir=Path("/nonexistent"), write_top_report=False, shuffle_seed=seed,
    )  # fmt: skip


def names(order: list) -> list[str]:  # type: ignore[type-arg]
    return [f"{p.name}/{v.name}" for p, v in order]


def test_declared_order_without_shuffle() -> None:
    order = names(runner.variant_order(plan(None)))
    assert order[:3] == ["deps/sync-dep", "deps/async-dep", "deps/async-dep-blocking"]


def test_shuffle_is_a_permutation_reproducible_from_its_seed() -> None:
    declared = names(runner.variant_order(plan(None)))
    shuffled = names(runner.variant_order(plan(7)))
    assert sorted(shuffled) == sorted(declared) and shuffled != declared
    assert shuffled == names(runner.variant_order(plan(7)))


def test_knobs_apply_only_to_pairs_that_have_them() -> None:
    knobs = runner.resolve_knobs(select(None), ["block_ms=20", "pool_size=4"])
    assert knobs["blocking"] == {"block_ms": 20} and knobs["sessions"]["pool_size"] == 4 and knobs["deps"] == {}
    with pytest.raises(BenchError, match="greater than 0"):
        runner.resolve_knobs(select(None), ["block_ms=0"])
