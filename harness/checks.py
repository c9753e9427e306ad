"""Verdict rules as data: the shared vocabulary every pair's rule is written in.

A *check* is a figure (a ratio, a difference or a level of one metric between the
pair's variants, measured per block), a direction, a threshold and an equivalence band.
Judged on this run's blocks it *clears* (its whole interval is beyond the threshold),
*misses* (its whole interval falls short), shows *no measurable difference* (its whole
interval lies inside the band around "no difference"), or is *inconclusive* (its
interval straddles the threshold). A *part* of a claim is a few checks that must all
clear; a *rule* is the claim's parts plus positive controls, and one ladder turns the
parts' outcomes into the verdict. The verdict's text, the ledger's headline and the
report's "How the verdict is decided" are all worded here, from the same objects that
decide, so the prose cannot drift from the code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from harness import stats
from harness.pairs import (
    STALL_FACTOR,
    STALL_MIN_MS,
    Outcome,
    Records,
    Verdict,
    counter_ratio,
    loop_lag,
    ratio,
    speed_adjusted_cpu,
    speed_adjusted_rps,
)
from harness.records import Block, JudgedCheck, Record, ShownFigure

CheckOutcome = Literal["clears", "misses", "no measurable difference", "inconclusive", "not measured"]

# Ratios within +-10% of 1 count as "no measurable difference" unless a check says otherwise.
DEFAULT_BAND = 0.10
# A p99 resting on fewer requests than this is two or three slow requests, not a tail.
P99_MIN_REQUESTS = 500


@dataclass(frozen=True)
class Metric:
    """What is read from a record, and how it reads in a sentence."""

    label: str
    unit: str  # "req/s", "ms", "%", "" (a count)
    read: Callable[[Record], float | None]
    min_requests: int = 0  # fewer requests in a sample than this: the figure is too thin to decide on
    scale: float = 1.0  # shown multiplied by this (a share as a percentage)
    # Read failed variants too: where a variant that did not start or verify is itself
    # the answer (a `def` endpoint that cannot serve), not a gap in the measurement.
    reads_failed: bool = False
    # The name figures are keyed by in summary.json (the label, unless a label changed
    # and stored runs must still compare).
    name: str = ""

    def of(self, record: Record | None) -> float | None:
        if record is None or (record.get("status", "ok") != "ok" and not self.reads_failed):
            return None
        value = self.read(record)
        return None if value is None or not math.isfinite(value) else float(value)


def metric_key(metric: Metric) -> str:
    """How a metric is named in figure keys: 'p99', 'server_CPU_per_request'."""
    return (metric.name or metric.label).replace(" ", "_")


def _field(name: str) -> Callable[[Record], float | None]:
    # Metrics name their field as data, so the type cannot follow the key: each is a figure.
    return lambda record: cast("float | None", record.get(name))


def good_rps(record: Record) -> float | None:
    """Successful requests per second."""
    rps, failed = record.get("rps"), record.get("failure_rate")
    return None if rps is None else float(rps) * (1 - float(failed or 0))


THROUGHPUT = Metric("throughput", "req/s", _field("rps"))
THROUGHPUT_ADJUSTED = Metric("speed-adjusted throughput", "req/s", speed_adjusted_rps)
GOOD_THROUGHPUT = Metric("successful throughput", "req/s", good_rps)
P50 = Metric("p50", "ms", _field("p50_ms"), min_requests=20)
P99 = Metric("p99", "ms", _field("p99_ms"), min_requests=P99_MIN_REQUESTS)
PING_P99 = Metric("/ping p99", "ms", _field("ping_p99_ms"))
LOOP_LAG = Metric("loop lag p99", "ms", loop_lag)


def floored_loop_lag(record: Record) -> float:
    """Loop lag p99, read as STALL_MIN_MS where it is lower: below that it is the loop's
    own scheduling on a busy machine (measured 1.5-29 ms for a loop that never blocks),
    not a stall, and a ratio of two such small numbers swings by 10x between blocks."""
    return max(loop_lag(record), STALL_MIN_MS)


LOOP_LAG_FLOORED = Metric(
    f"loop lag p99 (at least {STALL_MIN_MS:g} ms)", "ms", floored_loop_lag, name="loop lag p99 floored"
)
FAILURE_RATE = Metric("failure rate", "%", _field("failure_rate"), scale=100)
PEAK_BACKENDS = Metric("peak backends", "", _field("peak_connections"))
PEAK_ACTIVE = Metric("peak active backends", "", _field("peak_active"))
NEW_BACKENDS = Metric("new backends per second", "", _field("new_backends_per_s"))
CPU_PER_REQUEST = Metric(
    "speed-adjusted server CPU per request", "ms", speed_adjusted_cpu, name="server CPU per request"
)
THREADS_PEAK = Metric("worker threads busy at peak", "", _field("threads_busy_peak"))
IDLE_IN_TRANSACTION_PEAK = Metric("peak backends idle in transaction", "", _field("peak_idle_in_transaction"))
IDLE_IN_TRANSACTION_MEAN = Metric("mean backends idle in transaction", "", _field("mean_idle_in_transaction"))
# Sampled inside the server (apps.instruments) for apps that watch a SQLAlchemy pool.
POOL_CHECKED_OUT = Metric("mean pool connections checked out", "", _field("pool_checked_out_mean"))
RSS_PEAK = Metric("server RSS peak", "MB", _field("server_rss_mb_peak"))


def counter(name: str, label: str, per: str | None = None, unit: str = "") -> Metric:
    """One of a variant's own /counters, or its ratio to another."""

    def read(record: Record) -> float | None:
        return (record.get("counters") or {}).get(name) if per is None else counter_ratio(record, name, per)

    return Metric(label, unit, read)


