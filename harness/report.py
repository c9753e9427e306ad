"""REPORT.md, built only from what a run folder holds.

`rebuild` re-derives summary.json from the raw files first (so a fixed analysis applies
to old runs); `render` reads summary.json, manifest.json, each variant.json and the
sampled CSVs (through harness.charts). The prose comes from each pair's declaration and
the mechanisms explained here; every figure and verdict comes from the run.
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import analysis, charts, checks, stats, store
from harness.pairs import ARTICLES, REFERENCE_UNIT_MS, ROOT, Pair, discover
from harness.records import (
    BlockRatio,
    Calibration,
    Comparison,
    Counters,
    JudgedCheck,
    PhysicsRow,
    ShownFigure,
    StallSite,
    Summary,
    VariantRecord,
    VerdictEntry,
)
from harness.scenario import P99_TARGET_MS, pair_load

TOP_REPORT = ROOT / "REPORT.md"


def p99_target(manifest: dict[str, Any]) -> float:
    """The run's p99 target for knees (runs stored before it was a setting: the default)."""
    return float(manifest["scenario"].get("p99_target_ms", P99_TARGET_MS))


def _num(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    return f"{value:z,.{digits}f}"  # z: a slope of -1e-13 prints 0.0, not -0.0


def _pairs_in_run(run_dir: Path) -> list[Pair]:
    known = discover()
    manifest = store.read_json(run_dir / "manifest.json")
    return [known[name] for name in manifest["pairs"] if name in known]


def rebuild(run_dir: Path, write_top_report: bool) -> Path:
    """Recompute summary.json from the raw variant folders, then render."""
    manifest = store.read_json(run_dir / "manifest.json")
    pairs = _pairs_in_run(run_dir)
    samples = analysis.load_samples(run_dir, pairs)
    analysis.write_summary(run_dir, manifest["scenario"], samples, pairs, manifest["pairs"])
    return render(run_dir, write_top_report)


# --- markdown -----------------------------------------------------------------------


def _load_plan(scenario: dict[str, Any]) -> str:
    parts = [
        f"`{scenario['name']}`: {scenario['users']} users"
        + (f" (sweep: {', '.join(str(u) for u in scenario['levels'])})" if scenario.get("levels") else ""),
        f"{scenario['warmup_s']:g} s warm-up + {scenario['duration_s']:g} s measured per sample",
        (
            f"at least {scenario.get('repeats', 1)} blocks per pair (a block: every variant once, back to back, each "
            "in a fresh server, order shuffled per block)"
            + (
                f", up to {scenario['max_blocks']} where an interval still straddles a threshold, within a "
                f"{_num(scenario.get('budget_s', 0) / 60)} min budget"
                if scenario.get("max_blocks", 1) > scenario.get("repeats", 1)
                else ""
            )
        )
        if scenario.get("repeats", 1) > 1
        else "1 block: every variant once (no interval, so no verdict that needs one)",
    ]
    if scenario.get("rate"):
        parts.append(f"open loop at {scenario['rate']:g} req/s")
    elif scenario.get("open_loop"):
        parts.append("plus an open-loop sample for pairs that declare a rate")
    if scenario.get("soak_s"):
        parts.append(f"soak {scenario['soak_s']:g} s for leak pairs")
    parts.append(f"/ping at {_num(scenario['probe_rate'], 0)}/s, {scenario['rows']:,} seeded rows")
    return "; ".join(parts)


def _load_generator(manifest: dict[str, Any], calibration: Calibration) -> str:
    chosen = manifest.get("load_generator") or {}
    workers = chosen.get("workers", manifest["scenario"].get("locust_workers", 0))
    text = f"Locust {'with ' + str(workers) + ' worker processes' if workers else 'in one process'}"
    if chosen.get("reason") and chosen["reason"] != "one process":
        text += f" ({chosen['reason']})"
    if calibration.get("rps"):
        text += (
            f"; calibration: {calibration['rps']:,.0f} req/s against a bare ASGI endpoint with "
            f"{calibration['users']} users, generator at {_num(calibration.get('generator_cpu_pct'))}% CPU, "
            f"endpoint at {_num(calibration.get('server_cpu_pct'))}%: the most this machine's generator drives"
        )
    elif calibration.get("error"):
        text += f"; calibration failed: {calibration['error']}"
    return text


def _environment(manifest: dict[str, Any], calibration: Calibration) -> list[str]:
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
        f"| Scenario | {_load_plan(scenario)} |",
        f"| Load generator | {_load_generator(manifest, calibration)} |",
    ]


