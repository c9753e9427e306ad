"""Short real runs of each measuring mode: repeats with a users sweep and calibration,
open loop above and below capacity, a soak with its recovery, Locust's distributed mode,
and `compare` on two stored runs. Margins are wide: this machine is noisy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.database import Database
from tests.conftest import bench_here
from tests.test_end_to_end import bench, processes_of_run

SHORT = """
users = 10
spawn_rate = 10
warmup_s = 0.5
duration_s = 2
rows = 1000
"""


def run(tmp_path: Path, db: Database, name: str, scenario: str, *args: str) -> tuple[Path, dict[str, Any]]:
    spec = tmp_path / f"{name}.toml"
    spec.write_text(SHORT + scenario)
    out = tmp_path / name
    result = bench("run", "--scenario", str(spec), "--dsn", db.dsn, "--out", str(out), *args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert processes_of_run(str(out)) == []
    return out, json.loads((out / "summary.json").read_text())


def by_variant(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["variant"]: r for r in summary["variants"]}


@pytest.mark.slow
def test_repeats_sweep_and_calibration(db: Database, tmp_path: Path) -> None:
    out, summary = run(
        tmp_path, db, "repeats", "repeats = 3\nlevels = [5, 10]\ncalibrate_s = 2\n",
        "--pairs", "blocking/async-blocking,blocking/async-to-thread", "--set", "block_ms=20",
    )  # fmt: skip
    records = by_variant(summary)
    blocking, threaded = records["async-blocking"], records["async-to-thread"]
    assert len(summary["samples"]) == 12 and blocking["repeats"] == 3 and blocking["ci_method"] == "blocks"
    low, high = blocking["ci"]["rps"]
    assert low <= blocking["rps"] <= high <= 50 * 1.05, "a 20 ms call on the loop: at most 50 req/s"
    assert [level["users"] for level in blocking["levels"]] == [5, 10]
    # One request at a time: more users only queue, so p99 grows with them.
    assert blocking["levels"][1]["p99_ms"] > blocking["levels"][0]["p99_ms"]
    assert threaded["knee"] is not None and threaded["knee"]["p99_ms"] < 100
    row = summary["comparisons"][0]
    assert row["variant"] == "async-blocking" and row["rps"]["ratio"] < 0.5 and row["rps"]["significant"]
    assert summary["calibration"]["rps"] > threaded["rps"], "the generator can drive more than the variants took"
    text = (out / "REPORT.md").read_text()
    assert "calibration:" in text and "**Users sweep.**" in text and "**Physics check.**" in text
    assert (out / "charts" / "blocking-users.png").is_file()


@pytest.mark.slow
def test_open_loop_holds_its_rate_below_capacity_and_flags_it_above(db: Database, tmp_path: Path) -> None:
    # A 20 ms call on the loop serves at most 50 req/s; to_thread has six threads for it.
    _, summary = run(
        tmp_path, db, "open", "", "--rate", "80", "--pairs", "blocking/async-blocking,blocking/async-to-thread",
        "--set", "block_ms=20",
    )  # fmt: skip
    records = by_variant(summary)
    blocking, threaded = records["async-blocking"], records["async-to-thread"]
    assert blocking["mode"] == threaded["mode"] == "open"
    assert threaded["achieved_rps"] == pytest.approx(80, rel=0.1) and not threaded["flags"]
    assert blocking["achieved_rps"] <= 52 and any("of 80 req/s requested" in f for f in blocking["flags"])
    # Open loop counts the backlog: requests fall due faster than they are served.
    assert blocking["p99_ms"] > 5 * threaded["p99_ms"]
    assert "flagged" in summary["verdicts"]["blocking"]["headline"]


@pytest.mark.slow
def test_soak_measures_the_load_and_the_recovery(db: Database, tmp_path: Path) -> None:
    out, summary = run(
        tmp_path, db, "soak", "", "--soak", "4", "--pairs", "sessions/connect-leaky,sessions/connect-closed"
    )
    records = by_variant(summary)
    for record in records.values():
        soak = record["soak"]
        assert soak is not None and soak["load_s"] == pytest.approx(4, abs=1.5) and soak["recovery_s"] == 10
        assert soak["connections_end_of_load"] is not None and soak["rss_mb_slope_per_min_load"] is not None
        # With the server still up and no load, its backends go away.
        assert soak["connections_end_of_recovery"] <= 1
    assert (out / "charts" / "sessions-soak.png").is_file() and "**Soak.**" in (out / "REPORT.md").read_text()


@pytest.mark.slow
def test_locust_workers_match_a_single_process_and_compare_reads_both(db: Database, tmp_path: Path) -> None:
    pairs = ("--pairs", "blocking/async-blocking,blocking/async-to-thread", "--set", "block_ms=20")
    single_dir, single = run(tmp_path, db, "single", "", *pairs)
    workers_dir, workers = run(tmp_path, db, "workers", "", *pairs, "--locust-workers", "2")
    for name, ceiling in (("async-blocking", 50), ("async-to-thread", 300)):
        one, two = by_variant(single)[name], by_variant(workers)[name]
        assert two["status"] == "ok" and two["requests"] > 0 and not two["flags"], two["flags"]
        # One 20 ms call at a time on the loop, or six threads of them, whoever sends the
        # load: a total above the ceiling counts warm-up requests, one far below it
        # lost requests the workers made.
        assert two["rps"] <= ceiling * 1.05, f"{name}: {two['rps']:.1f} req/s over the {ceiling} ceiling"
        assert 0.8 < two["rps"] / one["rps"] < 1.25, f"{name}: {two['rps']:.1f} against {one['rps']:.1f} req/s"
    two = by_variant(workers)["async-to-thread"]
    sample = workers_dir / "blocking" / "async-to-thread" / two["sample"]
    assert (sample / "locust-worker-1.log").is_file() and (sample / "locust-worker-2.log").is_file()
    assert len(list(sample.glob("tally-*.json"))) == 2, "each worker writes its own tally"
    result = bench_here("compare", str(single_dir), str(workers_dir))
    assert result.returncode == 0, result.stderr
    assert "blocking/async-to-thread" in result.stdout and "locust_workers" in result.stdout
    failing = bench_here("compare", str(single_dir), str(workers_dir), "--fail-above", "0.0001")
    assert failing.returncode in (0, 1) and ("regression:" in failing.stderr) == (failing.returncode == 1)
    # A run against itself has nothing worse, whatever the threshold.
    same = bench_here("compare", str(single_dir), str(single_dir), "--fail-above", "0.0001")
    assert same.returncode == 0 and "regression:" not in same.stderr, same.stderr
