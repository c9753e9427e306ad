"""From raw files to records, and from records to verdicts.

A sample (one measurement in a fresh server) becomes a sample record; a variant's
samples combine into its record (medians over repeats, with intervals); each pair's rule
turns its variants' records into a verdict. Only stored files are read, so
`bench.py report` can rebuild everything later.
"""

from __future__ import annotations

import gzip
import json
import linecache
import os
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from harness import stats, store
from harness.checks import P99_MIN_REQUESTS, Decision
from harness.pairs import ROOT, Pair, Verdict, cpu_ms_per_request, speed_adjusted_cpu
from harness.records import (
    Block,
    Calibration,
    Comparison,
    Counters,
    PhysicsRow,
    Record,
    RunRatio,
    SampleMeta,
    SampleRecord,
    SoakFigures,
    StallSite,
    VariantRecord,
)
from harness.scenario import P99_TARGET_MS
from harness.store import read_json

# Measured inside the variant's server by apps.instruments' loop monitor; the pool and
# gc figures only for apps that watch a SQLAlchemy pool.
LOOP_FIELDS = (
    "loop_lag_p50_ms",
    "loop_lag_p99_ms",
    "loop_lag_max_ms",
    "threads_busy_mean",
    "threads_busy_peak",
    "pool_checked_out_mean",
    "pool_checked_out_peak",
    "pool_overflow_peak",
    "pool_returned_by_gc",  # connections the pool got back from a collected session, in the window
    "gc_full_collections",  # generation-2 collections in the window
)
# Fields every record carries, in the order summary.json lists them; None when the
# variant produced no measurement. harness.records.Record names each with its type.
RECORD_FIELDS = list(Record.__annotations__)
# Sample records carry these as well: which measurement it was.
SAMPLE_FIELDS = [
    "sample", "mode", "users", "rate", "block", "primary", "achieved_rps", "late_share", "rps_per_second", "soak",
    "warmup_users_answered", "warmup_capped",
]  # fmt: skip
# A variant's figures given as a mean over its blocks with a t-interval and a spread.
# Its latency percentiles come instead from its tallies merged across blocks.
CI_FIGURES = (
    "rps",
    "ping_p99_ms",
    "loop_lag_p99_ms",
    "server_cpu_ms_per_request",
    "server_cpu_ms_adjusted",
    "speed_unit_ms",
)
# A measurement is flagged, never silently used, when the load generator was this busy
# or an open-loop run achieved less than this share of its rate.
GENERATOR_CPU_LIMIT = 90.0
# Fewer speed-probe units than this in a window (20 per second) and it has no speed.
SPEED_MIN_UNITS = 5
RATE_SHARE_LIMIT = 0.95


def empty_record(meta: SampleMeta | SampleRecord) -> SampleRecord:
    # Every field present, None until measured: readers can index rather than guess.
    record = cast(SampleRecord, dict.fromkeys(RECORD_FIELDS))
    record["flags"] = []
    record |= {
        "pair": meta["pair"],
        "variant": meta["variant"],
        "role": meta["role"],
        "status": meta.get("status", "failed"),
    }
    record["error"] = meta.get("error")
    return record


def read_tallies(folder: Path) -> list[dict[str, Any]]:
    """What each load process (the single one, or each worker) measured after its
    warm-up, as the locustfile writes it when the process stops."""
    return [read_json(f) for f in sorted(folder.glob("tally-*.json"))]


def measured_window(folder: Path, tallies: list[dict[str, Any]]) -> tuple[float, float] | None:
    """From the end of the warm-up to the end of the last request. Workers finish their
    last requests after the master has stopped, so their tallies can end later."""
    phases = store.read_phases(folder)
    if "measure_start" not in phases or "load_stop" not in phases:
        return None
    stops = [t["stop"] for t in tallies if t.get("stop")]
    return phases["measure_start"], max([phases["load_stop"], *stops])


def _in_window(frame: pd.DataFrame, column: str, window: tuple[float, float]) -> pd.DataFrame:
    return frame[(frame[column] >= window[0]) & (frame[column] <= window[1])]


def merge_tallies(tallies: list[dict[str, Any]]) -> dict[str, Any]:
    """One total from the load processes' tallies: counts add up, the response-time
    buckets add up, and percentiles come from the merged buckets the way Locust takes
    them from its own."""
    buckets: dict[float, int] = {}
    for tally in tallies:
        for ms, count in tally["response_times"].items():
            buckets[float(ms)] = buckets.get(float(ms), 0) + int(count)
    requests = sum(int(t["requests"]) for t in tallies)
    tops = [float(t["max_ms"]) for t in tallies if t.get("max_ms") is not None]
    return {
        "requests": requests,
        "failures": sum(int(t["failures"]) for t in tallies),
        "buckets": buckets,
        "percentiles_ms": {p: stats.bucket_percentile(buckets, requests, p) for p in (0.5, 0.95, 0.99)},
        "max_ms": max(tops) if tops else None,
        "errors": [e for t in tallies for e in t["errors"]],
    }


