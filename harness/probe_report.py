"""A probe run's REPORT.md, in its own run folder (never the top-level one), and the
diagnosis it opens with: findings computed from the run's numbers, each naming the
ledger pattern it matches and linking to that pair's section of the suite's REPORT.md.

Each users level is one sample, so its figures carry no interval; the findings rest on
exact counts (stalls caught, failures, backends, tokens) or on levels measured far from
their thresholds, and say which.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypedDict

from harness import analysis, store
from harness.pairs import ANYIO_TOKENS, ROOT, STALL_MIN_MS, BenchError
from harness.probe import HELD_TRANSACTION_MS, pool_limit, shell_join

# A level stalls the loop when its loop lag p99 (inside the server) reaches this.
STALL_LAG_MS = STALL_MIN_MS
# Backends at this share of max_connections leave no room for another worker or deploy.
MAX_CONNECTIONS_SHARE = 0.8
# A level holds transactions open when at least this share of its samples found a backend
# idle in transaction for probe.HELD_TRANSACTION_MS or more. Backends caught between a
# query and its commit, however many, are not a finding: their peak is in the Pool section.
HELD_TRANSACTION_SHARE = 0.25
# The ledger sections a finding links to: pair heading anchors in the suite's REPORT.md
# (harness/report.py writes "## `pair`: CLAIM", so the anchor is "pair-claim", lower case).
PATTERNS = {
    "blocking": ("C11", "a blocking call in `async def` blocks the server", "blocking-c11"),
    "orm_async_endpoint": ("C11", "a sync SQLAlchemy Session inside `async def` blocks the server",
                           "orm_async_endpoint-c11"),
    "deps": ("C1", "a sync (blocking) dependency or driver call on the event loop", "deps-c1"),
    "stall": ("C6", "`def` endpoints waiting for worker threads and pool connections", "stall-c6"),
    "def_endpoint": ("C2", "work in `def` endpoints runs in anyio's worker threads", "def_endpoint-c2"),
    "sessions": ("C7", "sessions and connections that are not returned", "sessions-c7"),
    "pool": ("C12", "connections opened per request instead of pooled", "pool-c12"),
    "semaphore": ("C15", "bounding concurrent database work", "semaphore-c15"),
    "orm_pool_threads": ("C16", "`def` endpoints on the default pool queue for its 5 + 10 connections behind "
                         "40 worker threads", "orm_pool_threads-c16"),
    "orm_idle_in_transaction": ("C17", "a transaction held open across slow work keeps its connection from the pool",
                                "orm_idle_in_transaction-c17"),
    "workers_pool": ("C19", "each worker process opens its own pool: workers x pool size must fit "
                     "max_connections", "workers_pool-c19"),
}  # fmt: skip
# Where a stack that blocked the loop shows a database driver: the `deps` pattern.
DRIVER_MARKS = ("psycopg2", "psycopg", "sqlalchemy", "pymysql", "sqlite3", "redis", "requests", "urllib3")
# Where it shows SQLAlchemy's sync API (a Session or its Connection): the `orm_async_endpoint` pattern.
SQLALCHEMY_MARKS = ("sqlalchemy", "sqlmodel")
# Failure texts that name the database's connection limit.
MAX_CONNECTIONS_MARKS = ("too many clients", "remaining connection slots")


class Finding(TypedDict):
    # "loop stalls", "worker threads", "pool", "idle in transaction", "max_connections", "failures"; information:
    # "knee", "gc pauses", "loop waits", "brief stalls", "open loop" (fell behind its rate), "pool" when not
    # exhausted, and "worker threads" when the server was CPU-bound
    kind: str
    problem: bool  # False: information
    text: str
    patterns: list[str]  # keys of PATTERNS


def _levels(summary: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in summary["variants"] if r.get("status") == "ok"]


def _at(record: dict[str, Any]) -> str:
    if record.get("mode") == "open":
        return f"open loop at {record.get('rate') or 0:g} req/s"
    users = record.get("users")
    return f"{users} user" if users == 1 else f"{users} users"


def _worst(records: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    known = [r for r in records if r.get(key) is not None]
    return max(known, key=lambda r: r[key]) if known else None


def diagnose(summary: dict[str, Any], manifest: dict[str, Any]) -> list[Finding]:
    """The findings, problems first, each from this run's figures."""
    every = _levels(summary)
    # An open loop behind its rate had its users in flight, not the rate's share of them: its
    # pool, threads and backends describe the generator's backlog, so they are not judged.
    records = [r for r in every if not analysis.fell_behind(r)]
    findings: list[Finding] = []
    findings += _stalls(summary, every)
    by_sample = summary.get("by_sample") or {}
    tokens = (summary.get("server") or {}).get("thread_tokens") or ANYIO_TOKENS
    busiest = _worst(records, "threads_busy_peak")
    if busiest is not None and busiest["threads_busy_peak"] >= tokens:
        findings.append(_threads(busiest, tokens, manifest))
    findings += _pool(records, by_sample)
    findings += _idle_in_transaction(records, by_sample)
    limit = int((manifest.get("database") or {}).get("max_connections") or 0)
    crowded = _worst(records, "peak_connections")
    if limit and crowded is not None and crowded["peak_connections"] >= MAX_CONNECTIONS_SHARE * limit:
        findings.append(
            Finding(
                kind="max_connections",
                problem=True,
                text=f"{crowded['peak_connections']} backends at {_at(crowded)} against max_connections {limit} "
                f"(at least {MAX_CONNECTIONS_SHARE:.0%}): another worker process or a deploy's overlap runs out.",
                patterns=["workers_pool", "pool", "semaphore"],
            )
        )
    findings += _failures(every, by_sample)
    findings += [_behind(record) for record in every if analysis.fell_behind(record)]
    knee = summary.get("knee")
    target = (manifest.get("target") or {}).get("p99_target_ms")
    if knee:
        text = f"The knee: {_at(knee)}, {knee['rps']:,.0f} req/s with p99 {knee['p99_ms']:,.0f} ms"
    else:
        text = "No level kept p99 under the target, so there is no knee"
    findings.append(Finding(kind="knee", problem=False, text=f"{text} (target {target or 0:g} ms).", patterns=[]))
    return findings


