"""The pair declarations: discoverable, complete, and their code excerpts resolvable."""

from __future__ import annotations

import pytest

from harness.pairs import BenchError, discover, select


def test_pairs_are_discovered_in_declared_order() -> None:
    pairs = list(discover().values())
    assert [p.order for p in pairs] == sorted(p.order for p in pairs)
    names = [p.name for p in pairs]
    assert names.index("deps") < names.index("sessions") < names.index("blocking")


@pytest.mark.parametrize("pair", discover().values(), ids=lambda p: p.name)
def test_pair_is_complete(pair) -> None:  # type: ignore[no-untyped-def]
    roles = [v.role for v in pair.variants]
    if pair.claim_id.startswith("C"):
        assert "good" in roles and len(roles) >= 2, "a pair compares a good variant with at least one other"
    else:  # a control: identical references, fixed blocks
        assert set(roles) == {"reference"} and len(roles) == 2 and pair.fixed_blocks > 0
    assert len({v.name for v in pair.variants}) == len(pair.variants)
    assert pair.claim and pair.mechanism and pair.how_decided({})
    assert pair.rule is not None, "every rule is written as checks"
    rule = pair.rule(pair.knobs)
    named = {name for check in rule.checks for name in check.figure.variants}
    assert named <= {v.name for v in pair.variants}, "the checks name only the pair's variants"
    for variant in pair.variants:
        assert variant.path.startswith(f"/{variant.name}/") and "{id}" in variant.path
        excerpt = pair.code_excerpt(variant)
        assert all(f" {name}(" in excerpt or f"class {name}:" in excerpt for name in variant.code)


def test_select_suggests_a_close_name() -> None:
    with pytest.raises(BenchError, match="did you mean 'sessions'"):
        select(["sesions"])


def test_select_keeps_order_and_drops_duplicates() -> None:
    assert [p.name for p in select(["blocking", "deps", "blocking"])] == ["blocking", "deps"]


def test_select_a_single_variant_and_suggest_variant_names() -> None:
    [deps] = select(["deps/async-dep", "deps/sync-dep", "deps/async-dep"])
    assert [v.name for v in deps.variants] == ["sync-dep", "async-dep"]  # declared order
    with pytest.raises(BenchError, match=r"no variant 'async-deps' .*did you mean 'async-dep'"):
        select(["deps/async-deps"])
    assert len(select(["deps/sync-dep", "deps"])[0].variants) == 3


def test_counters_wait_for_the_work_a_pair_runs_after_its_responses() -> None:
    pairs = discover()
    background, cleanup = pairs["background"], pairs["cleanup"]
    # The declared knob, read from the pair's own defaults or the run's values.
    assert background.drain_s({}) == background.knobs["work_ms"] / 1000
    assert background.drain_s({"work_ms": 1500}) == 1.5
    assert cleanup.drain_s({}) == cleanup.knobs["teardown_ms"] / 1000
    # Every knob a pair names for it must exist; a pair with none has nothing to wait for.
    for pair in pairs.values():
        assert not pair.drain_knob or pair.drain_knob in pair.knobs, pair.name
    assert pairs["control"].drain_s({}) == 0.0
