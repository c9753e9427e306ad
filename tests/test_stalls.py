"""The stack watchdog's stalls in the suite's own runs: which line they were on."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from harness import analysis, store
from harness.pairs import ROOT

APP = str(ROOT / "apps" / "deps" / "app.py")
COMMON = str(ROOT / "apps" / "common.py")
INSTRUMENTS = str(ROOT / "apps" / "instruments.py")
LIBRARY = "/venv/lib/python3.11/site-packages/fastapi/routing.py"


def stall(at: float, lag_ms: float, *frames: tuple[str, int, str]) -> dict[str, Any]:
    return {"time": at, "lag_ms": lag_ms, "samples": [[2, [list(f) for f in frames]]]}


def test_a_stall_is_credited_to_the_innermost_line_of_the_suites_apps() -> None:
    stalls = [
        # psycopg2 is C: its caller's line is the innermost Python frame, in the app.
        stall(1.0, 30, (APP, 41, "blocking_dep"), (LIBRARY, 200, "solve_dependencies")),
        stall(2.0, 50, (APP, 41, "blocking_dep"), (LIBRARY, 200, "solve_dependencies")),
        # A library frame inside the app's call: still the app's line.
        stall(3.0, 40, (LIBRARY, 10, "execute"), (COMMON, 77, "fetch_item"), (APP, 52, "route")),
        # The instruments are not a variant's line; with no other frame of the apps, the
        # innermost frame stands, whatever it is.
        stall(4.0, 26, (INSTRUMENTS, 5, "_row"), (LIBRARY, 1, "run")),
    ]
    sites = analysis.suite_stall_sites(stalls)
    assert [(s["where"], s["stalls"], s["lag_ms_total"]) for s in sites] == [
        ("apps/deps/app.py:41", 2, 80.0),
        ("apps/common.py:77", 1, 40.0),
        ("apps/instruments.py:5", 1, 26.0),
    ]
    assert sites[0]["function"] == "blocking_dep" and sites[1]["blocked_in"].endswith("execute")


def test_a_run_measured_in_another_clone_is_credited_to_this_checkouts_apps() -> None:
    """Stored stacks hold the measuring clone's absolute paths; rebuilt elsewhere (CI's
    clone, a worktree), the same frames are still the suite's own lines."""
    elsewhere = "/some/other/clone/apps/deps/app.py"
    [site] = analysis.suite_stall_sites([stall(1.0, 30, (LIBRARY, 3, "connect"), (elsewhere, 41, "blocking_dep"))])
    assert site["where"] == "apps/deps/app.py:41" and site["function"] == "blocking_dep"
    # A library's own "apps" folder that this checkout does not have stays a library frame.
    [site] = analysis.suite_stall_sites([stall(1.0, 30, ("/venv/site-packages/x/apps/nowhere.py", 3, "f"))])
    assert site["where"] == "/venv/site-packages/x/apps/nowhere.py:3"


def test_a_frame_without_a_line_number_is_kept_at_line_0() -> None:
    # A frame between instructions has no line (f_lineno None) in stored stalls.
    [site] = analysis.suite_stall_sites([stall(1.0, 30, (APP, None, "f"))])  # type: ignore[arg-type]
    assert site["where"] == "apps/deps/app.py:0" and site["code"] == ""


def test_sites_add_up_over_a_variants_samples() -> None:
    one = analysis.suite_stall_sites([stall(1.0, 30, (APP, 41, "f")), stall(2.0, 30, (APP, 9, "g"))])
    two = analysis.suite_stall_sites([stall(1.0, 20, (APP, 9, "g")), stall(2.0, 20, (APP, 9, "g"))])
    merged = analysis.merge_stall_sites([{"stall_sites": one}, {"stall_sites": two}])  # type: ignore[list-item]
    assert merged is not None
    assert [(s["where"], s["stalls"], s["lag_ms_total"]) for s in merged] == [
        ("apps/deps/app.py:9", 3, 70.0),
        ("apps/deps/app.py:41", 1, 30.0),
    ]
    # No server ran the watchdog (runs stored before it): no sites, not an empty list.
    assert analysis.merge_stall_sites([{"stall_sites": None}]) is None  # type: ignore[list-item]


def test_stalls_are_read_in_the_window_from_the_stored_compressed_file(tmp_path: Path) -> None:
    lines = [stall(t, 30, (APP, 41, "f")) for t in (1.0, 5.0, 9.0)]
    (tmp_path / analysis.STALLS_FILE).write_text("".join(json.dumps(s) + "\n" for s in lines) + '{"cut sh')
    store.compress_raw(tmp_path)
    assert not (tmp_path / analysis.STALLS_FILE).exists()
    with gzip.open(tmp_path / f"{analysis.STALLS_FILE}.gz", "rt") as packed:
        assert packed.read().startswith("{")
    assert [s["time"] for s in analysis.read_stalls(tmp_path, (2.0, 10.0))] == [5.0, 9.0]
    assert len(analysis.read_stalls(tmp_path, None)) == 3
