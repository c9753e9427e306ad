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
    fig, axes = plt.subplots(3, 2, figsize=(12, 12.5))
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
        (axes[2][0], "loop_lag.csv", "time", "lag_ms", "event-loop lag inside the server (ms, log scale)"),
        (axes[2][1], "connections.csv", "time", "server_rss_mb", "server resident memory (MB)"),
    ):
        if warmup_end:
            ax.axvspan(0, warmup_end, color="#ececec", label="warm-up (not counted)")
        for r in ok:
            frame = _series(run_dir, r, file, column)
            if frame is not None and value in frame:
                style = ROLE_STYLES.get(r["role"], "-")
                ax.plot(
                    frame["t"], frame[value], style, label=r["variant"], color=by_variant[r["variant"]], linewidth=1.2
                )
        ax.set_title(title)
        ax.set_xlabel("seconds since load start")
        ax.legend(fontsize=8)
    axes[1][0].set_ylim(bottom=0)  # a count: a flat line must not be zoomed into noise
    axes[1][1].set_yscale("log")
    axes[2][0].set_yscale("symlog", linthresh=1.0)  # lag is often 0.0x ms: linear below 1 ms
    axes[2][1].set_ylim(bottom=0)
    fig.suptitle(f"{pair.name}: {pair.claim}", fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)


def sweep_points(pair: Pair, records: list[dict[str, Any]]) -> dict[str, list[tuple[int, dict[str, Any]]]]:
    """Measured records by sweep series, sorted by x. A variant in a series of its own
    that sits at x = 0 (e.g. no middleware at all) is the common start of every series."""
    by_name = {r["variant"]: r for r in records if r["status"] == "ok"}
    series: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    shared: list[tuple[int, dict[str, Any]]] = []
    for variant in pair.variants:
        if variant.sweep is None or variant.name not in by_name:
            continue
        label, x = variant.sweep
        series.setdefault(label, []).append((x, by_name[variant.name]))
    for label, points in list(series.items()):
        if len(points) == 1 and points[0][0] == 0 and len(series) > 1:
            shared += points
            del series[label]
    return {label: sorted(points + shared, key=lambda p: p[0]) for label, points in series.items()}


