"""Analysis and rendering on fixture run folders: no server, no load."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path

import pytest

from harness import analysis, charts, report, store
from harness.pairs import Pair, Variant, discover
from harness.records import SampleRecord
from tests.conftest import write_manifest, write_variant


def test_summary_uses_the_measured_window_only(tmp_path: Path) -> None:
    folder = write_variant(
        tmp_path, "deps", "async-dep", "good", requests=500, failures=50,
        ping_ms=[1.0] * 99 + [250.0], backends=[3] * 19 + [7], lag_ms=[0.4] * 99 + [80.0],
    )  # fmt: skip
    record = analysis.summarize_sample(folder)
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
    record = analysis.summarize_sample(folder)
    assert record["status"] == "failed" and record["error"] == "verification failed"
    assert record["rps"] is None
    # summary.json has one shape: a failed record carries every field a measured one does.
    measured = analysis.summarize_sample(write_variant(tmp_path, "deps", "async-dep", "good"))
    assert set(record) == set(measured) == set(analysis.RECORD_FIELDS) | set(analysis.SAMPLE_FIELDS)
    # ... and only keys its type names, every required one: harness.records.SampleRecord is what it says.
    for found in (record, measured):
        assert SampleRecord.__required_keys__ <= set(found) <= set(SampleRecord.__annotations__)


def test_half_written_variant_is_skipped_with_a_warning(tmp_path: Path) -> None:
    pairs = [discover()["deps"]]
    write_variant(tmp_path, "deps", "sync-dep", "bad")
    broken = write_variant(tmp_path, "deps", "async-dep", "good")
    (broken / "locust_stats.csv").write_text("Type,Name\n")  # cut off mid-write
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = analysis.load_samples(tmp_path, pairs)
    assert [r["variant"] for r in records] == ["sync-dep"]
    assert any("async-dep" in str(w.message) for w in caught)


# Three blocks, each variant a few percent apart from block to block.
BLOCK_JITTER = (0.97, 1.0, 1.03)


def fixture_run(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    write_manifest(run_dir, {"deps": {}, "blocking": {"block_ms": 10}})
    for block, f in enumerate(BLOCK_JITTER, start=1):
        g = BLOCK_JITTER[block % 3]  # another variant drifts another way
        write_variant(run_dir, "deps", "sync-dep", "bad", requests=int(1800 * f), ping_ms=[14.0] * 50, repeat=block)
        write_variant(run_dir, "deps", "async-dep", "good", requests=int(2000 * g), ping_ms=[12.0] * 50, repeat=block)
        write_variant(run_dir, "deps", "async-dep-blocking", "bad", requests=int(900 * f), ping_ms=[400.0] * 50,
                      lag_ms=[380.0 * g] * 50, repeat=block)  # fmt: skip
        write_variant(run_dir, "blocking", "async-blocking", "bad", requests=int(950 * g), ping_ms=[300.0] * 50,
                      lag_ms=[290.0 * f] * 50, repeat=block)  # fmt: skip
        write_variant(run_dir, "blocking", "async-to-thread", "good", requests=int(4500 * f), ping_ms=[6.0] * 50,
                      repeat=block)  # fmt: skip
        write_variant(run_dir, "blocking", "sync-def", "reference", status="failed", repeat=block)
    return run_dir


def test_report_is_built_from_the_run_folder(tmp_path: Path) -> None:
    run_dir = fixture_run(tmp_path)
    path = report.rebuild(run_dir, write_top_report=False)
    text = path.read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    # The sync dependency does not stall the loop; the psycopg2 control does.
    assert summary["verdicts"]["deps"]["outcome"] == "does not hold"
    assert summary["verdicts"]["blocking"]["outcome"] == "holds"
    assert len(summary["variants"]) == 6
    for field in ("pair", "variant", "role", "requests", "failures", "rps", "p50_ms", "p95_ms", "p99_ms", "max_ms",
                  "ping_p99_ms", "peak_connections", "mean_connections"):  # fmt: skip
        assert field in summary["variants"][0]
    # Figures in the table and verdict come from the fixture numbers.
    record = next(r for r in summary["variants"] if r["variant"] == "async-dep")
    assert record["rps"] == pytest.approx(200.0, abs=0.2) and record["requests"] == 6000
    low, high = record["ci"]["rps"]
    assert 180 < low < 200 < high < 220
    assert "**Verdict: does not hold.**" in text
    checks = summary["verdicts"]["deps"]["checks"]
    assert [c["outcome"] for c in checks] == ["clears"] + ["no measurable difference"] * 2  # control first
    assert "failed: verification failed" in text
    assert "```python\ndef f():" in text
    for pair in ("deps", "blocking"):
        chart = run_dir / "charts" / f"{pair}.png"
        assert chart.is_file() and chart.read_bytes()[:4] == b"\x89PNG"
        assert f"](charts/{pair}.png)" in text
        # Backends by state, stacked, one panel per variant.
        states = run_dir / "charts" / f"{pair}-states.png"
        assert states.is_file() and f"](charts/{pair}-states.png)" in text


def test_report_verdict_flips_with_the_data(tmp_path: Path) -> None:
    run_dir = fixture_run(tmp_path)
    # Same folder, but the sync dependency's loop now lags: the verdict must follow.
    for block, f in enumerate(BLOCK_JITTER, start=1):
        write_variant(tmp_path / "other", "deps", "sync-dep", "bad", lag_ms=[500.0 * f] * 50, repeat=block)
        sample = Path("deps", "sync-dep", f"closed-u10-r{block}", "loop_lag.csv")
        (tmp_path / "other" / sample).replace(run_dir / sample)
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


def test_ledger_opens_the_report_in_claim_order_with_headlines(tmp_path: Path) -> None:
    text = report.rebuild(fixture_run(tmp_path), write_top_report=False).read_text()
    ledger = text.split("## Ledger")[1].split("## Environment")[0]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    rows = [line for line in ledger.splitlines() if line.startswith("| C")]
    assert [row.split(":")[0] for row in rows] == ["| C1", "| C11"]
    assert summary["verdicts"]["deps"]["headline"] in rows[0] and "**does not hold**" in rows[0]
    assert "(#deps-c1)" in rows[0] and "## `deps`: C1" in text
    assert f"FastAPI {store.environment()['packages']['fastapi']}" in ledger


def test_resources_slopes_and_new_backends_come_from_the_samples(tmp_path: Path) -> None:
    folder = write_variant(tmp_path, "sessions", "connect-leaky", "bad", rss_mb=[100.0 + i for i in range(20)])
    record = analysis.summarize_sample(folder)
    # Samples 0.5 s apart, RSS growing 1 MB per sample: 2 MB/s = 120 MB/min.
    assert record["server_rss_slope_mb_per_min"] == pytest.approx(120.0)
    assert record["server_rss_mb_peak"] == 119.0
    # pg_stat_database.sessions grows by 5 per sample: about 10 new backends per second.
    assert record["new_backends_per_s"] == pytest.approx(10.0, rel=0.1)
    assert record["server_fds_peak"] == 40 and record["server_fds_slope_per_min"] == pytest.approx(0.0)
    flat = analysis.summarize_sample(write_variant(tmp_path, "sessions", "connect-closed", "good"))
    assert flat["server_rss_slope_mb_per_min"] == pytest.approx(0.0)


def test_counters_and_warnings_reach_the_record_and_the_report(tmp_path: Path) -> None:
    run_dir = fixture_run(tmp_path)
    meta_file = run_dir / "deps" / "async-dep" / "closed-u10-r1" / "sample.json"
    meta = store.read_json(meta_file)
    meta |= {"counters": {"setups": 12, "cleanups": 12}, "warnings": ["DeprecationWarning: on_event is deprecated"]}
    store.write_json(meta_file, meta)
    text = report.rebuild(run_dir, write_top_report=False).read_text()
    record = next(r for r in store.read_json(run_dir / "summary.json")["variants"] if r["variant"] == "async-dep")
    assert record["counters"] == {"setups": 12, "cleanups": 12}
    assert "- `async-dep`: setups 12, cleanups 12" in text
    assert "`async-dep` (1 of 3 samples): `DeprecationWarning: on_event is deprecated`" in text


def test_sweep_points_share_the_zero_point_across_series() -> None:
    def variant(name: str, sweep: tuple[str, int]) -> Variant:
        return Variant(name, "good", f"/{name}/items/{{id}}", name, (), sweep=sweep)

    pair = Pair(
        name="sweep", claim_id="C0", claim="", sources=(), mechanism="",
        variants=(variant("none", ("none", 0)), variant("a-5", ("a", 5)), variant("a-1", ("a", 1)),
                  variant("b-1", ("b", 1))),
    )  # fmt: skip
    records = [{"variant": v.name, "status": "ok", "rps": 1.0} for v in pair.variants]
    records[2]["status"] = "failed"
    points = charts.sweep_points(pair, records)
    assert {label: [x for x, _ in pts] for label, pts in points.items()} == {"a": [0, 5], "b": [0, 1]}


def test_a_compressed_sample_reads_the_same(tmp_path: Path) -> None:
    folder = write_variant(tmp_path, "deps", "sync-dep", "bad", requests=700, ping_ms=[3.0] * 30 + [90.0])
    before = analysis.summarize_sample(folder)
    store.compress_raw(folder)
    assert not list(folder.glob("*.csv")) and list(folder.glob("*.csv.gz"))
    assert analysis.summarize_sample(folder) == before


def test_top_report_shows_the_newest_sweep_and_soak_beside_its_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = tmp_path / "results"
    monkeypatch.setattr(store, "RESULTS_DIR", results)
    monkeypatch.setattr(report, "TOP_REPORT", tmp_path / "REPORT.md")
    results.mkdir()
    default = fixture_run(tmp_path).rename(results / "20260103-000000-default")
    for name, users in (("20260101-000000-sweep", (1, 50)), ("20260102-000000-sweep", (1, 10))):
        sweep = results / name
        write_manifest(sweep, {"blocking": {"block_ms": 10}})
        store.write_json(
            sweep / "manifest.json", store.read_json(sweep / "manifest.json") | {"writes_top_report": False}
        )
        for u in users:
            for variant, role, rps in (("async-blocking", "bad", 95), ("async-to-thread", "good", 40 * u)):
                write_variant(sweep, "blocking", variant, role, requests=rps * 10, users=u, primary=u == users[-1])
        report.rebuild(sweep, write_top_report=False)
    report.rebuild(default, write_top_report=True)
    text = (tmp_path / "REPORT.md").read_text()
    assert "## Sweeps and soaks" in text and "### Users sweep: run `20260102-000000-sweep`" in text
    assert "20260101-000000-sweep" not in text, "only the newest sweep"
    assert "| `async-to-thread` | 40 (40) | 400 (40) |" in text and "### Soak" not in text
    # A run's own report never carries the section.
    assert "## Sweeps and soaks" not in (default / "REPORT.md").read_text()


def test_usage_sampled_less_often_than_backends_is_averaged_over_its_own_rows(tmp_path: Path) -> None:
    """Backends every 0.1 s, CPU every 0.5 s: the rows without CPU count for the states
    and never as 0% CPU in the machine's total."""
    folder = write_variant(tmp_path, "sessions", "connect-closed", "good")
    path = folder / "connections.csv"
    header = "time,total,active,idle,idle_in_transaction,other,sessions,server_cpu_pct,server_rss_mb,server_fds"
    rows = [header + ",generator_cpu_pct,postgres_cpu_pct,error"]
    for i in range(100):  # the window is 1000-1010 s
        usage = i % 5 == 0
        cpu = "80,120,40,30,50" if usage else ",,,,"
        rows.append(f"{1000 + 0.1 * i:.1f},{4 + i % 2},{i % 2},4,0,0,1000,{cpu},")
    path.write_text("\n".join(rows) + "\n")
    record = analysis.summarize_sample(folder)
    assert record["server_cpu_pct"] == pytest.approx(80.0)
    assert record["machine_cpu_pct"] == pytest.approx(80.0 + 30.0 + 50.0)
    assert record["mean_connections"] == pytest.approx(4.5, abs=0.02) and record["peak_active"] == 1
    assert record["server_rss_mb_peak"] == 120.0


