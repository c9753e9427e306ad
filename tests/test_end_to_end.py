"""Real runs through the command line: a tiny scenario over every pair, and the
event-loop physics of the blocking pair."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from harness import store
from harness.database import Database
from harness.pairs import ROOT, discover

E2E_PAIRS = ("deps", "sessions", "blocking", "gather")
E2E_PG_HOME = Path(os.environ.get("BENCH_TEST_PG_HOME", ROOT / ".bench" / "test-pg")).with_name("test-e2e")


def bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "bench.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
        env=os.environ | (env or {}),
    )  # fmt: skip


def processes_of_run(marker: str, owner: int | None = None) -> list[str]:
    """Processes a run left behind: by its output folder, by the programs it starts, and
    (servers forked from the fork server keep its command line) by its fork server's owner."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if (
            marker in cmdline
            or (owner is not None and "harness.forkserver" in cmdline and f"--owner {owner}" in cmdline)
            or "locustfile.py" in cmdline
            or ("uvicorn" in cmdline and ("apps." in cmdline or "harness.upstream" in cmdline))
        ):
            found.append(f"{proc.info['pid']}: {cmdline}")
    return found


@pytest.mark.slow
def test_tiny_run_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "run"
    # The core pairs, and one that calls the stub upstream; every variant of every pair is
    # verified on its own in test_variants. The leaky pool times out in 0.5 s, so its users
    # fail several times within the 2 s window.
    result = bench(
        "run", "--scenario", "tiny", "--pairs", ",".join(E2E_PAIRS), "--out", str(out),
        "--set", "pool_timeout_ms=500", env={"BENCH_PG_HOME": str(E2E_PG_HOME)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["database"]["source"] == "embedded" and "***" in manifest["database"]["dsn"]
    records = {(r["pair"], r["variant"]): r for r in summary["variants"]}
    assert {pair for pair, _ in records} == set(E2E_PAIRS)
    assert len(records) == sum(len(discover()[pair].variants) for pair in E2E_PAIRS)
    for (pair, variant), record in records.items():
        assert record["status"] == "ok", (pair, variant, record["error"])
        assert record["requests"] > 0 and record["ping_samples"] > 0
        assert record["loop_lag_p99_ms"] is not None, "every variant records its event-loop lag"
        assert record["peak_connections"] is not None
        connections = store.raw(out / pair / variant / record["sample"], "connections.csv")
        rows = gzip.decompress(connections.read_bytes()).decode().splitlines()
        assert len(rows) > 3, "connection samples for the whole load"
        # Backends every 0.1 s, CPU and memory every 0.5 s: about one row in five has usage.
        header, *body = [row.split(",") for row in rows]
        cpu = header.index("server_cpu_pct")
        with_usage = sum(1 for row in body if row[cpu])
        assert 3 * with_usage <= len(body) <= 7 * with_usage + 7, (pair, variant, with_usage, len(body))
        # The sampler's own cost is measured, not assumed: a thread that ran cost something.
        assert record["sampler_cpu_pct"] is not None and 0 < record["sampler_cpu_pct"] < 50
        assert record["sampler_postgres_cpu_pct"] is not None and record["sampler_postgres_cpu_pct"] >= 0
        if record["role"] == "good":
            assert record["rps"] > 0 and record["failure_rate"] < 0.01
    # The leaky pool runs dry: its failures are counted, not hidden.
    assert records[("sessions", "pool-leaky")]["failures"] > 0
    assert set(summary["verdicts"]) == set(E2E_PAIRS)
    text = (out / "REPORT.md").read_text()
    for pair in E2E_PAIRS:
        assert summary["verdicts"][pair]["text"] in text
        assert (out / "charts" / f"{pair}.png").is_file()
        # Backends by state for the pairs that open any (gather calls no database).
        opened = any((r["peak_connections"] or 0) > 0 for (p, _), r in records.items() if p == pair)
        assert (out / "charts" / f"{pair}-states.png").is_file() == opened, pair
    assert "Its own cost, median (largest)" in text
    password = (E2E_PG_HOME / "password").read_text().strip()
    for file in out.rglob("*"):
        if file.is_file() and file.suffix in {".json", ".md", ".csv", ".log"}:
            assert password not in file.read_text(errors="replace"), file
    assert processes_of_run(str(E2E_PG_HOME)) == []


@pytest.mark.slow
def test_blocking_physics_at_20_ms(db: Database, tmp_path: Path) -> None:
    """A 20 ms blocking call on the loop cannot exceed 50 req/s; to_thread can."""
    out = tmp_path / "run"
    result = bench(
        "run", "--scenario", "tiny", "--pairs", "blocking", "--users", "20", "--set", "block_ms=20",
        "--dsn", db.dsn, "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    records = {r["variant"]: r for r in json.loads((out / "summary.json").read_text())["variants"]}
    assert records["async-blocking"]["rps"] <= 50 * 1.02
    assert records["async-to-thread"]["rps"] > 50
    # The loop monitor waits behind each 20 ms call whenever it wakes during one.
    assert records["async-blocking"]["loop_lag_p99_ms"] >= 15
    # Only the `def` endpoint borrows anyio's worker threads; to_thread uses the loop's executor.
    assert records["sync-def"]["threads_busy_peak"] >= 1
    assert records["async-to-thread"]["threads_busy_peak"] == 0 and records["async-blocking"]["threads_busy_peak"] == 0
    # The stack watchdog names the line that blocked the loop: the sleep in the shared
    # lookup, inside the `async def` route only.
    source = (ROOT / "apps" / "blocking" / "app.py").read_text().splitlines()
    sleep_line = 1 + next(i for i, line in enumerate(source) if "time.sleep(" in line)
    [top, *_] = records["async-blocking"]["stall_sites"]
    assert (top["where"], top["function"]) == (f"apps/blocking/app.py:{sleep_line}", "blocking_lookup")
    # A stall is a whole pass of the loop over the waiting requests (20 users x 20 ms, the
    # watchdog's heartbeat runs once per pass), so a second of window holds two or three.
    caught = records["async-blocking"]["stalls_caught"]
    assert caught >= 2 and top["stalls"] >= 0.9 * caught
    assert top["lag_ms_total"] / top["stalls"] >= 100
    assert records["async-to-thread"]["stalls_caught"] <= 2 and records["sync-def"]["stalls_caught"] <= 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["database"]["source"] == "dsn" and manifest["pairs"] == {"blocking": {"block_ms": 20}}


@pytest.mark.slow
def test_sigterm_mid_run_keeps_completed_variants_and_leaves_no_process(db: Database, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "bench.py", "run", "--scenario", "tiny", "--pairs", "blocking", "--dsn", db.dsn,
         "--out", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    # Wait until the second variant is under load, then stop the run.
    second = out / "blocking" / "async-to-thread" / "closed-u10-b1" / "phases.json"
    deadline = time.monotonic() + 120
    while not second.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert second.exists(), "the run never reached its second variant"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["finished"]
    summary = json.loads((out / "summary.json").read_text())
    assert [r["variant"] for r in summary["variants"]] == ["async-blocking"]
    assert summary["variants"][0]["status"] == "ok" and summary["variants"][0]["requests"] > 0
    sample = out / "blocking" / "async-to-thread" / "closed-u10-b1" / "sample.json"
    assert json.loads(sample.read_text())["error"] == "interrupted"
    time.sleep(1)
    assert processes_of_run(str(out), proc.pid) == []
    kept = summary["variants"][0]

    # --resume measures only what is missing and completes the run.
    result = bench("run", "--resume", str(out), "--dsn", db.dsn)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "measured before; kept" in result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and len(manifest["resumed"]) == 1
    records = {r["variant"]: r for r in json.loads((out / "summary.json").read_text())["variants"]}
    assert [r for r in records] == ["async-blocking", "async-to-thread", "sync-def"]
    assert all(r["status"] == "ok" for r in records.values())
    assert records["async-blocking"]["requests"] == kept["requests"]
    assert "verdict" in (out / "REPORT.md").read_text().lower()
