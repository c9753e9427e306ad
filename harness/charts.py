"""The report's charts, drawn only from a run folder's records and raw files."""

from __future__ import annotations

import multiprocessing
import os
import textwrap
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from PIL import Image

from harness import analysis, store
from harness.pairs import Pair
from harness.records import VariantRecord

# Each variant gets its own colour; the family says its role (warm = bad, cool = good).
ROLE_PALETTES = {
    "bad": ["#d1495b", "#f18f01", "#8e2c3f"],
    "good": ["#2e86ab", "#3bb273", "#1b4965"],
    "reference": ["#7d7d7d", "#b0b0b0", "#4a4a4a"],
}
ROLE_STYLES = {"bad": "--", "good": "-", "reference": ":"}


def variant_colors(records: list[VariantRecord]) -> dict[str, str]:
    used: dict[str, int] = {}
    colors = {}
    for r in records:
        palette = ROLE_PALETTES.get(r["role"], ["#444444"])
        colors[r["variant"]] = palette[used.get(r["role"], 0) % len(palette)]
        used[r["role"]] = used.get(r["role"], 0) + 1
    return colors


# Margins and gaps between panels, in inches: room for a title, tick labels and an axis
# label. Fixed margins instead of tight_layout, which draws every figure twice (a third
# of the report's rendering time).
MARGIN_IN = {"left": 0.8, "right": 0.25, "top": 0.65, "bottom": 0.75}
GAP_IN = {"width": 0.85, "height": 1.0}


TITLE_LINE_IN = 0.22  # one line of an 11-point title
TITLE_CHAR_IN = 0.085  # the width of one of its characters, about


def _layout(fig: Any, title: str, bottom_in: float = 0.0) -> None:
    width, height = fig.get_size_inches()
    lines = textwrap.wrap(title, max(20, int((width - 0.4) / TITLE_CHAR_IN))) or [""]
    fig.suptitle("\n".join(lines), fontsize=11, y=1 - 0.12 / height, va="top")
    rows, columns = fig.axes[0].get_subplotspec().get_gridspec().get_geometry()
    left, right = MARGIN_IN["left"] / width, 1 - MARGIN_IN["right"] / width
    top = 1 - (MARGIN_IN["top"] + TITLE_LINE_IN * (len(lines) - 1)) / height
    bottom = (MARGIN_IN["bottom"] + bottom_in) / height
    # subplots_adjust takes gaps as fractions of the average panel's size.
    panel_w = (width * (right - left) - (columns - 1) * GAP_IN["width"]) / columns
    panel_h = (height * (top - bottom) - (rows - 1) * GAP_IN["height"]) / rows
    fig.subplots_adjust(
        left=left,
        right=right,
        top=top,
        bottom=bottom,
        wspace=GAP_IN["width"] / panel_w,
        hspace=GAP_IN["height"] / panel_h,
    )


def _save(fig: Any, title: str, out: Path, bottom_in: float = 0.0) -> None:
    """`bottom_in`: room below the panels for a figure legend."""
    _layout(fig, title, bottom_in)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    # 256 colours hold every line and label of these charts at under half the bytes:
    # charts are committed with each run.
    with Image.open(out) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(out, optimize=True)


def sample_folder(run_dir: Path, record: VariantRecord) -> Path:
    """The raw files a variant record's time series are drawn from: its first sample."""
    return run_dir / record["pair"] / record["variant"] / str(record.get("sample"))


