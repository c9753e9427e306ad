"""The fork server (harness.forkserver): a forked child is the process `python -m`
would have started, and none outlives the fork server or its owner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from harness.forkserver import ForkServer
from harness.pairs import ROOT

PYTHON = sys.executable


@pytest.fixture(params=["server", "locust"])
def forkserver(request: pytest.FixtureRequest) -> Iterator[ForkServer]:
    # Locust's is monkey-patched by gevent, whose fork and waitpid differ from the os ones.
    server = ForkServer(PYTHON, ROOT, request.param)
    assert server.start(), server.failure
    yield server
    server.stop()


def gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.05)
    return False


def test_child_is_what_python_m_would_start(forkserver: ForkServer, tmp_path: Path) -> None:
    out, log = tmp_path / "facts.json", tmp_path / "child.log"
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "default", "ONLY_HERE": "1"}
    child = forkserver.spawn([PYTHON, "-m", "tests.fork_child", str(out), "3", "0"], env, tmp_path, log)
    assert child.wait(timeout=20) == 3
    facts = json.loads(out.read_text())
    assert facts["argv"][1:] == [str(out), "3", "0"]
    assert facts["cwd"] == str(tmp_path)
    assert facts["env"] == env  # replaced, not merged with the fork server's
    assert facts["pgid_is_pid"] and facts["sid_is_pid"]
    assert facts["main_spec"] == "tests.fork_child"
    assert facts["first_filter"] == "default"
    assert log.read_text().splitlines() == ["stdout line", "stderr line"]


def test_stop_ends_children_still_running(forkserver: ForkServer, tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}
    child = forkserver.spawn(
        [PYTHON, "-m", "tests.fork_child", str(tmp_path / "f"), "0", "60"], env, ROOT, tmp_path / "l"
    )
    assert child.poll() is None
    forkserver.stop()
    assert gone(child.pid, 10)


def test_refuses_what_is_not_python_m(forkserver: ForkServer, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="python -m"):
        forkserver.spawn([PYTHON, "script.py"], {}, ROOT, tmp_path / "l")


def test_no_child_outlives_an_owner_killed_outright(tmp_path: Path) -> None:
    # The owner dies by SIGKILL, with no chance to stop anything: the fork server sees
    # its stdin close, stops the child, and exits.
    owner = textwrap.dedent(f"""
        import os, sys
        from pathlib import Path
        from harness.forkserver import ForkServer
        server = ForkServer({PYTHON!r}, Path({str(ROOT)!r}))
        assert server.start(), server.failure
        env = {{"PATH": os.environ["PATH"], "PYTHONPATH": {str(ROOT)!r}}}
        child = server.spawn([{PYTHON!r}, "-m", "tests.fork_child", {str(tmp_path / "f")!r}, "0", "60"], env,
                             Path({str(tmp_path)!r}), Path({str(tmp_path / "l")!r}))
        print(server.proc.pid, child.pid, flush=True)
        os.kill(os.getpid(), 9)
    """)
    proc = subprocess.run([PYTHON, "-c", owner], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr[-1000:]
    forkserver_pid, child_pid = (int(part) for part in proc.stdout.split())
    assert gone(child_pid, 15) and gone(forkserver_pid, 15)