def test_a_ledger_row_without_articles_cites_the_pairs_first_threads() -> None:
    threads = ("fastapi#5122", "mozilla-ai/otari#1236", "fastapi#3205", "fastapi#3089")
    pair = replace(discover()["deps"], sources=(), references=threads)
    manifest = {"environment": {"packages": {}, "cpu_count": 2}}
    [row] = [line for line in report._ledger([pair], {}, manifest) if line.startswith("| C")]
    assert "[fastapi#5122](https://github.com/fastapi/fastapi/issues/5122)" in row
    assert "[mozilla-ai/otari#1236](https://github.com/mozilla-ai/otari/issues/1236)" in row
    assert "fastapi#3089" not in row and "+1 more" in row  # the section lists them all
    cited = replace(pair, sources=("A1",))
    [row] = [line for line in report._ledger([cited], {}, manifest) if line.startswith("| C")]
    assert "(A1)" in row and "fastapi#5122" not in row


def test_a_stall_in_the_instruments_gc_callback_is_shown_as_a_collection() -> None:
    gc_site = {
        "where": "apps/instruments.py:68",
        "function": "_callback",
        "code": "def _callback(self):",
        "blocked_in": "apps/instruments.py:68 _callback",
        "stalls": 3,
        "lag_ms_total": 120.0,
    }
    app_site = {
        "where": "apps/deps/app.py:41",
        "function": "blocking_dep",
        "code": "time.sleep(0.1)",
        "blocked_in": "apps/deps/app.py:41 blocking_dep",
        "stalls": 1,
        "lag_ms_total": 100.0,
    }
    beat = gc_site | {"where": "apps/instruments.py:331", "function": "_beat"}  # the instruments, not gc
    record = {"variant": "sync-dep", "stalls_caught": 5, "stall_sites": [gc_site, app_site, beat]}
    rows = [line for line in report._stalls([record]) if line.startswith("| `sync-dep`")]  # type: ignore[list-item]
    assert rows[0].split(" | ")[2] == report.GC_SITE and "instruments.py:68" not in rows[0]
    assert "`apps/deps/app.py:41`" in rows[1] and "`apps/instruments.py:331`" in rows[2]
    # The probe's sites name the file in full: the same rule.
    assert analysis.is_gc_collection({"file": "/srv/apps/instruments.py", "function": "_callback"})
    assert not analysis.is_gc_collection({"file": "/app/crud.py", "where": "app/crud.py:2", "function": "_callback"})