def _series(run_dir: Path, record: VariantRecord, name: str, column: str) -> pd.DataFrame | None:
    folder = sample_folder(run_dir, record)
    start = store.read_phases(folder).get("load_start")
    # Several uvicorn workers write a loop-lag file each: their ticks together.
    paths = analysis.loop_lag_files(folder) if name == "loop_lag.csv" else [store.raw(folder, name)]
    paths = [path for path in paths if path.is_file()]
    if start is None or not paths:
        return None
    frame = pd.concat([pd.read_csv(path) for path in paths])
    if frame.empty:
        return None
    # Probes are written as they return, not in the order they were due.
    frame["t"] = frame[column] - start
    frame = frame.sort_values("t")
    if len(frame) > 300:  # 10 ms loop-lag ticks: the worst per 100 ms keeps every stall visible
        frame = frame.groupby((frame["t"] // 0.1).astype(int)).max(numeric_only=True)
    if "lag_ms" in frame:  # a timer can fire a fraction of a millisecond early: that is no lag
        frame["lag_ms"] = frame["lag_ms"].clip(lower=0)
    return frame


def _warmup_end(run_dir: Path, record: VariantRecord) -> float | None:
    """Seconds from load start to the measured window of the sample a record's lines are
    drawn from: variants warm up for as long as they need, so each has its own."""
    phases = store.read_phases(sample_folder(run_dir, record))
    if "measure_start" in phases and "load_start" in phases:
        return phases["measure_start"] - phases["load_start"]
    return None


# Drawn dotted beside a panel's main line in each variant's colour, one legend entry for all.
SECONDARY = {"pool_overflow": "overflow past pool_size"}
WARMING_ALPHA = 0.3  # a variant's line while it still warms up, beside another's measured one


def _plot_variant(ax: Any, frame: pd.DataFrame, value: str, warmup_end: float | None, fmt: str, **line: Any) -> None:
    """One variant's line: faint over its own warm-up, full over its measured window."""
    if warmup_end is None:
        ax.plot(frame["t"], frame[value], fmt, **line)
        return
    warming = frame[frame["t"] <= warmup_end]
    # The measured part starts at the warm-up's last point, so the line has no gap.
    measured = frame[frame["t"] >= (warming["t"].iloc[-1] if len(warming) else warmup_end)]
    ax.plot(warming["t"], warming[value], fmt, **{**line, "label": None, "alpha": WARMING_ALPHA})
    ax.plot(measured["t"], measured[value], fmt, **line)


def chart_pair(run_dir: Path, pair: Pair, records: list[VariantRecord], out: Path) -> None:
    ok = [r for r in records if r["status"] == "ok"]
    # A fourth row for apps that watch a SQLAlchemy pool: its counts beside the backends' states.
    pooled = any(r.get("pool_checked_out_peak") is not None for r in ok)
    fig, axes = plt.subplots(4 if pooled else 3, 2, figsize=(12, 16.5 if pooled else 12.5))
    names = [r["variant"] for r in records]
    by_variant = variant_colors(records)
    colors = [by_variant[name] for name in names]

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

    warmup_ends = {r["variant"]: _warmup_end(run_dir, r) for r in ok}
    known_ends = [end for end in warmup_ends.values() if end is not None]
    # Grey while every variant warms up; past that, a variant still warming is drawn faint.
    shared_warmup = min(known_ends, default=None)
    warmup_label = "warm-up (not counted)" if len(set(known_ends)) <= 1 else "warm-up (faint: a variant's own)"
    lines: list[tuple[Any, str, str, tuple[str, ...], str]] = [
        (axes[1][0], "connections.csv", "time", ("total",), "PostgreSQL backends (pg_stat_activity)"),
        (axes[1][1], "probe.csv", "intended", ("latency_ms",), "/ping latency during load (ms, log scale)"),
        (axes[2][0], "loop_lag.csv", "time", ("lag_ms",), "event-loop lag inside the server (ms, log scale)"),
        (axes[2][1], "connections.csv", "time", ("server_rss_mb",), "server resident memory (MB)"),
    ]
    if pooled:
        lines += [
            (
                axes[3][0],
                "loop_lag.csv",
                "time",
                ("pool_checked_out", "pool_overflow"),
                "SQLAlchemy pool: connections checked out, and overflow",
            ),
            (axes[3][1], "connections.csv", "time", ("idle_in_transaction",), "backends idle in transaction"),
        ]
    for ax, file, column, values, title in lines:
        if shared_warmup:
            ax.axvspan(0, shared_warmup, color="#ececec", label=warmup_label)
        for r in ok:
            frame = _series(run_dir, r, file, column)
            if frame is None or values[0] not in frame:
                continue
            color, end = by_variant[r["variant"]], warmup_ends[r["variant"]]
            style = ROLE_STYLES.get(r["role"], "-")
            # Usage is sampled less often than backends: each column's own rows.
            main = frame[["t", values[0]]].dropna()
            _plot_variant(ax, main, values[0], end, style, color=color, linewidth=1.2, label=r["variant"])
            for value in (v for v in values[1:] if v in frame):
                # A negative overflow only counts connections still below pool_size.
                known = frame[["t", value]].dropna()
                extra = pd.DataFrame({"t": known["t"], value: known[value].clip(lower=0)})
                _plot_variant(ax, extra, value, end, ":", color=color, linewidth=1.6)
        for value in values[1:]:
            ax.plot([], [], ":", color="black", linewidth=1.6, label=SECONDARY[value])
        ax.set_title(title)
        ax.set_xlabel("seconds since load start")
        ax.legend(fontsize=8)
    # Counts and memory from zero, so a flat line is not zoomed into noise, with room
    # above the highest line so it does not hide in the frame.
    for ax in (axes[0][0], axes[1][0], axes[2][1], *(axes[3] if pooled else ())):
        ax.set_ylim(0, ax.get_ylim()[1] * 1.08 or 1)
    axes[1][1].set_yscale("log")
    axes[2][0].set_yscale("symlog", linthresh=1.0)  # lag is often 0.0x ms: linear below 1 ms
    _save(fig, f"{pair.name}: {pair.claim}", out)


# Backend states as pg_stat_activity names them, bottom to top, each in one colour in every
# panel; "other" is the rest (fastpath, disabled, a backend still starting up).
STATES = (
    ("active", "active", "#d1495b"),
    ("idle_in_transaction", "idle in transaction", "#f18f01"),
    ("idle", "idle", "#2e86ab"),
    ("other", "other", "#b0b0b0"),
)
STATE_PANELS_PER_ROW = 4


def chart_states(run_dir: Path, pair: Pair, records: list[VariantRecord], out: Path) -> bool:
    """The variant's backends by state over its sample, stacked: one panel per variant,
    all on one scale, so where the connections sit (running, waiting inside a
    transaction, parked in a pool) compares at a glance. None for a pair whose variants
    opened no backend (the table says 0)."""
    drawn = []
    for r in records:
        if r["status"] != "ok":
            continue
        frame = _series(run_dir, r, "connections.csv", "time")
        if frame is not None and all(state in frame for state, _, _ in STATES):
            drawn.append((r, frame))
    top = max((float(frame["total"].max()) for _, frame in drawn), default=0.0)
    if not drawn or not top > 0:
        return False
    columns = min(STATE_PANELS_PER_ROW, len(drawn))
    rows = -(-len(drawn) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.0 * rows + 0.6), squeeze=False, sharey=True)
    for ax, (r, frame) in zip(axes.flat, drawn, strict=False):
        warmup_end = _warmup_end(run_dir, r)
        if warmup_end:
            ax.axvspan(0, warmup_end, color="#ececec")
        ax.stackplot(
            frame["t"],
            *(frame[state].fillna(0) for state, _, _ in STATES),
            labels=[label for _, label, _ in STATES],
            colors=[color for _, _, color in STATES],
            step="post",
        )
        ax.set_title(f"{r['variant']} ({r['role']})", fontsize=9)
        ax.set_xlabel("seconds since load start", fontsize=8)
        ax.set_ylim(0, top * 1.08)
    for ax in list(axes.flat)[len(drawn) :]:
        ax.axis("off")
    axes[0][0].set_ylabel("PostgreSQL backends")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(STATES), fontsize=8, frameon=False)
    title = f"{pair.name}: backends by state (pg_stat_activity; grey = warm-up)"
    _save(fig, title, out, bottom_in=0.3)
    return True