def _sampling_line(scenario: dict[str, Any], summary: dict[str, Any]) -> str:
    """The Method's word on the connection sampler: how often, and what it cost itself."""
    interval = float(scenario.get("sample_interval_s") or 0.5)
    usage = max(interval, float(scenario.get("usage_interval_s") or interval))
    samples = summary.get("samples", [])
    runner = sorted(s["sampler_cpu_pct"] for s in samples if s.get("sampler_cpu_pct") is not None)
    backend = sorted(s["sampler_postgres_cpu_pct"] for s in samples if s.get("sampler_postgres_cpu_pct") is not None)
    cost = ""
    if runner:
        cost = (
            f" Its own cost, median (largest) over {len(runner)} samples: {runner[len(runner) // 2]:.1f}% "
            f"({runner[-1]:.1f}%) of one core in the runner"
        )
        cost += (
            f" and {backend[len(backend) // 2]:.1f}% ({backend[-1]:.1f}%) in its PostgreSQL backend, which the "
            "PostgreSQL CPU column includes."
            if backend
            else "; its PostgreSQL backend's is not known (PostgreSQL runs elsewhere)."
        )
    return (
        "- Backends are counted from `pg_stat_activity` (client backends on the suite's database, the harness's "
        f"own excluded) every {interval:g} s, and server, PostgreSQL and generator CPU, memory and descriptors "
        f"every {usage:g} s, by one sampler thread in the runner." + cost + " After each variant the runner ends "
        "leftover backends and waits for the baseline."
    )


def _steal_text(samples: list[dict[str, Any]]) -> str:
    """What a hypervisor took from this machine's cores during the windows (steal, from
    /proc/stat), and the window that lost the most: the suite's processes cannot show it."""
    stolen = [s for s in samples if s.get("host_steal_pct") is not None]
    if not stolen:
        return ""
    values = sorted(float(s["host_steal_pct"]) for s in stolen)
    worst = max(stolen, key=lambda s: float(s["host_steal_pct"]))
    return (
        f" A hypervisor ran other guests on this machine's cores (steal, read from /proc/stat) for a median of "
        f"{values[len(values) // 2]:.1f}% of one core over a window, at most {values[-1]:.1f}% "
        f"(`{worst['pair']}/{worst['variant']}` {worst.get('sample', '')}); the resources tables give each "
        "variant's, beside the whole machine's busy CPU."
    )


def _speed_line(summary: dict[str, Any]) -> str:
    """The Method's word on the speed probe, with the range this run's windows saw."""
    units = sorted(s["speed_unit_ms"] for s in summary.get("samples", []) if s.get("speed_unit_ms"))
    seen = (
        f" In this run it took {units[0]:.2f}-{units[-1]:.2f} ms (median {units[len(units) // 2]:.2f} ms) over "
        f"{len(units)} windows; a range much wider than a few percent means the host slowed while it ran, and "
        "throughput ratios, which no probe adjusts, carry that noise."
        if units
        else " This run has no speed-probe data (stored before the probe), so CPU figures are as measured."
    )
    seen += _steal_text(summary.get("samples", []))
    return (
        "- Machine speed: beside the load, the runner times a fixed piece of pure-Python work every 50 ms by its "
        "thread CPU time (waiting for a core does not count). A shared host that slows every process charges each "
        "request more CPU (measured in the stored run 20261201-233639-default: server, PostgreSQL and Locust CPU "
        "per request all about doubled within it), so checks on server CPU per request read it speed-adjusted: "
        "the ms measured times "
        f"{REFERENCE_UNIT_MS:g} ms over the window's mean work-unit time." + seen
    )


def _figure(r: VariantRecord, key: str, digits: int = 0) -> str:
    """A mean over blocks with its 95% t-interval, and a warning when blocks spread more than 10%."""
    text = _num(r.get(key), digits)
    ci = (r.get("ci") or {}).get(key)
    if ci:
        text += f" ({_num(ci[0], digits)}-{_num(ci[1], digits)})"
    spread = (r.get("spread") or {}).get(key)
    if spread is not None and spread > stats.SPREAD_WARNING:
        text += f" ⚠ ±{100 * spread:.0f}%"
    return text


# The per-variant table: header, alignment, and how each cell is read from a record.
COLUMNS: list[tuple[str, str, Callable[[VariantRecord], str]]] = [
    ("variant", "---", lambda r: f"`{r['variant']}`"),
    ("role", "---", lambda r: r["role"]),
    ("req/s", "--:", lambda r: _figure(r, "rps", 1)),
    ("requests", "--:", lambda r: _num(r["requests"])),
    ("failures", "--:", lambda r: f"{r['failures']:,} ({100 * r['failure_rate']:.1f}%)"),
    ("p50 ms", "--:", lambda r: _figure(r, "p50_ms")),
    ("p95 ms", "--:", lambda r: _num(r["p95_ms"])),
    # Thin: fewer requests than a p99 needs, so it rests on the slowest two or three.
    ("p99 ms", "--:", lambda r: _figure(r, "p99_ms") + (" (thin)" if r.get("thin_percentiles") else "")),
    ("max ms", "--:", lambda r: _num(r["max_ms"])),
    ("/ping p99 ms", "--:", lambda r: _figure(r, "ping_p99_ms", 1)),
    ("loop lag p99 ms", "--:", lambda r: _figure(r, "loop_lag_p99_ms", 1)),
    (
        "worker threads mean/peak",
        "--:",
        lambda r: f"{_num(r.get('threads_busy_mean'), 1)} / {_num(r.get('threads_busy_peak'))}",
    ),
    ("peak backends", "--:", lambda r: _num(r["peak_connections"])),
    ("mean backends", "--:", lambda r: _num(r["mean_connections"], 1)),
]
Columns = list[tuple[str, str, Callable[[VariantRecord], str]]]

