"""`bench.py compare RUN_A RUN_B`: every variant both runs measured, figure by figure,
as B against A with an interval and a word: faster, slower or not significant."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness import analysis, stats, store
from harness.pairs import BenchError
from harness.records import Summary, VariantRecord

# Figure, how it reads, and whether more is better.
FIGURES = (("rps", "req/s", True), ("p50_ms", "p50 ms", False), ("p99_ms", "p99 ms", False))
# What must match for two runs to be comparable at face value.
MACHINE_KEYS = ("cpu_model", "cpu_count", "memory_gb", "os", "python")
# A probe run's records are named by sample (harness.runner.Sample.id); its one open-loop
# sample's name holds its rate and users, which follow from that run's knee, so two probe
# runs of one app name it differently. A suite run's records are named by variant.
_OPEN_SAMPLE = re.compile(r"^open-rate[^-]+-u\d+-(b\d+)$")


@dataclass(frozen=True)
class Change:
    pair: str
    variant: str
    figure: str
    label: str
    a: float
    b: float
    ratio: float  # b / a
    ci: tuple[float, float] | None
    word: str  # "faster", "slower", "unchanged", "not significant", or "... (no interval)"
    regression_pct: float  # how much worse B is, in percent (negative: better)


def _summary(run_dir: Path) -> Summary:
    if not store.is_run_dir(run_dir) or not (run_dir / "summary.json").is_file():
        raise BenchError(f"{run_dir} is not a run folder with a summary.json")
    store.check_format(run_dir)
    return store.read_summary(run_dir)


def differences(a_dir: Path, b_dir: Path) -> list[str]:
    """What differs between the two runs' machines, versions and scenarios."""
    a, b = (store.read_json(d / "manifest.json") for d in (a_dir, b_dir))
    found = []
    for key in MACHINE_KEYS:
        if a["environment"].get(key) != b["environment"].get(key):
            found.append(f"{key}: {a['environment'].get(key)} vs {b['environment'].get(key)}")
    for name, version in a["environment"]["packages"].items():
        other = b["environment"]["packages"].get(name)
        if other != version:
            found.append(f"{name}: {version} vs {other}")
    # Two probe runs: before and after a change to one app, not two different apps.
    for key in ("app", "paths", "ids", "levels", "python"):
        here, there = (a.get("target") or {}).get(key), (b.get("target") or {}).get(key)
        if here != there:
            found.append(f"probe {key}: {here} vs {there}")
    rates = [_open_rate(m) for m in (a, b)]
    if a.get("kind") == b.get("kind") == "probe" and rates[0] != rates[1]:
        found.append(f"probe open-loop rate: {rates[0]} vs {rates[1]} req/s (each set by its own run's sweep)")
    for key in sorted(set(a["scenario"]) | set(b["scenario"])):
        if key not in ("name", "description") and a["scenario"].get(key) != b["scenario"].get(key):
            found.append(f"scenario {key}: {a['scenario'].get(key)} vs {b['scenario'].get(key)}")
    return found


def _judge(a: VariantRecord, b: VariantRecord, figure: str, label: str, higher_is_better: bool) -> Change:
    judged = analysis.ratio_of(b, a, figure)
    ratio = judged["ratio"]
    word = "unchanged" if ratio == 1 else "faster" if (ratio > 1) == higher_is_better else "slower"
    if judged["significant"] is None:
        word += " (no interval)"
    elif not judged["significant"]:
        word = "not significant"
    worse_pct = (1 - ratio) * 100 if higher_is_better else (ratio - 1) * 100
    return Change(a["pair"], a["variant"], figure, label, a[figure], b[figure], ratio, judged["ci"], word, worse_pct)


def _open_rate(manifest: dict[str, Any]) -> float | None:
    """The rate of a probe run's matched open loop: its retry's, where it ran once more
    (the later record of a name is the one compare matches)."""
    open_loop = manifest.get("open_loop") or {}
    return (open_loop.get("retry") or open_loop).get("rate")


def matched_name(record: VariantRecord) -> str:
    """The name a record is matched by across two runs: its variant's, except a probe
    run's open-loop sample, which is matched as "open-loop-b<block>" whatever its rate."""
    match = _OPEN_SAMPLE.match(str(record["variant"])) if record.get("mode") == "open" else None
    return f"open-loop-{match.group(1)}" if match else str(record["variant"])


def compare(a_dir: Path, b_dir: Path) -> list[Change]:
    a_records = {(r["pair"], matched_name(r)): r for r in _summary(a_dir)["variants"] if r["status"] == "ok"}
    b_records = {(r["pair"], matched_name(r)): r for r in _summary(b_dir)["variants"] if r["status"] == "ok"}
    changes = []
    for key in [k for k in a_records if k in b_records]:
        a, b = a_records[key], b_records[key]
        for figure, label, higher_is_better in FIGURES:
            if not a.get(figure) or b.get(figure) is None:
                continue
            changes.append(replace(_judge(a, b, figure, label, higher_is_better), variant=key[1]))
    if not changes:
        raise BenchError(f"{a_dir} and {b_dir} have no measured variant in common")
    return changes


def regressions(changes: list[Change], threshold_pct: float) -> list[Change]:
    """Changes for the worse beyond the threshold that are not within noise."""
    return [c for c in changes if c.regression_pct > threshold_pct and c.word != "not significant"]


def render(changes: list[Change], notes: list[str]) -> str:
    lines = [f"warning: the runs differ: {note}" for note in notes]
    header = ("variant", "figure", "A", "B", "B/A", f"{100 * stats.CONFIDENCE:g}% interval", "")
    rows = [
        (
            f"{c.pair}/{c.variant}",
            c.label,
            f"{c.a:,.1f}",
            f"{c.b:,.1f}",
            f"{c.ratio:.2f}x",
            f"{c.ci[0]:.2f}-{c.ci[1]:.2f}" if c.ci else "n/a",
            c.word,
        )
        for c in changes
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        lines.append("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)
