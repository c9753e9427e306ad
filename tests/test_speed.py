"""The speed probe, and CPU per request read at the reference speed."""

from __future__ import annotations

import collections
import os
import time
from pathlib import Path

import psutil
import pytest

from harness import analysis, checks
from harness.pairs import REFERENCE_UNIT_MS, speed_adjusted_cpu
from harness.report import _steal_text
from harness.sampling import HostCPU, SpeedProbe, work_unit


def test_work_unit_costs_cpu_time() -> None:
    # A fixed piece of work costs thread CPU time; sleeping costs none.
    assert 0.05 < work_unit() < 200
    started = time.thread_time()
    time.sleep(0.05)
    assert time.thread_time() - started < 0.01


def test_speed_probe_streams_its_units(tmp_path: Path) -> None:
    out = tmp_path / "speed.csv"
    with SpeedProbe(out, interval_s=0.02):
        time.sleep(0.3)
    rows = out.read_text().splitlines()
    assert rows[0] == "time,unit_ms"
    assert len(rows) - 1 >= 5
    assert all(float(row.split(",")[1]) > 0 for row in rows[1:])


def test_window_speed_is_the_mean_inside_the_window(tmp_path: Path) -> None:
    # Units outside the window (warm-up, the end) do not count; a slow slice counts whole.
    lines = ["time,unit_ms", "99.0,9.0"] + [f"{100 + i * 0.05:.2f},1.0" for i in range(9)] + ["100.45,3.0", "200,9"]
    (tmp_path / "speed.csv").write_text("\n".join(lines) + "\n")
    assert analysis._speed(tmp_path, (100.0, 101.0)) == pytest.approx(1.2)
    assert analysis._speed(tmp_path, (150.0, 150.1)) is None  # too few units to say
    assert analysis._speed(tmp_path / "missing", (100.0, 101.0)) is None


def test_a_slowed_machine_reads_the_same_work_as_the_same_cost() -> None:
    # Twice the CPU per request on a machine that runs the work unit half as fast: the same cost.
    # 25% of a core at 1,000 req/s is 0.25 ms a request.
    quick = {"server_cpu_pct": 25.0, "rps": 1000.0, "speed_unit_ms": REFERENCE_UNIT_MS}
    slowed = {"server_cpu_pct": 50.0, "rps": 1000.0, "speed_unit_ms": 2 * REFERENCE_UNIT_MS}
    costlier = {"server_cpu_pct": 50.0, "rps": 1000.0, "speed_unit_ms": REFERENCE_UNIT_MS}
    assert speed_adjusted_cpu(slowed) == pytest.approx(speed_adjusted_cpu(quick))
    assert checks.CPU_PER_REQUEST.read(costlier) == pytest.approx(2 * checks.CPU_PER_REQUEST.read(slowed))
    # Runs stored before the probe: the CPU time as measured.
    assert speed_adjusted_cpu({"server_cpu_pct": 50.0, "rps": 1000.0, "speed_unit_ms": None}) == pytest.approx(0.5)
    assert speed_adjusted_cpu({"server_cpu_pct": None, "rps": 1000.0, "speed_unit_ms": 1.0}) is None
    assert speed_adjusted_cpu(slowed) == pytest.approx(0.25)


def test_host_cpu_reads_busy_and_stolen_time_between_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    fields = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest", "guest_nice")
    times = collections.namedtuple("scputimes", fields)  # type: ignore[misc]
    now = [times(10.0, 0.0, 2.0, 50.0, 1.0, 0.0, 0.5, 3.0, 0.0, 0.0)]
    monkeypatch.setattr(psutil, "cpu_times", lambda: now[0])
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    host = HostCPU()
    # 2 s of CPU time later: 0.6 busy (0.4 user, 0.2 system), 1.0 idle, 0.4 stolen.
    now[0] = times(10.4, 0.0, 2.2, 51.0, 1.0, 0.0, 0.5, 3.4, 0.0, 0.0)
    found = host.percent()
    assert float(found["host_busy_pct"]) == pytest.approx(60 / 200 * 200)
    assert float(found["host_steal_pct"]) == pytest.approx(40 / 200 * 200)
    assert host.percent() == {}, "no time passed: no share"
    no_steal = collections.namedtuple("scputimes", ("user", "nice", "system", "idle"))  # type: ignore[misc]
    monkeypatch.setattr(psutil, "cpu_times", lambda: no_steal(1.0, 0.0, 1.0, 1.0))
    assert HostCPU().percent() == {}, "no steal reported (not Linux): nothing, no error"


def test_the_real_host_reads_within_its_cores() -> None:
    host = HostCPU()
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:  # some work of its own, so the host is busy
        sum(range(10_000))
    found = host.percent()
    if found:  # Linux
        cores = 100 * (os.cpu_count() or 1)
        assert 0 < float(found["host_busy_pct"]) <= cores + 1
        assert 0 <= float(found["host_steal_pct"]) <= cores


def test_the_method_names_the_window_the_host_took_most_from() -> None:
    samples = [
        {"pair": "control", "variant": "copy-a", "sample": "closed-u50-b10", "host_steal_pct": 41.0},
        {"pair": "control", "variant": "copy-b", "sample": "closed-u50-b10", "host_steal_pct": 3.0},
        {"pair": "deps", "variant": "sync-dep", "sample": "closed-u50-b1", "host_steal_pct": 2.0},
        {"pair": "deps", "variant": "async-dep", "sample": "closed-u50-b1", "host_steal_pct": None},
    ]
    text = _steal_text(samples)
    assert "median of 3.0%" in text and "at most 41.0%" in text and "`control/copy-a` closed-u50-b10" in text
    assert _steal_text([{"pair": "a", "variant": "b", "host_steal_pct": None}]) == "", "runs stored before: nothing"
