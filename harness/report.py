"""REPORT.md and its charts, built only from what a run folder holds.

`rebuild` re-derives summary.json from the raw files first (so a fixed analysis applies
to old runs); `render` reads summary.json, manifest.json, each variant.json and the
sampled CSVs. The prose comes from each pair's declaration; every figure and verdict
comes from the run.
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from harness import analysis, store
from harness.pairs import ARTICLES, ROOT, Pair, discover

# Each variant gets its own colour; the family says its role (warm = bad, cool = good).
ROLE_PALETTES = {
    "bad": ["#d1495b", "#f18f01", "#8e2c3f"],
    "good": ["#2e86ab", "#3bb273", "#1b4965"],
    "reference": ["#7d7d7d", "#b0b0b0", "#4a4a4a"],
}
ROLE_STYLES = {"bad": "--", "good": "-", "reference": ":"}


def variant_colors(records: list[dict[str, Any]]) -> dict[str, str]:
    used: dict[str, int] = {}
    colors = {}
    for r in records:
        palette = ROLE_PALETTES.get(r["role"], ["#444444"])
        colors[r["variant"]] = palette[used.get(r["role"], 0) % len(palette)]
        used[r["role"]] = used.get(r["role"], 0) + 1
    return colors


TOP_REPORT = ROOT / "REPORT.md"


def _num(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    return f"{value:,.{digits}f}"


def _pairs_in_run(run_dir: Path) -> list[Pair]:
    known = discover()
    manifest = store.read_json(run_dir / "manifest.json")
    return [known[name] for name in manifest["pairs"] if name in known]


def rebuild(run_dir: Path, write_top_report: bool) -> Path:
    """Recompute summary.json from the raw variant folders, then render."""
    manifest = store.read_json(run_dir / "manifest.json")
    pairs = _pairs_in_run(run_dir)
    records = analysis.load_records(run_dir, pairs)
    analysis.write_summary(run_dir, manifest["scenario"]["name"], records, pairs, manifest["pairs"])
    return render(run_dir, write_top_report)


# --- charts -------------------------------------------------------------------------


def _series(run_dir: Path, record: dict[str, Any], name: str, column: str) -> pd.DataFrame | None:
    folder = run_dir / record["pair"] / record["variant"]
    start = store.read_phases(folder).get("load_start")
    if start is None or not (folder / name).is_file():
        return None
    frame = pd.read_csv(folder / name)
    if frame.empty:
        return None
    frame["t"] = frame[column] - start
    return frame


def _warmup_end(run_dir: Path, records: list[dict[str, Any]]) -> float | None:
    for r in records:
        phases = store.read_phases(run_dir / r["pair"] / r["variant"])
        if "measure_start" in phases and "load_start" in phases:
            return phases["measure_start"] - phases["load_start"]
    return None


def chart_pair(run_dir: Path, pair: Pair, records: list[dict[str, Any]], out: Path) -> None:
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    names = [r["variant"] for r in records]
    by_variant = variant_colors(records)
    colors = [by_variant[name] for name in names]
    ok = [r for r in records if r["status"] == "ok"]

    ax = axes[0][0]
    good_rps = [(r["rps"] or 0) * (1 - (r["failure_rate"] or 0)) for r in records]
    failed_rps = [(r["rps"] or 0) * (r["failure_rate"] or 0) for r in records]
    ax.bar(names, good_rps, color=colors)
    ax.bar(names, failed_rps, bottom=good_rps, color="none", edgecolor="black", hatch="//", label="failed requests")
    ax.set_title("Throughput (req/s; hatched = failed)")
    ax.tick_params(axis="x", labelrotation=15)
    if any(failed_rps):
        ax.legend(loc="upper right", fontsize=8)

    ax = axes[0][1]
    width = 0.2
    for i, (key, label) in enumerate(
        [("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99"), ("ping_p99_ms", "/ping p99")]
    ):
        values = [r[key] or 0 for r in records]
        ax.bar([x + (i - 1.5) * width for x in range(len(records))], [max(v, 0.1) for v in values], width, label=label)
    ax.set_xticks(range(len(records)), names, rotation=15)
    ax.set_yscale("log")
    ax.set_title("Latency (ms, log scale)")
    ax.legend(fontsize=8)

    warmup_end = _warmup_end(run_dir, ok)
    for ax, file, column, value, title in (
        (axes[1][0], "connections.csv", "time", "total", "PostgreSQL backends (pg_stat_activity)"),
        (axes[1][1], "probe.csv", "intended", "latency_ms", "/ping latency during load (ms, log scale)"),
    ):
        if warmup_end:
            ax.axvspan(0, warmup_end, color="#ececec", label="warm-up (not counted)")
        for r in ok:
            frame = _series(run_dir, r, file, column)
            if frame is not None:
                style = ROLE_STYLES.get(r["role"], "-")
                ax.plot(
                    frame["t"], frame[value], style, label=r["variant"], color=by_variant[r["variant"]], linewidth=1.2
                )
        ax.set_title(title)
        ax.set_xlabel("seconds since load start")
        ax.legend(fontsize=8)
    axes[1][0].set_ylim(bottom=0)  # a count: a flat line must not be zoomed into noise
    axes[1][1].set_yscale("log")
    fig.suptitle(f"{pair.name}: {pair.claim}", fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)


# --- markdown -----------------------------------------------------------------------


def _environment(manifest: dict[str, Any]) -> list[str]:
    env, db, scenario = manifest["environment"], manifest.get("database", {}), manifest["scenario"]
    packages = ", ".join(f"{name} {version}" for name, version in env["packages"].items())
    dirty = " (uncommitted changes)" if env.get("git_dirty") else ""
    return [
        "| | |",
        "|---|---|",
        f"| Run | started {manifest['started']}, status **{manifest['status']}** |",
        f"| Code | commit `{env['git_commit'][:12]}`{dirty} |",
        f"| Machine | {env['cpu_model']}, {env['cpu_count']} CPUs, {env['memory_gb']} GiB, {env['os']} |",
        f"| Python | {env['python']} |",
        f"| Packages | {packages} |",
        f"| PostgreSQL | {db.get('server_version', 'n/a')} ({db.get('source', 'n/a')}), "
        f"max_connections {db.get('max_connections', 'n/a')} |",
        f"| Scenario | `{scenario['name']}`: {scenario['users']} users, {_num(scenario['warmup_s'], 0)} s warm-up + "
        f"{_num(scenario['duration_s'], 0)} s measured per variant, /ping at {_num(scenario['probe_rate'], 0)}/s, "
        f"{scenario['rows']:,} seeded rows |",
    ]


# The per-variant table: header, alignment, and how each cell is read from a record.
COLUMNS: list[tuple[str, str, Callable[[dict[str, Any]], str]]] = [
    ("variant", "---", lambda r: f"`{r['variant']}`"),
    ("role", "---", lambda r: r["role"]),
    ("req/s", "--:", lambda r: _num(r["rps"], 1)),
    ("requests", "--:", lambda r: _num(r["requests"])),
    ("failures", "--:", lambda r: f"{r['failures']:,} ({100 * r['failure_rate']:.1f}%)"),
    ("p50 ms", "--:", lambda r: _num(r["p50_ms"])),
    ("p95 ms", "--:", lambda r: _num(r["p95_ms"])),
    ("p99 ms", "--:", lambda r: _num(r["p99_ms"])),
    ("max ms", "--:", lambda r: _num(r["max_ms"])),
    ("/ping p99 ms", "--:", lambda r: _num(r["ping_p99_ms"], 1)),
    ("loop lag p99 ms", "--:", lambda r: _num(r.get("loop_lag_p99_ms"), 1)),
    (
        "worker threads mean/peak",
        "--:",
        lambda r: f"{_num(r.get('threads_busy_mean'), 1)} / {_num(r.get('threads_busy_peak'))}",
    ),
    ("peak backends", "--:", lambda r: _num(r["peak_connections"])),
    ("mean backends", "--:", lambda r: _num(r["mean_connections"], 1)),
]


def _table(records: list[dict[str, Any]]) -> list[str]:
    lines = ["| " + " | ".join(c[0] for c in COLUMNS) + " |", "|" + "|".join(c[1] for c in COLUMNS) + "|"]
    for r in records:
        if r["status"] == "ok":
            cells = [cell(r) for _, _, cell in COLUMNS]
        else:
            cells = [f"`{r['variant']}`", r["role"], f"failed: {r['error']}"] + [""] * (len(COLUMNS) - 3)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _pair_section(
    run_dir: Path, pair: Pair, records: list[dict[str, Any]], verdict: dict[str, Any] | None, chart: str
) -> list[str]:
    sources = "; ".join(f'"{ARTICLES[key].title}" (seed {key})' for key in pair.sources)
    lines = [
        f"## `{pair.name}`: {pair.claim_id}",
        "",
        f"**Claim.** {pair.claim} Source: {sources}.",
        "",
    ]
    if verdict:
        lines += [f"**Verdict: {verdict['outcome']}.** {verdict['text']}", ""]
    lines += [*_table(records), "", f"![{pair.name} charts]({chart})", ""]
    lines += [f"**How the verdict is decided.** {pair.decided_by}", "", f"**Mechanism.** {pair.mechanism}", ""]
    failures = [(r["variant"], e, n) for r in records for e, n in (r.get("top_failures") or [])]
    if failures:
        lines += ["**Failures during load** (most frequent per variant):", ""]
        lines += [f"- `{variant}`: {count:,} x {error}" for variant, error, count in failures] + [""]
    unsettled = [r for r in records if (r.get("settled_connections") or 0) > (r.get("baseline_connections") or 0)]
    if unsettled:
        lines += ["**Backends that did not return to baseline** after the server stopped:", ""]
        lines += [f"- `{r['variant']}`: {r['settled_connections']} left (baseline {r['baseline_connections']})"
                  for r in unsettled] + [""]  # fmt: skip
    lines += ["**The variants.**", ""]
    for r in records:
        meta = store.read_json(run_dir / r["pair"] / r["variant"] / "variant.json")
        lines += [f"- `{r['variant']}` ({r['role']}): {meta['summary']}", "", "```python", meta["code"], "```", ""]
    return lines


def render(run_dir: Path, write_top_report: bool) -> Path:
    manifest = store.read_json(run_dir / "manifest.json")
    summary = store.read_json(run_dir / "summary.json")
    pairs = _pairs_in_run(run_dir)
    by_pair: dict[str, list[dict[str, Any]]] = {}
    for record in summary["variants"]:
        by_pair.setdefault(record["pair"], []).append(record)
    charts = run_dir / "charts"
    shutil.rmtree(charts, ignore_errors=True)
    for pair in pairs:
        if pair.name in by_pair:
            chart_pair(run_dir, pair, by_pair[pair.name], charts / f"{pair.name}.png")

    def document(chart_prefix: str) -> str:
        lines = [
            "# FastAPI patterns under load",
            "",
            'Each pair runs a "bad" and a "good" FastAPI variant (as the articles call them) against a real '
            "PostgreSQL under Locust, one variant at a time, and decides the claim from this run's numbers.",
            "",
            f"Generated by `python bench.py report` from run `{run_dir.name}`; "
            "every figure below comes from that folder.",
            "",
            "## Environment",
            "",
            *_environment(manifest),
            "",
            "## Reproduce",
            "",
            "```sh",
            "make bench            # default scenario, writes results/<run-id>/ and this file",
            "make bench-quick      # the quick scenario",
            "# this run's exact command (knobs in force: "
            + (", ".join(f"{k}={v}" for knobs in manifest["pairs"].values() for k, v in knobs.items()) or "none")
            + ")",
            "python " + " ".join(shlex.quote(arg) for arg in manifest["command"]),
            "```",
            "",
            "## Verdicts",
            "",
            "| pair | claim | verdict |",
            "|---|---|---|",
        ]
        for pair in pairs:
            verdict = summary["verdicts"].get(pair.name)
            lines.append(
                f"| [`{pair.name}`](#{pair.name}-{pair.claim_id.lower()}) | {pair.claim_id}: {pair.claim} | "
                f"{verdict['outcome'] if verdict else 'not measured'} |"
            )
        lines.append("")
        for pair in pairs:
            if pair.name in by_pair:
                lines += _pair_section(
                    run_dir,
                    pair,
                    by_pair[pair.name],
                    summary["verdicts"].get(pair.name),
                    f"{chart_prefix}charts/{pair.name}.png",
                )
        lines += [
            "## Method",
            "",
            "- Each variant runs in a fresh uvicorn process (one worker) on 127.0.0.1 and is verified (status and body "
            "against the database row) before any load. Locust users are closed-loop with no wait time; statistics are "
            "reset when the warm-up ends. Locust rounds percentiles above 100 ms to two significant figures.",
            "- `/ping` is an `async def` route that does nothing; the runner requests it on a fixed schedule "
            "alongside the load and measures latency from the scheduled time, so a stalled event loop shows in full.",
            "- Loop lag: every variant's process runs a task that asks the event loop to wake it every 10 ms "
            "and records how late it woke; its p99 over the measured window is the direct measure of a blocked loop. "
            "The same task counts the anyio worker-thread tokens in use (of 40), which `def` endpoints and sync "
            "dependencies borrow.",
            "- Backends are counted from `pg_stat_activity` (client backends on the suite's database, the harness's "
            "own excluded) every 0.5 s; after each variant the runner ends leftover backends and waits for the "
            "baseline.",
            "- Load generator, server and PostgreSQL share one machine: compare variants within a run, as ratios.",
            "",
        ]
        return "\n".join(lines)

    (run_dir / "REPORT.md").write_text(document(""))
    if write_top_report:
        prefix = f"{run_dir.relative_to(ROOT)}/" if run_dir.is_relative_to(ROOT) else f"{run_dir}/"
        TOP_REPORT.write_text(document(prefix))
    return run_dir / "REPORT.md"