def chart_sweep(pair: Pair, records: list[dict[str, Any]], out: Path) -> bool:
    """Throughput and latency against the swept quantity, one line per series."""
    series = sweep_points(pair, records)
    if not series:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, points in series.items():
        xs = [x for x, _ in points]
        left.plot(xs, [r["rps"] for _, r in points], "o-", label=label)
        (line,) = right.plot(xs, [r["p50_ms"] for _, r in points], "o-", label=f"{label} p50")
        right.plot(xs, [r["p99_ms"] for _, r in points], "s--", color=line.get_color(), label=f"{label} p99")
    left.set_title("Throughput (req/s)")
    left.set_ylim(bottom=0)
    right.set_title("Latency (ms)")
    right.set_ylim(bottom=0)
    for ax in (left, right):
        ax.set_xlabel(pair.sweep_label or "sweep")
        ax.legend(fontsize=8)
    fig.suptitle(f"{pair.name}: {pair.claim}", fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return True


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
Columns = list[tuple[str, str, Callable[[dict[str, Any]], str]]]

# The server's resources over the measured window: a leak shows as a slope.
RESOURCE_COLUMNS: Columns = [
    ("variant", "---", lambda r: f"`{r['variant']}`"),
    ("new backends/s", "--:", lambda r: _num(r.get("new_backends_per_s"), 1)),
    ("server CPU %", "--:", lambda r: _num(r.get("server_cpu_pct"))),
    ("RSS peak MB", "--:", lambda r: _num(r.get("server_rss_mb_peak"), 1)),
    ("RSS slope MB/min", "--:", lambda r: _num(r.get("server_rss_slope_mb_per_min"), 2)),
    ("open FDs peak", "--:", lambda r: _num(r.get("server_fds_peak"))),
    ("FD slope /min", "--:", lambda r: _num(r.get("server_fds_slope_per_min"), 1)),
    ("backends after stop", "--:", lambda r: _after_stop(r)),
]


def _after_stop(r: dict[str, Any]) -> str:
    return f"{_num(r.get('settled_connections'))} (baseline {_num(r.get('baseline_connections'))})"


def _table(records: list[dict[str, Any]], columns: Columns = COLUMNS) -> list[str]:
    lines = ["| " + " | ".join(c[0] for c in columns) + " |", "|" + "|".join(c[1] for c in columns) + "|"]
    for r in records:
        if r["status"] == "ok":
            cells = [cell(r) for _, _, cell in columns]
        else:
            cells = [f"`{r['variant']}`", *([r["role"]] if columns is COLUMNS else []), f"failed: {r['error']}"]
            cells += [""] * (len(columns) - len(cells))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def reference_link(ref: str) -> str:
    """'fastapi#3205' -> a link to that issue or pull request on GitHub."""
    repo, _, number = ref.partition("#")
    owner = {"fastapi": "fastapi", "starlette": "Kludex", "uvicorn": "Kludex", "asyncpg": "MagicStack"}.get(repo)
    return f"[{ref}](https://github.com/{owner}/{repo}/issues/{number})" if owner and number.isdigit() else ref


def _sources(pair: Pair) -> str:
    return "; ".join(f'"{ARTICLES[key].title}" (seed {key})' for key in pair.sources)


def _pair_section(
    run_dir: Path,
    pair: Pair,
    records: list[dict[str, Any]],
    verdict: dict[str, Any] | None,
    charts: list[str],
    knobs: dict[str, int],
) -> list[str]:
    lines = [f"## `{pair.name}`: {pair.claim_id}", "", f"**Claim.** {pair.claim} Source: {_sources(pair)}.", ""]
    if verdict:
        lines += [f"**Verdict: {verdict['outcome']}.** {verdict['text']}", ""]
    setup = [f"{k}={v}" for k, v in knobs.items()] + [f"{k}={v:g} (this pair's own)" for k, v in pair.load.items()]
    if setup:
        lines += [f"**Settings.** {', '.join(setup)}.", ""]
    lines += [*_table(records), "", *_table(records, RESOURCE_COLUMNS), ""]
    lines += [f"![{pair.name} charts]({chart})" for chart in charts] + [""]
    lines += [f"**How the verdict is decided.** {pair.decided_by}", "", f"**Mechanism.** {pair.mechanism}"]
    if pair.references:
        lines[-1] += " Upstream: " + ", ".join(reference_link(ref) for ref in pair.references) + "."
    lines.append("")
    observed = [(r["variant"], r["counters"]) for r in records if r.get("counters")]
    if observed:
        lines += ["**What the variants counted** (their own `/counters`, whole server life):", ""]
        lines += [f"- `{variant}`: {_counters(counters)}" for variant, counters in observed] + [""]
    warned = [(r["variant"], w) for r in records for w in (r.get("warnings") or [])]
    if warned:
        lines += ["**Warnings the servers printed:**", ""]
        lines += [f"- `{variant}`: `{text}`" for variant, text in warned] + [""]
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


def _counters(counters: dict[str, Any]) -> str:
    def one(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.1f}"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    return ", ".join(f"{name} {one(value)}" for name, value in counters.items())


def _ledger(pairs: list[Pair], verdicts: dict[str, Any], manifest: dict[str, Any]) -> list[str]:
    """One row per pair, in claim order: what a reader scans first."""
    packages = manifest["environment"]["packages"]
    lines = [
        "## Ledger",
        "",
        f"Measured with FastAPI {packages.get('fastapi')}, Starlette {packages.get('starlette')}, "
        f"uvicorn {packages.get('uvicorn')} on {manifest['environment']['cpu_count']} CPUs; "
        "each verdict comes from this run's numbers and can differ on another machine or version.",
        "",
        "| claim | verdict | deciding figures | section |",
        "|---|---|---|---|",
    ]
    for pair in sorted(pairs, key=lambda p: (_claim_number(p.claim_id), p.order)):
        verdict = verdicts.get(pair.name)
        outcome = f"**{verdict['outcome']}**" if verdict else "not measured"
        headline = (verdict or {}).get("headline") or ""
        lines.append(
            f"| {pair.claim_id}: {pair.claim} ({', '.join(pair.sources)}) | {outcome} | {headline} | "
            f"[`{pair.name}`](#{pair.name}-{pair.claim_id.lower()}) |"
        )
    return [*lines, "", "Articles: " + "; ".join(f'{a.key} = "{a.title}"' for a in ARTICLES.values()) + ".", ""]


def _claim_number(claim_id: str) -> int:
    digits = "".join(ch for ch in claim_id if ch.isdigit())
    return int(digits) if digits else 0


def render(run_dir: Path, write_top_report: bool) -> Path:
    manifest = store.read_json(run_dir / "manifest.json")
    summary = store.read_json(run_dir / "summary.json")
    pairs = _pairs_in_run(run_dir)
    by_pair: dict[str, list[dict[str, Any]]] = {}
    for record in summary["variants"]:
        by_pair.setdefault(record["pair"], []).append(record)
    charts_dir = run_dir / "charts"
    shutil.rmtree(charts_dir, ignore_errors=True)
    charts: dict[str, list[str]] = {}
    for pair in pairs:
        if pair.name in by_pair:
            chart_pair(run_dir, pair, by_pair[pair.name], charts_dir / f"{pair.name}.png")
            charts[pair.name] = [f"charts/{pair.name}.png"]
            if chart_sweep(pair, by_pair[pair.name], charts_dir / f"{pair.name}-sweep.png"):
                charts[pair.name].insert(0, f"charts/{pair.name}-sweep.png")

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
            *_ledger(pairs, summary["verdicts"], manifest),
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
        ]
        for pair in pairs:
            if pair.name in by_pair:
                lines += _pair_section(
                    run_dir,
                    pair,
                    by_pair[pair.name],
                    summary["verdicts"].get(pair.name),
                    [chart_prefix + chart for chart in charts[pair.name]],
                    pair.knobs | manifest["pairs"].get(pair.name, {}),
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
