"""Scenarios: load plans as data (scenarios/*.toml), checked field by field."""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from harness.pairs import ROOT, BenchError

SCENARIOS_DIR = ROOT / "scenarios"


# A sweep's knee by default: the most throughput with p99 under this many ms.
P99_TARGET_MS = 100.0


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str = ""
    users: int = 50  # concurrent Locust users on the variant under test
    spawn_rate: float = 50.0  # users started per second
    warmup_s: float = 5.0  # load before measuring, not counted
    # While users are still getting their first answers, the warm-up may go on this long
    # (0: only warm-up + a few seconds' grace): a blocked loop takes its users in slowly.
    warmup_max_s: float = 0.0
    # Once no user has got a first answer for this long, the warm-up ends (at most a
    # request timeout): a server that serves at all answers its users' first requests
    # within a second or two.
    warmup_grace_s: float = 3.0
    duration_s: float = 30.0  # measured load per variant
    probe_rate: float = 10.0  # /ping requests per second alongside the load
    request_timeout_s: float = 10.0  # a Locust request slower than this is a failure
    # pg_stat_activity sampling period: a 2 s window holds 20 points, so a spike shows.
    sample_interval_s: float = 0.1
    # Server, PostgreSQL and generator CPU, memory and descriptors: a CPU share needs a
    # span to mean anything, and walking every backend process costs more than a query.
    usage_interval_s: float = 0.5
    rows: int = 10_000  # rows seeded in the lookup table
    start_timeout_s: float = 30.0  # a variant's server must answer /ping within this
    settle_timeout_s: float = 15.0  # backends must return to baseline within this
    repeats: int = 1  # blocks every pair runs at least (a block: each variant once, back to back, shuffled)
    max_blocks: int = 1  # more blocks, up to this many, for pairs whose intervals still straddle a threshold
    budget_s: float = 0.0  # the run's time budget for those further blocks (0: none beyond `repeats`)
    min_requests: int = 0  # > 0: a sample measures until it has this many requests (and duration_s) ...
    max_measure_s: float = 0.0  # ... or for at most this long (0: duration_s)
    levels: tuple[int, ...] = ()  # a users sweep, e.g. (1, 10, 50); () measures at `users` only
    rate: float = 0.0  # > 0: every measurement open-loop at this many requests per second
    open_loop: int = 0  # 1: also measure pairs that declare an open-loop rate, open-loop
    p99_target_ms: float = P99_TARGET_MS  # a sweep's knee: the most throughput with p99 under this
    calibrate_s: float = 0.0  # > 0: first measure what the load generator can drive, this long
    soak_s: float = 0.0  # > 0: a soak measurement of this length for pairs that declare one
    locust_workers: int = 0  # > 0: Locust's distributed mode with this many worker processes
    pair_windows: int = 1  # 1: pairs size their own windows where they say so (Pair.load); 0: the scenario's only

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Bound:
    """The largest sane value of a number the user gives, its unit and why."""

    maximum: int
    unit: str  # "" for a plain count
    why: str

    def text(self) -> str:
        """'at most 3600 seconds (one hour of measured load per sample)'."""
        unit = f" {self.unit}" if self.unit else ""
        return f"at most {self.maximum}{unit} ({self.why})"


# Upper bounds of every number a scenario, the command line or a stored run may set: all in
# one place, so the TOML check, the CLI's parsers and their messages agree. Each is a bound
# a demanding user on one machine would still accept; above it a value is a typo (1e12, an
# extra zero) that would otherwise run until killed or overflow.
MAXIMUM: dict[str, Bound] = {
    "users": Bound(2_000, "users", "more Locust users than that saturate one loopback machine's generator"),
    "spawn_rate": Bound(2_000, "users per second", "the most users, all started in one second"),
    "warmup_s": Bound(600, "seconds", "a warm-up of 10 minutes reaches any steady state"),
    "warmup_max_s": Bound(600, "seconds", "a warm-up of 10 minutes reaches any steady state"),
    "warmup_grace_s": Bound(600, "seconds", "a warm-up of 10 minutes reaches any steady state"),
    "duration_s": Bound(3_600, "seconds", "one hour of measured load per sample"),
    "probe_rate": Bound(1_000, "requests per second", "a /ping every millisecond; more would load the server"),
    "request_timeout_s": Bound(300, "seconds", "a request slower than 5 minutes has failed"),
    "sample_interval_s": Bound(60, "seconds", "a pg_stat_activity sample per minute at the least"),
    "usage_interval_s": Bound(60, "seconds", "a CPU and memory sample per minute at the least"),
    "rows": Bound(10_000_000, "rows", "seeding more takes minutes, and a key lookup costs the same"),
    "start_timeout_s": Bound(600, "seconds", "a server that does not answer in 10 minutes has failed"),
    "settle_timeout_s": Bound(600, "seconds", "backends that linger 10 minutes are not coming back"),
    "repeats": Bound(50, "repeats", "50 samples per variant give a tight interval; more only multiply the time"),
    "max_blocks": Bound(50, "blocks", "50 blocks per pair give a tight interval; more only multiply the time"),
    "budget_s": Bound(86_400, "seconds", "a benchmark run of a day at the most"),
    "min_requests": Bound(1_000_000, "requests", "a million requests per sample pin any percentile"),
    "max_measure_s": Bound(3_600, "seconds", "one hour of measured load per sample"),
    "rate": Bound(100_000, "requests per second", "far above what one machine's load generator can send"),
    "open_loop": Bound(1, "", "it is a switch: 0 or 1"),
    "pair_windows": Bound(1, "", "it is a switch: 0 or 1"),
    "p99_target_ms": Bound(60_000, "ms", "a p99 target of a minute is above any request timeout"),
    "calibrate_s": Bound(600, "seconds", "10 minutes measure the load generator's ceiling"),
    "soak_s": Bound(21_600, "seconds", "a soak of 6 hours shows any leak as a slope"),
    "locust_workers": Bound(64, "worker processes", "one per core of a large machine"),
}
# A users sweep: at most this many levels, each at most MAXIMUM["users"].
MAX_LEVELS = 50
# `--set KEY=VALUE` knobs are whole numbers; those ending in _ms are the length of one call.
MAX_KNOB = Bound(1_000_000, "", "a million of anything a knob counts is a typo")
MAX_KNOB_MS = Bound(60_000, "ms", "one call longer than a minute outlasts any sane request timeout")
# `compare --fail-above PCT`: a figure over 11 times worse fails any gate worth having.
MAX_FAIL_ABOVE_PCT = Bound(1_000, "percent", "a gate that lets a figure get 11 times worse catches nothing")


