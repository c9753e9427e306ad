"""Do the intervals mean what they say? Simulated runs with a known ratio, judged and
stopped by the runner's own code (harness.checks, harness.stats, runner.plan_more_blocks).

The noise is fitted to the blocks of the newest stored default run: per-block log-ratio
deviations (heavy-tailed: Student t with 3 degrees of freedom, scaled to their median
absolute size) and a random walk of the machine's speed between blocks, which pairing
within a block must cancel.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness import checks, runner, stats, store
from harness.pairs import ROOT

RUNS = 2000
TRUE_RATIOS = (1.0, 1.3, 1.5, 2.0)  # at, below and above the threshold, and far beyond
THRESHOLD = 1.5
# Student t with 3 degrees of freedom: its median absolute value.
T3_MEDIAN_ABS = 0.7649


def stored_noise() -> tuple[float, float]:
    """(scale of per-block log-ratio noise, step of the drift between blocks), from the
    newest default run under results/ that has at least 3 blocks."""
    runs = sorted(p for p in (ROOT / "results").glob("*-default") if (p / "summary.json").is_file())
    assert runs, "no stored default run under results/ to fit the noise to"
    summary = store.read_json(runs[-1] / "summary.json")
    by_block: dict[tuple[str, Any], dict[str, float]] = defaultdict(dict)
    for s in summary["samples"]:
        if s.get("primary") and s["status"] == "ok" and s.get("rps"):
            by_block[(s["pair"], s.get("block", s.get("repeat")))][s["variant"]] = float(s["rps"])
    per_pair: dict[str, list[dict[str, float]]] = defaultdict(list)
    for (pair, _), block in by_block.items():
        per_pair[pair].append(block)
    deviations, drifts = [], []
    for blocks in per_pair.values():
        names = sorted(set.intersection(*(set(b) for b in blocks)))
        if len(blocks) < 3 or len(names) < 2:
            continue
        for name in names[1:]:
            logs = [math.log(b[name] / b[names[0]]) for b in blocks]
            deviations += [v - float(np.mean(logs)) for v in logs]
        levels = [float(np.mean([math.log(b[n]) for n in names])) for b in blocks]
        drifts += list(np.diff(levels))
    assert len(deviations) >= 20, "too few stored blocks to fit the noise"
    return float(np.median(np.abs(deviations))) / T3_MEDIAN_ABS, float(np.std(drifts))


RULE = checks.Rule(
    parts=(checks.Part("b is faster", (checks.Check(checks.Ratio(checks.THROUGHPUT, "b", "a"), ">=", THRESHOLD),)),)
)
MIN_BLOCKS, MAX_BLOCKS = 3, 12


def simulate(
    rng: np.random.Generator, true_ratio: float, scale: float, drift: float, sequential: bool = True
) -> tuple[stats.Interval, int]:
    """One pair's run: blocks until the runner's planner stops it (unlimited budget, so
    only the checks decide), then the interval it stops on."""
    looks = stats.looks(MIN_BLOCKS, MAX_BLOCKS)
    levels = stats.look_confidences(looks)
    blocks: list[dict[str, dict[str, Any]]] = []
    level = 0.0
    target = looks[0]
    while True:
        while len(blocks) < target:
            level += rng.normal(0, drift)  # the machine's speed wanders between blocks
            noise = scale * rng.standard_t(3, size=2) / math.sqrt(2)  # split between the two variants
            rps_a = 1000 * math.exp(level + noise[0])
            rps_b = 1000 * true_ratio * math.exp(level + noise[1])
            blocks.append({"a": {"status": "ok", "rps": rps_a}, "b": {"status": "ok", "rps": rps_b}})
        confidence = stats.confidence_at(looks, levels, len(blocks)) if sequential else stats.CONFIDENCE
        decision = checks.evaluate(RULE, {}, blocks, confidence)
        standing = {"pair": runner.PairProgress(len(blocks), len(decision.undecided), 1.0)}
        more, stopped = runner.plan_more_blocks(standing, looks, math.inf)
        if stopped:
            interval = decision.judged[0].estimate.interval
            assert interval is not None
            return interval, len(blocks)
        target = more["pair"]


@pytest.fixture(scope="module")
def noise() -> tuple[float, float]:
    return stored_noise()


def test_intervals_cover_the_true_ratio_at_their_nominal_rate(noise: tuple[float, float]) -> None:
    scale, drift = noise
    rng = np.random.default_rng(20261201)
    covered: dict[float, int] = defaultdict(int)
    blocks_taken: dict[float, list[int]] = defaultdict(list)
    per_ratio = RUNS // len(TRUE_RATIOS)
    for true_ratio in TRUE_RATIOS:
        for _ in range(per_ratio):
            interval, blocks = simulate(rng, true_ratio, scale, drift)
            covered[true_ratio] += interval.low <= true_ratio <= interval.high
            blocks_taken[true_ratio].append(blocks)
    overall = sum(covered.values()) / (per_ratio * len(TRUE_RATIOS))
    # Bonferroni over the looks is conservative: at least nominal, and not absurdly wide.
    assert stats.CONFIDENCE - 0.01 <= overall <= 0.995, f"coverage {overall:.3f} (scale {scale:.3f})"
    for true_ratio, hits in covered.items():
        assert hits / per_ratio >= stats.CONFIDENCE - 0.025, f"coverage at {true_ratio}: {hits / per_ratio:.3f}"
    # The design adapts: a ratio at the threshold takes more blocks than one far beyond it.
    assert np.mean(blocks_taken[1.5]) > np.mean(blocks_taken[2.0]) or np.mean(blocks_taken[2.0]) == MIN_BLOCKS


def test_looking_again_at_the_nominal_level_would_undercover(noise: tuple[float, float]) -> None:
    """Why the looks share the error rate: stopping as soon as a plain 95% interval
    clears the threshold, at a ratio right on it, covers less often than 95%."""
    scale, drift = noise
    rng = np.random.default_rng(7)
    runs = 600
    hits = sum(
        interval.low <= THRESHOLD <= interval.high
        for interval, _ in (simulate(rng, THRESHOLD, scale, drift, sequential=False) for _ in range(runs))
    )
    adjusted = sum(
        interval.low <= THRESHOLD <= interval.high
        for interval, _ in (simulate(rng, THRESHOLD, scale, drift) for _ in range(runs))
    )
    assert adjusted / runs > hits / runs, (adjusted, hits)


def test_the_noise_is_fitted_from_a_stored_run(noise: tuple[float, float]) -> None:
    scale, drift = noise
    assert 0.001 < scale < 1.0 and 0.0 <= drift < 1.0


def test_paired_blocks_cancel_drift_that_unpaired_intervals_do_not() -> None:
    """Drift between blocks widens a comparison of the two variants' own intervals but
    not the paired one: the reason the runner measures in blocks."""
    rng = np.random.default_rng(3)
    level = np.cumsum(rng.normal(0, 0.2, size=8))
    a = 1000 * np.exp(level + rng.normal(0, 0.01, size=8))
    b = 1500 * np.exp(level + rng.normal(0, 0.01, size=8))
    paired = stats.log_ratio_interval(list(b / a))
    unpaired = stats.welch_log_ratio_interval(list(b), list(a))
    assert paired is not None and unpaired is not None
    assert paired.high / paired.low < 1.05 < unpaired.high / unpaired.low


def test_stored_runs_exist_to_fit_from() -> None:
    assert any(Path(ROOT / "results").glob("*-default/summary.json"))
