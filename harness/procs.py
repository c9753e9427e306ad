"""Processes the runner starts: each in its own process group, with one log file, a
bounded readiness check, and SIGTERM-then-SIGKILL to the whole group on the way out.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Generic, TypeVar

from harness.forkserver import ForkedChild, ForkServer
from harness.pairs import BenchError

T = TypeVar("T")


class Interrupted(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so every `finally` runs."""


def raise_on_sigterm() -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Service(Generic[T]):
    """start() on entry and stop() on the way out, also when start-up fails half-way."""

    def start(self) -> T:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> T:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ManagedProcess(Service["ManagedProcess"]):
    """A child in its own session, so Ctrl-C reaches only the runner, which stops it."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log: Path,
        env: Mapping[str, str],
        cwd: Path,
        forkserver: ForkServer | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.env = dict(env)
        self.cwd = cwd
        # Forked from the run's preloaded fork server (harness.forkserver) where given.
        self.forkserver = forkserver
        self.proc: subprocess.Popen[bytes] | ForkedChild | None = None
        # Started for this process's sake (e.g. its stub upstream); stopped after it.
        self.companions: list[ManagedProcess] = []
        # How long a stop waits after SIGTERM before SIGKILL, where this process's own
        # graceful end matters less than the caller's `grace_s` (None: the caller's).
        self.stop_grace_s: float | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> ManagedProcess:
        if self.proc is not None:  # a second start would orphan the first process
            raise RuntimeError(f"{self.name} was already started")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        if self.forkserver is not None:
            try:
                self.proc = self.forkserver.spawn(self.argv, self.env, self.cwd, self.log)
                return self
            except OSError as err:  # the fork server has gone: start it the usual way
                print(f"note: {self.name} started without the fork server ({err})", file=sys.stderr)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        return self

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def wait_until(self, ready: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Poll `ready` until it answers True; fail fast with the log if the process dies."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = self.exited()
            if code is not None:
                raise BenchError(f"{self.name} exited with status {code} before {what}: {log_tail(self.log, 3)}")
            if ready():
                return
            time.sleep(0.02)  # a server is up within a second: poll often, it costs little
        raise BenchError(f"{self.name} not {what} within {timeout_s:g} s: {log_tail(self.log, 3)}")

    def serve(self, ping_url: str, timeout_s: float) -> ManagedProcess:
        """Start, then wait until `ping_url` answers 200; stopped again if it never does."""
        with contextlib.ExitStack() as on_failure:
            on_failure.callback(self.stop)
            self.start()
            self.wait_until(lambda: http_ok(ping_url), timeout_s, "answering /ping")
            on_failure.pop_all()
        return self

    def wait(self, timeout_s: float) -> int | None:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM the group, then SIGKILL whatever is left after `grace_s`; then the
        companions."""
        try:
            self._stop_group(grace_s if self.stop_grace_s is None else self.stop_grace_s)
        finally:
            for companion in self.companions:
                companion.stop(grace_s)

    def _stop_group(self, grace_s: float) -> None:
        if self.proc is None:
            return
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                continue
            # The leader is gone; make sure nothing else in its group survives it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            break


def http_ok(url: str, timeout_s: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def try_lock(handle: IO[str]) -> str | None:
    """Take an exclusive lock on an open file without waiting: None once taken, else
    what the holder wrote there (see `note_holder`)."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        return handle.read().strip() or "another process"
    return None


def note_holder(handle: IO[str], text: str) -> None:
    """Say in a locked file who holds it, for whoever finds it taken."""
    handle.seek(0)
    handle.truncate()
    handle.write(text)
    handle.flush()


# One load test at a time per machine: two runs sharing the cores measure each other.
LOAD_LOCK = Path(tempfile.gettempdir()) / "fastapi-pattern-bench-load.lock"


@contextlib.contextmanager
def machine_load_lock(say: Callable[[str], None]) -> Iterator[None]:
    """Hold the machine-wide load lock; wait (saying so) while another run holds it."""
    with open(LOAD_LOCK, "a+") as handle:
        if (holder := try_lock(handle)) is not None:
            say(f"waiting for another benchmark's load on this machine to finish ({holder})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        note_holder(handle, f"pid {os.getpid()}: {' '.join(sys.argv[:4])}")
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def python_bin() -> str:
    """The interpreter running the harness: the venv's, so children see the same packages."""
    import sys

    return sys.executable
