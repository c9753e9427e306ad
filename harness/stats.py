"""The statistics behind every interval, ratio and warning in the report.

Comparisons between variants are paired by block: a block runs every variant of a pair
once, back to back, so the slow drift of a shared machine cancels in the per-block
ratios. A ratio's interval is a t-interval on the per-block log-ratios (a geometric
mean), its p-value a paired t-test; with 3 to 12 blocks only the t distribution fits
(a Wilcoxon test cannot reach p < 0.05 below 6 blocks, a BCa bootstrap needs many more).

The runner looks at a pair's intervals after a few fixed numbers of blocks (`looks`) and
stops as soon as they decide; each look spends a share of the error rate fixed in advance
(`look_confidences`: Bonferroni, most of it on the first look), so the interval it stops
on covers the true value with at least CONFIDENCE however many looks it took. tests/test_coverage.py simulates that.

A variant's own figures (throughput, loop lag) are means over its blocks with a
t-interval; its latency percentiles come from its response-time buckets merged across
blocks. Nothing here is random, so a rebuilt report gives the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
SPREAD_WARNING = 0.10  # warn when the standard deviation over repeats is this share of the mean


def _clean(values: Sequence[float | None]) -> np.ndarray:
    return np.array([v for v in values if v is not None and np.isfinite(v)], dtype=float)


def median(values: Sequence[float | None]) -> float | None:
    known = _clean(values)
    return float(np.median(known)) if len(known) else None


def bucket_percentile(buckets: dict[float, int], count: int, share: float) -> float | None:
    """A percentile from response-time buckets (ms -> requests), taken as Locust takes
    it: walking down from the slowest bucket until no more than `share` of the
    requests are left."""
    if not count:
        return None
    allowed = int(count * share)
    processed = 0
    for ms in sorted(buckets, reverse=True):
        processed += buckets[ms]
        if count - processed <= allowed:
            return ms
    return 0.0


@dataclass(frozen=True)
class Interval:
    """An estimate from paired blocks with its interval at `confidence`."""

    estimate: float
    low: float
    high: float
    blocks: int
    confidence: float
    p_value: float  # two-sided, against no difference (ratio 1, difference 0), at this look

    def excludes(self, null: float) -> bool:
        return not self.low <= null <= self.high


def t_interval(values: Sequence[float | None], confidence: float = CONFIDENCE) -> Interval | None:
    """The mean of per-block values with a Student t interval and a one-sample t-test
    against 0; None below 2 values. No spread at all: the interval is the point."""
    known = _clean(values)
    n = len(known)
    if n < 2:
        return None
    mean = float(np.mean(known))
    error = float(np.std(known, ddof=1)) / np.sqrt(n)
    if error == 0:
        return Interval(mean, mean, mean, n, confidence, 1.0 if mean == 0 else 0.0)
    from scipy import stats as scipy_stats  # here, not at import: it costs the command line a second

    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1)) * error
    p_value = float(2 * scipy_stats.t.sf(abs(mean) / error, n - 1))
    return Interval(mean, mean - half, mean + half, n, confidence, p_value)


def log_ratio_interval(ratios: Sequence[float | None], confidence: float = CONFIDENCE) -> Interval | None:
    """The geometric mean of per-block ratios with the t interval of their logs, back
    on the ratio scale; None below 2 usable (positive) ratios."""
    logs = [float(np.log(r)) for r in ratios if r is not None and np.isfinite(r) and r > 0]
    found = t_interval(logs, confidence)
    if found is None:
        return None
    return Interval(
        float(np.exp(found.estimate)),
        float(np.exp(found.low)),
        float(np.exp(found.high)),
        found.blocks,
        confidence,
        found.p_value,
    )


def welch_log_ratio_interval(
    numerator: Sequence[float | None], denominator: Sequence[float | None], confidence: float = CONFIDENCE
) -> Interval | None:
    """Two unpaired sets of values (two runs): the ratio of their geometric means with a
    Welch t-interval on the logs; None below 2 positive values on either side."""
    top = np.log([v for v in _clean(numerator) if v > 0])
    bottom = np.log([v for v in _clean(denominator) if v > 0])
    if len(top) < 2 or len(bottom) < 2:
        return None
    from scipy import stats as scipy_stats

    found = scipy_stats.ttest_ind(top, bottom, equal_var=False)
    difference = float(np.mean(top) - np.mean(bottom))
    if not np.isfinite(found.statistic):  # no spread on either side
        return Interval(float(np.exp(difference)), float(np.exp(difference)), float(np.exp(difference)),
                        min(len(top), len(bottom)), confidence, 1.0 if difference == 0 else 0.0)  # fmt: skip
    low, high = found.confidence_interval(confidence)
    return Interval(
        float(np.exp(difference)), float(np.exp(low)), float(np.exp(high)),
        min(len(top), len(bottom)), confidence, float(found.pvalue),
    )  # fmt: skip


# The numbers of blocks after which the runner looks at a pair's intervals: the
# scenario's minimum, then doubling up to its maximum.
def looks(min_blocks: int, max_blocks: int) -> tuple[int, ...]:
    found = [min_blocks]
    while found[-1] < max_blocks:
        found.append(min(max_blocks, found[-1] * 2))
    return tuple(found)


# The share of the error rate the first look spends. Most pairs stop there, and a t
# interval from 3 blocks is the widest of all (t at 2 degrees of freedom), so spending
# more there and less on the rarer later looks narrows the intervals that decide most of
# the ledger: at 3 blocks by a quarter (3.26 instead of 4.42 standard errors), for
# 10-14% wider ones at 6 and 12 blocks than an equal split. Fixed in advance, so the
# union bound still holds.
FIRST_LOOK_SHARE = 0.6


def look_confidences(planned_looks: Sequence[int], confidence: float = CONFIDENCE) -> tuple[float, ...]:
    """Each planned look's confidence: the error rate split over the looks (the first
    takes FIRST_LOOK_SHARE, the rest share the remainder equally), so whichever look a
    pair stops at, its interval covers with at least `confidence` (Bonferroni)."""
    alpha, count = 1 - confidence, max(1, len(planned_looks))
    if count == 1:
        return (confidence,)
    later = alpha * (1 - FIRST_LOOK_SHARE) / (count - 1)
    return (1 - alpha * FIRST_LOOK_SHARE, *([1 - later] * (count - 1)))


def confidence_at(planned_looks: Sequence[int], confidences: Sequence[float], blocks: int) -> float:
    """The confidence of the look a pair with `blocks` blocks stands at: the latest
    planned look it has reached (the first, before it reaches any)."""
    reached = [level for look, level in zip(planned_looks, confidences, strict=True) if look <= blocks]
    return reached[-1] if reached else confidences[0]


def spread(values: Sequence[float | None]) -> float | None:
    """Standard deviation over the mean (pyperf warns at 10%); None below 2 values."""
    known = _clean(values)
    if len(known) < 2 or np.mean(known) == 0:
        return None
    return float(np.std(known, ddof=1) / abs(np.mean(known)))


def slope_per_min(times: Sequence[float], values: Sequence[float | None]) -> float | None:
    """Least-squares growth per minute: a leak is a steady slope."""
    pairs = [(t, v) for t, v in zip(times, values, strict=True) if v is not None and np.isfinite(v)]
    if len(pairs) < 3 or len({t for t, _ in pairs}) < 2:
        return None
    t, v = np.array(pairs, dtype=float).T
    return float(np.polyfit(t, v, 1)[0] * 60)


@dataclass(frozen=True)
class Level:
    users: int
    rps: float
    p99_ms: float


def knee(levels: Sequence[Level], p99_target_ms: float) -> Level | None:
    """The level with the most throughput whose p99 stays under the target."""
    within = [level for level in levels if level.p99_ms < p99_target_ms]
    return max(within, key=lambda level: level.rps) if within else None