def _locust_totals(folder: Path, window: tuple[float, float], tallies: list[dict[str, Any]]) -> dict[str, Any]:
    """Requests, failures and percentiles: merged from the load processes' tallies; in
    runs stored before tallies, from the final totals or from Locust's own CSV (which
    can miss the last second of requests)."""
    final_file = folder / "locust_final.json"
    if tallies or final_file.is_file():
        final = merge_tallies(tallies) if tallies else read_json(final_file)
        requests, failures = int(final["requests"]), int(final["failures"])
        percentiles = {float(p): v for p, v in final["percentiles_ms"].items()}
        figures = [percentiles[0.5], percentiles[0.95], percentiles[0.99], final["max_ms"]]
        errors = pd.DataFrame(final["errors"], columns=["Error", "Occurrences"])
    else:
        stats_csv = pd.read_csv(store.raw(folder, "locust_stats.csv"))
        total = stats_csv[stats_csv["Name"] == "Aggregated"].iloc[0]
        requests, failures = int(total["Request Count"]), int(total["Failure Count"])
        figures = [total["50%"], total["95%"], total["99%"], total["Max Response Time"]]
        failures_file = store.raw(folder, "locust_failures.csv")
        errors = pd.read_csv(failures_file) if failures_file.is_file() else pd.DataFrame()
    p50, p95, p99, top = (None if v is None else float(v) for v in figures)
    out: dict[str, Any] = {
        "requests": requests,
        "failures": failures,
        "failure_rate": failures / requests if requests else 0.0,
        # Over the measured window, not Locust's first-to-last response span, which
        # shrinks to nothing when every request times out at once.
        "rps": requests / (window[1] - window[0]),
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "max_ms": top,
        "top_failures": [],
        "failure_kinds": [],
        # Response-time buckets (ms -> requests): a variant's percentiles merge them across blocks.
        "buckets": {str(ms): n for ms, n in (final.get("buckets") or {}).items()} if tallies else None,
    }
    if not errors.empty:
        # Locust keys failures by message, and messages carry the random URL:
        # group them by what went wrong instead.
        errors["Error"] = errors["Error"].astype(str).map(failure_kind)
        counts = errors.groupby("Error")["Occurrences"].sum().sort_values(ascending=False)
        out["failure_kinds"] = [[str(e), int(n)] for e, n in counts.items()]
        out["top_failures"] = out["failure_kinds"][:3]
    return out


def failure_kind(message: str) -> str:
    """A Locust failure message without its URL, ids and ports."""
    message = re.sub(r"'?https?://[^\s',)]+'?", "<url>", message)
    return re.sub(r"for id \d+", "for id <id>", message)


def _probe(folder: Path, window: tuple[float, float]) -> dict[str, Any]:
    probe = _in_window(pd.read_csv(store.raw(folder, "probe.csv")), "intended", window)
    ok = probe[probe["status"] == 200]
    latency = ok["latency_ms"]
    return {
        "ping_samples": len(probe),
        "ping_p50_ms": float(latency.quantile(0.50)) if len(ok) else None,
        "ping_p99_ms": float(latency.quantile(0.99)) if len(ok) else None,
        "ping_max_ms": float(latency.max()) if len(ok) else None,
        "ping_failures": int(len(probe) - len(ok)),
    }


def loop_lag_files(folder: Path) -> list[Path]:
    """The server's loop-lag series: one file, or one per uvicorn worker (loop_lag-<pid>.csv)."""
    single = store.raw(folder, "loop_lag.csv")
    if single.is_file():
        return [single]
    return sorted({store.raw(folder, p.name.removesuffix(".gz")) for p in folder.glob("loop_lag-*.csv*")})


def _loop_lag(folder: Path, window: tuple[float, float]) -> dict[str, Any]:
    # Several workers' rows pooled: lag percentiles over every loop; thread and pool peaks
    # are a worker's own (each has its threads and its pool), the backends count them all.
    files = loop_lag_files(folder)
    samples = _in_window(pd.concat([pd.read_csv(f) for f in files]), "time", window) if files else pd.DataFrame()
    if samples.empty:  # an app without the monitor, or one that never got to run it
        return dict.fromkeys(LOOP_FIELDS)
    lag = samples["lag_ms"]
    threads = _column(samples, "threads_busy")
    checked_out, overflow = _column(samples, "pool_checked_out"), _column(samples, "pool_overflow")
    return {
        "loop_lag_p50_ms": float(lag.quantile(0.50)),
        "loop_lag_p99_ms": float(lag.quantile(0.99)),
        "loop_lag_max_ms": float(lag.max()),
        "threads_busy_mean": _mean(threads),
        "threads_busy_peak": int(threads.max()) if threads.notna().any() else None,
        "pool_checked_out_mean": _mean(checked_out),
        "pool_checked_out_peak": int(checked_out.max()) if checked_out.notna().any() else None,
        # QueuePool counts overflow from -pool_size (no connection opened yet) up to max_overflow.
        "pool_overflow_peak": int(overflow.max()) if overflow.notna().any() else None,
        "pool_returned_by_gc": _growth(_column(samples, "pool_returned_by_gc")),
        "gc_full_collections": _growth(_column(samples, "gc_gen2")),
    }


def _speed(folder: Path, window: tuple[float, float]) -> float | None:
    """The speed probe's mean work-unit CPU time over the window (harness.sampling.SpeedProbe):
    a mean, not a median, since a slowed host takes cycles in slices that hit some units
    whole and miss others."""
    path = store.raw(folder, "speed.csv")
    if not path.is_file():
        return None
    units = _in_window(pd.read_csv(path), "time", window)["unit_ms"].dropna()
    return float(units.mean()) if len(units) >= SPEED_MIN_UNITS else None


STALLS_FILE = "stalls.jsonl"
# Loop lag at which the suite's servers' watchdog reads the loop's stack: above a healthy
# loop's scheduling noise (its p99 lag is a few ms), below any stall worth finding.
STALL_MS = 25.0
# The suite's own code, where a stall's line is looked for; the instruments are never it.
SUITE_APPS = ROOT / "apps"
INSTRUMENTS = str(SUITE_APPS / "instruments.py")
# Sites kept per sample and per variant: the line that blocks is the first, or nearly.
MOST_SITES = 3
# apps/instruments.py's GCWatch callback, which runs only inside a collection.
GC_CALLBACK = "_callback"


def is_gc_collection(site: Mapping[str, Any]) -> bool:
    """A stall credited to the instruments' gc callback was a garbage collection: the
    whole interpreter paused, not a call that blocks. Takes the probe's sites (with a
    full `file`) and the suite's (only `where`, path:line)."""
    file = str(site.get("file") or str(site.get("where") or "").rpartition(":")[0])
    return Path(file).name == "instruments.py" and site.get("function") == GC_CALLBACK