def fmt_value(value: float | None, unit: str, scale: float = 1.0) -> str:
    """'6.2x', '41 ms', '0.5%', '1,200 req/s', 'n/a'."""
    if value is None or not math.isfinite(value):
        return "n/a"
    value *= scale
    if unit == "x":
        return f"{value:.2f}x" if value < 10 else f"{value:.0f}x"
    magnitude = abs(value)
    digits = 0 if magnitude >= 100 or magnitude == 0 else 1 if magnitude >= 1 else 2
    text = f"{value:,.{digits}f}"
    return f"{text}%" if unit == "%" else f"{text} {unit}".strip()


# --- figures: what a check measures --------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """A quantity measured once per block (or, for `Total`, once over the whole run)."""

    metric: Metric
    of: str  # the variant
    to: str = ""  # the variant it is compared with ("" for a level)
    kind: Literal["ratio", "difference", "level", "total"] = "ratio"
    short: str = ""  # a short name for the ledger's headline

    @property
    def variants(self) -> tuple[str, ...]:
        return (self.of, self.to) if self.to else (self.of,)

    @property
    def unit(self) -> str:
        return "x" if self.kind == "ratio" else self.metric.unit

    @property
    def null(self) -> float:
        """The value that means "no difference"."""
        return 1.0 if self.kind == "ratio" else 0.0

    @property
    def label(self) -> str:
        if self.kind == "ratio":
            return f"{self.metric.label} of `{self.of}` / `{self.to}`"
        if self.kind == "difference":
            return f"{self.metric.label} of `{self.of}` minus `{self.to}`"
        if self.kind == "total":
            return f"{self.metric.label} of `{self.of}` over the run"
        return f"{self.metric.label} of `{self.of}`"

    @property
    def key(self) -> str:
        """The figure's name in a verdict's figures, e.g. 'throughput_ratio_a_b'."""
        tail = f"_{self.to}" if self.to else ""
        return f"{metric_key(self.metric)}_{self.kind}_{self.of}{tail}".replace(" ", "_")

    def show(self, value: float | None) -> str:
        return fmt_value(value, self.unit, 1.0 if self.kind == "ratio" else self.metric.scale)

    def per_block(self, blocks: Sequence[Block]) -> list[float]:
        values = []
        for block in blocks:
            this = self.metric.of(block.get(self.of))
            if self.kind == "level":
                found = this
            else:
                base = self.metric.of(block.get(self.to))
                found = (
                    None if this is None or base is None else ratio(this, base) if self.kind == "ratio" else this - base
                )
            if found is not None:
                values.append(found)
        return values

    def thin(self, blocks: Sequence[Block]) -> str | None:
        """Why the figure rests on too few requests to decide, if it does."""
        need = self.metric.min_requests
        if not need:
            return None
        counts = [int(block[name].get("requests") or 0) for block in blocks for name in self.variants if name in block]
        if counts and min(counts) < need:
            return f"{self.metric.label} from {min(counts):,} requests in a sample (fewer than {need:,})"
        return None


def Ratio(metric: Metric, of: str, to: str, short: str = "") -> Figure:
    return Figure(metric, of, to, "ratio", short)


def Difference(metric: Metric, of: str, to: str, short: str = "") -> Figure:
    return Figure(metric, of, to, "difference", short)


def Level(metric: Metric, of: str, short: str = "") -> Figure:
    return Figure(metric, of, "", "level", short)


