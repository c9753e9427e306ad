"""The shapes of the records the harness passes around and stores as JSON.

A *sample record* is one measurement of one variant (harness.analysis.summarize_sample);
a *variant record* combines a variant's samples (harness.analysis.combine). Both are
plain dicts at run time, so sample.json, summary.json and manifest.json keep their
format; these TypedDicts only name their keys and what each holds. Where a record is
read back from JSON, harness.store's `read_summary` is the one place that says what it is.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

# A variant's own /counters (cleanups, calls, order of events): each pair names its own,
# so their keys are the pair's, not the harness's. Numbers add up over samples.
Counters = dict[str, Any]
# A soak's slope and end value of each resource in each phase ("connections_slope_per_min_load", ...).
SoakFigures = dict[str, float | None]
# A figure's interval (low, high); a list once it has been through JSON.
Interval = tuple[float, float]


class Verification(TypedDict):
    """The one request that checked a fresh server before its load."""

    id: int
    status: int
    body: Any  # the JSON the variant returned


class SampleMeta(TypedDict, total=False):
    """sample.json: what the runner knew about a sample when it ran it."""

    pair: str
    variant: str
    role: str
    sample: str  # e.g. "closed-u50-b4"
    mode: str  # "closed", "open" or "soak"
    users: int
    rate: float
    block: int
    repeat: int  # runs stored before blocks called them repeats
    primary: bool
    workers: int
    load_overrides: dict[str, Any]
    status: str  # "running", "ok" or "failed"
    error: str | None
    timings: dict[str, float]  # seconds per phase: start, verify, load, stop, settle
    recovery_s: float
    baseline_connections: int
    verification: Verification
    counters: Counters | None
    warnings: list[str]
    settled_connections: int
    terminated_backends: int
    settle_error: str
    server_log_tail: str


class StallSite(TypedDict):
    """A line the event loop was blocked on, as the stack watchdog caught it."""

    where: str  # path:line, relative to the suite's root
    function: str
    code: str  # the line's source
    blocked_in: str  # the innermost frame (a C call is not a frame: the line calling it is)
    stalls: int
    lag_ms_total: float


class Record(TypedDict):
    """The fields every record carries, sample or variant (harness.analysis.RECORD_FIELDS);
    None where the variant produced no measurement."""

    pair: str
    variant: str
    role: str
    status: str  # "ok" or "failed"
    error: str | None
    requests: int | None
    failures: int | None
    failure_rate: float | None
    rps: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    ping_samples: int | None
    ping_p50_ms: float | None
    ping_p99_ms: float | None
    ping_max_ms: float | None
    ping_failures: int | None
    loop_lag_p50_ms: float | None
    loop_lag_p99_ms: float | None
    loop_lag_max_ms: float | None
    threads_busy_mean: float | None
    threads_busy_peak: int | None
    # A watched SQLAlchemy pool (apps.instruments), None elsewhere.
    pool_checked_out_mean: float | None
    pool_checked_out_peak: int | None
    pool_overflow_peak: int | None
    pool_returned_by_gc: int | None  # connections the pool got back from a collected session, in the window
    gc_full_collections: int | None  # generation-2 collections in the window
    peak_connections: int | None
    mean_connections: float | None
    # Backends by state (pg_stat_activity), peak and mean over the window.
    peak_active: int | None
    mean_active: float | None
    peak_idle: int | None
    mean_idle: float | None
    peak_idle_in_transaction: int | None
    mean_idle_in_transaction: float | None
    new_backends_per_s: float | None
    baseline_connections: int | None
    settled_connections: int | None
    terminated_backends: int | None
    server_cpu_pct: float | None
    server_rss_mb_peak: float | None
    server_rss_slope_mb_per_min: float | None
    server_fds_peak: int | None
    server_fds_slope_per_min: float | None
    measured_s: float | None
    users: int | None
    top_failures: list[list[Any]] | None  # [kind, count], the three most frequent
    failure_kinds: list[list[Any]] | None  # [kind, count], most frequent first
    counters: Counters | None
    warnings: list[str] | None
    generator_cpu_pct: float | None
    postgres_cpu_pct: float | None
    machine_cpu_pct: float | None
    # From /proc/stat over the window: every process on the machine, and the CPU time a
    # hypervisor gave other guests (steal), of the machine's cores x 100%.
    host_busy_pct: float | None
    host_steal_pct: float | None
    # The connection sampler's own cost over the sample, % of one core: its thread in the
    # runner, its backend in PostgreSQL (None where PostgreSQL runs elsewhere).
    sampler_cpu_pct: float | None
    sampler_postgres_cpu_pct: float | None
    server_cpu_ms_per_request: float | None
    # CPU ms of the speed probe's work unit during the window (mean), and the CPU per
    # request scaled by it to the reference speed (harness.pairs.speed_adjusted_cpu).
    speed_unit_ms: float | None
    server_cpu_ms_adjusted: float | None
    # The stack watchdog (apps.instruments.StackWatchdog): stalls it caught in the window,
    # and the lines of the suite's code they were on, most stalls first.
    stalls_caught: int | None
    stall_sites: list[StallSite] | None
    thin_percentiles: bool | None
    # Seconds until every user had an answer, or until the warm-up's cap (phases.json).
    warmup_s: float | None
    # Response-time buckets (ms -> requests); summary.json leaves them out.
    buckets: NotRequired[dict[str, int] | None]
    flags: list[str]


class SampleRecord(Record):
    """One measurement of one variant in a fresh server (harness.analysis.SAMPLE_FIELDS)."""

    sample: str | None
    mode: str | None
    rate: float | None
    block: int | None
    primary: bool | None
    achieved_rps: float | None  # open loop only
    late_share: float | None  # open loop only
    rps_per_second: list[float] | None
    soak: SoakFigures | None
    warmup_users_answered: int | None
    warmup_capped: bool | None


class Knee(TypedDict):
    """A sweep's knee: the most throughput with p99 under the target."""

    users: int
    rps: float
    p99_ms: float


