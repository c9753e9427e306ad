"""The statistics behind every interval, ratio and warning in the report.

Intervals are percentile bootstraps with a fixed seed, so rebuilding a report from the
same files gives the same numbers. Over repeats (each a fresh server) when there are at
least MIN_REPEATS; otherwise over the per-second throughput of the measured window,
which says how steady one run was, not how much runs differ.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 2000
MIN_REPEATS = 3  # fewer repeats than this: no interval from repeats
SPREAD_WARNING = 0.10  # warn when the standard deviation over repeats is this share of the mean
SEED = 20261123


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


def bootstrap_ci(
    values: Sequence[float | None], statistic: Callable[..., np.ndarray] = np.median
) -> tuple[float, float] | None:
    """A 95% percentile-bootstrap interval of `statistic` (a numpy reduction taking
    `axis`, e.g. np.median or np.mean); None with fewer than 2 values."""
    known = _clean(values)
    if len(known) < 2:
        return None
    rng = np.random.default_rng(SEED)
    draws = rng.choice(known, size=(RESAMPLES, len(known)), replace=True)
    estimates = statistic(draws, axis=1)  # all resamples at once: the summary is rebuilt after every sample
    tail = (1 - CONFIDENCE) / 2 * 100
    return float(np.percentile(estimates, tail)), float(np.percentile(estimates, 100 - tail))


def ratio_ci(numerator: Sequence[float | None], denominator: Sequence[float | None]) -> tuple[float, float] | None:
    """A 95% bootstrap interval of median(numerator) / median(denominator), each side
    resampled on its own; None with fewer than 2 values on either side."""
    top, bottom = _clean(numerator), _clean(denominator)
    if len(top) < 2 or len(bottom) < 2:
        return None
    rng = np.random.default_rng(SEED)
    tops = np.median(rng.choice(top, size=(RESAMPLES, len(top)), replace=True), axis=1)
    bottoms = np.median(rng.choice(bottom, size=(RESAMPLES, len(bottom)), replace=True), axis=1)
    keep = bottoms != 0
    if not keep.any():
        return None
    ratios = tops[keep] / bottoms[keep]
    tail = (1 - CONFIDENCE) / 2 * 100
    return float(np.percentile(ratios, tail)), float(np.percentile(ratios, 100 - tail))


def spread(values: Sequence[float | None]) -> float | None:
    """Standard deviation over the mean (pyperf warns at 10%); None below 2 values."""
    known = _clean(values)
    if len(known) < 2 or np.mean(known) == 0:
        return None
    return float(np.std(known, ddof=1) / abs(np.mean(known)))


def overlap(a: tuple[float, float] | None, b: tuple[float, float] | None) -> bool | None:
    """Whether two intervals overlap (then the difference is not significant); None when
    either is missing."""
    if a is None or b is None:
        return None
    return a[0] <= b[1] and b[0] <= a[1]


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