def test_a_stall_with_only_the_loops_entry_on_its_stack_is_shown_as_a_wait_not_a_line() -> None:
    runners = "/usr/lib/python3.11/asyncio/runners.py:118"
    wait = {"where": runners, "function": "run", "code": "return self._loop.run_until_complete(task)",
            "blocked_in": f"{runners} run", "stalls": 4, "lag_ms_total": 180.0}  # fmt: skip
    called = wait | {"where": "apps/deps/app.py:41", "function": "blocking_dep", "code": "time.sleep(0.1)"}
    record = {"variant": "sync-dep", "stalls_caught": 5, "stall_sites": [wait, called]}
    rows = [line for line in report._stalls([record]) if line.startswith("| `sync-dep`")]  # type: ignore[list-item]
    assert rows[0].split(" | ")[2] == report.LOOP_WAIT_SITE and "run_until_complete" not in rows[0]
    assert "`apps/deps/app.py:41`" in rows[1]  # the variant's line above the loop's entry is the variant's
    assert not analysis.is_loop_wait(wait | {"blocked_in": "/venv/psycopg2/extras.py:12 execute"})


def test_each_variant_shades_its_own_warm_up(tmp_path: Path) -> None:
    for variant, warmup_s in (("sync-dep", 2.0), ("async-dep", 9.5)):
        folder = write_variant(tmp_path, "deps", variant, "bad")
        store.write_json(folder / "phases.json", {"load_start": 1000.0 - warmup_s, "measure_start": 1000.0})
    records = [{"pair": "deps", "variant": v, "sample": "closed-u10-r1"} for v in ("sync-dep", "async-dep")]
    ends = [charts._warmup_end(tmp_path, r) for r in records]  # type: ignore[arg-type]
    assert ends == [pytest.approx(2.0), pytest.approx(9.5)]


