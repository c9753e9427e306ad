"""Analysis and rendering on fixture run folders: no server, no load."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from harness import analysis, report, store
from harness.pairs import discover
from tests.conftest import write_manifest, write_variant


def test_summary_uses_the_measured_window_only(tmp_path: Path) -> None:
    folder = write_variant(
        tmp_path, "deps", "async-dep", "good", requests=500, failures=50,
        ping_ms=[1.0] * 99 + [250.0], backends=[3] * 19 + [7], lag_ms=[0.4] * 99 + [80.0],
    )  # fmt: skip
    record = analysis.summarize_variant(folder)
    assert record["status"] == "ok"
    # 500 requests over the 10 s window, whatever Locust's own rate column says.
    assert record["rps"] == pytest.approx(50.0)
    assert record["failure_rate"] == pytest.approx(0.1)
    # The warm-up probe (99999 ms) and warm-up sample (500 backends) are outside the window.
    assert record["ping_max_ms"] == 250.0
    assert record["ping_samples"] == 100
    assert record["peak_connections"] == 7
    assert record["mean_connections"] == pytest.approx((3 * 19 + 7) / 20)
    assert record["top_failures"] == [["LocustBadStatusCode(code=503)", 50]]
    # Loop lag: the 5000 ms warm-up sample is outside the window.
    assert record["loop_lag_max_ms"] == 80.0 and record["loop_lag_p50_ms"] == pytest.approx(0.4)
    assert record["threads_busy_peak"] == 3 and record["threads_busy_mean"] == pytest.approx(1.5)


def test_failed_variant_keeps_its_reason_and_no_numbers(tmp_path: Path) -> None:
    folder = write_variant(tmp_path, "deps", "sync-dep", "bad", status="failed")
    record = analysis.summarize_variant(folder)
    assert record["status"] == "failed" and record["error"] == "verification failed"
    assert record["rps"] is None
    # summary.json has one shape: a failed record carries every field a measured one does.
    measured = analysis.summarize_variant(write_variant(tmp_path, "deps", "async-dep", "good"))
    assert set(record) == set(measured) == set(analysis.RECORD_FIELDS)


def test_half_written_variant_is_skipped_with_a_warning(tmp_path: Path) -> None:
    pairs = [discover()["deps"]]
    write_variant(tmp_path, "deps", "sync-dep", "bad")
    broken = write_variant(tmp_path, "deps", "async-dep", "good")
    (broken / "locust_stats.csv").write_text("Type,Name\n")  # cut off mid-write
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = analysis.load_records(tmp_path, pairs)
    assert [r["variant"] for r in records] == ["sync-dep"]
    assert any("async-dep" in str(w.message) for w in caught)


def fixture_run(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    write_manifest(run_dir, {"deps": {}, "blocking": {"block_ms": 10}})
    write_variant(run_dir, "deps", "sync-dep", "bad", requests=1800, ping_ms=[14.0] * 50)
    write_variant(run_dir, "deps", "async-dep", "good", requests=2000, ping_ms=[12.0] * 50)
    write_variant(run_dir, "deps", "async-dep-blocking", "bad", requests=900, ping_ms=[400.0] * 50)
    write_variant(run_dir, "blocking", "async-blocking", "bad", requests=950, ping_ms=[300.0] * 50)
    write_variant(run_dir, "blocking", "async-to-thread", "good", requests=4500, ping_ms=[6.0] * 50)
    write_variant(run_dir, "blocking", "sync-def", "reference", status="failed")
    return run_dir


def test_report_is_built_from_the_run_folder(tmp_path: Path) -> None:
    run_dir = fixture_run(tmp_path)
    path = report.rebuild(run_dir, write_top_report=False)
    text = path.read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["verdicts"]["deps"]["outcome"] == "partly holds"
    assert summary["verdicts"]["blocking"]["outcome"] == "holds"
    assert len(summary["variants"]) == 6
    for field in ("pair", "variant", "role", "requests", "failures", "rps", "p50_ms", "p95_ms", "p99_ms", "max_ms",
                  "ping_p99_ms", "peak_connections", "mean_connections"):  # fmt: skip
        assert field in summary["variants"][0]
    # Figures in the table and verdict come from the fixture numbers.
    assert "| `async-dep` | good | 200.0 | 2,000 |" in text
    assert "**Verdict: partly holds.**" in text and "400 ms" in text
    assert "failed: verification failed" in text
    assert "```python\ndef f():" in text
    for pair in ("deps", "blocking"):
        chart = run_dir / "charts" / f"{pair}.png"
        assert chart.is_file() and chart.read_bytes()[:4] == b"\x89PNG"
        assert f"](charts/{pair}.png)" in text


def test_report_verdict_flips_with_the_data(tmp_path: Path) -> None:
    run_dir = fixture_run(tmp_path)
    # Same folder, but the sync dependency now stalls /ping: the verdict must follow.
    (run_dir / "deps" / "sync-dep" / "probe.csv").unlink()
    write_variant(tmp_path / "other", "deps", "sync-dep", "bad", ping_ms=[500.0] * 50)
    (tmp_path / "other" / "deps" / "sync-dep" / "probe.csv").rename(run_dir / "deps" / "sync-dep" / "probe.csv")
    report.rebuild(run_dir, write_top_report=False)
    assert store.read_json(run_dir / "summary.json")["verdicts"]["deps"]["outcome"] == "holds"


def test_render_does_not_touch_top_report_when_asked_not_to(tmp_path: Path) -> None:
    before = report.TOP_REPORT.read_text() if report.TOP_REPORT.exists() else None
    report.rebuild(fixture_run(tmp_path), write_top_report=False)
    after = report.TOP_REPORT.read_text() if report.TOP_REPORT.exists() else None
    assert before == after


def test_report_flags_backends_left_after_a_variant(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_manifest(run_dir, {"deps": {}})
    write_variant(run_dir, "deps", "sync-dep", "bad", settled=7)
    write_variant(run_dir, "deps", "async-dep", "good")
    text = report.rebuild(run_dir, write_top_report=False).read_text()
    assert "did not return to baseline" in text and "`sync-dep`: 7 left (baseline 0)" in text
    assert "`async-dep`: " not in text.split("did not return to baseline")[1].split("**The variants.**")[0]