def sweep_points(pair: Pair, records: list[VariantRecord]) -> dict[str, list[tuple[int, VariantRecord]]]:
    """Measured records by sweep series, sorted by x. A variant in a series of its own
    that sits at x = 0 (e.g. no middleware at all) is the common start of every series."""
    by_name = {r["variant"]: r for r in records if r["status"] == "ok"}
    series: dict[str, list[tuple[int, VariantRecord]]] = {}
    shared: list[tuple[int, VariantRecord]] = []
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


def chart_sweep(pair: Pair, records: list[VariantRecord], out: Path) -> bool:
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
    _save(fig, f"{pair.name}: {pair.claim}", out)
    return True


def chart_levels(pair: Pair, records: list[VariantRecord], p99_target_ms: float, out: Path) -> bool:
    """The users sweep: throughput and p99 against users, one line per variant, each
    variant's knee circled, the p99 target drawn."""
    swept = [r for r in records if r.get("levels")]
    if not swept:
        return False
    colors = variant_colors(records)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in swept:
        levels = [level for level in r["levels"] if level["status"] == "ok"]
        users = [level["users"] for level in levels]
        style = ROLE_STYLES.get(r["role"], "-")
        left.plot(
            users, [lv["rps"] for lv in levels], style, marker="o", color=colors[r["variant"]], label=r["variant"]
        )
        right.plot(users, [lv["p99_ms"] for lv in levels], style, marker="o", color=colors[r["variant"]])
        if r.get("knee"):
            left.plot([r["knee"]["users"]], [r["knee"]["rps"]], "o", ms=14, mfc="none", color=colors[r["variant"]])
    right.axhline(p99_target_ms, color="black", linewidth=0.8, linestyle=":", label=f"p99 target {p99_target_ms:g} ms")
    left.set_title("Throughput (req/s); circle = knee")
    right.set_title("p99 latency (ms, log scale)")
    right.set_yscale("log")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("concurrent users")
        ax.legend(fontsize=8)
    left.set_ylim(bottom=0)
    _save(fig, f"{pair.name}: users sweep", out)
    return True