def test_the_physics_check_calls_only_a_measurement_past_its_ceiling_wrong() -> None:
    """A ceiling is a bound: short of it (not CPU-bound) reads "below", past it "above"."""
    pair = discover()["orm_idle_in_transaction"]
    knobs = dict(pair.knobs)
    ceiling = pair.physics(knobs, 50, 2)["held-across-call"][0]  # type: ignore[misc]

    def assessed(rps: float, cpu: float) -> str:
        record = {"variant": "held-across-call", "status": "ok", "users": 50, "rps": rps, "server_cpu_pct": cpu}
        [row] = analysis.physics_rows(pair, [record], knobs, 2)  # type: ignore[list-item]
        return str(row["assessment"])

    assert assessed(ceiling, 30) == "agrees"
    assert assessed(0.7 * ceiling, 30).startswith("below by 30%")
    assert assessed(0.7 * ceiling, 95).startswith("below: the server was CPU-bound")
    assert assessed(1.3 * ceiling, 30).startswith("above by 30%")


def test_a_figure_that_rounds_to_zero_prints_without_a_sign() -> None:
    """A fitted slope of -1e-13 (a flat line, up to rounding) is 0.0; a real negative stays negative."""
    assert [report._num(v, 1) for v in (-1e-13, 1e-13, -0.06, 1234.56)] == ["0.0", "0.0", "-0.1", "1,234.6"]
    assert report._num(None) == report._num(float("nan")) == "n/a"


def test_stored_samples_follow_pair_variant_and_block_order_whatever_order_they_ran_in() -> None:
    pairs = [discover()[name] for name in ("deps", "blocking")]
    ran = [
        (pair.name, variant.name, f"closed-u50-b{block}")
        for block in (10, 2, 1)
        for pair in reversed(pairs)
        for variant in reversed(pair.variants)
    ]
    samples = [{"pair": p, "variant": v, "sample": s} for p, v, s in ran]
    stored = [(s["pair"], s["variant"], s["sample"]) for s in analysis.stored_order(samples, pairs)]  # type: ignore[arg-type]
    expected = [
        (pair.name, variant.name, f"closed-u50-b{block}")
        for pair in pairs
        for variant in pair.variants
        for block in (1, 2, 10)
    ]
    assert stored == expected