# The server's resources over the measured window: a leak shows as a slope.
RESOURCE_COLUMNS: Columns = [
    ("variant", "---", lambda r: f"`{r['variant']}`"),
    ("new backends/s", "--:", lambda r: _num(r.get("new_backends_per_s"), 1)),
    ("server CPU %", "--:", lambda r: _num(r.get("server_cpu_pct"))),
    ("PostgreSQL CPU %", "--:", lambda r: _num(r.get("postgres_cpu_pct"))),
    ("generator CPU %", "--:", lambda r: _num(r.get("generator_cpu_pct"))),
    ("machine CPU % (all three)", "--:", lambda r: _num(r.get("machine_cpu_pct"))),
    ("host busy % (every process)", "--:", lambda r: _num(r.get("host_busy_pct"))),
    ("host steal %", "--:", lambda r: _num(r.get("host_steal_pct"), 1)),
    ("server CPU ms/request", "--:", lambda r: _figure(r, "server_cpu_ms_per_request", 2)),
    ("speed probe unit ms", "--:", lambda r: _figure(r, "speed_unit_ms", 2)),
    ("CPU ms/request, speed-adjusted", "--:", lambda r: _figure(r, "server_cpu_ms_adjusted", 2)),
    ("RSS peak MB", "--:", lambda r: _num(r.get("server_rss_mb_peak"), 1)),
    ("RSS slope MB/min", "--:", lambda r: _num(r.get("server_rss_slope_mb_per_min"), 2)),
    ("open FDs peak", "--:", lambda r: _num(r.get("server_fds_peak"))),
    ("FD slope /min", "--:", lambda r: _num(r.get("server_fds_slope_per_min"), 1)),
    ("backends after stop", "--:", lambda r: _after_stop(r)),
]


# For apps that watch a SQLAlchemy pool (apps.instruments): the pool seen from inside the
# server, beside what PostgreSQL says of the same connections.
POOL_COLUMNS: Columns = [
    ("variant", "---", lambda r: f"`{r['variant']}`"),
    ("pool checked out mean/peak", "--:", lambda r: f"{_num(r.get('pool_checked_out_mean'), 1)} / "
                                                     f"{_num(r.get('pool_checked_out_peak'))}"),
    ("overflow peak", "--:", lambda r: _num(r.get("pool_overflow_peak"))),
    ("returned by gc in window", "--:", lambda r: _num(r.get("pool_returned_by_gc"))),
    ("full collections in window", "--:", lambda r: _num(r.get("gc_full_collections"))),
]  # fmt: skip


def _state(name: str) -> Callable[[VariantRecord], str]:
    return lambda r: f"{_num(r.get(f'mean_{name}'), 1)} / {_num(r.get(f'peak_{name}'))}"


# Backends by state over the measured window (pg_stat_activity): where the connections are.
STATE_COLUMNS: Columns = [
    ("variant", "---", lambda r: f"`{r['variant']}`"),
    ("active", "--:", _state("active")),
    ("idle", "--:", _state("idle")),
    ("idle in transaction", "--:", _state("idle_in_transaction")),
    ("all", "--:", lambda r: f"{_num(r.get('mean_connections'), 1)} / {_num(r.get('peak_connections'))}"),
]


def _after_stop(r: VariantRecord) -> str:
    return f"{_num(r.get('settled_connections'))} (baseline {_num(r.get('baseline_connections'))})"


def _stalls(records: list[VariantRecord]) -> list[str]:
    """The lines the stack watchdog caught blocking the loop, per variant that stalled:
    evidence from stacks read at run time, beside the loop lag that measures the harm."""
    stalled = [r for r in records if r.get("stalls_caught") and r.get("stall_sites")]
    if not stalled:
        return []
    lines = [
        f"**What blocked the event loop** (the stack watchdog: while the loop is over {analysis.STALL_MS:g} ms late, "
        "a thread reads its stack; each stall is credited to the line of the suite's code it was on, to the "
        "garbage collection it was inside, or to the loop's own entry when no Python code ran on the loop):",
        "",
        "| variant | stalls caught | line | function | code | share of stalls | lag per stall ms |",
        "|---|--:|---|---|---|--:|--:|",
    ]
    for r in stalled:
        caught = int(r["stalls_caught"] or 0)
        for site in r["stall_sites"] or []:
            lines.append(
                f"| `{r['variant']}` | {caught:,} | {_stall_site(site)} | {100 * site['stalls'] / caught:.0f}% | "
                f"{site['lag_ms_total'] / max(1, site['stalls']):.0f} |"
            )
    return [*lines, ""]


GC_SITE = "full garbage collection (the collector ran on the loop)"
LOOP_WAIT_SITE = "the loop's own entry, no Python frame running (its thread waiting for the GIL or a CPU)"