def Total(metric: Metric, of: str, short: str = "") -> Figure:
    """Counted over the whole run (the variant's merged record): exact, no interval."""
    return Figure(metric, of, "", "total", short)


@dataclass(frozen=True)
class Estimate:
    value: float | None
    interval: stats.Interval | None  # None: exact, or fewer than 2 blocks
    exact: bool
    thin: str | None = None

    def text(self, figure: Figure) -> str:
        shown = figure.show(self.value)
        if self.interval is not None and not self.exact:
            low, high = figure.show(self.interval.low), figure.show(self.interval.high)
            shown += f" ({low} to {high})"
        return shown


def estimate(figure: Figure, blocks: Sequence[Block], records: Records, confidence: float) -> Estimate:
    if figure.kind == "total":
        return Estimate(figure.metric.of(records.get(figure.of)), None, True)
    values = figure.per_block(blocks)
    found = (
        stats.log_ratio_interval(values, confidence) if figure.kind == "ratio" else stats.t_interval(values, confidence)
    )
    if found is None:  # one block: its value, but no interval to decide on
        return Estimate(values[0] if values else None, None, False, figure.thin(blocks))
    return Estimate(found.estimate, found, False, figure.thin(blocks))


# --- checks --------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    figure: Figure
    op: Literal[">=", "<="]
    threshold: float
    # "No measurable difference": the interval lies within this of the null (a ratio
    # within [1 - band, 1 + band], DEFAULT_BAND unless given; a difference or a level
    # within +-band in the metric's unit, none unless given).
    band: float | None = None

    @property
    def equivalence(self) -> float:
        if self.band is not None:
            return self.band
        return DEFAULT_BAND if self.figure.kind == "ratio" else 0.0

    @property
    def name(self) -> str:
        return self.figure.key

    def describe(self) -> str:
        sign = "at least" if self.op == ">=" else "at most"
        return f"{self.figure.label} {sign} {self.figure.show(self.threshold)}"

    def band_text(self) -> str:
        band = self.equivalence
        if self.figure.kind == "total" or band == 0:
            return ""
        if self.figure.kind == "ratio":
            return f"{self.figure.show(1 - band)} to {self.figure.show(1 + band)}"
        return f"{self.figure.show(-band)} to {self.figure.show(band)}"

    def judge(self, blocks: Sequence[Block], records: Records, confidence: float) -> Judged:
        found = estimate(self.figure, blocks, records, confidence)
        return Judged(self, found, _outcome(self, found))


def _within_band(check: Check, low: float, high: float) -> bool:
    band, null = check.equivalence, check.figure.null
    return band > 0 and null - band <= low and high <= null + band


def _outcome(check: Check, found: Estimate) -> CheckOutcome:
    if found.value is None:
        return "not measured"
    beyond = (lambda v: v >= check.threshold) if check.op == ">=" else (lambda v: v <= check.threshold)
    if found.exact:
        return "clears" if beyond(found.value) else "misses"
    if found.interval is None or found.thin:
        return "inconclusive"
    low, high = found.interval.low, found.interval.high
    near, far = (low, high) if check.op == ">=" else (high, low)
    if beyond(near):
        return "clears"
    if not beyond(far):
        return "no measurable difference" if _within_band(check, low, high) else "misses"
    return "inconclusive"


@dataclass(frozen=True)
class Judged:
    check: Check
    estimate: Estimate
    outcome: CheckOutcome

    def text(self) -> str:
        """'loop lag p99 of `a` / `b` 85x (60x to 120x), needs at least 3.00x: clears'."""
        figure = self.check.figure
        sign = "at least" if self.check.op == ">=" else "at most"
        said = f"{figure.label} {self.estimate.text(figure)}, needs {sign} {figure.show(self.check.threshold)}"
        if self.outcome == "inconclusive":
            return f"{said}: inconclusive ({self.why_open()})"
        return f"{said}: {self.outcome}"

    def why_open(self) -> str:
        """How close an undecided check came."""
        if self.estimate.thin:
            return self.estimate.thin
        if self.estimate.interval is None:
            return "one block, no interval"
        return f"its interval straddles {self.check.figure.show(self.check.threshold)}"

    def as_dict(self) -> JudgedCheck:
        interval = self.estimate.interval
        return {
            "name": self.check.name,
            "figure": self.check.figure.label,
            "unit": self.check.figure.unit,
            "op": self.check.op,
            "threshold": self.check.threshold,
            "band": self.check.equivalence,
            "value": self.estimate.value,
            "low": None if interval is None else interval.low,
            "high": None if interval is None else interval.high,
            "blocks": None if interval is None else interval.blocks,
            "confidence": None if interval is None else interval.confidence,
            "p_value": None if interval is None else interval.p_value,
            "exact": self.estimate.exact,
            "thin": self.estimate.thin,
            "outcome": self.outcome,
            "text": self.text(),
        }


