"""The startup pair (C8): its verdict rule on fixture records, and what each variant's
server really does at startup."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from harness import runner
from harness.database import Database
from harness.pairs import discover
from harness.scenario import Scenario

PAIR = discover()["startup"]
WARNING = "DeprecationWarning: "  # what the runner keeps of FastAPI's multi-line message


def rec(
    rps: float = 2000, failure_rate: float = 0.0, warnings: list[str] | None = None, status: str = "ok"
) -> dict[str, Any]:
    return {
        "status": status,
        "error": None if status == "ok" else "verification failed for id 7: status 503",
        "rps": rps,
        "failure_rate": failure_rate,
        "warnings": [] if warnings is None else warnings,
    }


def decide(on_event: dict[str, Any], lifespan: dict[str, Any]) -> Any:
    return PAIR.decide({"on-event": on_event, "lifespan": lifespan}, {"pool_size": 10})


def test_partly_holds_when_it_works_but_warns() -> None:
    # The figures of a quick trial run.
    verdict = decide(rec(rps=2210, warnings=[WARNING]), rec(rps=1975))
    assert verdict.outcome == "partly holds"
    assert "1.12x the lifespan variant's throughput" in verdict.text and "DeprecationWarning" in verdict.text
    assert verdict.headline == "1.12x throughput, DeprecationWarning printed"


def test_holds_when_it_works_without_a_warning() -> None:
    # As with a FastAPI that had not deprecated on_event yet.
    verdict = decide(rec(rps=1950), rec(rps=2000))
    assert verdict.outcome == "holds" and "no DeprecationWarning" in verdict.text


def test_a_warning_both_servers_print_is_not_held_against_on_event() -> None:
    shared = "DeprecationWarning: some library"
    assert decide(rec(warnings=[shared]), rec(warnings=[shared])).outcome == "holds"


def test_does_not_hold_when_the_startup_handler_never_ran() -> None:
    # E.g. a FastAPI that ignores on_event handlers: no pool, verification gets 503.
    verdict = decide(rec(status="failed"), rec())
    assert verdict.outcome == "does not hold" and "did not start and verify" in verdict.text
    assert "status 503" in verdict.text


def test_a_throughput_dip_within_noise_still_counts_as_working() -> None:
    # A run measured 0.78x with identical request paths: noise, not a broken pool.
    assert decide(rec(rps=2443, warnings=[WARNING]), rec(rps=3139)).outcome == "partly holds"


def test_does_not_hold_when_it_serves_worse_or_fails() -> None:
    assert decide(rec(rps=1000, warnings=[WARNING]), rec(rps=2000)).outcome == "does not hold"
    assert decide(rec(failure_rate=0.2), rec()).outcome == "does not hold"


def test_inconclusive_without_the_lifespan_variant_or_the_warnings() -> None:
    assert decide(rec(), rec(status="failed")).outcome == "inconclusive"
    assert PAIR.decide({"lifespan": rec()}, {}).outcome == "inconclusive"
    unrecorded = rec()
    unrecorded["warnings"] = None
    verdict = decide(unrecorded, rec())
    assert verdict.outcome == "inconclusive" and "not recorded" in verdict.text


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