def _cpu_bound(record: dict[str, Any], manifest: dict[str, Any]) -> str:
    """Why a level's server could run no faster on more threads: its process at a core's
    worth of CPU (the GIL's ceiling for Python code), or the machine's CPUs all in use by
    the server, PostgreSQL and the generator. Empty when neither."""
    server = record.get("server_cpu_pct")
    if server is not None and server >= analysis.SATURATED_CPU:
        return f"the server used {server:.0f}% CPU"
    cpus = int((manifest.get("environment") or {}).get("cpu_count") or 0)
    machine = record.get("machine_cpu_pct")
    if cpus and machine is not None and machine >= analysis.SATURATED_CPU * cpus:
        return f"the server, PostgreSQL and the load generator used {machine:.0f}% of {cpus * 100}% CPU"
    return ""


def _threads(record: dict[str, Any], tokens: int, manifest: dict[str, Any]) -> Finding:
    """Every worker-thread token busy. A problem where threads were the limit: they waited
    (on I/O, a pool, a lock) while CPU was to spare, so requests queued for a thread. Where
    the server was CPU-bound, more threads would not serve more: information."""
    busy = (
        f"All {tokens} of anyio's worker-thread tokens were busy at {_at(record)} "
        f"(peak {record['threads_busy_peak']}, mean {record.get('threads_busy_mean') or 0:.1f})"
    )
    cpu = _cpu_bound(record, manifest)
    if cpu:
        return Finding(
            kind="worker threads",
            problem=False,
            text=f"{busy}, but {cpu}: the CPU, not the threads, was the limit there, and more threads would not "
            "serve more requests.",
            patterns=[],
        )
    cpu_used = record.get("server_cpu_pct")
    spare = f" while the server used {cpu_used:.0f}% CPU" if cpu_used is not None else ""
    return Finding(
        kind="worker threads",
        problem=True,
        text=f"{busy}{spare}: `def` endpoints and sync dependencies queued for a thread while the threads waited.",
        patterns=["stall", "def_endpoint"],
    )