def show(value: float) -> str:
    """A number as the user wrote it, kept short: 1e+12, nan, 10000000."""
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return text if len(text) <= 24 else f"{text[:12]}... ({len(text)} digits)"


def knob_bound(key: str) -> Bound:
    return MAX_KNOB_MS if key.endswith("_ms") else MAX_KNOB


# Fields where 0 means "off"; every other number must be greater than 0.
_MAY_BE_ZERO = {
    "rate", "open_loop", "calibrate_s", "soak_s", "locust_workers", "budget_s", "min_requests", "max_measure_s",
    "warmup_max_s", "pair_windows",
}  # fmt: skip
_POSITIVE = {f.name for f in fields(Scenario)} - {"name", "description"}


def _check(name: str, values: dict[str, Any], origin: str) -> Scenario:
    known = {f.name: f for f in fields(Scenario)}
    for key, value in values.items():
        if key not in known or key == "name":
            raise BenchError(f"{origin}: unknown field {key!r} (fields: {', '.join(sorted(_POSITIVE))})")
        if key == "description":
            if not isinstance(value, str):
                raise BenchError(f"{origin}: field 'description' must be text")
            continue
        if key == "levels":
            values[key] = _levels(value, origin)
            continue
        kind = int if known[key].type in ("int", int) else float
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (kind is int and not isinstance(value, int))
        ):
            wanted = "a whole number" if kind is int else "a number"
            raise BenchError(f"{origin}: field {key!r} must be {wanted}, got {_short(value)}")
        if not math.isfinite(value):
            raise BenchError(f"{origin}: field {key!r} must be a finite number, got {show(value)}")
        if value < 0 or (value == 0 and key not in _MAY_BE_ZERO):
            rule = "0 or more" if key in _MAY_BE_ZERO else "greater than 0"
            raise BenchError(f"{origin}: field {key!r} must be {rule}, got {show(value)}")
        if value > MAXIMUM[key].maximum:
            raise BenchError(f"{origin}: field {key!r} must be {MAXIMUM[key].text()}, got {show(value)}")
    return Scenario(name=name, **{k: (float(v) if known[k].type in ("float", float) else v) for k, v in values.items()})


def _levels(value: Any, origin: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
    ):
        raise BenchError(
            f"{origin}: field 'levels' must be a list of whole numbers of users above 0, got {_short(value)}"
        )
    if len(value) > MAX_LEVELS:
        raise BenchError(f"{origin}: field 'levels' must have at most {MAX_LEVELS} levels, got {len(value)}")
    if max(value, default=0) > MAXIMUM["users"].maximum:
        raise BenchError(f"{origin}: field 'levels': each must be {MAXIMUM['users'].text()}, got {show(max(value))}")
    return tuple(sorted(set(value)))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def load(spec: str) -> Scenario:
    """A scenario by name (scenarios/NAME.toml) or by path to a TOML file."""
    path = Path(spec)
    if not path.suffix:
        path = SCENARIOS_DIR / f"{spec}.toml"
    if not path.is_file():
        available = ", ".join(sorted(p.stem for p in SCENARIOS_DIR.glob("*.toml")))
        raise BenchError(f"no scenario {spec!r} (available: {available}, or a path to a .toml file)")
    try:
        values = tomllib.loads(path.read_text())
    except OSError as err:
        raise BenchError(f"{path}: cannot read: {err.strerror or err}") from None
    except ValueError as err:  # TOMLDecodeError, a file that is not UTF-8, an integer of 5000 digits
        raise BenchError(f"{path}: not valid TOML: {err}") from None
    return _check(path.stem, values, str(path))


# The fields of a pair's own load (`Pair.load`) that size its windows rather than define
# its experiment (as its users or request timeout do).
WINDOW_FIELDS = ("duration_s", "max_measure_s", "min_requests")


def pair_load(load: Mapping[str, float], scenario: Mapping[str, Any]) -> dict[str, float]:
    """The fields of a pair's own load that apply in this scenario (a dict: a stored
    run's manifest holds one). With `pair_windows = 0` (a first look) the scenario's
    windows apply to every pair: the leak pairs' long windows and the request floors of
    the pairs that decide on p99 belong to the runs that decide."""
    if int(scenario.get("pair_windows", 1)):
        return dict(load)
    return {key: value for key, value in load.items() if key not in WINDOW_FIELDS}


def override(scenario: Scenario, **changes: Any) -> Scenario:
    """Command-line overrides (only those given), checked like file fields."""
    given = {key: value for key, value in changes.items() if value is not None}
    if not given:
        return scenario
    merged = {k: v for k, v in scenario.to_dict().items() if k != "name"} | given
    return replace(_check(scenario.name, merged, "command line"), name=scenario.name)


def from_stored(name: str, values: dict[str, Any]) -> Scenario:
    """A scenario as a run's manifest stored it (JSON: lists for tuples)."""
    return _check(name, dict(values), "stored run")
