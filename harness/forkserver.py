"""Process starts without the imports: a fork server imports the variants' libraries
once (fastapi, uvicorn, pydantic, SQLAlchemy, the drivers), another Locust, and each
then forks a child for every `python -m <module> ...` it is asked to run, as gunicorn's
preload_app does. Measured on the 2-core machine: a variant's app imports in 0.70 s in
a fresh interpreter and in 0.07 s in a fork; a sample's server answered /ping in a
median 0.31 s instead of 1.01 s (`timings.start` in results/20261208-020659-default
and results/20261208-001248-default).

The child is set up as the spawned process would be (its own session, its log on
stdout and stderr, stdin from /dev/null, the environment, working directory, sys.path
and warning filters it asks for) and runs the module with `runpy`, as `python -m`
does, so its `__main__`, its atexit handlers and its exit status are the usual ones.

Servers whose own start-up is measured, and uvicorn's multi-process supervisor, are
started the usual way (runner.start_server decides).

Its command line is `python -m harness.forkserver <status dir> --owner <runner pid>
--preload <kind>`,
and so is each child's, in a process listing (a fork keeps the command line).

Protocol, on the fork server's stdin and stdout, a JSON object per line:
  -> {"module": "uvicorn", "args": [...], "env": {...}, "cwd": "...", "log": "..."}
  <- {"pid": 1234} or {"error": "..."}
The fork server reaps its children and writes each one's exit status to
`<status dir>/<pid>`. At the end of its stdin (the runner is gone, however it
went) or on SIGTERM it stops every child still running, and exits.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import runpy
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

# What each kind of fork server imports once, not in every child. "server": what apps/
# imports from outside the suite, and the uvicorn parts a server loads at start-up.
# "locust": the load generator (its import monkey-patches the fork server with gevent,
# whose fork re-initialises the hub in each child). Missing modules are skipped.
SERVER_PRELOAD = (
    "anyio",
    "anyio.to_thread",
    "asyncpg",
    "fastapi",
    "fastapi.responses",
    "httptools",
    "httpx",
    "orjson",
    "psycopg",
    "psycopg2",
    "psycopg2.pool",
    "pydantic",
    "sqlalchemy",
    "sqlalchemy.dialects.postgresql.asyncpg",
    "sqlalchemy.dialects.postgresql.psycopg",
    "sqlalchemy.dialects.postgresql.psycopg2",
    "sqlalchemy.ext.asyncio",
    "sqlalchemy.orm",
    "sqlmodel",
    "starlette.types",
    "uvicorn.config",
    "uvicorn.lifespan.on",
    "uvicorn.loops.asyncio",
    "uvicorn.loops.uvloop",
    "uvicorn.main",
    "uvicorn.protocols.http.h11_impl",
    "uvicorn.protocols.http.httptools_impl",
    "uvicorn.server",
    "uvloop",
)
LOCUST_PRELOAD = ("locust", "locust.main", "locust.runners", "locust.env", "locust.stats", "locust.rpc.zmqrpc")
PRELOADS = {"server": SERVER_PRELOAD, "locust": LOCUST_PRELOAD}

# How often the fork server reaps its children while it waits for a request.
REAP_INTERVAL_S = 0.02
# How long a child still running at the end gets between SIGTERM and SIGKILL.
STOP_GRACE_S = 3.0
# The fork server is ready within seconds (its imports: 0.9 s, measured).
READY_TIMEOUT_S = 30.0
# How long a child that is gone may go without its status file before it counts as lost.
STATUS_GRACE_S = 1.0
REPLY_TIMEOUT_S = 10.0


# --- the fork server ---------------------------------------------------------------------


def _preload(kind: str) -> list[str]:
    missing = []
    for name in PRELOADS[kind]:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def _reap(children: set[int], status_dir: Path) -> None:
    # Child by child, not waitpid(-1): under gevent, libev reaps the children it watches
    # and hands their statuses to gevent's waitpid by pid.
    for pid in list(children):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # reaped by someone else: its status is lost
            done, status = pid, -1
        if done == 0:
            continue
        children.discard(pid)
        code = os.waitstatus_to_exitcode(status) if status >= 0 else -1
        # Written whole, then renamed: a reader never sees half a status.
        part = status_dir / f"{pid}.part"
        part.write_text(str(code))
        part.replace(status_dir / str(pid))


def _stop_children(children: set[int], status_dir: Path) -> None:
    for sig, wait_s in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 2.0)):
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)
        deadline = time.monotonic() + wait_s
        while children and time.monotonic() < deadline:
            _reap(children, status_dir)
            time.sleep(REAP_INTERVAL_S)
        if not children:
            return


def serve(status_dir: Path, kind: str) -> dict[str, Any] | None:
    """The fork server's loop. Returns only in a forked child, with its request."""
    started = time.monotonic()
    missing = _preload(kind)
    # A fork copies only the calling thread: a library that started one would leave its
    # children with a lock held forever. Refuse, and let the runner start servers itself.
    if threading.active_count() > 1:
        _reply({"error": f"{threading.active_count() - 1} threads running after the imports"})
        return None
    _reply({"ready": True, "preload_s": round(time.monotonic() - started, 3), "missing": missing})
    me, children, pending = os.getpid(), set[int](), b""

    def on_sigterm(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        while True:
            readable, _, _ = select.select([0], [], [], REAP_INTERVAL_S)
            _reap(children, status_dir)
            if not readable:
                continue
            chunk = os.read(0, 65536)
            if not chunk:  # the runner closed its end, or is gone
                return None
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                try:
                    pid = os.fork()  # gevent's, in Locust's fork server: it re-initialises the hub
                except OSError as err:  # out of processes or memory: the runner starts it itself
                    _reply({"error": f"fork failed: {err}"})
                    continue
                if pid == 0:
                    os.setsid()
                    return dict(request)
                # The pid is told only once the child leads its own process group, so a
                # stop that signals the group at once reaches it. (Polled: a pipe closed
                # under gevent is closed only when its hub runs.)
                _wait_for_group(pid)
                children.add(pid)
                _reply({"pid": pid})
    finally:
        if os.getpid() == me:  # a child leaves through here too, and must not stop its siblings
            _stop_children(children, status_dir)
            if not _owner_alive():  # nobody is left to read the statuses, or to remove them
                shutil.rmtree(status_dir, ignore_errors=True)


def _owner_alive() -> bool:
    return os.getppid() != 1 and _alive(os.getppid())


def _wait_for_group(pid: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if os.getpgid(pid) == pid:
                return
        except ProcessLookupError:  # already gone: nothing left to signal
            return
        time.sleep(0.0005)


def _reply(message: Mapping[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def run_child(request: Mapping[str, Any]) -> None:
    """In the forked child: become the process `python -m <module> <args>` would be."""
    # Its own session and process group (serve called setsid), as start_new_session gives.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.close(devnull)
    env: dict[str, str] = request["env"]
    os.environ.clear()
    os.environ.update(env)
    os.chdir(request["cwd"])
    # `python -m` puts the working directory first, then PYTHONPATH's entries.
    paths = [request["cwd"], *(part for part in env.get("PYTHONPATH", "").split(os.pathsep) if part)]
    sys.path[:0] = [path for path in paths if path not in sys.path[: len(paths)]]
    # PYTHONWARNINGS as the interpreter reads it at start-up (the runner's servers ask for
    # "default": each warning once per place).
    warnings.resetwarnings()
    for option in reversed([part for part in env.get("PYTHONWARNINGS", "").split(",") if part]):
        warnings._setoption(option)  # type: ignore[attr-defined]  # what -W and PYTHONWARNINGS call
    sys.argv = [request["module"], *request["args"]]
    runpy.run_module(request["module"], run_name="__main__", alter_sys=True)


def main() -> None:
    # argv: <status dir> --owner <pid> --preload <kind>
    request = serve(Path(sys.argv[1]), sys.argv[sys.argv.index("--preload") + 1])
    if request is not None:
        run_child(request)


# --- the runner's side ---------------------------------------------------------------------


class ForkedChild:
    """A child of the fork server, with the part of Popen's interface the runner uses."""

    def __init__(self, pid: int, status_file: Path) -> None:
        self.pid = pid
        self.status_file = status_file
        self.returncode: int | None = None
        self._gone_since: float | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                self.returncode = int(self.status_file.read_text())
            except (OSError, ValueError):
                if not _alive(self.pid):
                    # Reaped, its status not yet written (libev reaps Locust's children
                    # before the fork server asks), or never (the fork server is gone).
                    self._gone_since = self._gone_since or time.monotonic()
                    if time.monotonic() - self._gone_since > STATUS_GRACE_S:
                        self.returncode = -1
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
            time.sleep(0.01)
        return code


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ForkServer:
    """The run's fork server: started once, asked for children, stopped at the end."""

    def __init__(self, python: str, root: Path, kind: str = "server") -> None:
        if kind not in PRELOADS:
            raise ValueError(f"no fork server of kind {kind!r}")
        self.python, self.root, self.kind = python, root, kind
        self.status_dir = Path(tempfile.mkdtemp(prefix="bench-forkserver-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.lock = threading.Lock()
        self.failure = ""

    def start(self) -> bool:
        """Start and wait until its imports are done; False (and `failure`) if it can't."""
        log = open(self.status_dir / "forkserver.log", "ab")  # noqa: SIM115  # lives as long as the process
        # Its owner's pid in its command line, for whoever reads a process listing.
        owner = ("--owner", str(os.getpid()), "--preload", self.kind)
        self.proc = subprocess.Popen(
            [self.python, "-m", "harness.forkserver", str(self.status_dir), *owner],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=self.root,
            env=os.environ | {"PYTHONPATH": str(self.root)},
            start_new_session=True,
        )
        log.close()
        reply = self._read(READY_TIMEOUT_S)
        if not reply.get("ready"):
            self.failure = str(reply.get("error") or "no answer")
            self.stop()
            return False
        return True

    def _read(self, timeout_s: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        readable, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        line = self.proc.stdout.readline() if readable else b""
        try:
            return dict(json.loads(line)) if line else {"error": "no answer"}
        except ValueError:
            return {"error": line[:200].decode(errors="replace")}

    def spawn(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path, log: Path) -> ForkedChild:
        """Fork `argv` ([python, "-m", module, *args]); OSError if the fork server can't."""
        if len(argv) < 3 or argv[1] != "-m":
            raise ValueError(f"the fork server runs `python -m <module>` only, not {argv[:3]}")
        request = {"module": argv[2], "args": list(argv[3:]), "env": dict(env), "cwd": str(cwd), "log": str(log)}
        with self.lock:
            if self.proc is None or self.proc.poll() is not None or self.proc.stdin is None:
                raise OSError(f"the {self.kind} fork server is not running")
            try:
                self.proc.stdin.write(json.dumps(request).encode() + b"\n")
                self.proc.stdin.flush()
                reply = self._read(REPLY_TIMEOUT_S)
            except OSError as err:
                reply = {"error": str(err)}
            if "pid" not in reply:
                # Never asked again: a fork server that failed once is stopped, and the
                # run's later children start the usual way.
                self._kill()
                raise OSError(f"the {self.kind} fork server did not fork: {reply.get('error')}")
        pid = int(reply["pid"])
        return ForkedChild(pid, self.status_dir / str(pid))

    def _kill(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.stop()

    def stop(self) -> None:
        """Close its stdin (it stops any child still running, then exits); kill it if
        it has not within a few seconds."""
        proc, self.proc = self.proc, None
        if proc is not None:
            with contextlib.suppress(OSError):
                if proc.stdin is not None:
                    proc.stdin.close()
            try:
                proc.wait(timeout=STOP_GRACE_S + 5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        for path in self.status_dir.glob("*"):
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.status_dir.rmdir()


_SHARED: dict[str, ForkServer | None] = {}  # by kind; None: it could not start
_SHARED_LOCK = threading.Lock()


def shared(python: str, root: Path, kind: str = "server", say: IO[str] | None = None) -> ForkServer | None:
    """The process's fork server of `kind`, started on first use and stopped at exit;
    None (said once on `say`) where it cannot start: its children are then started the
    usual way."""
    with _SHARED_LOCK:
        if kind not in _SHARED:
            server = ForkServer(python, root, kind)
            if server.start():
                _SHARED[kind] = server
            else:
                _SHARED[kind] = None
                print(f"note: {kind} processes start without a fork server ({server.failure})", file=say or sys.stderr)
        return _SHARED[kind]


def stop_shared() -> None:
    """Stop every fork server this process started (a later `shared` starts it again)."""
    with _SHARED_LOCK:
        servers = [server for server in _SHARED.values() if server is not None]
        _SHARED.clear()
    for server in servers:
        server.stop()


atexit.register(stop_shared)

if __name__ == "__main__":
    main()