def _behind(record: dict[str, Any]) -> Finding:
    return Finding(
        kind="open loop",
        problem=False,
        text=f"The {_at(record)} achieved {record.get('achieved_rps') or 0:,.0f} req/s: requests queued, so its "
        f"{record.get('users')} users, not the rate, set how many were in flight. Its pool, worker-thread and "
        "backend figures are shown, not judged.",
        patterns=[],
    )


def _idle_in_transaction(records: list[dict[str, Any]], by_sample: dict[str, Any]) -> list[Finding]:
    """A problem where a level's samples found a transaction held open (HELD_TRANSACTION_SHARE
    of them saw a backend idle in transaction for HELD_TRANSACTION_MS or more)."""
    held = []
    for record in records:
        extra = by_sample.get(str(record.get("sample"))) or {}
        share = extra.get("idle_in_transaction_held_share")
        if share is not None and share >= HELD_TRANSACTION_SHARE:
            held.append((record, float(share), extra))
    if not held:
        return []
    record, share, extra = max(held, key=lambda item: item[1])
    return [
        Finding(
            kind="idle in transaction",
            problem=True,
            text=f"In {share:.0%} of the samples at {_at(record)} a backend had sat `idle in transaction` for "
            f"{HELD_TRANSACTION_MS:g} ms or more (longest {_num(extra.get('idle_in_transaction_oldest_ms'))} ms; "
            f"peak {extra.get('idle_in_transaction_peak') or 0} backends, mean "
            f"{_num(extra.get('idle_in_transaction_mean'), 1)}): sessions that hold a transaction open while the "
            "request does other work keep their connections from the pool.",
            patterns=["orm_idle_in_transaction", "sessions"],
        )
    ]


def _failures(records: list[dict[str, Any]], by_sample: dict[str, Any]) -> list[Finding]:
    """Failures by kind, linked to the pair whose mechanism their words or the server's
    pool timeouts name."""
    failures = [r for r in records if r.get("failures")]
    if not failures:
        return []
    kinds: dict[str, int] = {}
    for record in failures:
        for kind, count in record.get("failure_kinds") or []:
            kinds[kind] = kinds.get(kind, 0) + int(count)
    worst = max(failures, key=lambda r: r.get("failure_rate") or 0)
    listed = "; ".join(f"{n:,} x {kind}" for kind, n in sorted(kinds.items(), key=lambda i: -i[1])[:5])
    text = f"Requests failed: {worst.get('failure_rate', 0):.1%} at {_at(worst)}. By kind: {listed}."
    words = " ".join(kinds).lower()
    timed_out = sum(_pool_timeouts(r, by_sample.get(str(r.get("sample"))) or {}) for r in failures)
    patterns = []
    if timed_out:
        text += f" The server logged {timed_out:,} SQLAlchemy pool timeouts at these levels."
        patterns.append("orm_pool_threads")
    if any(mark in words for mark in MAX_CONNECTIONS_MARKS):
        patterns.append("workers_pool")
    return [Finding(kind="failures", problem=True, text=text, patterns=patterns)]


