"""Bad input ends in one line naming the problem and exit status 2, with nothing written."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from dataclasses import fields
from pathlib import Path

import pytest

from harness import pairs as pairs_mod
from harness import scenario
from harness.pairs import ROOT
from harness.scenario import Scenario
from tests.conftest import bench_here


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "bench.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--pairs", "dep"], "unknown pair 'dep' (did you mean 'deps'?)"),
        (["run", "--duration", "abc"], "expected a number of seconds"),
        (["run", "--duration", "-5"], "must be greater than 0"),
        (["run", "--users", "0"], "must be greater than 0"),
        (["run", "--set", "block_ms=fast"], "needs a whole number"),
        (["run", "--set", "nonsense=3"], "unknown knob 'nonsense'"),
        (["run", "--pairs", "deps", "--set", "block_ms=20"], "unknown knob 'block_ms'"),
        (["run", "--scenario", "nope"], "no scenario 'nope'"),
        (["run", "--pairs", "sessions/pool-leak"], "did you mean 'pool-leaky'"),
        (["run", "--scenario", "quick", "--resume", "results"], "is not a run folder"),
        (["frobnicate"], "invalid choice"),
        # Numbers must be finite and within the bounds of harness/scenario.py, which the message names.
        (["run", "--duration", "inf"], "argument --duration: expected a finite number, got 'inf'"),
        (["run", "--duration", "nan"], "argument --duration: expected a finite number, got 'nan'"),
        (["run", "--duration", "1e12"], "argument --duration: must be at most 3600 seconds"),
        (["run", "--rate", "inf"], "argument --rate: expected a finite number"),
        (["run", "--rate", "1e9"], "argument --rate: must be at most 100000 requests per second"),
        (["run", "--users", "1000000"], "argument --users: must be at most 2000 users"),
        (["run", "--users", "1,10,5000"], "argument --users: must be at most 2000 users"),
        (["run", "--users", ",".join(str(n) for n in range(1, 61))], "a sweep must have at most 50 levels"),
        (["run", "--users", "1,,10"], "argument --users: has an empty item between commas"),
        (["run", "--repeats", "100000"], "argument --repeats: must be at most 50 repeats"),
        (["run", "--soak", "1e9"], "argument --soak: must be at most 21600 seconds"),
        (["run", "--soak", "inf"], "argument --soak: expected a finite number"),
        (["run", "--locust-workers", "500"], "argument --locust-workers: must be at most 64 worker processes"),
        (["run", "--set", "block_ms=100000000"], "--set block_ms must be at most 60000 ms"),
        (["run", "--set", "block_ms=0"], "--set block_ms must be greater than 0"),
        (["run", "--set", "pool_size=10000000"], "--set pool_size must be at most 1000000"),
        (["run", "--pairs", ""], "argument --pairs: is empty"),
        (["run", "--pairs", " , "], "argument --pairs: is empty"),
        (["run", "--pairs", "deps,,blocking"], "argument --pairs: has an empty item between commas"),
        (["run", "--pairs", "deps,"], "argument --pairs: has an empty item between commas"),
        (["compare", "a", "b", "--fail-above", "inf"], "argument --fail-above: expected a finite number"),
        (["compare", "a", "b", "--fail-above", "1e9"], "argument --fail-above: must be at most 1000 percent"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = bench_here(*args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["frobnicate"], "invalid choice"),
        (["run", "--pairs", "dep"], "unknown pair 'dep' (did you mean 'deps'?)"),
        (["run", "--set", "block_ms=100000000"], "--set block_ms must be at most 60000 ms"),
    ],
)
def test_the_command_itself_refuses_bad_input_in_one_line(args: list[str], message: str) -> None:
    # A real process: nothing it imports writes to stderr, and its exit status is 2.
    result = bench(*args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('users = "many"', "field 'users' must be a whole number"),
        ("userz = 3", "unknown field 'userz'"),
        ("duration_s = 1e12", "field 'duration_s' must be at most 3600 seconds"),
        ("users = 10_000_000", "field 'users' must be at most 2000 users"),
        ("duration_s = nan", "field 'duration_s' must be a finite number, got nan"),
        ("warmup_s = inf", "field 'warmup_s' must be a finite number, got inf"),
        ("rows = 99999999999999999999999999999999999999999999", "field 'rows' must be at most 10000000 rows"),
        ("rows = " + "9" * 5000, "not valid TOML"),
        ("levels = [1, 5000]", "field 'levels': each must be at most 2000 users"),
        ("soak_s = 1e9", "field 'soak_s' must be at most 21600 seconds"),
        ("open_loop = 2", "field 'open_loop' must be at most 1"),
        ("rate = -1", "field 'rate' must be 0 or more"),
    ],
)
def test_malformed_scenario_points_at_the_field(tmp_path: Path, toml: str, message: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(toml + "\n")
    result = bench_here("run", "--scenario", str(bad))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_every_number_has_a_bound_that_the_shipped_settings_respect() -> None:
    numbers = {f.name for f in fields(Scenario)} - {"name", "description", "levels"}
    assert set(scenario.MAXIMUM) == numbers
    for path in scenario.SCENARIOS_DIR.glob("*.toml"):
        scenario.load(str(path))  # raises if a shipped scenario is out of bounds
    for pair in pairs_mod.discover().values():
        scenario.override(scenario.Scenario(name="t"), **pair.load)
        for key, value in pair.knobs.items():
            assert value <= scenario.knob_bound(key).maximum, (pair.name, key)


def test_unreachable_database_hides_password_and_leaves_no_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = bench("run", "--dsn", "postgresql://bench:s3cret@127.0.0.1:1/bench", "--out", str(out))
    assert result.returncode == 2
    assert "cannot reach PostgreSQL" in result.stderr and "s3cret" not in result.stderr
    assert not out.exists()


def test_out_folder_that_is_not_empty_is_refused(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    result = bench_here("run", "--out", str(tmp_path))
    assert result.returncode == 2 and "not empty" in result.stderr
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_report_on_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    result = bench_here("report", str(tmp_path))
    assert result.returncode == 2 and "not a run folder" in result.stderr


def test_list_names_every_pair_and_claim() -> None:
    result = bench("list")
    assert result.returncode == 0
    block_ms = pairs_mod.discover()["blocking"].knobs["block_ms"]
    for text in ("deps", "[C1]", "sessions", "[C7]", "blocking", "[C11]", f"block_ms={block_ms}"):
        assert text in result.stdout
    # Every claim of the catalogue is mapped to at least one pair that exists.
    claims = result.stdout.split("claims:")[1].splitlines()
    mapped = {line.split()[0]: line.split(None, 1)[1] for line in claims if line.strip()}
    assert set(mapped) >= {f"C{n}" for n in range(1, 16)}
    assert not [claim for claim, pairs in mapped.items() if pairs == "no pair yet"], mapped


def test_output_folder_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = bench_here("run", "--out", str(blocker / "run"))
    assert result.returncode == 2 and "cannot write to" in result.stderr


def test_dsn_pointing_at_a_port_that_is_not_postgres() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        threading.Thread(target=lambda: other.accept()[0].close(), daemon=True).start()
        result = bench_here("run", "--dsn", f"postgresql://bench:pw@127.0.0.1:{port}/bench")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert f"cannot reach PostgreSQL at postgresql://bench:***@127.0.0.1:{port}/bench" in result.stderr