def stall_checks(variant: str, baseline: str) -> tuple[Check, ...]:
    """`variant` stalls the event loop: its loop lag p99 is at least STALL_FACTOR times the
    baseline's, each read as STALL_MIN_MS where lower. So the stall is at least
    STALL_FACTOR x STALL_MIN_MS long (an idle loop's 1 ms against 3 ms is no stall), and
    the baseline's small, noisy lag cannot widen the interval (a separate test on the
    difference in ms did: one block's 4 s stall gave -319 to 4,239 ms over 3 blocks)."""
    short = f"loop lag p99 `{variant}` / `{baseline}`"
    return (Check(Ratio(LOOP_LAG_FLOORED, variant, baseline, short=short), ">=", STALL_FACTOR),)


# --- parts and rules -----------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """One thing the claim says, true when every one of its checks clears."""

    says: str
    checks: tuple[Check, ...]


def part_outcome(judged: Sequence[Judged]) -> CheckOutcome:
    outcomes = [j.outcome for j in judged]
    if any(o in ("misses", "no measurable difference") for o in outcomes):
        # One clearly missed check decides the part, whatever the others show.
        missed = [o for o in outcomes if o in ("misses", "no measurable difference")]
        return "no measurable difference" if all(o == "no measurable difference" for o in missed) else "misses"
    if "not measured" in outcomes:
        return "not measured"
    if "inconclusive" in outcomes:
        return "inconclusive"
    return "clears"


def ratio_floors(entries: Iterable[Mapping[str, Any]]) -> dict[str, tuple[float, float]]:
    """An A/A control's ratio intervals (its checks and shown figures, as stored), by
    metric key: how far apart this run put identical variants, figure by figure."""
    floors = {}
    for entry in entries:
        name, low, high = str(entry.get("name") or ""), entry.get("low"), entry.get("high")
        if entry.get("unit") == "x" and "_ratio_" in name and low is not None and high is not None:
            floors[name.split("_ratio_", 1)[0]] = (float(low), float(high))
    return floors


def floor_of(check: Check, floors: Mapping[str, tuple[float, float]]) -> tuple[float, float] | None:
    """The floor a ratio threshold is read against: the control's interval of the same
    figure (p50 noise for a p50 threshold), or, for a figure the control does not
    measure, the widest of its intervals."""
    own = floors.get(metric_key(check.figure.metric))
    return own if own is not None else widest_floor(floors)


def widest_floor(floors: Mapping[str, tuple[float, float]]) -> tuple[float, float] | None:
    """The span of all the control's intervals: the floor of a figure it does not measure."""
    if not floors:
        return None
    return min(low for low, _ in floors.values()), max(high for _, high in floors.values())


def inside_floor(check: Check, floors: Mapping[str, tuple[float, float]]) -> bool:
    floor = floor_of(check, floors)
    return check.figure.kind == "ratio" and floor is not None and floor[0] <= check.threshold <= floor[1]


LADDER = (
    "Holds when every part clears; partly holds when some parts clear and the others clearly miss, or when at "
    "least one part clears and one clearly misses while another is still open (no outcome of the open part "
    'changes that); does not hold when every part clearly misses ("no measurable difference" when each interval '
    "lies inside its equivalence band); otherwise inconclusive while any part's interval straddles its threshold, "
    "when a variant was not measured, or when a positive control does not clear (then the harness, not the claim, "
    "failed)."
)


@dataclass(frozen=True)
class Rule:
    parts: tuple[Part, ...]
    # Known effects the harness must reproduce for the run to say anything about the claim.
    controls: tuple[Part, ...] = ()
    # Figures shown beside the verdict that do not decide it.
    shown: tuple[Figure, ...] = ()
    note: str = ""  # what the ladder means for this claim, when that needs saying

    @property
    def checks(self) -> tuple[Check, ...]:
        return tuple(c for part in (*self.controls, *self.parts) for c in part.checks)

    def describe(self) -> str:
        """The 'How the verdict is decided' prose, from the checks themselves."""

        def part_text(part: Part) -> str:
            checks = "; and ".join(
                c.describe() + (f" (no measurable difference: {c.band_text()})" if c.band_text() else "")
                for c in part.checks
            )
            return f"*{part.says}*: {checks}"

        lines = [f"Part {i}, {part_text(p)}." for i, p in enumerate(self.parts, start=1)]
        lines += [f"Positive control, {part_text(p)}." for p in self.controls]
        text = " ".join(lines) + " " + LADDER
        return f"{text} {self.note}".strip()


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    judged: list[Judged] = field(default_factory=list)

    @property
    def undecided(self) -> list[Judged]:
        """Checks whose interval still straddles their threshold while the verdict is
        inconclusive: only then could more blocks change the outcome. (A check left open
        inside a part that another check already clearly misses changes nothing, and a
        figure too thin to decide stays thin however many blocks follow.)"""
        if self.verdict.outcome != "inconclusive":
            return []
        return [j for j in self.judged if j.outcome == "inconclusive" and not j.estimate.exact and not j.estimate.thin]