def _stalls(summary: dict[str, Any], records: list[dict[str, Any]]) -> list[Finding]:
    """A problem when some level's loop lag p99 reaches STALL_LAG_MS (the suite's own
    stall threshold), with the stacks as evidence; stacks caught at a lower p99 (a
    machine's scheduling hiccup can make one) are information only. Stalls inside a
    garbage collection, or with only the loop's own entry on the stack, are information:
    the interpreter or the loop's thread waiting, not a call of the app's that blocks."""
    stalls = summary.get("stalls") or {}
    every_site = stalls.get("sites") or []
    collections = [site for site in every_site if analysis.is_gc_collection(site)]
    waits = [site for site in every_site if analysis.is_loop_wait(site)]
    sites = [s for s in every_site if not analysis.is_gc_collection(s) and not analysis.is_loop_wait(s)]
    laggy = _worst(records, "loop_lag_p99_ms")
    captured = stalls.get("captured") or sum(site["stalls"] for site in every_site)
    waiting = []
    if collections:
        waiting.append(
            _waited(
                "gc pauses",
                collections,
                captured,
                "garbage collections",
                "the interpreter pausing, not a call that blocks.",
            )
        )
    if waits:
        waiting.append(
            _waited(
                "loop waits",
                waits,
                captured,
                f"in the loop's own entry (`{waits[0]['blocked_in']}`), with no Python frame running on it",
                "the loop's thread waiting for the GIL (worker threads held it) or for a CPU, not a call that "
                "blocks. They show a busy server (its CPU, or its GIL held by worker threads); the worker-thread and "
                "knee findings say which.",
            )
        )
    if waiting and not sites:  # the lag is the collector's or the CPU's
        return waiting
    return _blocking_stalls(stalls, sites, laggy) + waiting


def _waited(kind: str, sites: list[dict[str, Any]], captured: int, what: str, why: str) -> Finding:
    count = sum(site["stalls"] for site in sites)
    total = sum(site["lag_ms_total"] for site in sites)
    worst = max(site["lag_ms_max"] for site in sites)
    return Finding(
        kind=kind,
        problem=False,
        text=f"{count} of the {captured} stalls the watchdog caught were {what} ({total:,.0f} ms of lag in all, "
        f"worst {worst:,.0f} ms): {why}",
        patterns=[],
    )


def _blocking_stalls(
    stalls: dict[str, Any], sites: list[dict[str, Any]], laggy: dict[str, Any] | None
) -> list[Finding]:
    """The loop-stall finding from the stalls that were calls, not collections."""
    stalled = laggy is not None and laggy["loop_lag_p99_ms"] >= STALL_LAG_MS
    if not stalled and not sites:
        return []
    lag_text = f"loop lag p99 {laggy['loop_lag_p99_ms']:,.0f} ms at {_at(laggy)}" if laggy else "no loop lag measured"
    if not stalled:
        caught = sum(site["stalls"] for site in sites)
        top = named_site(sites)
        return [
            Finding(
                kind="brief stalls",
                problem=False,
                text=f"The watchdog caught {caught} brief stalls, the most "
                + ("in the app's code" if top["in_app"] else "in libraries (none in the app's code)")
                + f" at {top['where']} (`{top['function']}`), but they did not raise the loop lag ({lag_text}) to "
                f"{STALL_LAG_MS:g} ms.",
                patterns=[],
            )
        ]
    if not sites:
        return [
            Finding(
                kind="loop stalls",
                problem=True,
                text=f"The event loop lagged ({lag_text}), but the watchdog caught no stack above its threshold: "
                "many short blocking calls, or CPU-bound work between awaits.",
                patterns=["blocking"],
            )
        ]
    top = named_site(sites)
    driver = _stack_shows(top, DRIVER_MARKS)
    where = f"`{top['function']}` at {top['where']}" + (f" (`{top['code']}`)" if top["code"] else "")
    share = f"{top['stalls']} of {stalls['captured']}"
    blocked_in = "" if top["blocked_in"].startswith(top["where"]) else f", blocked in {top['blocked_in']}"
    text = (
        f"The event loop stalls ({lag_text}, threshold {STALL_LAG_MS:g} ms). The watchdog caught {stalls['captured']} "
        f"stalls in the measured windows; {share} were in {where}{blocked_in}: {top['lag_ms_total']:,.0f} ms of lag "
        f"in all, worst {top['lag_ms_max']:,.0f} ms."
    )
    if not top["in_app"]:
        text += (
            " No stack the watchdog caught has a frame in the app's folder: the call comes from a library, "
            "so this is the most frequent library site."
        )
    elif top is not sites[0]:
        first = sites[0]
        text += (
            f" More stalls ({first['stalls']}) were caught in library code at {first['where']} "
            f"(`{first['function']}`), with no frame of the app's on their stack."
        )
    patterns = ["deps", "blocking"] if driver else ["blocking"]
    if _stack_shows(top, SQLALCHEMY_MARKS):  # a sync Session or Connection used on the loop
        patterns.insert(0, "orm_async_endpoint")
    return [Finding(kind="loop stalls", problem=True, text=text, patterns=patterns)]