def chart_soak(run_dir: Path, pair: Pair, records: list[VariantRecord], out: Path) -> bool:
    """A soak: backends, server memory and p99 over the load and the recovery after it."""
    soaked = [r for r in records if r.get("soak") and r.get("soak_sample")]
    if not soaked:
        return False
    colors = variant_colors(records)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for r in soaked:
        folder = run_dir / r["pair"] / r["variant"] / r["soak_sample"]
        phases = store.read_phases(folder)
        if "measure_start" not in phases:
            continue
        start = phases["measure_start"]
        samples = pd.read_csv(store.raw(folder, "connections.csv"))
        samples = samples[samples["time"] >= start]
        style = ROLE_STYLES.get(r["role"], "-")
        for ax, column in ((axes[0], "total"), (axes[1], "server_rss_mb")):
            known = samples.dropna(subset=[column])
            ax.plot(known["time"] - start, known[column], style, color=colors[r["variant"]], label=r["variant"])
        history = analysis.read_history(folder)
        history = history[history["Timestamp"] >= start]
        axes[2].plot(
            history["Timestamp"] - start, history["99%"], style, color=colors[r["variant"]], label=r["variant"]
        )
        load_s = r["soak"]["load_s"]
        for ax in axes:
            ax.axvspan(load_s, load_s + r["soak"]["recovery_s"], color="#ececec")
    for ax, title in zip(
        axes, ("PostgreSQL backends", "server resident memory (MB)", "p99 (ms, 10 s window)"), strict=True
    ):
        ax.set_title(f"{title}; grey = recovery, no load", fontsize=9)
        ax.set_xlabel("seconds since the measured load began")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    _save(fig, f"{pair.name}: soak", out)
    return True


def draw_pair(
    run_dir: Path, pair: Pair, records: list[VariantRecord], out_dir: Path, p99_target_ms: float
) -> list[str]:
    """Every chart the pair's data allows, as paths relative to the run folder, in the
    order the report shows them."""
    drawn = []
    if chart_sweep(pair, records, out_dir / f"{pair.name}-sweep.png"):
        drawn.append(f"{pair.name}-sweep.png")
    chart_pair(run_dir, pair, records, out_dir / f"{pair.name}.png")
    drawn.append(f"{pair.name}.png")
    if chart_states(run_dir, pair, records, out_dir / f"{pair.name}-states.png"):
        drawn.append(f"{pair.name}-states.png")
    if chart_levels(pair, records, p99_target_ms, out_dir / f"{pair.name}-users.png"):
        drawn.append(f"{pair.name}-users.png")
    if chart_soak(run_dir, pair, records, out_dir / f"{pair.name}-soak.png"):
        drawn.append(f"{pair.name}-soak.png")
    return [f"{out_dir.name}/{name}" for name in drawn]


# The charts of different pairs share nothing, and matplotlib's layout and PNG encoding
# are CPU-bound: drawing them in a few forked processes divides the report's wall time.
CHART_WORKERS = 4
# What the forked chart processes draw, set just before they fork (a Pair holds lambdas,
# which cannot be sent to a process, but a fork inherits them).
_JOBS: list[tuple[Path, Pair, list[VariantRecord], Path, float]] = []


def _draw_job(index: int) -> list[str]:
    return draw_pair(*_JOBS[index])


def draw_pairs(
    run_dir: Path, jobs: list[tuple[Pair, list[VariantRecord]]], out_dir: Path, p99_target_ms: float
) -> dict[str, list[str]]:
    """`draw_pair` for every (pair, records), by pair name: in up to CHART_WORKERS
    processes, one per core, where the platform can fork."""
    global _JOBS
    _JOBS = [(run_dir, pair, records, out_dir, p99_target_ms) for pair, records in jobs]
    workers = min(CHART_WORKERS, os.cpu_count() or 1, len(_JOBS))
    try:
        if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
            drawn = [_draw_job(index) for index in range(len(_JOBS))]
        else:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
                drawn = list(pool.map(_draw_job, range(len(_JOBS))))
    finally:
        _JOBS = []
    return {pair.name: paths for (pair, _), paths in zip(jobs, drawn, strict=True)}