class VariantRecord(Record, total=False):
    """A variant's samples combined: one per variant in summary.json."""

    sample: str | None  # the sample whose time series the charts draw
    samples: int
    repeats: int  # samples that measured
    mode: str | None
    rate: float | None
    primary: bool | None
    achieved_rps: float | None
    late_share: float | None
    warmup_users_answered: int | None
    warning_counts: dict[str, int]  # warning -> samples that printed it
    values: dict[str, list[float | None]]  # each CI figure's value per block
    ci_method: str  # "blocks" or "none"
    ci: dict[str, Interval | None]
    spread: dict[str, float | None]
    open_loop: VariantRecord | None
    levels: list[VariantRecord]  # a users sweep: one record per level
    knee: Knee | None
    soak: SoakFigures | None
    soak_sample: str | None


# One block: each variant's sample record in that block (variants that failed there are absent).
Block = dict[str, SampleRecord]


class JudgedCheck(TypedDict):
    """One check as judged on a run (harness.checks.Judged.as_dict)."""

    name: str
    figure: str
    unit: str
    op: str
    threshold: float
    band: float
    value: float | None
    low: float | None
    high: float | None
    blocks: int | None
    confidence: float | None
    p_value: float | None
    exact: bool
    thin: str | None
    outcome: str
    text: str


class ShownFigure(TypedDict):
    """A figure a rule shows beside its verdict without deciding on it."""

    name: str
    figure: str
    unit: str
    value: float
    low: float | None
    high: float | None
    thin: str | None


class VerdictEntry(TypedDict):
    """A pair's verdict in summary.json."""

    outcome: str
    text: str
    headline: str
    figures: dict[str, float]
    checks: list[JudgedCheck]
    shown: list[ShownFigure]


class BlockRatio(TypedDict):
    """A variant against its baseline: the geometric mean of its per-block ratios."""

    ratio: float | None
    ci: Interval | None
    p_value: float | None
    blocks: int
    significant: bool | None


class Comparison(TypedDict):
    """One row of summary.json's comparisons."""

    pair: str
    variant: str
    baseline: str
    rps: BlockRatio
    p99_ms: BlockRatio


class RunRatio(TypedDict):
    """One figure of a variant in two runs (bench.py compare): unpaired, so no p-value."""

    ratio: float | None
    ci: Interval | None
    significant: bool | None


class PhysicsRow(TypedDict):
    """The physics check: a ceiling from first principles against the measured throughput."""

    variant: str
    expected: float
    why: str
    measured: float
    ci: Interval | None
    deviation: float
    assessment: str
    users: int | None
    users_answered: int | None
    warmup_s: float | None
    little_ms: float | None  # Little's law: users in the system / throughput
    p50_ms: float | None
    p99_ms: float | None


class Calibration(TypedDict, total=False):
    """What the load generator drove against a bare endpoint: its ceiling."""

    status: str | None
    users: int | None
    workers: int | None
    error: str | None
    rps: float | None
    failure_rate: float | None
    p99_ms: float | None
    generator_cpu_pct: float | None
    server_cpu_pct: float | None


class Summary(TypedDict):
    """summary.json."""

    format_version: int
    scenario: str | None
    confidence: float
    looks: Any
    look_confidences: list[float] | None  # per planned look
    blocks: dict[str, Any]  # per pair: blocks taken, why it stopped, its looks' confidence
    calibration: Calibration
    variants: list[VariantRecord]
    verdicts: dict[str, VerdictEntry]
    comparisons: list[Comparison]
    physics: dict[str, list[PhysicsRow]]
    samples: list[SampleRecord]