def named_site(sites: list[dict[str, Any]]) -> dict[str, Any]:
    """The site a finding names: the most frequent in the app's own code, else (no stall
    had a frame of the app's) the most frequent of all. `sites` is most frequent first."""
    return next((site for site in sites if site["in_app"]), sites[0])


def _stack_shows(site: dict[str, Any], marks: tuple[str, ...]) -> bool:
    return any(mark in frame.split(os.sep) or f"/{mark}/" in frame for frame in site["stack"] for mark in marks)


def _pool_timeouts(record: dict[str, Any], extra: dict[str, Any]) -> int:
    """Checkouts that timed out at a level: the server's log counts them (probe.pool_timeouts);
    a failure kind naming the limit is the same event seen by the client, so not added."""
    seen = sum(int(n) for kind, n in record.get("failure_kinds") or [] if "QueuePool limit" in str(kind))
    return max(int(extra.get("pool_timeouts") or 0), seen)


# A pool is exhausted when it sat at its limit for at least this share of the window (or a
# checkout timed out): a healthy app at 350 req/s touched its limit in 1 of 423 monitor
# samples, one burst, not a queue for connections.
POOL_EXHAUSTED_SHARE = 0.05


def _pool(records: list[dict[str, Any]], by_sample: dict[str, Any]) -> list[Finding]:
    """Exhaustion (checked out at size + overflow for a share of the window, or checkouts
    that timed out) is a problem; otherwise the pool's limit and its busiest level are
    information."""
    busiest: tuple[int, dict[str, Any], dict[str, Any]] | None = None
    for record in records:
        extra = by_sample.get(str(record.get("sample"))) or {}
        pools = extra.get("pools") or []
        timeouts = _pool_timeouts(record, extra)
        if not pools and not timeouts:
            continue
        # No watched pool (an engine the wrapper did not find): the limits the timeout message names.
        pool = pools[0] if pools else {"class": "QueuePool", **(extra.get("pool_timeout_limits") or {})}
        limit = pool_limit(pool)
        peak = extra.get("pool_checked_out_peak")
        share = extra.get("pool_at_limit_share")
        at_limit = bool(limit and peak is not None and peak >= limit)
        if (at_limit and (share is None or share >= POOL_EXHAUSTED_SHARE)) or timeouts:
            held = f"{peak} of its {limit or '?'} connections checked out at peak" if peak is not None else ""
            if held and share is not None:
                held += f", at its limit for {share:.0%} of the window"
            waited = f"{timeouts:,} checkouts timed out waiting for one (in the server's log)" if timeouts else ""
            # A sync pool is checked out from worker threads: `def` endpoints and sync dependencies.
            threads = "Async" not in str(pool.get("class"))
            return [
                Finding(
                    kind="pool",
                    problem=True,
                    text=f"The SQLAlchemy pool ({_pool_text(pool)}) was exhausted at {_at(record)}: "
                    + ", ".join(part for part in (held, waited) if part)
                    + ".",
                    patterns=(["orm_pool_threads"] if threads else []) + ["stall", "sessions"],
                )
            ]
        if pools and (busiest is None or (peak or 0) > busiest[0]):
            busiest = (peak or 0, record, pool)
    if busiest is None:
        return []
    peak, record, pool = busiest
    limit = pool_limit(pool)
    share = (by_sample.get(str(record.get("sample"))) or {}).get("pool_at_limit_share")
    briefly = f", at its limit for {share:.1%} of the window" if share else ""
    return [
        Finding(
            kind="pool",
            problem=False,
            text=f"The SQLAlchemy pool: {_pool_text(pool)}; at most {peak} of its {limit or '?'} connections "
            f"checked out{briefly} (at {_at(record)}).",
            patterns=[],
        )
    ]


