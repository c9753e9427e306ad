"""Scenarios: load plans as data (scenarios/*.toml), checked field by field."""

from __future__ import annotations

import tomllib
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
    duration_s: float = 30.0  # measured load per variant
    probe_rate: float = 10.0  # /ping requests per second alongside the load
    request_timeout_s: float = 10.0  # a Locust request slower than this is a failure
    sample_interval_s: float = 0.5  # pg_stat_activity sampling period
    rows: int = 10_000  # rows seeded in the lookup table
    start_timeout_s: float = 30.0  # a variant's server must answer /ping within this
    settle_timeout_s: float = 15.0  # backends must return to baseline within this
    repeats: int = 1  # measurements per variant, each in a fresh server, order shuffled per repeat
    levels: tuple[int, ...] = ()  # a users sweep, e.g. (1, 10, 50); () measures at `users` only
    rate: float = 0.0  # > 0: every measurement open-loop at this many requests per second
    open_loop: int = 0  # 1: also measure pairs that declare an open-loop rate, open-loop
    p99_target_ms: float = P99_TARGET_MS  # a sweep's knee: the most throughput with p99 under this
    calibrate_s: float = 0.0  # > 0: first measure what the load generator can drive, this long
    soak_s: float = 0.0  # > 0: a soak measurement of this length for pairs that declare one
    locust_workers: int = 0  # > 0: Locust's distributed mode with this many worker processes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Fields where 0 means "off"; every other number must be greater than 0.
_MAY_BE_ZERO = {"rate", "open_loop", "calibrate_s", "soak_s", "locust_workers"}
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
            raise BenchError(
                f"{origin}: field {key!r} must be {'a whole number' if kind is int else 'a number'}, got {value!r}"
            )
        if value < 0 or (value == 0 and key not in _MAY_BE_ZERO):
            raise BenchError(f"{origin}: field {key!r} must be greater than 0, got {value!r}")
    return Scenario(name=name, **{k: (float(v) if known[k].type in ("float", float) else v) for k, v in values.items()})


def _levels(value: Any, origin: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
    ):
        raise BenchError(f"{origin}: field 'levels' must be a list of whole numbers of users above 0, got {value!r}")
    return tuple(sorted(set(value)))


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
    except tomllib.TOMLDecodeError as err:
        raise BenchError(f"{path}: not valid TOML: {err}") from None
    return _check(path.stem, values, str(path))


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