def _stall_site(site: StallSite) -> str:
    """The line, function and code cells of a stall site. A stall caught in the
    instruments' gc callback is the collector's pause, not the instruments' own cost; one
    with only the loop's entry on its stack ran no code of the variant's."""
    if analysis.is_gc_collection(site):
        return f"{GC_SITE} | |"
    if analysis.is_loop_wait(site):
        return f"{LOOP_WAIT_SITE} | `{site['function']}` |"
    code = site["code"].replace("|", "\\|")  # a table cell
    return f"`{site['where']}` | `{site['function']}` | `{code}`"


def _table(records: list[VariantRecord], columns: Columns = COLUMNS) -> list[str]:
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
    """'fastapi#3205' or 'owner/repo#12' -> a link to that issue or pull request on GitHub."""
    repo, _, number = ref.partition("#")
    owner = {
        "fastapi": "fastapi",
        "starlette": "Kludex",
        "uvicorn": "Kludex",
        "asyncpg": "MagicStack",
        "httpx": "encode",
        "httpcore": "encode",
    }.get(repo)
    if "/" in repo:  # 'owner/repo#123': a thread outside the projects named above
        owner, _, repo = repo.partition("/")
    return f"[{ref}](https://github.com/{owner}/{repo}/issues/{number})" if owner and number.isdigit() else ref


def _ratio(cell: BlockRatio) -> str:
    """'0.42x (0.38-0.47), p 0.001' or '1.02x (0.97-1.08), no measurable difference'."""
    if cell["ratio"] is None:
        return "n/a"
    text = f"{cell['ratio']:.2f}x"
    if cell["ci"]:
        text += f" ({cell['ci'][0]:.2f}-{cell['ci'][1]:.2f})"
    if cell.get("p_value") is not None:
        text += f", p {cell['p_value']:.2g}"
    if cell["significant"] is False:
        text += ", no measurable difference"
    return text


def _comparisons(rows: list[Comparison], confidence: float) -> list[str]:
    if not rows:
        return []
    lines = [
        f"**Comparisons the rule makes** (each against its own baseline: the geometric mean of per-block ratios, "
        f'{100 * confidence:.1f}% t-interval, paired t-test; "no measurable difference" where the interval '
        "includes 1):",
        "",
        "| variant | vs | blocks | throughput | p99 |",
        "|---|---|--:|--:|--:|",
    ]
    lines += [
        f"| `{row['variant']}` | `{row['baseline']}` | {row['rps']['blocks']} | {_ratio(row['rps'])} "
        f"| {_ratio(row['p99_ms'])} |"
        for row in rows
    ]
    return [*lines, ""]


# Why the two loops disagree; prose about the mechanism, the numbers come from the run.
OPEN_LOOP_NOTE = (
    "A closed loop keeps every user's request in the system, so latency grows with the number of users "
    "queued behind a slow server, and during a stall the users simply stop sending, which hides the requests "
    "a real population of clients would have kept sending. An open loop sends on a fixed schedule whatever "
    "happens and counts from the scheduled time, so it shows latency at a given arrival rate: close to the "
    "service time below capacity, and growing for as long as the run lasts above it."
)