def _pool_text(pool: dict[str, Any]) -> str:
    parts = [str(pool.get("class", "pool"))]
    if pool.get("size") is not None:
        parts.append(f"size {pool['size']}")
    if pool.get("max_overflow") is not None:
        parts.append(f"overflow {pool['max_overflow']}")
    if pool.get("timeout_s") is not None:
        parts.append(f"timeout {pool['timeout_s']:g} s")
    return ", ".join(parts)


def _num(value: Any, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _link(run_dir: Path, pattern: str) -> str:
    claim, words, anchor = PATTERNS[pattern]
    top = os.path.relpath(ROOT / "REPORT.md", run_dir)
    return f"[{claim} `{pattern}`]({top}#{anchor}) ({words})"


def draw_charts(run_dir: Path, summary: dict[str, Any], target_ms: float) -> list[str]:
    """The sweep (throughput and p99 against users, the knee circled) and, per load, the
    loop lag and the backends by state over time; paths relative to the run folder."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from harness import charts
    from harness.probe import PROBE_PAIR

    drawn = []
    closed = [r for r in summary["variants"] if r.get("status") == "ok" and r.get("mode") == "closed"]
    swept: Any = {"variant": "app", "role": "reference", "levels": closed, "knee": summary.get("knee")}
    if len(closed) > 1 and charts.chart_levels(PROBE_PAIR, [swept], target_ms, run_dir / "charts" / "sweep.png"):
        drawn.append("charts/sweep.png")
    measured = [r for r in summary["variants"] if r.get("status") == "ok"]
    if not measured:
        return drawn
    fig, (lag_ax, db_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    for record in measured:
        folder = run_dir / "samples" / str(record["sample"])
        start = store.read_phases(folder).get("measure_start")
        if start is None:
            continue
        for name, axis, column in (("loop_lag.csv", lag_ax, "lag_ms"), ("connections.csv", db_ax, "total")):
            path = store.raw(folder, name)
            if not path.is_file():
                continue
            frame = pd.read_csv(path)
            frame = frame[frame["time"] >= start]
            if column in frame and len(frame):
                axis.plot(frame["time"] - start, frame[column].clip(lower=0), label=_at(record), linewidth=0.8)
    lag_ax.set_title("Event-loop lag (ms) from the end of the warm-up")
    db_ax.set_title("Backends on the app's database")
    for axis in (lag_ax, db_ax):
        axis.set_xlabel("seconds")
        axis.legend(fontsize=8)
    charts._save(fig, "probe: over time", run_dir / "charts" / "over_time.png")
    drawn.append("charts/over_time.png")
    return drawn


def render(run_dir: Path) -> Path:
    """REPORT.md in the probe's run folder, from its stored files only."""
    manifest = store.read_json(run_dir / "manifest.json")
    if manifest.get("kind") != "probe":
        raise BenchError(f"{run_dir} is not a probe run")
    if not (run_dir / "summary.json").is_file():
        raise BenchError(f"{run_dir} has no summary.json: the probe measured nothing")
    summary = store.read_json(run_dir / "summary.json")
    target = manifest["target"]
    server = summary.get("server") or {}
    packages = server.get("packages") or {}
    lines = [
        f"# Probe of `{target['app']}`",
        "",
        f"Measured {manifest['started']} ({manifest['status']}) with `{shell_join(manifest.get('command') or [])}`.",
        "",
        f"- App folder: `{target['app_dir']}`; interpreter `{target['python']}` (Python {server.get('python', '?')}, "
        + ", ".join(f"{name} {version}" for name, version in packages.items())
        + f"; event loop `{server.get('loop', '?')}`).",
        f"- Paths: {', '.join(f'`{p}`' for p in target['paths'])}"
        + (f", ids {target['ids'][0]}-{target['ids'][1]}" if any("{id}" in p for p in target["paths"]) else "")
        + (f"; headers sent: {', '.join(target['headers'])}" if target["headers"] else "")
        + ".",
        f"- Database: {_database(manifest)}.",
        f"- Machine: {manifest['environment']['cpu_model']}, {manifest['environment']['cpu_count']} CPUs.",
        "",
        "## Diagnosis",
        "",
    ]
    findings = summary.get("diagnosis") or []
    problems = [f for f in findings if f["problem"]]
    if not problems:
        lines += ["No problem found: no loop stall, worker-thread saturation, pool exhaustion, backend idle in "
                  "transaction, crowding of max_connections or failure in this run.", ""]  # fmt: skip
    for finding in findings:
        links = "; ".join(_link(run_dir, p) for p in finding["patterns"])
        marker = "**" + finding["kind"].capitalize() + ".**"
        lines.append(f"- {marker} {finding['text']}" + (f" Matches {links}." if links else ""))
    lines += [
        "",
        "Each level is one sample: its figures have no interval, and a figure near a threshold is not a finding "
        "until a second run agrees (`bench.py compare` between two probe runs). Counts (stalls caught, failures, "
        "backends, tokens) are exact for this run.",
        "",
    ]
    lines += _stall_section(summary)
    lines += _levels_section(summary)
    lines += [f"![probe chart]({chart})" for chart in draw_charts(run_dir, summary, target["p99_target_ms"])] + [""]
    lines += _paths_section(summary)
    lines += _resources_section(summary)
    warned = list(dict.fromkeys(w for r in summary["variants"] for w in r.get("warnings") or []))
    if warned:
        lines += ["## Warnings the app printed", "", *[f"- `{w}`" for w in warned], ""]
    failed = [r for r in summary["variants"] if r.get("status") != "ok"]
    if failed:
        lines += ["## Samples that failed", "", *[f"- `{r['variant']}`: {r.get('error')}" for r in failed], ""]
    lines += [
        "## How it was measured",
        "",
        "The app ran unchanged under `apps/probe_wrapper.py`, a thin ASGI wrapper that adds the probe's `/ping` "
        f"(under `{manifest.get('prefix')}`), the loop-lag monitor with anyio's worker-thread tokens, SQLAlchemy "
        "pool counts where the app has an engine, and the stack watchdog: a thread that, while the loop is more "
        f"than {summary['watchdog']['threshold_ms']:g} ms late, reads the loop thread's stack "
        "(`sys._current_frames()`). Each level is a fresh server: a closed-loop users sweep, then open loop at "
        f"{_open_loop_why(manifest)}. `pg_stat_activity` is sampled by state, "
        "read-only: the probe never ends a session or writes to the app's database unless asked with `--seed-*`.",
        "",
    ]
    path = run_dir / "REPORT.md"
    path.write_text("\n".join(lines))
    return path


def _open_loop_why(manifest: dict[str, Any]) -> str:
    open_loop = manifest.get("open_loop") or {}
    why = open_loop.get("why", "70% of the knee")
    retry = open_loop.get("retry")
    return f"{why}, and once more at {retry['rate']:g} req/s ({retry['why']})" if retry else why


def _database(manifest: dict[str, Any]) -> str:
    db = manifest.get("database") or {}
    where = "the embedded PostgreSQL (a fresh database)" if db.get("source") == "embedded" else f"`{db.get('dsn')}`"
    return (
        f"{where}, PostgreSQL {db.get('server_version', '?')}, max_connections {db.get('max_connections', '?')}; "
        f"prepared {db.get('prepared', 'not by the probe')}"
    )


def _stall_section(summary: dict[str, Any]) -> list[str]:
    stalls = summary.get("stalls") or {}
    sites = stalls.get("sites") or []
    lines = ["## What blocked the event loop", ""]
    if not sites:
        missed = stalls.get("missed") or 0
        return [*lines, f"The watchdog caught no stall in the measured windows ({missed} too short to catch).", ""]
    lines += [
        "Stacks the watchdog captured while the loop was late, by the line of the app they were on "
        f"({stalls['captured']} stalls caught in the measured windows, "
        f"{stalls.get('missed') or 0} too short to catch):",
        "",
        "| # | where | code | stalls | lag in all (ms) | worst (ms) | blocked in |",
        "|---|---|---|---|---|---|---|",
    ]
    for rank, site in enumerate(sites[:10], 1):
        where = f"`{site['where']}` `{site['function']}`" + ("" if site["in_app"] else " (library)")
        code = f"`{site['code']}`" if site["code"] else ""
        lines.append(
            f"| {rank} | {where} | {code} | {site['stalls']:,} | {site['lag_ms_total']:,.0f} | "
            f"{site['lag_ms_max']:,.0f} | `{site['blocked_in']}` |"
        )
    top = named_site(sites)
    which = "of the app's most frequent site" if top["in_app"] else "most frequent (no site in the app)"
    lines += ["", f"The stack {which} (innermost first), as captured at {top['where']}:", "", "```"]
    lines += [*top["stack"], "```", ""]
    return lines


def _levels_section(summary: dict[str, Any]) -> list[str]:
    tokens = (summary.get("server") or {}).get("thread_tokens") or ANYIO_TOKENS
    lines = [
        "## Load",
        "",
        "| load | req/s | p50 ms | p99 ms | failures | loop lag p99 ms | /ping p99 ms "
        f"| threads busy peak (of {tokens}) | backends peak |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["variants"]:
        if r.get("status") != "ok":
            lines.append(f"| {_at(r)} | failed: {r.get('error')} |||||||")
            continue
        behind = " (fell behind)" if analysis.fell_behind(r) else ""
        lines.append(
            f"| {_at(r)}{behind} | {_num(r['rps'])} | {_num(r['p50_ms'])} | {_num(r['p99_ms'])} | "
            f"{r['failures']:,} ({r['failure_rate']:.1%}) | {_num(r['loop_lag_p99_ms'])} | {_num(r['ping_p99_ms'])} | "
            f"{_num(r['threads_busy_peak'])} | {_num(r['peak_connections'])} |"
        )
    knee = summary.get("knee")
    lines += [
        "",
        f"Knee: {_at(knee)}, {knee['rps']:,.0f} req/s at p99 {knee['p99_ms']:,.0f} ms."
        if knee
        else "Knee: none (no level kept p99 under the target).",
        "",
    ]
    return lines


def _paths_section(summary: dict[str, Any]) -> list[str]:
    rows = []
    for record in summary["variants"]:
        for path in ((summary.get("by_sample") or {}).get(str(record.get("sample"))) or {}).get("paths") or []:
            rows.append(
                f"| {_at(record)} | `{path['path']}` | {path['requests']:,} | {path['failures']:,} | "
                f"{_num(path['p50_ms'])} | {_num(path['p99_ms'])} |"
            )
    if len(rows) <= len(summary["variants"]):  # one path: the load table says it all
        return []
    return [
        "## Per path",
        "",
        "Locust's own figures per path (its percentiles over the whole load, warm-up included):",
        "",
        "| load | path | requests | failures | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def _resources_section(summary: dict[str, Any]) -> list[str]:
    lines = []
    for record in summary["variants"]:
        extra = (summary.get("by_sample") or {}).get(str(record.get("sample"))) or {}
        pools = extra.get("pools") or []
        if pools:
            lines.append(
                f"- {_at(record)}: pool {_pool_text(pools[0])}; checked out at peak "
                f"{_num(extra.get('pool_checked_out_peak'))}; idle in transaction at peak "
                f"{_num(extra.get('idle_in_transaction_peak'))} (mean "
                f"{_num(extra.get('idle_in_transaction_mean'), 1)}, longest "
                f"{_num(extra.get('idle_in_transaction_oldest_ms'))} ms); checkouts timed out "
                f"{_num(extra.get('pool_timeouts'))}"
                + (f" ({len(pools)} pools found; the first is watched)" if len(pools) > 1 else "")
            )
    if not lines:
        return []
    return ["## Pool", "", *lines, ""]