# The event loop's own entry frames. A stack whose innermost Python frame is one of these
# ran no Python code of its own: the loop was inside its C code (uvloop's run, or the
# selector's poll) and late because its thread could not take the GIL, or the CPU, back.
LOOP_ENTRIES = (
    ("asyncio/runners.py", "run"),
    ("asyncio/base_events.py", "run_forever"),
    ("asyncio/base_events.py", "run_until_complete"),
    ("asyncio/base_events.py", "_run_once"),
    ("selectors.py", "select"),
    ("uvloop/__init__.py", "run"),
)


def is_loop_wait(site: Mapping[str, Any]) -> bool:
    """A stall whose stack had no frame but the loop's own entry: the loop thread waiting to
    run (for the GIL that worker threads held, or for a CPU), not a call that blocks it.
    Takes the probe's sites and the suite's: both name their innermost frame in
    `blocked_in` ("path:line function")."""
    where, _, function = str(site.get("blocked_in") or "").rpartition(" ")
    if where != site.get("where"):  # the site is a frame of the app's or the suite's above the innermost
        return False
    file = where.rpartition(":")[0].replace(os.sep, "/")
    return any(file.endswith("/" + entry) and function == name for entry, name in LOOP_ENTRIES)


def read_stalls(folder: Path, window: tuple[float, float] | None) -> list[dict[str, Any]]:
    """The stack watchdog's stalls in the measured window (all of them without one)."""
    path = store.raw(folder, STALLS_FILE)
    if not path.is_file():
        return []
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", errors="replace") as handle:
        lines = handle.read().splitlines()
    stalls = []
    for line in lines:
        try:
            stall = json.loads(line)
        except ValueError:  # a line cut short when the server stopped
            continue
        if window is None or window[0] <= float(stall["time"]) <= window[1]:
            stalls.append(stall)
    return stalls


def _in_this_checkout(path: str) -> str:
    """A stored frame's file in this checkout: the watchdog writes absolute paths, and a
    run measured in another clone of the suite names its apps under that clone's root."""
    if path.startswith(str(ROOT)) or "/apps/" not in path:
        return path
    here = SUITE_APPS / path.rsplit("/apps/", 1)[1]
    return str(here) if here.is_file() else path


def _suite_where(frame: list[Any]) -> str:
    path = Path(str(frame[0]))
    return f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{frame[1] or 0}"


def suite_stall_sites(stalls: list[dict[str, Any]]) -> list[StallSite]:
    """Each stall credited to the stack the watchdog saw most while it lasted, at its
    innermost frame in the suite's apps (the variant's own line: a blocking C call has no
    frame of its own), else its innermost frame; grouped by line, most stalls first."""
    sites: dict[str, StallSite] = {}
    for stall in stalls:
        stack = [[_in_this_checkout(str(f[0])), *f[1:]] for f in stall["samples"][0][1]]
        if not stack:
            continue
        mine = [f for f in stack if str(f[0]).startswith(str(SUITE_APPS)) and str(f[0]) != INSTRUMENTS]
        frame = mine[0] if mine else stack[0]
        where = _suite_where(frame)
        site = sites.setdefault(
            where,
            {
                "where": where,
                "function": str(frame[2]),
                "code": linecache.getline(str(frame[0]), int(frame[1] or 0)).strip(),
                "blocked_in": f"{_suite_where(stack[0])} {stack[0][2]}",
                "stalls": 0,
                "lag_ms_total": 0.0,
            },
        )
        site["stalls"] += 1
        site["lag_ms_total"] = round(site["lag_ms_total"] + float(stall["lag_ms"]), 2)
    return sorted(sites.values(), key=lambda s: (-s["stalls"], -s["lag_ms_total"]))[:MOST_SITES]


def merge_stall_sites(records: list[SampleRecord]) -> list[StallSite] | None:
    """A variant's stall sites over its samples (None where no server ran the watchdog)."""
    found = [r.get("stall_sites") for r in records if r.get("stall_sites") is not None]
    if not found:
        return None
    sites: dict[str, StallSite] = {}
    for listed in found:
        for site in listed or []:
            merged = sites.setdefault(site["where"], {**site, "stalls": 0, "lag_ms_total": 0.0})
            merged["stalls"] += site["stalls"]
            merged["lag_ms_total"] = round(merged["lag_ms_total"] + site["lag_ms_total"], 2)
    return sorted(sites.values(), key=lambda s: (-s["stalls"], -s["lag_ms_total"]))[:MOST_SITES]


def _growth(totals: pd.Series) -> int | None:
    """How much a running total grew over the window."""
    known = totals.dropna()
    return int(known.iloc[-1] - known.iloc[0]) if len(known) else None


def slope_per_min(times: pd.Series, values: pd.Series) -> float | None:
    return stats.slope_per_min(list(times.astype(float)), list(pd.to_numeric(values, errors="coerce")))


def _column(samples: pd.DataFrame, name: str) -> pd.Series:
    """A sampled column, empty of values in runs made before it was sampled."""
    return samples[name] if name in samples else pd.Series(float("nan"), index=samples.index)


def _connections(folder: Path, window: tuple[float, float]) -> dict[str, Any]:
    samples = _in_window(pd.read_csv(store.raw(folder, "connections.csv")), "time", window)
    counted = samples.dropna(subset=["total"])
    cpu, rss, fds = (_column(samples, c) for c in ("server_cpu_pct", "server_rss_mb", "server_fds"))
    sessions = _column(samples, "sessions").dropna()
    started = samples.loc[sessions.index, "time"] if len(sessions) else None
    used = samples[_usage_rows(samples)]
    return {
        "peak_connections": int(counted["total"].max()) if len(counted) else None,
        "mean_connections": float(counted["total"].mean()) if len(counted) else None,
        # By state; idle in transaction: a backend holding a transaction open without running
        # anything, as a session that was never ended does.
        **_by_state(counted),
        "new_backends_per_s": (
            float((sessions.iloc[-1] - sessions.iloc[0]) / (started.iloc[-1] - started.iloc[0]))
            if started is not None and len(sessions) >= 2 and started.iloc[-1] > started.iloc[0]
            else None
        ),
        "server_cpu_pct": float(cpu.mean()) if cpu.notna().any() else None,
        "server_rss_mb_peak": float(rss.max()) if rss.notna().any() else None,
        "server_rss_slope_mb_per_min": slope_per_min(samples["time"], rss),
        "server_fds_peak": int(fds.max()) if fds.notna().any() else None,
        "server_fds_slope_per_min": slope_per_min(samples["time"], fds),
        "generator_cpu_pct": _mean(_column(samples, "generator_cpu_pct")),
        "postgres_cpu_pct": _mean(_column(samples, "postgres_cpu_pct")),
        # Server, PostgreSQL and load generator together, of the machine's cores x 100%,
        # over the rows that sampled usage (backends are sampled more often).
        "machine_cpu_pct": _mean(
            _column(used, "server_cpu_pct").fillna(0)
            + _column(used, "postgres_cpu_pct").fillna(0)
            + _column(used, "generator_cpu_pct").fillna(0)
        ),
        # The whole machine (every process, the suite's included) and the CPU a hypervisor
        # gave other guests, of the machine's cores x 100%; None in runs stored before.
        "host_busy_pct": _mean(_column(used, "host_busy_pct")),
        "host_steal_pct": _mean(_column(used, "host_steal_pct")),
    }


