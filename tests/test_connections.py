"""`bench.py connections`: backends by state per variant, within a run and between two,
from the raw samples."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import cli, connections
from harness.pairs import BenchError
from tests.conftest import write_manifest, write_variant


def fixture_run(tmp_path: Path, name: str, leaky_backends: int) -> Path:
    run_dir = tmp_path / name
    write_manifest(run_dir, {"sessions": {}, "pool": {}})
    write_variant(run_dir, "sessions", "connect-leaky", "bad", backends=[leaky_backends] * 20)
    write_variant(run_dir, "sessions", "connect-closed", "good", backends=[3] * 20)
    write_variant(run_dir, "pool", "lifespan-pool", "good", backends=[10] * 20)
    return run_dir


def test_one_run_shows_each_variant_by_state(tmp_path: Path) -> None:
    text = connections.render(connections.records(fixture_run(tmp_path, "a", 40)))
    # The fixture's backends are all active; no pool is watched, so the pool column says so.
    assert "| `sessions` | `connect-leaky` | 40.0 / 40 | 0.0 / 0 | 0.0 / 0 | 40.0 / 40 | n/a |" in text
    assert "| `pool` | `lifespan-pool` | 10.0 / 10 |" in text


def test_two_runs_side_by_side_and_one_pair_only(tmp_path: Path) -> None:
    a, b = fixture_run(tmp_path, "a", 40), fixture_run(tmp_path, "b", 90)
    text = connections.render(connections.records(a, ["sessions"]), connections.records(b, ["sessions"]))
    assert "| `sessions` | `connect-leaky` | 40.0 / 40 -> 90.0 / 90 |" in text
    assert "lifespan-pool" not in text and "run A -> run B" in text


def test_an_unknown_pair_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="has no pair deps"):
        connections.records(fixture_run(tmp_path, "a", 40), ["deps"])
    assert cli.main(["connections", str(tmp_path / "a"), "--pair", "deps"]) == 2
