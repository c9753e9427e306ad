"""Statistics, flags, aggregation over repeats and `compare`, on fixture data: no load."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from harness import analysis, compare, report, runner, stats, store
from harness.pairs import BenchError, select
from harness.scenario import Scenario
from tests.conftest import write_manifest, write_variant


def test_t_interval_contains_the_mean_and_narrows_with_agreement() -> None:
    wide = stats.t_interval([80.0, 100.0, 120.0, 90.0, 110.0])
    narrow = stats.t_interval([99.0, 100.0, 101.0, 100.0, 100.0])
    assert wide is not None and narrow is not None
    assert wide.low <= 100 <= wide.high and narrow.low <= 100 <= narrow.high
    assert narrow.high - narrow.low < wide.high - wide.low
    # Student's t with 4 degrees of freedom: 2.776 x s / sqrt(5), s = 15.81.
    assert wide.high - 100 == pytest.approx(2.776 * 15.811 / 5**0.5, rel=1e-3)
    assert stats.t_interval([5.0]) is None and stats.t_interval([]) is None
    same = stats.t_interval([3.0, 3.0, 3.0])
    assert same is not None and same.low == same.high == 3.0


def test_log_ratio_interval_is_a_geometric_mean_with_a_paired_p_value() -> None:
    found = stats.log_ratio_interval([2.0, 2.2, 1.8, 2.1])
    assert found is not None and found.low < 2.0 < found.high
    assert found.estimate == pytest.approx((2.0 * 2.2 * 1.8 * 2.1) ** 0.25)
    assert found.p_value < 0.001 and found.excludes(1.0)
    even = stats.log_ratio_interval([0.9, 1.1, 1.05, 0.95])
    assert even is not None and not even.excludes(1.0) and even.p_value > 0.5
    assert stats.log_ratio_interval([2.0, None, -1.0]) is None  # one usable ratio only


def test_looks_double_up_to_the_maximum_and_share_the_error_rate() -> None:
    assert stats.looks(3, 12) == (3, 6, 12) and stats.looks(3, 10) == (3, 6, 10) and stats.looks(1, 1) == (1,)
    levels = stats.look_confidences((3, 6, 12))
    # Bonferroni: the looks' error rates add up to the nominal one, most of it on the first.
    assert sum(1 - level for level in levels) == pytest.approx(1 - stats.CONFIDENCE)
    assert levels[0] == pytest.approx(1 - 0.05 * stats.FIRST_LOOK_SHARE) and levels[1] == levels[2] > levels[0]
    assert stats.look_confidences((3,)) == (stats.CONFIDENCE,)
    assert stats.confidence_at((3, 6, 12), levels, 2) == levels[0] == stats.confidence_at((3, 6, 12), levels, 5)
    assert stats.confidence_at((3, 6, 12), levels, 6) == levels[1]
    assert stats.confidence_at((3, 6, 12), levels, 12) == levels[2]


def test_bucket_percentiles_are_taken_as_locust_takes_them() -> None:
    rng = random.Random(7)
    cases = []
    for _ in range(20):
        buckets = {rng.choice([1, 2, 5, 20, 90, 140, 990, 5800]) + 10 * i: rng.randint(1, 50) for i in range(12)}
        cases.append({"buckets": buckets, "count": sum(buckets.values())})
    ours = [[stats.bucket_percentile(dict(c["buckets"]), c["count"], p) for p in (0.5, 0.95, 0.99)] for c in cases]
    # Locust's own function, in a process of its own: importing Locust patches gevent in.
    script = (
        "import json, sys\nfrom locust.stats import calculate_response_time_percentile as pct\n"
        "cases = json.load(sys.stdin)\n"
        "print(json.dumps([[pct({int(k): v for k, v in c['buckets'].items()}, c['count'], p)"
        " for p in (0.5, 0.95, 0.99)] for c in cases]))"
    )
    locust = subprocess.run([sys.executable, "-c", script], input=json.dumps(cases), capture_output=True, text=True)
    assert locust.returncode == 0, locust.stderr[-500:]
    assert ours == [[float(v) for v in row] for row in json.loads(locust.stdout)]
    assert stats.bucket_percentile({}, 0, 0.5) is None


def _tally(start: float, stop: float, buckets: dict[int, int], failures: int = 0) -> dict[str, object]:
    return {
        "role": "worker", "start": start, "stop": stop, "requests": sum(buckets.values()), "failures": failures,
        "response_times": {str(k): v for k, v in buckets.items()}, "max_ms": max(buckets),
        "errors": [["LocustBadStatusCode(code=503)", failures]] if failures else [],
    }  # fmt: skip


def test_worker_tallies_add_up_and_the_window_runs_to_the_last_request(tmp_path: Path) -> None:
    folder = write_variant(tmp_path, "p", "v", "good", requests=5, window=(1000.0, 1010.0))
    meta = json.loads((folder / "sample.json").read_text())
    (folder / "sample.json").write_text(json.dumps(meta | {"workers": 2}))
    # The CSV says 5 requests; the workers' tallies say 300 + 200, the second ending 2 s
    # after the master stopped, still finishing requests.
    store.write_json(folder / "tally-11.json", _tally(1000.1, 1010.0, {10: 290, 100: 10}))
    store.write_json(folder / "tally-12.json", _tally(1000.1, 1012.0, {10: 100, 30: 90, 5800: 10}, failures=4))
    record = analysis.summarize_sample(folder)
    assert record["requests"] == 500 and record["failures"] == 4
    assert record["rps"] == pytest.approx(500 / 12) and record["measured_s"] == 12
    # 500 requests: p50 and p95 fall in the 10 and 30 ms buckets; the slowest 10 put p99 at 5,800.
    assert record["p50_ms"] == 10 and record["p95_ms"] == 30 and record["p99_ms"] == 5800 and record["max_ms"] == 5800
    assert record["top_failures"] == [["LocustBadStatusCode(code=503)", 4]] and not record["flags"]
    (folder / "tally-12.json").unlink()
    missing = "1 of 2 load processes wrote no tally: their requests are missing"
    assert analysis.summarize_sample(folder)["flags"] == [missing]


def test_welch_interval_compares_two_runs() -> None:
    slow, fast = [50.0, 52.0, 48.0], [200.0, 210.0, 190.0]
    found = stats.welch_log_ratio_interval(slow, fast)
    assert found is not None and found.high < 0.3 and found.low > 0.2 and found.excludes(1.0)
    alike = stats.welch_log_ratio_interval([100.0, 120.0, 80.0], [105.0, 95.0, 115.0])
    assert alike is not None and not alike.excludes(1.0)
    assert stats.welch_log_ratio_interval([1.0], [1.0, 2.0]) is None


def test_spread_warns_at_ten_percent() -> None:
    assert stats.spread([100.0, 101.0, 99.0]) == pytest.approx(0.01)
    noisy = stats.spread([80.0, 100.0, 120.0])
    assert noisy is not None and noisy > stats.SPREAD_WARNING
    assert stats.spread([3.0]) is None


def test_knee_is_the_most_throughput_under_the_target() -> None:
    levels = [stats.Level(1, 100, 5), stats.Level(10, 800, 40), stats.Level(50, 1000, 180), stats.Level(100, 990, 400)]
    assert stats.knee(levels, 100.0) == stats.Level(10, 800, 40)
    assert stats.knee(levels, 1000.0) == stats.Level(50, 1000, 180)
    assert stats.knee(levels, 1.0) is None


def test_generator_saturation_and_short_open_loop_rate_are_flagged() -> None:
    assert analysis.sample_flags({"generator_cpu_pct": 97.0}) == ["load generator at 97% CPU"]
    assert analysis.sample_flags({"generator_cpu_pct": 60.0}) == []
    short = {"mode": "open", "rate": 100.0, "achieved_rps": 70.0}
    assert analysis.sample_flags(short) == ["achieved 70 of 100 req/s requested"]
    assert analysis.sample_flags(short | {"achieved_rps": 99.0}) == []


def repeats_run(tmp_path: Path, sync_rps: list[int], good_rps: list[int], **first: object) -> Path:
    run_dir = tmp_path / "run"
    write_manifest(run_dir, {"deps": {}})
    for repeat, (sync, good) in enumerate(zip(sync_rps, good_rps, strict=True), start=1):
        extra = first if repeat == 1 else {}
        write_variant(run_dir, "deps", "sync-dep", "bad", requests=sync * 10, repeat=repeat, **extra)  # type: ignore[arg-type]
        write_variant(run_dir, "deps", "async-dep", "good", requests=good * 10, repeat=repeat)
        write_variant(run_dir, "deps", "async-dep-blocking", "bad", requests=good * 5, repeat=repeat, lag_ms=[300.0])
    return run_dir


def test_blocks_combine_into_means_with_intervals_and_paired_comparisons(tmp_path: Path) -> None:
    run_dir = repeats_run(tmp_path, [100, 110, 90], [200, 220, 180])
    text = report.rebuild(run_dir, write_top_report=False).read_text()
    summary = store.read_json(run_dir / "summary.json")
    sync = next(r for r in summary["variants"] if r["variant"] == "sync-dep")
    assert sync["repeats"] == 3 and sync["ci_method"] == "blocks"
    assert sync["rps"] == pytest.approx(100.0) and sync["requests"] == 3000
    low, high = sync["ci"]["rps"]
    assert 70 < low < 100 < high < 130  # t with 2 degrees of freedom: 4.30 x 10 / sqrt(3)
    row = next(c for c in summary["comparisons"] if c["variant"] == "sync-dep")
    # Each block's ratio is exactly 0.5: pairing removes the drift the variants share.
    assert row["baseline"] == "async-dep" and row["rps"]["ratio"] == pytest.approx(0.5)
    assert row["rps"]["significant"] is True and row["rps"]["blocks"] == 3
    assert "| `sync-dep` | `async-dep` | 3 | 0.50x (" in text
    assert len(summary["samples"]) == 9


def test_ratios_that_vary_across_blocks_are_no_measurable_difference_and_spread_is_warned(tmp_path: Path) -> None:
    run_dir = repeats_run(tmp_path, [150, 260, 190], [200, 205, 195])
    text = report.rebuild(run_dir, write_top_report=False).read_text()
    row = next(c for c in store.read_json(run_dir / "summary.json")["comparisons"] if c["variant"] == "sync-dep")
    assert row["rps"]["significant"] is False
    assert "no measurable difference" in text and "⚠ ±" in text


def test_a_flagged_sample_is_never_used_silently(tmp_path: Path) -> None:
    run_dir = repeats_run(tmp_path, [100, 110, 90], [200, 205, 195])
    connections = run_dir / "deps" / "sync-dep" / "closed-u10-r1" / "connections.csv"
    rows = connections.read_text().splitlines()
    header = [*rows[0].split(","), "generator_cpu_pct"]
    connections.write_text("\n".join([",".join(header)] + [line + ",97" for line in rows[1:]]) + "\n")
    text = report.rebuild(run_dir, write_top_report=False).read_text()
    summary = store.read_json(run_dir / "summary.json")
    assert "load generator at 97% CPU" in summary["verdicts"]["deps"]["text"]
    assert "(flagged)" in summary["verdicts"]["deps"]["headline"]
    assert "**Flagged measurements**" in text


def test_workers_are_added_only_when_calibration_falls_short_and_cores_are_free(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def plan(**fields: object) -> runner.RunPlan:
        pairs = select(["deps"])
        return runner.RunPlan(
            scenario=Scenario(name="t", **fields),  # type: ignore[arg-type]
            pairs=pairs, knobs=runner.resolve_knobs(pairs, []), dsn=None, run_dir=Path("/x"), write_top_report=False,
        )  # fmt: skip

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert runner.choose_workers(plan(rate=5000.0), 2000.0)[0] == 4
    assert runner.choose_workers(plan(rate=1000.0), 2000.0)[0] == 0
    assert runner.choose_workers(plan(), 2000.0)[0] == 0  # closed loop: no rate to fall short of
    assert runner.choose_workers(plan(rate=5000.0, locust_workers=2), 2000.0) == (2, "2 worker processes, as asked")
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    workers, why = runner.choose_workers(plan(rate=5000.0), 2000.0)
    assert workers == 0 and "no core is free" in why


def test_compare_judges_each_figure_and_fails_above_a_threshold(tmp_path: Path) -> None:
    a = repeats_run(tmp_path / "a", [100, 102, 98], [200, 205, 195])
    b = repeats_run(tmp_path / "b", [60, 62, 58], [199, 206, 196])
    for run_dir in (a, b):
        report.rebuild(run_dir, write_top_report=False)
    changes = {(c.variant, c.figure): c for c in compare.compare(a, b)}
    assert changes[("sync-dep", "rps")].word == "slower" and changes[("sync-dep", "rps")].ratio == pytest.approx(0.6)
    assert changes[("async-dep", "rps")].word == "not significant"
    assert [(c.variant, c.figure) for c in compare.regressions(list(changes.values()), 10.0)] == [("sync-dep", "rps")]
    assert compare.regressions(list(changes.values()), 50.0) == []
    out = compare.render(list(changes.values()), ["cpu_count: 2 vs 4"])
    assert out.startswith("warning: the runs differ: cpu_count: 2 vs 4") and "deps/sync-dep" in out


def test_compare_warns_when_machines_or_versions_differ(tmp_path: Path) -> None:
    a = repeats_run(tmp_path / "a", [100, 100, 100], [200, 200, 200])
    b = repeats_run(tmp_path / "b", [100, 100, 100], [200, 200, 200])
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["environment"]["cpu_count"] = 64
    manifest["environment"]["packages"]["fastapi"] = "0.1.0"
    (b / "manifest.json").write_text(json.dumps(manifest))
    notes = compare.differences(a, b)
    assert any(note.startswith("cpu_count:") for note in notes) and any(note.startswith("fastapi:") for note in notes)
    assert compare.differences(a, a) == []


def test_compare_refuses_a_folder_without_a_summary(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="not a run folder"):
        compare.compare(tmp_path, tmp_path)


def test_runs_written_with_out_never_feed_the_top_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "RESULTS_DIR", tmp_path)
    default, sweep = tmp_path / "20260101-000000-default", tmp_path / "20260102-000000-sweep"
    for run_dir, feeds in ((default, True), (sweep, False)):
        write_manifest(run_dir, {})
        manifest = store.read_json(run_dir / "manifest.json")
        store.write_json(run_dir / "manifest.json", manifest | {"writes_top_report": feeds})
    assert store.latest_run() == default
    assert store.feeds_top_report(default) and not store.feeds_top_report(sweep)