def _usage_rows(samples: pd.DataFrame) -> pd.Series:
    """The rows where the sampler read CPU and memory (all of them in runs stored before
    backends were sampled more often than usage)."""
    columns = [c for c in ("server_cpu_pct", "postgres_cpu_pct", "generator_cpu_pct") if c in samples]
    if not columns:
        return pd.Series(False, index=samples.index)
    return samples[columns].notna().any(axis=1)


SAMPLER_FILE = "sampler.json"


def _sampler_cost(folder: Path) -> dict[str, float | None]:
    """What the connection sampler cost itself over the sample (harness.sampling): its
    thread's CPU in the runner and its backend's in PostgreSQL, each in % of one core."""
    try:
        cost = read_json(folder / SAMPLER_FILE)
        seconds = float(cost["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return {"sampler_cpu_pct": None, "sampler_postgres_cpu_pct": None}
    if seconds <= 0:
        return {"sampler_cpu_pct": None, "sampler_postgres_cpu_pct": None}
    postgres = cost.get("postgres_cpu_s")
    return {
        "sampler_cpu_pct": 100 * float(cost["runner_cpu_s"]) / seconds,
        "sampler_postgres_cpu_pct": None if postgres is None else 100 * float(postgres) / seconds,
    }


STATES = ("active", "idle", "idle_in_transaction")


def _by_state(counted: pd.DataFrame) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for state in STATES:
        values = _column(counted, state).dropna()
        found[f"peak_{state}"] = int(values.max()) if len(values) else None
        found[f"mean_{state}"] = float(values.mean()) if len(values) else None
    return found


def _mean(values: pd.Series) -> float | None:
    return float(values.mean()) if values.notna().any() else None


def read_history(folder: Path) -> pd.DataFrame:
    """Locust's once-a-second history of the aggregate. The statistics reset at the end
    of the warm-up can tear a line; torn lines are dropped, not guessed at."""
    path = store.raw(folder, "locust_stats_history.csv")
    if not path.is_file():
        return pd.DataFrame(columns=["Timestamp", "Total Request Count", "99%"])
    history = pd.read_csv(path, on_bad_lines="skip", dtype=str)
    history = history[history["Name"] == "Aggregated"].copy()
    for column in ("Timestamp", "Total Request Count", "99%"):
        history[column] = pd.to_numeric(history[column], errors="coerce")
    return history.dropna(subset=["Timestamp", "Total Request Count"])


def per_second_rps(folder: Path, window: tuple[float, float]) -> list[float]:
    """Requests completed in each second of the measured window, from Locust's history."""
    history = read_history(folder)
    history = history[(history["Timestamp"] > window[0]) & (history["Timestamp"] <= window[1])]
    counts = history["Total Request Count"].to_numpy(dtype=float)
    times = history["Timestamp"].to_numpy(dtype=float)
    if len(counts) < 3:
        return []
    steps = np.diff(counts) / np.diff(times)
    return [float(v) for v in steps if v >= 0]  # a negative step is the warm-up reset


def _schedule(folder: Path, window: tuple[float, float], requests: int) -> dict[str, Any]:
    """Open loop: the rate achieved and the share of sends that left late."""
    schedules = [read_json(f) for f in sorted(folder.glob("schedule-*.json"))]
    if not schedules:
        return {}
    due = sum(s["due"] for s in schedules)
    late = sum(s["late"] for s in schedules)
    return {"achieved_rps": requests / (window[1] - window[0]), "late_share": late / due if due else 0.0}


def _soak(folder: Path, window: tuple[float, float], recovery_s: float) -> SoakFigures:
    """A soak's load phase and its quiet recovery: the slope of each resource in each
    phase, and where it stood at the end of each, so a leak is a measured growth rate
    and recovery shows whether the resources come back."""
    samples = pd.read_csv(store.raw(folder, "connections.csv"))
    phases = {"load": window, "recovery": (window[1], window[1] + recovery_s)}
    out: SoakFigures = {"load_s": window[1] - window[0], "recovery_s": recovery_s}
    for phase, span in phases.items():
        part = _in_window(samples, "time", span)
        for column, name in (("total", "connections"), ("server_rss_mb", "rss_mb"), ("server_fds", "fds")):
            values = _column(part, column)
            out[f"{name}_slope_per_min_{phase}"] = slope_per_min(part["time"], values)
            known = values.dropna()
            out[f"{name}_end_of_{phase}"] = float(known.iloc[-1]) if len(known) else None
    history = _in_window(read_history(folder), "Timestamp", window)
    out["p99_slope_ms_per_min_load"] = slope_per_min(history["Timestamp"], history["99%"])
    return out


def fell_behind(record: Mapping[str, Any]) -> bool:
    """An open loop that achieved under RATE_SHARE_LIMIT of its rate: requests queued, so
    its users, not its rate, set how many were in flight."""
    rate, achieved = record.get("rate"), record.get("achieved_rps")
    return record.get("mode") == "open" and bool(rate) and achieved is not None and achieved < RATE_SHARE_LIMIT * rate


def sample_flags(record: SampleRecord) -> list[str]:
    """Why a measurement cannot be taken at face value."""
    flags = []
    if (record.get("generator_cpu_pct") or 0) > GENERATOR_CPU_LIMIT:
        flags.append(f"load generator at {record['generator_cpu_pct']:.0f}% CPU")
    if fell_behind(record):
        flags.append(f"achieved {record['achieved_rps']:.0f} of {record['rate']:g} req/s requested")
    if record.get("warmup_capped"):  # some users' first requests may still be queued in the window
        answered, users = record.get("warmup_users_answered") or 0, record.get("users") or 0
        flags.append(f"warm-up capped: {answered:.0f} of {users:.0f} users had an answer")
    return flags


def _tally_flags(tallies: list[dict[str, Any]], meta: SampleMeta) -> list[str]:
    """Each load process (the single one, or each worker) writes a tally; one that did
    not took its requests with it."""
    found, expected = len(tallies), max(1, int(meta.get("workers") or 0))
    if found == 0 or found >= expected:  # none at all: a run stored before tallies
        return []
    return [f"{expected - found} of {expected} load processes wrote no tally: their requests are missing"]


def summarize_sample(folder: Path) -> SampleRecord:
    """The record of one measurement, from its raw files."""
    meta: SampleMeta = read_json(folder / "sample.json")
    record = empty_record(meta)
    record |= {key: meta.get(key) for key in SAMPLE_FIELDS}
    for key in ("baseline_connections", "settled_connections", "terminated_backends", "counters"):
        record[key] = meta.get(key)
    record["warnings"] = meta.get("warnings") or []
    if meta.get("status") != "ok":
        return record
    tallies = read_tallies(folder)
    window = measured_window(folder, tallies)
    if window is None:
        record |= {"status": "failed", "error": meta.get("error") or "load never reached its measured phase"}
        return record
    record |= _locust_totals(folder, window, tallies)
    record |= _probe(folder, window)
    record |= _connections(folder, window)
    record |= _loop_lag(folder, window)
    record |= _schedule(folder, window, record["requests"])
    record["measured_s"] = round(window[1] - window[0], 2)
    record["block"] = meta.get("block", meta.get("repeat"))  # runs stored before blocks called them repeats
    phases = store.read_phases(folder)
    # How many users had an answer when the warm-up ended: a server that never accepts
    # some connections serves fewer users than the load offers, and latency follows them.
    record["warmup_users_answered"] = phases.get("warmup_users_completed")
    record["warmup_capped"] = phases.get("warmup_capped")
    record["warmup_s"] = phases.get("warmup_s")  # runs stored before it have none
    record["server_cpu_ms_per_request"] = cpu_ms_per_request(record)
    record["speed_unit_ms"] = _speed(folder, window)
    record["server_cpu_ms_adjusted"] = speed_adjusted_cpu(record)
    if store.raw(folder, STALLS_FILE).is_file():  # servers started before the watchdog have none
        stalls = [s for s in read_stalls(folder, window) if s.get("samples")]
        record["stalls_caught"] = len(stalls)
        record["stall_sites"] = suite_stall_sites(stalls)
    record |= _sampler_cost(folder)
    record["rps_per_second"] = per_second_rps(folder, window)
    record["flags"] = sample_flags(record) + _tally_flags(tallies, meta)
    if meta.get("mode") == "soak":
        record["soak"] = _soak(folder, window, float(meta.get("recovery_s") or 0))
    return record


def summarize_calibration(folder: Path) -> Calibration:
    """What the load generator drove against a bare endpoint: its ceiling."""
    try:
        meta = read_json(folder / "sample.json")
    except (OSError, ValueError):
        return {}
    result: Calibration = {"status": meta.get("status"), "users": meta.get("users"), "workers": meta.get("workers")}
    tallies = read_tallies(folder)
    window = measured_window(folder, tallies)
    if meta.get("status") != "ok" or window is None:
        return result | {"error": meta.get("error")}
    totals = _locust_totals(folder, window, tallies)
    result |= {k: v for k, v in totals.items() if k in ("rps", "failure_rate", "p99_ms")}
    usage = _connections(folder, window)
    result |= {"generator_cpu_pct": usage["generator_cpu_pct"], "server_cpu_pct": usage["server_cpu_pct"]}
    return result


def _sum_counters(records: list[SampleRecord]) -> Counters | None:
    """Counters over the samples: numbers add up, anything else keeps its first value."""
    found = [r["counters"] for r in records if r.get("counters")]
    if not found:
        return None
    total: Counters = {}
    for counters in found:
        for name, value in counters.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                total[name] = total.get(name, 0) + value
            else:
                total.setdefault(name, value)
    return total


def _merge_failures(records: list[SampleRecord]) -> list[list[Any]]:
    """Every kind of failure over the samples, most frequent first."""
    counts: dict[str, int] = {}
    for record in records:
        for kind, number in record.get("failure_kinds") or record.get("top_failures") or []:
            counts[kind] = counts.get(kind, 0) + number
    return [[kind, n] for kind, n in sorted(counts.items(), key=lambda item: -item[1])]


# How each field of the variant record comes from its samples.
_SUMS = ("requests", "failures", "ping_samples", "ping_failures", "terminated_backends", "pool_returned_by_gc",
         "gc_full_collections", "stalls_caught")  # fmt: skip
_MAXIMA = ("max_ms", "ping_max_ms", "loop_lag_max_ms", "threads_busy_peak", "peak_connections", "server_fds_peak",
           "server_rss_mb_peak", "settled_connections", "pool_checked_out_peak", "pool_overflow_peak",
           "peak_active", "peak_idle", "peak_idle_in_transaction")  # fmt: skip


def combine(records: list[SampleRecord]) -> VariantRecord:
    """One record from several measurements of the same variant and load: medians of
    rates and percentiles, sums of counts, maxima of peaks; with each key figure's
    repeat values, interval and spread."""
    ok = [r for r in records if r["status"] == "ok"]
    first = records[0]
    # A variant record starts as its first sample's empty record, and gains the combined figures.
    started = empty_record(first) | {key: first.get(key) for key in ("mode", "users", "rate", "primary")}
    out = cast(VariantRecord, started)
    out["baseline_connections"] = first.get("baseline_connections")
    out["samples"] = len(records)
    out["repeats"] = len(ok)
    if not ok:
        failed = next((r for r in records if r.get("error")), first)
        warned = list(dict.fromkeys(w for r in records for w in r.get("warnings") or []))
        return out | {
            "status": "failed",
            "error": failed.get("error"),
            "settled_connections": failed.get("settled_connections"),
            # A server that printed warnings before it failed (FastAPI's deprecations come at import).
            "warnings": warned if any(r.get("warnings") is not None for r in records) else None,
        }
    out["status"], out["error"] = "ok", None
    out["sample"] = ok[0].get("sample")  # the one whose time series the charts draw
    for key in RECORD_FIELDS:
        values = [r.get(key) for r in ok]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if key in _SUMS:
            out[key] = sum(numbers) if numbers else None
        elif key in _MAXIMA:
            out[key] = max(numbers) if numbers else None
        elif numbers and key not in ("users", "baseline_connections"):  # these stay as the first sample's
            out[key] = stats.median(numbers)
    answered = [r.get("warmup_users_answered") for r in ok if r.get("warmup_users_answered") is not None]
    out["warmup_users_answered"] = min(answered) if answered else None
    out["failure_rate"] = out["failures"] / out["requests"] if out["requests"] else 0.0
    out["failure_kinds"] = _merge_failures(ok)
    out["top_failures"] = out["failure_kinds"][:3]
    out["counters"] = _sum_counters(ok)
    out["stall_sites"] = merge_stall_sites(ok)
    out["warnings"] = list(dict.fromkeys(w for r in records for w in r.get("warnings") or []))
    # How many samples printed each: one line per distinct warning in the report, not one per sample.
    out["warning_counts"] = {w: sum(w in (r.get("warnings") or []) for r in records) for w in out["warnings"]}
    out["flags"] = list(dict.fromkeys(f for r in ok for f in r.get("flags") or []))
    if any(r.get("achieved_rps") is not None for r in ok):
        out["achieved_rps"] = stats.median([r.get("achieved_rps") for r in ok])
        out["late_share"] = stats.median([r.get("late_share") for r in ok])
    out["values"] = {figure: [r.get(figure) for r in ok] for figure in CI_FIGURES}
    out["ci_method"] = "blocks" if len(ok) >= 2 else "none"
    out["ci"] = {}
    for figure in CI_FIGURES:
        # A figure over blocks: their mean with its t-interval (None from one block).
        found = stats.t_interval(out["values"][figure])
        if found is not None:
            out[figure] = found.estimate
            out["ci"][figure] = (found.low, found.high)
        else:
            out["ci"][figure] = None
    out["spread"] = {figure: stats.spread(out["values"][figure]) for figure in CI_FIGURES}
    out |= merged_percentiles(ok)
    return out


def merged_percentiles(records: list[SampleRecord]) -> dict[str, Any]:
    """A variant's latency percentiles from its samples' response-time buckets added up,
    as Locust takes them from its own; marked thin where they rest on too few requests."""
    buckets: dict[float, int] = {}
    for record in records:
        for ms, n in (record.get("buckets") or {}).items():
            buckets[float(ms)] = buckets.get(float(ms), 0) + int(n)
    requests = sum(buckets.values())
    if not requests:  # runs stored before buckets: the medians over samples stand
        return {}
    p50, p95, p99 = (stats.bucket_percentile(buckets, requests, share) for share in (0.5, 0.95, 0.99))
    return {
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "thin_percentiles": requests < P99_MIN_REQUESTS,
    }


def aggregate_variant(samples: list[SampleRecord], p99_target_ms: float) -> VariantRecord:
    """The variant's record: its primary measurements combined, plus the open-loop
    measurement, the users sweep with its knee, and the soak, where they were made."""
    primary = [r for r in samples if r.get("primary")] or samples
    record = combine(primary)
    opened = [r for r in samples if r.get("mode") == "open" and not r.get("primary")]
    record["open_loop"] = combine(opened) if opened else None
    closed = [r for r in samples if r.get("mode") == "closed"]
    levels = sorted({r["users"] for r in closed})
    record["levels"] = (
        [combine([r for r in closed if r["users"] == users]) for users in levels] if len(levels) > 1 else []
    )
    measured = [
        stats.Level(level["users"], level["rps"], level["p99_ms"])
        for level in record["levels"]
        if level["status"] == "ok"
    ]
    found = stats.knee(measured, p99_target_ms)
    record["knee"] = {"users": found.users, "rps": found.rps, "p99_ms": found.p99_ms} if found else None
    soaked = [r for r in samples if r.get("mode") == "soak" and r["status"] == "ok"]
    record["soak"] = soaked[0].get("soak") if soaked else None
    record["soak_sample"] = soaked[0].get("sample") if soaked else None
    return record


def _sample_order(path: Path) -> list[str | int]:
    """closed-u50-b2 before closed-u50-b10: the order the blocks ran in, not the alphabet's."""
    return _natural(path.parent.name)


def _natural(name: str) -> list[str | int]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def stored_order(samples: list[SampleRecord], pairs: list[Pair]) -> list[SampleRecord]:
    """Samples in load_samples' order (pair, variant, block), whatever order they ran in:
    a run's summary.json and its re-rendering list them alike."""
    rank = {
        (pair.name, variant.name): (i, j) for i, pair in enumerate(pairs) for j, variant in enumerate(pair.variants)
    }
    return sorted(
        samples,
        key=lambda s: (rank.get((s["pair"], s["variant"]), (len(pairs), 0)), _natural(str(s.get("sample") or ""))),
    )


def load_samples(run_dir: Path, pairs: list[Pair]) -> list[SampleRecord]:
    """Records of every sample folder that was written completely, in pair order."""
    records = []
    for pair in pairs:
        for variant in pair.variants:
            for folder in sorted((run_dir / pair.name / variant.name).glob("*/sample.json"), key=_sample_order):
                try:
                    records.append(summarize_sample(folder.parent))
                except (OSError, ValueError, KeyError, IndexError, pd.errors.ParserError) as err:
                    warnings.warn(
                        f"skipping {pair.name}/{variant.name}/{folder.parent.name}: incomplete raw data ({err})",
                        stacklevel=2,
                    )
    return records


def variant_records(samples: list[SampleRecord], pairs: list[Pair], p99_target_ms: float) -> list[VariantRecord]:
    """One record per measured variant, in declared order."""
    out = []
    for pair in pairs:
        for variant in pair.variants:
            mine = [s for s in samples if s["pair"] == pair.name and s["variant"] == variant.name]
            if mine:
                out.append(aggregate_variant(mine, p99_target_ms))
    return out


def blocks_of(samples: list[SampleRecord]) -> list[Block]:
    """A pair's primary samples by block: each variant's measured sample in that block."""
    found: dict[int, Block] = {}
    for sample in samples:
        if sample.get("primary") and sample["status"] == "ok" and sample.get("block") is not None:
            found.setdefault(int(sample["block"]), {})[sample["variant"]] = sample
    return [found[block] for block in sorted(found)]


def decide_pair(pair: Pair, samples: list[SampleRecord], knobs: dict[str, int], confidence: float) -> Decision:
    """The pair's rule on its samples: paired figures from its blocks, totals from the
    variants' merged records."""
    mine = [s for s in samples if s["pair"] == pair.name]
    records = {r["variant"]: r for r in variant_records(mine, [pair], P99_TARGET_MS)}
    return pair.judge(records, pair.knobs | knobs, blocks_of(mine), confidence)


def verdicts(
    samples: list[SampleRecord],
    records: list[VariantRecord],
    pairs: list[Pair],
    knobs: dict[str, dict[str, int]],
    confidence: Callable[[str], float],
) -> dict[str, Verdict]:
    """Each pair's rule on its blocks. A flagged measurement is not used silently: the
    verdict says which and why."""
    out = {}
    for pair in pairs:
        mine = {r["variant"]: r for r in records if r["pair"] == pair.name}
        if not mine:
            continue
        verdict = decide_pair(pair, samples, knobs.get(pair.name, {}), confidence(pair.name)).verdict
        shares = generator_shares(pair, mine, knobs.get(pair.name, {}))
        if shares:
            verdict = replace(verdict, text=f"{verdict.text} {shares}")
        flagged = [f"`{name}` ({'; '.join(r['flags'])})" for name, r in mine.items() if r.get("flags")]
        if flagged:
            verdict = replace(
                verdict,
                text=f"{verdict.text} Caveat: flagged measurements: {', '.join(flagged)}.",
                headline=f"{verdict.headline} (flagged)" if verdict.headline else "flagged",
            )
        out[pair.name] = verdict
    return out


def generator_shares(pair: Pair, records: dict[str, VariantRecord], knobs: dict[str, int]) -> str:
    """Where a deciding check compares throughput, what the machine and the load generator
    were using: on a saturated machine the generator takes a different share from each."""
    if pair.rule is None:
        return ""
    rule = pair.rule(pair.knobs | knobs)
    compared = [
        (c.figure.of, c.figure.to)
        for part in rule.parts
        for c in part.checks
        if c.figure.to and c.figure.metric.label in ("throughput", "successful throughput")
    ]
    said = []
    for of, to in dict.fromkeys(compared):
        a, b = records.get(of) or {}, records.get(to) or {}
        if a.get("generator_cpu_pct") is None or b.get("generator_cpu_pct") is None:
            continue
        said.append(
            f"`{of}` {a['generator_cpu_pct']:.0f}% (machine {a.get('machine_cpu_pct') or 0:.0f}%) against `{to}` "
            f"{b['generator_cpu_pct']:.0f}% (machine {b.get('machine_cpu_pct') or 0:.0f}%)"
        )
    if not said:
        return ""
    return "Throughput decides here; the load generator's CPU during it: " + "; ".join(said) + "."


def compared_pairs(pair: Pair, knobs: dict[str, int]) -> list[tuple[str, str]]:
    """(variant, baseline) for each comparison the pair's rule makes: each sub-experiment's
    own baseline. A pair without a rule compares with its first good variant."""
    if pair.rule is None:
        good = next((v.name for v in pair.variants if v.role == "good"), None)
        return [(v.name, good) for v in pair.variants if good and v.name != good]
    rule = pair.rule(pair.knobs | knobs)
    figures = [c.figure for c in rule.checks] + list(rule.shown)
    found = [(f.of, f.to) for f in figures if f.kind in ("ratio", "difference") and f.to]
    return list(dict.fromkeys(found))


def comparisons(
    samples: list[SampleRecord],
    pairs: list[Pair],
    knobs: dict[str, dict[str, int]],
    confidence: Callable[[str], float],
) -> list[Comparison]:
    """Throughput and p99 of each variant against its baseline, as the geometric mean of
    per-block ratios with a t-interval and a paired t-test: significant where the
    interval excludes 1."""
    out = []
    for pair in pairs:
        blocks = blocks_of([s for s in samples if s["pair"] == pair.name])
        for variant, baseline in compared_pairs(pair, knobs.get(pair.name, {})):
            row: dict[str, Any] = {"pair": pair.name, "variant": variant, "baseline": baseline}
            for figure in ("rps", "p99_ms"):
                ratios = [
                    b[variant][figure] / b[baseline][figure]
                    for b in blocks
                    if variant in b and baseline in b and b[variant].get(figure) and b[baseline].get(figure)
                ]
                found = stats.log_ratio_interval(ratios, confidence(pair.name))
                row[figure] = {
                    "ratio": found.estimate if found else (ratios[0] if ratios else None),
                    "ci": (found.low, found.high) if found else None,
                    "p_value": found.p_value if found else None,
                    "blocks": len(ratios),
                    "significant": None if found is None else found.excludes(1.0),
                }
            if any(row[f]["ratio"] is not None for f in ("rps", "p99_ms")):
                out.append(cast(Comparison, row))  # built figure by figure above
    return out


def ratio_of(this: VariantRecord, base: VariantRecord, figure: str) -> RunRatio:
    """One figure of two variant records from different runs, as a ratio (this / base),
    with a Welch t-interval on the logs of each run's block values (the runs are not
    paired), and whether it is significant (None: too few blocks to tell)."""
    ratio = this[figure] / base[figure] if this[figure] is not None and base[figure] else None
    values = (this.get("values") or {}).get(figure), (base.get("values") or {}).get(figure)
    found = stats.welch_log_ratio_interval(values[0] or [], values[1] or [])
    return {
        "ratio": ratio,
        "ci": (found.low, found.high) if found else None,
        "significant": None if found is None else found.excludes(1.0),
    }


def pair_confidence(manifest: dict[str, Any]) -> Callable[[str], float]:
    """The confidence of the look each pair stopped at (the runner records it per pair),
    the nominal for a control measured in a fixed number of blocks; before any pair has
    stopped, the first look's. Runs stored before the looks' shares differed give one
    confidence for every look (`look_confidence`)."""
    blocks = manifest.get("blocks") or {}
    run = float((manifest.get("look_confidences") or [manifest.get("look_confidence") or stats.CONFIDENCE])[0])
    return lambda name: float((blocks.get(name) or {}).get("confidence") or run)


def write_summary(
    run_dir: Path,
    scenario: dict[str, Any],
    samples: list[SampleRecord],
    pairs: list[Pair],
    knobs: dict[str, dict[str, int]],
) -> None:
    """summary.json: every sample, each variant's combined record (in declared order,
    whatever order they ran in), each pair's verdict with its judged checks and blocks,
    the comparisons, and the physics check."""
    manifest = read_json(run_dir / "manifest.json") if (run_dir / "manifest.json").is_file() else {}
    confidence = pair_confidence(manifest)
    records = variant_records(samples, pairs, float(scenario.get("p99_target_ms", P99_TARGET_MS)))
    found = verdicts(samples, records, pairs, knobs, confidence)
    cpus = int((manifest.get("environment") or {}).get("cpu_count") or 1)
    store.write_json(
        run_dir / "summary.json",
        {
            "format_version": store.FORMAT_VERSION,
            "scenario": scenario.get("name"),
            "confidence": stats.CONFIDENCE,
            "looks": manifest.get("looks"),
            "look_confidences": manifest.get("look_confidences"),
            "blocks": manifest.get("blocks") or {},
            "calibration": summarize_calibration(run_dir / "calibration"),
            "variants": [{k: v for k, v in r.items() if k != "buckets"} for r in records],
            "verdicts": {
                name: {
                    "outcome": v.outcome,
                    "text": v.text,
                    "headline": v.headline,
                    "figures": v.figures,
                    "checks": v.checks,
                    "shown": v.shown,
                }
                for name, v in found.items()
            },
            "comparisons": comparisons(samples, pairs, knobs, confidence),
            "physics": {
                pair.name: physics_rows(
                    pair, [r for r in records if r["pair"] == pair.name], pair.knobs | knobs.get(pair.name, {}), cpus
                )
                for pair in pairs
                if pair.physics is not None
            },
            # Samples without their response-time buckets: those stay in each sample's tallies.
            "samples": [{k: v for k, v in sample.items() if k != "buckets"} for sample in stored_order(samples, pairs)],
        },
    )


# Measured within this share of the expected ceiling: the harness and the model agree.
PHYSICS_TOLERANCE = 0.15
SATURATED_CPU = 90.0


def physics_rows(pair: Pair, records: list[VariantRecord], knobs: dict[str, int], cpus: int) -> list[PhysicsRow]:
    """Expected ceilings next to measured throughput, with the deviation and, when they
    disagree, what the samples say limited the measurement."""
    if pair.physics is None:
        return []
    rows: list[PhysicsRow] = []
    for r in records:
        if r["status"] != "ok":
            continue
        expected = pair.physics(knobs, int(r["users"] or 0), cpus).get(r["variant"])
        if expected is None:
            continue
        ceiling, why = expected
        deviation = (r["rps"] - ceiling) / ceiling
        if r.get("flags"):
            verdict = f"not judged: {'; '.join(r['flags'])}"
        elif abs(deviation) <= PHYSICS_TOLERANCE:
            verdict = "agrees"
        elif deviation < 0 and (r.get("server_cpu_pct") or 0) >= SATURATED_CPU:
            verdict = f"below: the server was CPU-bound ({r['server_cpu_pct']:.0f}% CPU) before the ceiling"
        elif deviation < 0:
            # A ceiling is a bound: falling short of it means costs the model leaves out
            # (the query, the hand-over of a slot, the GIL) take time too, not a broken harness.
            verdict = (
                f"below by {100 * -deviation:.0f}%: each request holds what the model counts longer than it "
                f"assumes (server at {r.get('server_cpu_pct') or 0:.0f}% CPU, not the limit)"
            )
        else:
            verdict = f"above by {100 * deviation:.0f}%: past a ceiling, the model or the harness is wrong here"
        # Little's law for a closed loop: mean latency = users in the system / throughput.
        served = r.get("warmup_users_answered") or r.get("users")
        rows.append({"variant": r["variant"], "expected": ceiling, "why": why, "measured": r["rps"],
                     "ci": (r.get("ci") or {}).get("rps"), "deviation": deviation, "assessment": verdict,
                     "users": r.get("users"), "users_answered": served, "warmup_s": r.get("warmup_s"),
                     "little_ms": 1000 * served / r["rps"] if served and r["rps"] else None,
                     "p50_ms": r.get("p50_ms"), "p99_ms": r.get("p99_ms")})  # fmt: skip
    return rows
