"""The startup pair (C8): its verdict rule on fixture records, and what each variant's
server really does at startup."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from apps.startup import pair as startup
from harness import runner
from harness.checks import CPU_PER_REQUEST, THROUGHPUT, Ratio, Total
from harness.database import Database
from harness.pairs import discover
from harness.scenario import Scenario
from tests.conftest import blocks_of, cpu_jitter

PAIR = discover()["startup"]
# What the runner keeps of FastAPI's multi-line message (it joins the line after the colon).
WARNING = "DeprecationWarning: on_event is deprecated, use lifespan event handlers instead."
FAILED = Total(startup.FAILED_SAMPLES, "on-event").key
CPU = Ratio(CPU_PER_REQUEST, "on-event", "lifespan").key


def rec(
    rps: float = 2000,
    cpu: float = 90.0,
    failure_rate: float = 0.0,
    warnings: list[str] | None = None,
    status: str = "ok",
    samples: int = 3,
    good: int | None = None,
) -> dict[str, Any]:
    """A variant's merged record: `cpu` % of a core at `rps` is cpu / rps * 10 ms per request;
    `good` of its `samples` got through (all of them unless given, none if it failed)."""
    return {
        "status": status,
        "error": None if status == "ok" else "verification failed for id 7: status 503",
        "rps": rps,
        "server_cpu_pct": cpu,
        "failure_rate": failure_rate,
        "warnings": [] if warnings is None else warnings,
        "samples": samples,
        "repeats": (samples if status == "ok" else 0) if good is None else good,
    }


def decide(on_event: dict[str, Any], lifespan: dict[str, Any], jitter: tuple[float, ...] | None = None) -> Any:
    records = {"on-event": on_event, "lifespan": lifespan}
    blocks = blocks_of(records)
    return PAIR.decide(records, PAIR.knobs, cpu_jitter(blocks, jitter) if jitter else blocks)


def test_partly_holds_when_it_works_but_warns() -> None:
    # The figures of a quick trial run: 1.12x the throughput on the same request path.
    verdict = decide(rec(rps=2210, cpu=90, warnings=[WARNING]), rec(rps=1975, cpu=82))
    assert verdict.outcome == "partly holds"
    assert [check["outcome"] for check in verdict.checks] == ["clears", "clears", "misses"]
    assert verdict.figures[CPU] == pytest.approx((90 / 2210) / (82 / 1975))
    assert verdict.figures[Total(startup.ON_EVENT_DEPRECATIONS, "on-event").key] == 1
    assert verdict.figures[Ratio(THROUGHPUT, "on-event", "lifespan").key] == pytest.approx(2210 / 1975)  # shown only


def test_holds_when_it_works_without_a_warning() -> None:
    # As with a FastAPI that had not deprecated on_event yet.
    verdict = decide(rec(rps=1950), rec(rps=2000))
    assert verdict.outcome == "holds"


def test_a_warning_that_is_not_about_on_event_is_not_held_against_it() -> None:
    shared = "DeprecationWarning: some library"
    assert decide(rec(warnings=[shared]), rec(warnings=[shared])).outcome == "holds"


def test_a_throughput_dip_on_the_same_request_path_does_not_decide() -> None:
    # A run measured 0.78x throughput with identical request paths and CPU per request: noise.
    verdict = decide(rec(rps=2443, cpu=70.0, warnings=[WARNING]), rec(rps=3139, cpu=90.0))
    assert verdict.outcome == "partly holds"
    assert verdict.figures[CPU] == pytest.approx(1.0, abs=0.01)


def test_does_not_hold_when_the_startup_handler_never_ran() -> None:
    # E.g. a FastAPI that ignores on_event handlers: no pool, verification gets 503; it
    # warned at import all the same.
    verdict = decide(rec(status="failed", warnings=[WARNING]), rec())
    assert verdict.outcome == "does not hold"
    assert verdict.checks[0]["outcome"] == "misses" and verdict.figures[FAILED] == 3


def test_a_failed_start_with_its_warnings_unrecorded_stays_inconclusive() -> None:
    failed = rec(status="failed")
    failed["warnings"] = None  # the merged record of a variant that never got through
    verdict = decide(failed, rec())
    assert verdict.outcome == "inconclusive"
    assert verdict.checks[0]["outcome"] == "misses" and verdict.checks[2]["outcome"] == "not measured"


def test_does_not_hold_when_it_fails_requests_or_a_start() -> None:
    assert decide(rec(failure_rate=0.2, warnings=[WARNING]), rec()).outcome == "does not hold"
    verdict = decide(rec(good=2, warnings=[WARNING]), rec())  # one of three samples did not start
    assert verdict.outcome == "does not hold" and verdict.figures[FAILED] == 1


def test_cpu_per_request_is_shown_but_does_not_decide() -> None:
    # 1.33x the CPU per request, or an interval across 1.25x: the verdict rests on start-up,
    # failures and warnings alone, and the CPU figure is still reported.
    for on_event, jitter in (
        (rec(rps=1500, cpu=90, warnings=[WARNING]), None),
        (rec(rps=1600, cpu=90), (0.5, 1.0, 2.0)),
    ):
        verdict = decide(on_event, rec(rps=2000, cpu=90), jitter=jitter)
        assert verdict.outcome == ("partly holds" if on_event["warnings"] else "holds")
        assert CPU in verdict.figures and not any("CPU" in check["figure"] for check in verdict.checks)


def test_inconclusive_without_the_lifespan_variant_or_the_warnings() -> None:
    assert decide(rec(), rec(status="failed")).outcome == "inconclusive"
    assert PAIR.decide({"lifespan": rec()}, {}, blocks_of({"lifespan": rec()})).outcome == "inconclusive"
    unrecorded = rec()
    unrecorded["warnings"] = None
    verdict = decide(unrecorded, rec())
    assert verdict.outcome == "inconclusive" and verdict.checks[2]["outcome"] == "not measured"


def get_json(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return json.loads(resp.read())


@pytest.mark.slow
def test_on_event_runs_its_handler_and_warns_while_lifespan_does_not(db: Database, tmp_path: Path) -> None:
    seen = {}
    for variant in PAIR.variants:
        folder = tmp_path / variant.name
        folder.mkdir()
        server, port = runner.start_server(PAIR, variant, PAIR.knobs, db, folder, Scenario(name="test", rows=1000))
        try:
            bodies = [get_json(port, variant.path.format(id=item)) for item in (1, 2, 3)]
            counters = get_json(port, "/counters")
        finally:
            server.stop()
        seen[variant.name] = (bodies, counters, runner.server_warnings(folder / "server.log"))
    for bodies, counters, _ in seen.values():
        assert [body["id"] for body in bodies] == [1, 2, 3]
        assert counters == {"pool_opened": 1}  # the pool was opened once, at startup
    assert any("DeprecationWarning" in w for w in seen["on-event"][2])
    assert not any("DeprecationWarning" in w for w in seen["lifespan"][2])
    assert "on_event is deprecated" in (tmp_path / "on-event" / "server.log").read_text()
    # The rule counts what the runner kept: one warning about on_event, none for lifespan.
    assert startup.on_event_deprecations({"warnings": seen["on-event"][2]}) == 1
    assert startup.on_event_deprecations({"warnings": seen["lifespan"][2]}) == 0
