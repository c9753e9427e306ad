"""The harness stays correct when variants misbehave: each fault is bounded, recorded
with its reason, and the run goes on to the next variant from the same baseline."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from harness import database, runner, store
from harness.database import Database, EmbeddedPostgres
from harness.pairs import ROOT, BenchError, Pair, Variant
from harness.scenario import Scenario
from tests.conftest import TEST_PG_HOME


def fault_pair(*names: str) -> Pair:
    return Pair(
        name="faults",
        claim_id="C0",
        claim="The harness survives its variants.",
        sources=(),
        mechanism="",
        variants=tuple(
            Variant(name, "bad", f"/{name}/items/{{id}}", name, (name.replace("-", "_"),)) for name in names
        ),
        app_module="tests.faults.app",
    )


SCENARIO = Scenario(
    name="faults", users=5, spawn_rate=5, warmup_s=1, duration_s=3, rows=1000,
    request_timeout_s=2, start_timeout_s=4, settle_timeout_s=10,
)  # fmt: skip


def run_faults(tmp_path: Path, db: Database, *names: str) -> dict[str, dict[str, Any]]:
    pair = fault_pair(*names)
    plan = runner.RunPlan(
        scenario=SCENARIO, pairs=[pair], knobs={"faults": {}}, dsn=None, run_dir=tmp_path / "run",
        write_top_report=False,
    )  # fmt: skip
    plan.run_dir.mkdir()
    runner.run(plan, db=db)
    summary = json.loads((plan.run_dir / "summary.json").read_text())
    return {r["variant"]: r for r in summary["variants"]}


@pytest.mark.slow
def test_hangs_and_crashes_are_bounded_recorded_and_the_run_goes_on(db: Database, tmp_path: Path) -> None:
    records = run_faults(tmp_path, db, "hang-start", "hang-request", "crash-load", "ok")
    assert records["hang-start"]["status"] == "failed"
    assert "not answering /ping within 4 s" in records["hang-start"]["error"]
    assert records["hang-request"]["status"] == "failed"
    assert (
        "verification request" in records["hang-request"]["error"] and "timed out" in records["hang-request"]["error"]
    )
    assert records["crash-load"]["status"] == "failed"
    assert "server exited with status 3 during load" in records["crash-load"]["error"]
    # The variant after the faults measures normally, from the baseline.
    assert records["ok"]["status"] == "ok" and records["ok"]["requests"] > 0
    assert records["ok"]["baseline_connections"] == 0
    meta = store.read_json(tmp_path / "run" / "faults" / "crash-load" / "closed-u5-b1" / "sample.json")
    assert "server_log_tail" in meta
    assert store.read_json(tmp_path / "run" / "manifest.json")["status"] == "complete"


@pytest.mark.slow
def test_variant_exhausting_max_connections_does_not_lock_the_harness_out(db: Database, tmp_path: Path) -> None:
    records = run_faults(tmp_path, db, "hog-connections", "ok")
    hog = records["hog-connections"]
    assert hog["status"] == "ok", hog["error"]
    # The sampler still got in (superuser slots) and saw the server full of the app's backends.
    max_connections = int(store.read_json(tmp_path / "run" / "manifest.json")["database"]["max_connections"])
    assert hog["peak_connections"] >= max_connections - 5
    assert hog["settled_connections"] == 0
    assert records["ok"]["status"] == "ok" and records["ok"]["baseline_connections"] == 0
    assert records["ok"]["failures"] == 0


@pytest.mark.slow
def test_postgres_stopping_mid_run_marks_the_affected_variants_failed(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(ROOT / ".bench" / "test-stop")
    db = pg.start()
    try:
        database.prepare(db, rows=1000)
        first = tmp_path / "run" / "faults" / "ok" / "closed-u5-b1" / "phases.json"

        def stop_when_measuring() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and "measure_start" not in (first.read_text() if first.exists() else ""):
                time.sleep(0.1)
            pg.stop()

        stopper = threading.Thread(target=stop_when_measuring)
        stopper.start()
        records = run_faults(tmp_path, db, "ok", "ok-again")
        stopper.join()
    finally:
        pg.stop()
    # The variant under load when the server went away shows it as failed requests...
    assert records["ok"]["failures"] > 0
    # ...and the next one cannot start from a baseline, so it is failed with the reason.
    assert records["ok-again"]["status"] == "failed"
    assert records["ok-again"]["error"].startswith("database error:")
    assert db.dsn.split(":")[2].split("@")[0] not in json.dumps(records)  # no password in the records


@pytest.mark.slow
def test_a_second_run_cannot_take_over_a_live_embedded_server(db: Database) -> None:
    """Two runs on one checkout: the second is refused instead of stopping the first's
    PostgreSQL under it."""
    second = EmbeddedPostgres(TEST_PG_HOME)
    with pytest.raises(BenchError, match="in use by another run"):
        second.start()
    second.stop()  # owns nothing: must not stop the live server
    assert database.fetch_row(db, 1) is not None
