"""From a variant's raw files to its summary record, and from records to verdicts.

Only stored files are read, so `bench.py report` can rebuild everything later.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import store
from harness.pairs import Pair, Verdict
from harness.store import read_json

# Measured inside the variant's server by apps.common's loop monitor.
LOOP_FIELDS = ("loop_lag_p50_ms", "loop_lag_p99_ms", "loop_lag_max_ms", "threads_busy_mean", "threads_busy_peak")
# Fields every record carries; None when the variant produced no measurement.
RECORD_FIELDS = [
    "pair",
    "variant",
    "role",
    "status",
    "error",
    "requests",
    "failures",
    "failure_rate",
    "rps",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "ping_samples",
    "ping_p50_ms",
    "ping_p99_ms",
    "ping_max_ms",
    "ping_failures",
    *LOOP_FIELDS,
    "peak_connections",
    "mean_connections",
    "new_backends_per_s",
    "baseline_connections",
    "settled_connections",
    "terminated_backends",
    "server_cpu_pct",
    "server_rss_mb_peak",
    "server_rss_slope_mb_per_min",
    "server_fds_peak",
    "server_fds_slope_per_min",
    "measured_s",
    "users",
    "top_failures",
    "counters",
    "warnings",
]


def empty_record(meta: dict[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = dict.fromkeys(RECORD_FIELDS)
    record |= {
        "pair": meta["pair"],
        "variant": meta["variant"],
        "role": meta["role"],
        "status": meta.get("status", "failed"),
    }
    record["error"] = meta.get("error")
    return record


def measured_window(folder: Path) -> tuple[float, float] | None:
    phases = store.read_phases(folder)
    if "measure_start" not in phases or "load_stop" not in phases:
        return None
    return phases["measure_start"], phases["load_stop"]


def _in_window(frame: pd.DataFrame, column: str, window: tuple[float, float]) -> pd.DataFrame:
    return frame[(frame[column] >= window[0]) & (frame[column] <= window[1])]


def _locust_totals(folder: Path, window: tuple[float, float]) -> dict[str, Any]:
    stats = pd.read_csv(folder / "locust_stats.csv")
    total = stats[stats["Name"] == "Aggregated"].iloc[0]
    requests, failures = int(total["Request Count"]), int(total["Failure Count"])
    out: dict[str, Any] = {
        "requests": requests,
        "failures": failures,
        "failure_rate": failures / requests if requests else 0.0,
        # Over the measured window, not Locust's first-to-last response span, which
        # shrinks to nothing when every request times out at once.
        "rps": requests / (window[1] - window[0]),
        "p50_ms": float(total["50%"]),
        "p95_ms": float(total["95%"]),
        "p99_ms": float(total["99%"]),
        "max_ms": float(total["Max Response Time"]),
        "top_failures": [],
    }
    failures_file = folder / "locust_failures.csv"
    if failures_file.is_file():
        frame = pd.read_csv(failures_file)
        if not frame.empty:
            # Locust keys failures by message, and messages carry the random URL:
            # group them by what went wrong instead.
            frame["Error"] = frame["Error"].astype(str).map(failure_kind)
            counts = frame.groupby("Error")["Occurrences"].sum().sort_values(ascending=False).head(3)
            out["top_failures"] = [[str(e), int(n)] for e, n in counts.items()]
    return out


def failure_kind(message: str) -> str:
    """A Locust failure message without its URL, ids and ports."""
    message = re.sub(r"'?https?://[^\s',)]+'?", "<url>", message)
    return re.sub(r"for id \d+", "for id <id>", message)


def _probe(folder: Path, window: tuple[float, float]) -> dict[str, Any]:
    probe = _in_window(pd.read_csv(folder / "probe.csv"), "intended", window)
    ok = probe[probe["status"] == 200]
    latency = ok["latency_ms"]
    return {
        "ping_samples": len(probe),
        "ping_p50_ms": float(latency.quantile(0.50)) if len(ok) else None,
        "ping_p99_ms": float(latency.quantile(0.99)) if len(ok) else None,
        "ping_max_ms": float(latency.max()) if len(ok) else None,
        "ping_failures": int(len(probe) - len(ok)),
    }


def _loop_lag(folder: Path, window: tuple[float, float]) -> dict[str, Any]:
    path = folder / "loop_lag.csv"
    samples = _in_window(pd.read_csv(path), "time", window) if path.is_file() else pd.DataFrame()
    if samples.empty:  # an app without the monitor, or one that never got to run it
        return dict.fromkeys(LOOP_FIELDS)
    lag = samples["lag_ms"]
    threads = samples["threads_busy"] if "threads_busy" in samples else pd.Series([float("nan")])
    return {
        "loop_lag_p50_ms": float(lag.quantile(0.50)),
        "loop_lag_p99_ms": float(lag.quantile(0.99)),
        "loop_lag_max_ms": float(lag.max()),
        "threads_busy_mean": None if threads.isna().all() else float(threads.mean()),
        "threads_busy_peak": None if threads.isna().all() else int(threads.max()),
    }


def slope_per_min(times: pd.Series, values: pd.Series) -> float | None:
    """Least-squares growth rate of `values` per minute: a leak is a steady slope."""
    known = pd.DataFrame({"t": times, "v": values}).dropna()
    if len(known) < 3 or known["t"].nunique() < 2:
        return None
    slope = np.polyfit(known["t"].to_numpy(dtype=float), known["v"].to_numpy(dtype=float), 1)[0]
    return float(slope * 60)


def _column(samples: pd.DataFrame, name: str) -> pd.Series:
    """A sampled column, empty of values in runs made before it was sampled."""
    return samples[name] if name in samples else pd.Series(float("nan"), index=samples.index)


def _connections(folder: Path, window: tuple[float, float]) -> dict[str, Any]:
    samples = _in_window(pd.read_csv(folder / "connections.csv"), "time", window)
    counted = samples.dropna(subset=["total"])
    cpu, rss, fds = (_column(samples, c) for c in ("server_cpu_pct", "server_rss_mb", "server_fds"))
    sessions = _column(samples, "sessions").dropna()
    started = samples.loc[sessions.index, "time"] if len(sessions) else None
    return {
        "peak_connections": int(counted["total"].max()) if len(counted) else None,
        "mean_connections": float(counted["total"].mean()) if len(counted) else None,
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
    }


def summarize_variant(folder: Path) -> dict[str, Any]:
    """The summary record of one variant, from its raw files."""
    meta = read_json(folder / "variant.json")
    record = empty_record(meta)
    record["baseline_connections"] = meta.get("baseline_connections")
    record["settled_connections"] = meta.get("settled_connections")
    record["terminated_backends"] = meta.get("terminated_backends")
    record["users"] = meta.get("users")
    record["counters"] = meta.get("counters")
    record["warnings"] = meta.get("warnings") or []
    if meta.get("status") != "ok":
        return record
    window = measured_window(folder)
    if window is None:
        record |= {"status": "failed", "error": meta.get("error") or "load never reached its measured phase"}
        return record
    record |= _locust_totals(folder, window)
    record |= _probe(folder, window)
    record |= _connections(folder, window)
    record |= _loop_lag(folder, window)
    record["measured_s"] = round(window[1] - window[0], 2)
    return record


def load_records(run_dir: Path, pairs: list[Pair]) -> list[dict[str, Any]]:
    """Records for every variant folder that was written completely, in pair order."""
    records = []
    for pair in pairs:
        for variant in pair.variants:
            folder = run_dir / pair.name / variant.name
            if not (folder / "variant.json").is_file():
                continue
            try:
                records.append(summarize_variant(folder))
            except (OSError, ValueError, KeyError, IndexError, pd.errors.ParserError) as err:
                warnings.warn(f"skipping {pair.name}/{variant.name}: incomplete raw data ({err})", stacklevel=2)
    return records


def verdicts(records: list[dict[str, Any]], pairs: list[Pair], knobs: dict[str, dict[str, int]]) -> dict[str, Verdict]:
    out = {}
    for pair in pairs:
        mine = {r["variant"]: r for r in records if r["pair"] == pair.name}
        if mine:
            out[pair.name] = pair.decide(mine, pair.knobs | knobs.get(pair.name, {}))
    return out


def write_summary(
    run_dir: Path, scenario: str, records: list[dict[str, Any]], pairs: list[Pair], knobs: dict[str, dict[str, int]]
) -> None:
    """summary.json: the records in declared order (whatever order they ran in) and
    each pair's verdict on them."""
    declared = {(p.name, v.name): i for i, (p, v) in enumerate((p, v) for p in pairs for v in p.variants)}
    records = sorted(records, key=lambda r: declared.get((r["pair"], r["variant"]), len(declared)))
    found = verdicts(records, pairs, knobs)
    store.write_json(
        run_dir / "summary.json",
        {
            "format_version": store.FORMAT_VERSION,
            "scenario": scenario,
            "variants": records,
            "verdicts": {
                name: {"outcome": v.outcome, "text": v.text, "headline": v.headline, "figures": v.figures}
                for name, v in found.items()
            },
        },
    )