def _open_loop(records: list[VariantRecord]) -> list[str]:
    both = [r for r in records if r["status"] == "ok" and (r.get("open_loop") or {}).get("status") == "ok"]
    if not both:
        return []
    lines = [
        "**Closed loop against open loop.** " + OPEN_LOOP_NOTE,
        "",
        "| variant | closed p50 / p99 ms | open-loop rate (achieved) | open p50 / p99 ms | open max ms | sent late |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for r in both:
        o = r["open_loop"]
        closed = f"{_num(r['p50_ms'])} / {_figure(r, 'p99_ms')}"
        opened = f"{_num(o['p50_ms'])} / {_figure(o, 'p99_ms')}"
        late = f"{_num(100 * (o.get('late_share') or 0), 1)}%"
        rate = f"{o['rate']:g} ({_num(o.get('achieved_rps'), 1)})"
        lines.append(f"| `{r['variant']}` | {closed} | {rate} | {opened} | {_num(o['max_ms'])} | {late} |")
    return [*lines, ""]


def _levels(records: list[VariantRecord], target_ms: float) -> list[str]:
    swept = [r for r in records if r.get("levels")]
    if not swept:
        return []
    users = sorted({level["users"] for r in swept for level in r["levels"]})
    lines = [
        f"**Users sweep.** Throughput in req/s (p99 ms) at each level; the knee is the most throughput "
        f"with p99 under {target_ms:g} ms.",
        "",
        "| variant | " + " | ".join(f"{u} users" for u in users) + " | knee |",
        "|---|" + "--:|" * (len(users) + 1),
    ]
    for r in swept:
        by_users = {level["users"]: level for level in r["levels"]}
        cells = [
            f"{_num(by_users[u]['rps'])} ({_num(by_users[u]['p99_ms'])})"
            if u in by_users and by_users[u]["status"] == "ok"
            else "n/a"
            for u in users
        ]
        knee = r.get("knee")
        knee_text = (
            f"{knee['users']} users: {_num(knee['rps'])} req/s, p99 {_num(knee['p99_ms'])} ms" if knee else "none"
        )
        lines.append(f"| `{r['variant']}` | " + " | ".join(cells) + f" | {knee_text} |")
    return [*lines, ""]


def _soak(records: list[VariantRecord]) -> list[str]:
    soaked = [r for r in records if r.get("soak")]
    if not soaked:
        return []
    lines = [
        "**Soak.** Fitted slope per minute during the load and during the quiet recovery after it, and where "
        "each resource stood at the end of each phase:",
        "",
        "| variant | backends /min (load, recovery) | backends at end (load, recovery) | RSS MB/min (load, recovery) "
        "| RSS MB at end (load, recovery) | p99 ms/min (load) |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for r in soaked:
        s = r["soak"]
        lines.append(
            f"| `{r['variant']}` | {_num(s.get('connections_slope_per_min_load'), 1)}, "
            f"{_num(s.get('connections_slope_per_min_recovery'), 1)} | {_num(s.get('connections_end_of_load'))}, "
            f"{_num(s.get('connections_end_of_recovery'))} | {_num(s.get('rss_mb_slope_per_min_load'), 2)}, "
            f"{_num(s.get('rss_mb_slope_per_min_recovery'), 2)} | {_num(s.get('rss_mb_end_of_load'), 1)}, "
            f"{_num(s.get('rss_mb_end_of_recovery'), 1)} | {_num(s.get('p99_slope_ms_per_min_load'), 1)} |"
        )
    return [*lines, ""]


def _physics(rows: list[PhysicsRow]) -> list[str]:
    if not rows:
        return []
    lines = [
        f"**Physics check.** Throughput ceilings from first principles next to the measured figures; within "
        f"{100 * analysis.PHYSICS_TOLERANCE:g}% they agree.",
        "",
        "| variant | expected ceiling req/s | from | measured req/s | deviation | assessment |",
        "|---|--:|---|--:|--:|---|",
    ]
    for row in rows:
        ci = f" ({_num(row['ci'][0])}-{_num(row['ci'][1])})" if row["ci"] else ""
        lines.append(
            f"| `{row['variant']}` | {_num(row['expected'])} | {row['why']} | {_num(row['measured'])}{ci} "
            f"| {100 * row['deviation']:+.0f}% | {row['assessment']} |"
        )
    lines += [
        "",
        "**Little's law.** In a closed loop, mean latency = users in the system / throughput. The users in the "
        "system are those the server answered by the end of the warm-up: a server that leaves connections "
        "unaccepted serves fewer users than the load offers, and its latency follows the users it serves. The "
        "warm-up lasts until every user has had an answer (within the scenario's cap), so its length is how long "
        "the server took to take in all its users.",
        "",
        "| variant | users offered | warm-up s | users answered by the warm-up's end | users answered / req/s "
        "| p50 ms | p99 ms |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    lines += [
        f"| `{row['variant']}` | {_num(row.get('users'))} | {_num(row.get('warmup_s'))} | "
        f"{_num(row.get('users_answered'))} | "
        f"{_num(row.get('little_ms'))} ms | {_num(row.get('p50_ms'))} | {_num(row.get('p99_ms'))} |"
        for row in rows
        if row.get("users_answered") is not None
    ]
    return [*lines, ""]


def _sources(pair: Pair) -> str:
    if not pair.sources:  # a production failure no article claims: the threads it reproduces
        return "production reports, " + ", ".join(reference_link(ref) for ref in pair.references)
    return "; ".join(f'"{ARTICLES[key].title}" (seed {key})' for key in pair.sources)


def _pair_section(
    run_dir: Path,
    pair: Pair,
    records: list[VariantRecord],
    summary: Summary,
    manifest: dict[str, Any],
    charts: list[str],
) -> list[str]:
    verdict = summary["verdicts"].get(pair.name)
    knobs = pair.knobs | manifest["pairs"].get(pair.name, {})
    lines = [f"## `{pair.name}`: {pair.claim_id}", "", f"**Claim.** {pair.claim} Source: {_sources(pair)}.", ""]
    if verdict:
        lines += [f"**Verdict: {verdict['outcome']}.** {verdict['text']}", ""]
        lines += _checks(
            verdict.get("checks") or [], (summary.get("blocks") or {}).get(pair.name), verdict.get("shown") or []
        )
    own = pair_load(pair.load, manifest["scenario"])
    setup = [f"{k}={v}" for k, v in knobs.items()] + [f"{k}={v:g} (this pair's own)" for k, v in own.items()]
    if setup:
        lines += [f"**Settings.** {', '.join(setup)}.", ""]
    lines += [*_table(records), "", *_table(records, RESOURCE_COLUMNS), ""]
    interval = float(manifest["scenario"].get("sample_interval_s") or 0.5)
    lines += [f"**Backends by state** (pg_stat_activity every {interval:g} s, mean / peak):", ""]
    lines += [*_table(records, STATE_COLUMNS), ""]
    if any(r.get("pool_checked_out_peak") is not None for r in records):
        lines += [*_table(records, POOL_COLUMNS), ""]
    lines += _stalls(records)
    confidence = float(((summary.get("blocks") or {}).get(pair.name) or {}).get("confidence") or stats.CONFIDENCE)
    lines += _comparisons([row for row in summary.get("comparisons", []) if row["pair"] == pair.name], confidence)
    lines += _open_loop(records)
    lines += _levels(records, p99_target(manifest))
    lines += _soak(records)
    lines += _physics((summary.get("physics") or {}).get(pair.name) or [])
    lines += [f"![{pair.name} charts]({chart})" for chart in charts] + [""]
    lines += [f"**How the verdict is decided.** {pair.how_decided(knobs)}", "", f"**Mechanism.** {pair.mechanism}"]
    if pair.references:
        lines[-1] += " Upstream: " + ", ".join(reference_link(ref) for ref in pair.references) + "."
    lines.append("")
    observed = [(r["variant"], r["counters"]) for r in records if r.get("counters")]
    if observed:
        lines += ["**What the variants counted** (their own `/counters`, whole server life):", ""]
        lines += [f"- `{variant}`: {_counters(counters)}" for variant, counters in observed] + [""]
    warned = _warnings(records)
    if warned:
        lines += ["**Warnings the servers printed** (each distinct one once, with how many samples printed it):", ""]
        lines += [f"- `{variant}` ({n} of {total} samples): `{text}`" for variant, text, n, total in warned] + [""]
    failures = [(r["variant"], e, n) for r in records for e, n in (r.get("top_failures") or [])]
    if failures:
        lines += ["**Failures during load** (most frequent per variant):", ""]
        lines += [f"- `{variant}`: {count:,} x {error}" for variant, error, count in failures] + [""]
    unsettled = [r for r in records if (r.get("settled_connections") or 0) > (r.get("baseline_connections") or 0)]
    if unsettled:
        lines += ["**Backends that did not return to baseline** after the server stopped:", ""]
        lines += [f"- `{r['variant']}`: {r['settled_connections']} left (baseline {r['baseline_connections']})"
                  for r in unsettled] + [""]  # fmt: skip
    flagged = [(r["variant"], flag) for r in records for flag in r.get("flags") or []]
    if flagged:
        lines += ["**Flagged measurements** (not taken at face value):", ""]
        lines += [f"- `{variant}`: {flag}" for variant, flag in flagged] + [""]
    lines += ["**The variants.**", ""]
    for r in records:
        meta = store.read_json(run_dir / r["pair"] / r["variant"] / "variant.json")
        lines += [f"- `{r['variant']}` ({r['role']}): {meta['summary']}", "", "```python", meta["code"], "```", ""]
    return lines


def _warnings(records: list[VariantRecord]) -> list[tuple[str, str, int, int]]:
    """(variant, warning, samples that printed it, samples) for each distinct warning."""
    out = []
    for r in records:
        counts = r.get("warning_counts") or {w: 1 for w in r.get("warnings") or []}
        out += [(r["variant"], text, n, int(r.get("samples") or 1)) for text, n in counts.items()]
    return out


def _check_cell(check: JudgedCheck | ShownFigure) -> str:
    unit = check["unit"]

    def show(value: float | None) -> str:
        if value is None:
            return "n/a"
        return checks.fmt_value(value, unit, 100.0 if unit == "%" else 1.0)

    text = show(check["value"])
    if check.get("low") is not None:
        text += f" ({show(check['low'])} to {show(check['high'])})"
    return text


def _checks(
    judged: list[JudgedCheck], blocks: dict[str, Any] | None, shown: list[ShownFigure] | None = None
) -> list[str]:
    """The checks the verdict rests on, each with its figure, interval and outcome."""
    if not judged:
        return []
    level = next((c["confidence"] for c in judged if c.get("confidence")), None)
    took = ""
    if blocks:
        took = f" This pair took {blocks['blocks']} blocks and stopped: {blocks['stopped']}."
    lines = [
        "**Checks.** Each figure is the geometric mean (ratios) or mean of its per-block values with a "
        + (f"{100 * level:.1f}% t-interval" if level else "t-interval")
        + f" (the run's {100 * stats.CONFIDENCE:g}% shared over its planned looks); totals are exact counts.{took}",
        "",
        "| check | figure (interval) | threshold | p | outcome |",
        "|---|--:|--:|--:|---|",
    ]
    for c in judged:
        sign = "≥" if c["op"] == ">=" else "≤"
        threshold = checks.fmt_value(c["threshold"], c["unit"], 100.0 if c["unit"] == "%" else 1.0)
        p_value = "exact" if c.get("exact") else ("n/a" if c.get("p_value") is None else f"{c['p_value']:.2g}")
        outcome = c["outcome"] + (f": {c['thin']}" if c.get("thin") else "")
        lines.append(f"| {c['figure']} | {_check_cell(c)} | {sign} {threshold} | {p_value} | {outcome} |")
    for c in shown or []:
        thin = f": {c['thin']}" if c.get("thin") else ""
        lines.append(f"| {c['figure']} | {_check_cell(c)} | | | shown, not deciding{thin} |")
    return [*lines, ""]


def _counters(counters: Counters) -> str:
    def one(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.1f}"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    return ", ".join(f"{name} {one(value)}" for name, value in counters.items())


# Threads a ledger row cites for a claim no article makes; its section lists them all.
LEDGER_REFERENCES = 3


def _ledger_sources(pair: Pair) -> str:
    """'A3, B1' (article seeds), or the first production threads the pair reproduces."""
    if pair.sources or not pair.references:
        return ", ".join(pair.sources) or "production reports"
    cited = [reference_link(ref) for ref in pair.references[:LEDGER_REFERENCES]]
    more = len(pair.references) - len(cited)
    return "production reports: " + ", ".join(cited) + (f", +{more} more" if more else "")


def _ledger(pairs: list[Pair], verdicts: dict[str, VerdictEntry], manifest: dict[str, Any]) -> list[str]:
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
    claims = [p for p in pairs if p.claim_id.startswith("C")]
    for pair in sorted(claims, key=lambda p: (_claim_number(p.claim_id), p.order)):
        verdict = verdicts.get(pair.name)
        outcome = f"**{verdict['outcome']}**" if verdict else "not measured"
        headline = (verdict or {}).get("headline") or ""
        lines.append(
            f"| {pair.claim_id}: {pair.claim} ({_ledger_sources(pair)}) | {outcome} | "
            f"{headline} | "
            f"[`{pair.name}`](#{pair.name}-{pair.claim_id.lower()}) |"
        )
    lines += ["", *_noise_floor(pairs, verdicts)]
    return [*lines, "Articles: " + "; ".join(f'{a.key} = "{a.title}"' for a in ARTICLES.values()) + ".", ""]


def _noise_floor(pairs: list[Pair], verdicts: dict[str, VerdictEntry]) -> list[str]:
    """The A/A control beside the ledger: how far apart this run put identical variants,
    and every threshold a rule compares a ratio with, read against it."""
    control = next((p for p in pairs if not p.claim_id.startswith("C")), None)
    verdict = verdicts.get(control.name) if control else None
    if control is None or verdict is None:
        return []
    lines = [
        f"**Noise floor** ([`{control.name}`](#{control.name}-aa), two identical variants): "
        + "; ".join(f"{c['figure']} {_check_cell(c)}: {c['outcome']}" for c in verdict.get("checks") or [])
        + "".join(f"; {c['figure']} {_check_cell(c)} (shown)" for c in verdict.get("shown") or [])
        + ".",
        "",
    ]
    # Each threshold is read against the control's interval of its own figure, p50 against
    # p50 noise; a figure the control does not measure, against the widest of them.
    floors = checks.ratio_floors([*(verdict.get("checks") or []), *(verdict.get("shown") or [])])
    thresholds = sorted(
        {
            (pair.name, check.figure.metric.label, check.threshold, checks.inside_floor(check, floors))
            for pair in pairs
            if pair.rule is not None and pair is not control
            for check in pair.rule(pair.knobs).checks
            if check.figure.kind == "ratio"
        }
    )
    widest = checks.widest_floor(floors)
    if widest and thresholds:
        inside = [(name, label, threshold) for name, label, threshold, within in thresholds if within]
        listed = ", ".join(f"`{name}` {label} {threshold:g}x" for name, label, threshold, _ in thresholds)
        lines += [
            f"Ratio thresholds of the rules, each against the control's interval of the same figure where it "
            f"measures one, else the widest ({widest[0]:.2f}x to {widest[1]:.2f}x): {listed}. "
            + (
                f"Inside its floor: {', '.join(f'`{n}` {label} {t:g}x' for n, label, t in inside)}."
                if inside
                else "None lies inside its floor."
            ),
            "",
        ]
    return lines


def _companions(run_dir: Path, prefix_of: Callable[[Path], str]) -> list[str]:
    """The newest users sweep and soak stored under results/, from their own folders:
    one load level per variant cannot show a knee or a growth rate."""
    found = store.latest_companions(run_dir)
    if not found:
        return []
    lines = [
        "## Sweeps and soaks",
        "",
        "This run measures one load level. The newest users sweep (`make bench-sweep`) and soak "
        "(`make bench-soak`) stored under `results/` add what one level cannot show: where each variant's "
        "throughput stops growing, and whether its resources grow under a steady load and come back after it. "
        "Each comes from its own run, on the same machine; its full report is linked.",
        "",
    ]
    for kind, (path, summary) in sorted(found.items(), reverse=True):
        prefix = prefix_of(path)
        manifest = store.read_json(path / "manifest.json")
        title = "Users sweep" if kind == "sweep" else "Soak"
        lines += [f"### {title}: run `{path.name}` ([report]({prefix}REPORT.md))", ""]
        records: dict[str, list[VariantRecord]] = {}
        for record in summary["variants"]:
            records.setdefault(record["pair"], []).append(record)
        for pair_name, pair_records in records.items():
            table = _levels(pair_records, p99_target(manifest)) if kind == "sweep" else _soak(pair_records)
            if not table:
                continue
            chart = path / "charts" / f"{pair_name}-{'users' if kind == 'sweep' else 'soak'}.png"
            lines += [f"**`{pair_name}`**", "", *table]
            if chart.is_file():
                lines += [f"![{pair_name} {kind}]({prefix}charts/{chart.name})", ""]
    return lines


def _claim_number(claim_id: str) -> int:
    digits = "".join(ch for ch in claim_id if ch.isdigit())
    return int(digits) if digits else 0


def render(run_dir: Path, write_top_report: bool) -> Path:
    manifest = store.read_json(run_dir / "manifest.json")
    summary = store.read_summary(run_dir)
    pairs = _pairs_in_run(run_dir)
    by_pair: dict[str, list[VariantRecord]] = {}
    for record in summary["variants"]:
        by_pair.setdefault(record["pair"], []).append(record)
    charts_dir = run_dir / "charts"
    shutil.rmtree(charts_dir, ignore_errors=True)
    jobs = [(pair, by_pair[pair.name]) for pair in pairs if pair.name in by_pair]
    drawn = charts.draw_pairs(run_dir, jobs, charts_dir, p99_target(manifest))

    def prefix_of(path: Path) -> str:
        return f"{path.relative_to(ROOT)}/" if path.is_relative_to(ROOT) else f"{path}/"

    def document(chart_prefix: str, top: bool = False) -> str:
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
            *_environment(manifest, summary.get("calibration") or {}),
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
                    run_dir, pair, by_pair[pair.name], summary, manifest, [chart_prefix + c for c in drawn[pair.name]]
                )
        if top:
            lines += _companions(run_dir, prefix_of)
        lines += [
            "## Method",
            "",
            "- Each sample (one measurement of one variant) runs in a fresh uvicorn process (one worker; a pair about "
            "worker processes starts several, measured as one server) on 127.0.0.1 "
            "and is verified (status and body against the database row) before any load. Locust users are "
            "closed-loop with no wait time unless the table says open loop. Each load process counts requests from "
            "the end of the warm-up to its last request, and throughput is their total over that window; "
            "percentiles come from the processes' merged response-time buckets, which Locust rounds to two "
            "significant figures above 100 ms.",
            "- Blocks: a block runs every variant of a pair once, back to back, in an order shuffled per block, so "
            "the slow drift of a shared machine cancels in the ratios within it. Every pair runs the scenario's "
            "minimum of blocks; the runner then looks at each pair's checks at a few planned numbers of blocks and "
            "gives more blocks, while the run's time budget lasts, only to pairs whose interval still straddles a "
            "threshold. Each look spends a share of the 5% error rate fixed in advance (Bonferroni; "
            f"{100 * stats.FIRST_LOOK_SHARE:g}% of it on the first look, where most pairs stop and a 3-block interval "
            "is widest, the rest split equally over the later ones), so the interval a pair "
            f"stops on covers with at least {100 * stats.CONFIDENCE:g}% whichever look it stopped at; "
            "tests/test_coverage.py checks that on simulated runs with heavy-tailed noise and drift.",
            "- Figures: a ratio is the geometric mean of its per-block ratios with a t-interval on their logs and a "
            "paired t-test; a variant's throughput and loop lag are means over its blocks with a t-interval; its "
            "latency percentiles come from its response-time buckets merged across blocks, marked thin below "
            f"{checks.P99_MIN_REQUESTS} requests. ⚠ marks a figure whose standard deviation over blocks exceeds "
            f"{100 * stats.SPREAD_WARNING:g}% of its mean.",
            "- Saturation: a closed loop with no wait time keeps the machine's cores busy by design, so the table "
            "gives server, PostgreSQL and generator CPU and their sum per sample; claims about the cost per request "
            "are decided on server CPU time per request, which the generator's share does not distort.",
            _speed_line(summary),
            "- Open loop: requests fall due at a fixed rate whether or not earlier ones returned; latency is counted "
            "from the due time, and a send more than 10 ms late is counted as late.",
            f"- Saturation guards: the load generator's CPU (busiest Locust process), the server's and PostgreSQL's "
            f"are sampled with the backends. A sample where the generator ran above {analysis.GENERATOR_CPU_LIMIT:g}% "
            f"CPU, or an open-loop sample that achieved under {100 * analysis.RATE_SHARE_LIMIT:g}% of its rate, is "
            "flagged in summary.json and here, and a verdict that rests on it says so.",
            "- `/ping` is an `async def` route that does nothing; the runner requests it on a fixed schedule "
            "alongside the load and measures latency from the scheduled time, so a stalled event loop shows in full.",
            "- Loop lag: every variant's process runs a task that asks the event loop to wake it every 10 ms "
            "and records how late it woke; its p99 over the measured window is the direct measure of a blocked loop. "
            "The same task counts the anyio worker-thread tokens in use (of 40), which `def` endpoints and sync "
            "dependencies borrow.",
            _sampling_line(manifest["scenario"], summary),
            "- Load generator, server and PostgreSQL share one machine: compare variants within a run, as ratios.",
            "",
        ]
        return "\n".join(lines)

    (run_dir / "REPORT.md").write_text(document(""))
    if write_top_report:
        TOP_REPORT.write_text(document(prefix_of(run_dir), top=True))
    return run_dir / "REPORT.md"
