"""`bench.py connections RUN [RUN_B] [--pair P,...]`: where each variant's connections
were during its measured window: backends by state (pg_stat_activity) and, for apps that
watch a SQLAlchemy pool, the pool's own count, variant beside variant within a run, or
run beside run. Read from the raw samples, so older runs show the same figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness import analysis, store
from harness.pairs import BenchError, discover
from harness.scenario import P99_TARGET_MS

# What the table shows: the record's mean and peak field names, and the heading.
STATES = (
    ("mean_active", "peak_active", "active"),
    ("mean_idle", "peak_idle", "idle"),
    ("mean_idle_in_transaction", "peak_idle_in_transaction", "idle in transaction"),
    ("mean_connections", "peak_connections", "all"),
    ("pool_checked_out_mean", "pool_checked_out_peak", "pool checked out"),
)
Key = tuple[str, str]  # (pair, variant)


def records(run_dir: Path, names: list[str] | None = None) -> dict[Key, dict[str, Any]]:
    """Each measured variant's record, recomputed from the run's raw samples."""
    if not store.is_run_dir(run_dir):
        raise BenchError(f"{run_dir} is not a run folder (no manifest.json)")
    store.check_format(run_dir)
    known = discover()
    pairs = [known[name] for name in store.read_json(run_dir / "manifest.json")["pairs"] if name in known]
    if names:
        unknown = sorted(set(names) - {p.name for p in pairs})
        if unknown:
            raise BenchError(f"{run_dir} has no pair {', '.join(unknown)} (it has {', '.join(p.name for p in pairs)})")
        pairs = [p for p in pairs if p.name in names]
    found = analysis.variant_records(analysis.load_samples(run_dir, pairs), pairs, P99_TARGET_MS)
    return {(r["pair"], r["variant"]): r for r in found}


def _cell(record: dict[str, Any] | None, mean: str, peak: str) -> str:
    if record is None or record.get("status") != "ok":
        return "failed" if record is not None else ""
    if record.get(mean) is None and record.get(peak) is None:
        return "n/a"
    return f"{_num(record.get(mean), 1)} / {_num(record.get(peak), 0)}"


def _num(value: Any, digits: int) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def render(a: dict[Key, dict[str, Any]], b: dict[Key, dict[str, Any]] | None = None) -> str:
    """A Markdown table, one row per variant (in both runs, with B), mean / peak per state."""
    keys = list(a) if b is None else [key for key in a if key in b]
    if not keys:
        return "no variant measured in both runs" if b is not None else "no variant measured"
    heads = [heading for _, _, heading in STATES]
    lines = [
        "| pair | variant | " + " | ".join(heads) + " |",
        "|---|---|" + "--:|" * len(heads),
    ]
    for key in keys:
        cells = []
        for mean, peak, _ in STATES:
            first = _cell(a[key], mean, peak)
            cells.append(first if b is None else f"{first} -> {_cell(b[key], mean, peak)}")
        lines.append(f"| `{key[0]}` | `{key[1]}` | " + " | ".join(cells) + " |")
    scale = "mean / peak backends over the measured window" + ("; run A -> run B" if b is not None else "")
    return "\n".join([f"Backends by state ({scale}):", "", *lines])