def evaluate(rule: Rule, records: Records, blocks: Sequence[Block], confidence: float) -> Decision:
    """Judge every check on the blocks, then climb the one ladder."""
    judged_parts = [(p, [c.judge(blocks, records, confidence) for c in p.checks]) for p in rule.parts]
    judged_controls = [(p, [c.judge(blocks, records, confidence) for c in p.checks]) for p in rule.controls]
    every = [j for _, js in (*judged_controls, *judged_parts) for j in js]
    figures: dict[str, float] = {j.check.name: j.estimate.value for j in every if j.estimate.value is not None}
    shown_list: list[ShownFigure] = []
    for figure in rule.shown:
        shown = estimate(figure, blocks, records, confidence)
        if shown.value is not None:
            figures[figure.key] = shown.value
            interval = shown.interval
            shown_list.append(
                {
                    "name": figure.key,
                    "figure": figure.label,
                    "unit": figure.unit,
                    "value": shown.value,
                    "low": None if interval is None or shown.exact else interval.low,
                    "high": None if interval is None or shown.exact else interval.high,
                    "thin": shown.thin,
                }
            )
    parts = [(p, part_outcome(js), js) for p, js in judged_parts]
    controls = [(p, part_outcome(js), js) for p, js in judged_controls]

    def said(items: list[tuple[Part, CheckOutcome, list[Judged]]]) -> str:
        return "; ".join(f"{p.says}: {outcome} ({'; '.join(j.text() for j in js)})" for p, outcome, js in items)

    # Each part's first figure, once: two parts may read one figure against two thresholds.
    leading: dict[str, Judged] = {}
    for _, _, js in parts:
        if js:
            leading.setdefault(js[0].check.figure.key, js[0])
    headline = "; ".join(
        f"{j.check.figure.short or j.check.figure.label} {j.estimate.text(j.check.figure)}"
        + ("" if j.outcome in ("clears", "misses") else f" [{j.outcome}]")
        for j in leading.values()
    )
    outcome: Outcome
    missing = sorted(
        {
            name
            for _, o, js in (*controls, *parts)
            if o == "not measured"
            for j in js
            for name in j.check.figure.variants
        }
    )
    failed_controls = [(p, o, js) for p, o, js in controls if o != "clears"]
    if missing:
        outcome, text = "inconclusive", f"No verdict: not every variant the rule needs was measured ({said(parts)})."
        headline = f"{', '.join(missing)} not measured"
    elif failed_controls:
        outcome = "inconclusive"
        text = (
            "No verdict: a positive control did not clear, so this run does not show the effect the harness must "
            f"reproduce ({said(failed_controls)}); the claim's own figures: {said(parts)}."
        )
        headline = f"control did not clear; {headline}"
    else:
        outcomes = [o for _, o, _ in parts]
        missed = [o for o in outcomes if o in ("misses", "no measurable difference")]
        if all(o == "clears" for o in outcomes):
            outcome, lead = "holds", "Holds"
        elif "inconclusive" in outcomes and "clears" in outcomes and missed:
            # Whatever the open part decides, one part clears and one misses: more blocks
            # cannot move the outcome, so they are not spent on it (Decision.undecided).
            outcome, lead = "partly holds", "Partly holds, whichever way the open part goes"
        elif "inconclusive" in outcomes:
            outcome, lead = "inconclusive", "Inconclusive: an interval still straddles its threshold"
        elif all(o == "no measurable difference" for o in outcomes):
            outcome, lead = "does not hold", "Does not hold: no measurable difference"
        elif any(o == "clears" for o in outcomes):
            outcome, lead = "partly holds", "Partly holds"
        else:
            outcome, lead = "does not hold", "Does not hold"
        text = f"{lead}. {said(parts)[:1].upper()}{said(parts)[1:]}."
        if controls:
            text += f" Positive control: {said(controls)}."
    return Decision(Verdict(outcome, text, figures, headline, [j.as_dict() for j in every], shown_list), every)
