"""`bench.py probe`: a user's own FastAPI app under the suite's load and instruments.

    target (CLI and/or TOML) -> checked, one line per mistake
    -> database: the user's (read-only) or a fresh one on the embedded server -> seed if asked
    -> for each users level, closed loop; then open loop at 70% of the knee:
        start the app under apps/probe_wrapper.py (the app's interpreter, folder and
        environment) -> verify every path -> Locust with the /ping probe and the
        pg_stat_activity sampler -> the instruments' counts -> stop -> store the sample
    -> summary.json (records, knee, the stacks that blocked the loop, diagnosis)
    -> REPORT.md in the run folder (harness.probe_report), never the top-level one.

On a user's database the probe only reads: it samples pg_stat_activity and
pg_stat_database and never ends a session, creates a table or seeds a row, unless the
user asks with --seed-sql or --seed-cmd.
"""

from __future__ import annotations

import contextlib
import json
import linecache
import math
import os
import random
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg2

from harness import analysis, database, runner, stats, store
from harness.database import Database, redact
from harness.pairs import ROOT, BenchError, Pair, Variant
from harness.procs import (
    Interrupted,
    ManagedProcess,
    free_port,
    http_ok,
    log_tail,
    machine_load_lock,
    port_is_free,
    python_bin,
)
from harness.records import SampleMeta, SampleRecord, VariantRecord
from harness.runner import (
    LOCUSTFILE,
    PG_HOME,
    LoadTarget,
    Progress,
    Sample,
    resolve_knobs,
    run_load,
    server_warnings,
    start_upstream,
)
from harness.sampling import ConnectionSampler, Probe
from harness.scenario import MAXIMUM, P99_TARGET_MS, Bound, Scenario

WRAPPER = ROOT / "apps" / "probe_wrapper.py"
# The probe's own code in the app's server: its frames are never the app's.
PROBE_FILES = {str(ROOT / "apps" / name) for name in ("probe_wrapper.py", "instruments.py")}
# The wrapper's one-line errors (apps/probe_wrapper.py ERROR_MARK).
ERROR_MARK = "fastapi-bench-probe: error:"
# Open loop runs at this share of the knee's throughput: busy, but below saturation.
OPEN_LOOP_SHARE = 0.7
# An open loop that fell behind its rate runs once more at this share of it.
OPEN_LOOP_RETRY_SHARE = 0.5
DEFAULT_LEVELS = (1, 10, 50)
DEFAULT_DURATION_S = 10.0
# Loop lag that makes the watchdog capture the loop's stack: above a healthy loop's
# scheduling noise (a few ms), below any stall worth finding.
DEFAULT_STALL_MS = 25.0
STALL_MS = Bound(10_000, "ms", "a loop blocked for 10 s has long been found")
MAX_ID = 2**31 - 1
# The embedded server's database for a probed app: created fresh, owned by the app's role,
# so an app that creates its own tables can.
PROBE_DATABASE = "bench_probe"
# The probe's own routes live under a prefix drawn per run: no app has that route.
PREFIX_FORMAT = "/__bench_probe_{}__"
# The probe's own Pair/Variant, for the runner's Sample (load, folder names) and records.
PROBE_PAIR = Pair(
    name="probe",
    claim_id="probe",
    claim="a user's app",
    sources=(),
    mechanism="",
    variants=(Variant("app", "reference", "/", "the probed app", ()),),
)

_APP_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_HEADER = re.compile(r"^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):\s*(.*)$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PLACEHOLDER = re.compile(r"\{([^}]*)\}")
_IDS = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")
# PostgreSQL's words for an extension the server does not have.
_MISSING_EXTENSION = re.compile(
    r'extension "([^"]+)" is not available|could not open extension control file "[^"]*/([^/"]+)\.control"'
)
_MISSING_TABLE = re.compile(r'relation "([^"]+)" does not exist')
# The last line of a Python traceback: the exception and its message.
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*$")


# --- the target ---------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What to probe and how, every field checked."""

    app: str  # package.module:attribute
    app_dir: Path
    paths: tuple[str, ...]
    python: str
    python_given: bool  # False: the suite's interpreter or the project's .venv, found by the probe
    headers: dict[str, str] = field(default_factory=dict)
    env_file: Path | None = None
    environment: dict[str, str] = field(default_factory=dict)  # from env_file, added to the caller's
    dsn: str | None = None  # the app's database as libpq reads it (postgresql://); None: embedded
    app_dsn: str | None = None  # the same URL as the user wrote it (postgresql+psycopg://... for SQLAlchemy)
    dsn_env: str = "DATABASE_URL"
    # The SQLAlchemy driver named in the embedded server's URL handed to the app
    # (postgresql+psycopg://...): an app whose interpreter has psycopg but not psycopg2.
    dsn_driver: str = ""
    ids: tuple[int, int] = (1, 1)
    levels: tuple[int, ...] = DEFAULT_LEVELS
    duration_s: float = DEFAULT_DURATION_S
    expect: str = ""  # text the body must contain, or json:KEY
    seed_sql: Path | None = None
    seed_cmd: str = ""
    port: int | None = None
    stall_ms: float = DEFAULT_STALL_MS
    p99_target_ms: float = P99_TARGET_MS
    out: Path | None = None
    # One of the suite's own variants (pair/variant) instead of a user's app: its knobs and
    # seeded table come from the pair, as in `bench.py run`.
    variant: str = ""
    knobs: dict[str, int] = field(default_factory=dict)
    upstream: bool = False  # the variant calls the suite's stub upstream, started beside it

    def shown(self) -> dict[str, Any]:
        """For the manifest: no header values, no environment values, no password."""
        return {
            "app": self.app,
            "app_dir": str(self.app_dir),
            "paths": list(self.paths),
            "python": self.python,
            "headers": sorted(self.headers),
            "env_file": str(self.env_file) if self.env_file else None,
            "environment": sorted(self.environment),
            "dsn": redact(self.dsn) if self.dsn else None,
            "dsn_env": self.dsn_env,
            "dsn_driver": self.dsn_driver or None,
            "ids": list(self.ids),
            "levels": list(self.levels),
            "duration_s": self.duration_s,
            "expect": self.expect,
            "seed_sql": str(self.seed_sql) if self.seed_sql else None,
            "seed_cmd": bool(self.seed_cmd),
            "port": self.port,
            "stall_ms": self.stall_ms,
            "p99_target_ms": self.p99_target_ms,
            "variant": self.variant or None,
            "knobs": dict(self.knobs) if self.variant else None,
        }


# The fields a TOML target file may hold: the command-line options without dashes.
TARGET_FIELDS = (
    "app", "app_dir", "paths", "headers", "env_file", "python", "dsn", "dsn_env", "dsn_driver", "ids", "users",
    "duration",
    "expect", "seed_sql", "seed_cmd", "port", "stall_ms", "p99_target_ms",
)  # fmt: skip


def read_target_file(path: Path) -> dict[str, Any]:
    """A TOML target file's settings; relative paths in it are relative to the file."""
    try:
        values = tomllib.loads(path.read_text())
    except OSError as err:
        raise BenchError(f"{path}: cannot read: {err.strerror or err}") from None
    except ValueError as err:
        raise BenchError(f"{path}: not valid TOML: {err}") from None
    unknown = sorted(set(values) - set(TARGET_FIELDS))
    if unknown:
        raise BenchError(f"{path}: unknown field {unknown[0]!r} (fields: {', '.join(TARGET_FIELDS)})")
    for key in ("app_dir", "env_file", "seed_sql", "python"):
        value = values.get(key)
        if isinstance(value, str) and (key != "python" or "/" in value):
            values[key] = str((path.parent / value).resolve()) if not Path(value).is_absolute() else value
    if isinstance(values.get("headers"), dict):
        values["headers"] = [f"{name}: {value}" for name, value in values["headers"].items()]
    for key in ("paths", "headers"):
        if key in values and not (isinstance(values[key], list) and all(isinstance(v, str) for v in values[key])):
            raise BenchError(f"{path}: field {key!r} must be a list of strings")
    for key in ("users", "ids"):
        if isinstance(values.get(key), list):  # users = [1, 10, 50]; ids = [1, 1000]
            values[key] = ("-" if key == "ids" else ",").join(str(v) for v in values[key])
    for key, value in values.items():
        if key in ("paths", "headers"):
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise BenchError(f"{path}: field {key!r} must be text or a number, got {value!r}"[:200])
    return {key: value if key in ("paths", "headers") else str(value) for key, value in values.items()}


def parse_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as dotenv writes them (comments, blank lines, `export`, quotes)."""
    try:
        text = path.read_text()
    except OSError as err:
        raise BenchError(f"--env-file {path}: cannot read: {err.strerror or err}") from None
    found: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not _ENV_NAME.match(name):
            # The line is not shown: it may hold a secret.
            raise BenchError(f"--env-file {path}:{number}: expected NAME=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        found[name] = value
    return found


def _ids(text: str) -> tuple[int, int]:
    match = _IDS.match(text)
    if not match:
        raise BenchError(f"--ids must be a range A-B of whole numbers, e.g. 1-1000, got {text!r}")
    low, high = int(match.group(1)), int(match.group(2))
    if low > high:
        raise BenchError(f"--ids {text}: the first id must not be above the last")
    if high > MAX_ID:
        raise BenchError(f"--ids {text}: ids must be at most {MAX_ID} (PostgreSQL's integer)")
    return low, high


def _headers(items: list[str]) -> dict[str, str]:
    headers = {}
    for item in items:
        match = _HEADER.match(item.strip())
        if not match:
            raise BenchError(f"--header must be 'Name: value', e.g. 'Authorization: Bearer TOKEN', got {item[:40]!r}")
        headers[match.group(1)] = match.group(2)
    return headers


def _paths(items: list[str]) -> tuple[str, ...]:
    if not items:
        raise BenchError("name at least one --path to load, e.g. --path '/items/{id}'")
    for path in items:
        if not path.startswith("/"):
            raise BenchError(f"--path must start with '/', got {path!r}")
        others = [name for name in _PLACEHOLDER.findall(path) if name != "id"]
        if others:
            raise BenchError(f"--path {path!r}: only {{id}} is filled in, not {{{others[0]}}}")
        if any(c.isspace() for c in path):
            raise BenchError(f"--path {path!r}: a URL path has no spaces (encode them as %20)")
    return tuple(dict.fromkeys(items))


def bounded_number(text: str, what: str, bound: Bound, minimum: float = 0, whole: bool = False) -> float:
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        raise BenchError(f"{what} must be {'a whole number' if whole else 'a number'}, got {text!r}") from None
    if not value == value or value in (float("inf"), float("-inf")):
        raise BenchError(f"{what} must be a finite number, got {text!r}")
    if value <= minimum:
        raise BenchError(f"{what} must be greater than {minimum:g}, got {text!r}")
    if value > bound.maximum:
        raise BenchError(f"{what} must be {bound.text()}, got {text!r}")
    return value


def _python(given: str | None, app_dir: Path) -> tuple[str, bool]:
    """The app's interpreter: as given, else the project's own .venv, else the suite's."""
    if not given:
        for candidate in (app_dir / ".venv" / "bin" / "python", app_dir / "venv" / "bin" / "python"):
            if os.access(candidate, os.X_OK):
                return str(candidate), False
        return sys.executable, False
    found = shutil.which(given) if "/" not in given else given
    if not found or not Path(found).exists():
        raise BenchError(f"--python {given}: no such interpreter")
    if not os.access(found, os.X_OK):
        raise BenchError(f"--python {given}: not executable")
    return str(Path(found).absolute()), True


def harness_dsn(dsn: str) -> str:
    """A SQLAlchemy URL (postgresql+psycopg://, postgresql+asyncpg://) as libpq reads it."""
    return re.sub(r"^postgres(?:ql)?\+\w+://", "postgresql://", dsn)


def build_target(options: dict[str, Any], checks: dict[str, Callable[[str], Any]]) -> Target:
    """A Target from the merged options (command line over target file). `checks` are
    the command line's own parsers for users and duration, so bounds and words agree."""
    app = options.get("app")
    if not app:
        raise BenchError("name the app with --app package.module:app (the object uvicorn would serve)")
    if not _APP_SPEC.match(app):
        raise BenchError(f"--app must be package.module:attribute, e.g. app.main:app, got {app!r}")
    app_dir = Path(options.get("app_dir") or ".").expanduser()
    if not app_dir.is_dir():
        raise BenchError(f"--app-dir {app_dir} is not a folder")
    app_dir = app_dir.resolve()
    paths = _paths(list(options.get("paths") or []))
    ids = _ids(options["ids"]) if options.get("ids") else None
    if ids is None and any("{id}" in path for path in paths):
        raise BenchError("a --path has {id}: give the range it is drawn from with --ids A-B, e.g. --ids 1-1000")
    env_file = Path(options["env_file"]).expanduser() if options.get("env_file") else None
    environment = parse_env_file(env_file) if env_file else {}
    python, python_given = _python(options.get("python"), app_dir)
    dsn_env = options.get("dsn_env") or "DATABASE_URL"
    if not _ENV_NAME.match(dsn_env):
        raise BenchError(f"--dsn-env must be an environment variable's name, got {dsn_env!r}")
    dsn = options.get("dsn") or environment.get(dsn_env) or os.environ.get(dsn_env)
    if dsn and not re.match(r"^postgres(ql)?(\+\w+)?://", dsn):
        source = "--dsn" if options.get("dsn") else f"${dsn_env}"
        scheme = dsn.split("://", 1)[0] if "://" in dsn else "no scheme"
        # The URL itself is not shown: it may hold a password redact() does not know to hide.
        raise BenchError(f"{source} must be a postgresql:// URL, got {scheme[:20]!r}")
    dsn_driver = _dsn_driver(options.get("dsn_driver"), bool(dsn))
    levels = checks["users"](options["users"]) if options.get("users") else DEFAULT_LEVELS
    duration = checks["duration"](options["duration"]) if options.get("duration") else DEFAULT_DURATION_S
    seed_sql = Path(options["seed_sql"]).expanduser() if options.get("seed_sql") else None
    if seed_sql and not seed_sql.is_file():
        raise BenchError(f"--seed-sql {seed_sql}: no such file")
    port = None
    if options.get("port"):
        port = int(bounded_number(str(options["port"]), "--port", Bound(65_535, "", "the highest TCP port"), 0, True))
        if port < 1024 and os.geteuid() != 0:
            raise BenchError(f"--port {port}: ports below 1024 need root; choose one above 1024")
        if not port_is_free(port):
            raise BenchError(f"--port {port}: 127.0.0.1:{port} is in use; choose another port, or leave --port out")
    stall_ms = bounded_number(str(options.get("stall_ms") or DEFAULT_STALL_MS), "--stall-ms", STALL_MS)
    target_ms = bounded_number(
        str(options.get("p99_target_ms") or P99_TARGET_MS), "--p99-target", MAXIMUM["p99_target_ms"]
    )
    out = Path(options["out"]) if options.get("out") else None
    return Target(
        app=app,
        app_dir=app_dir,
        paths=paths,
        python=python,
        python_given=python_given,
        headers=_headers(list(options.get("headers") or [])),
        env_file=env_file,
        environment=environment,
        dsn=harness_dsn(dsn) if dsn else None,
        app_dsn=dsn,
        dsn_env=dsn_env,
        dsn_driver=dsn_driver,
        ids=ids or (1, 1),
        levels=tuple(sorted(set(levels))),
        duration_s=float(duration),
        expect=options.get("expect") or "",
        seed_sql=seed_sql,
        seed_cmd=options.get("seed_cmd") or "",
        port=port,
        stall_ms=stall_ms,
        p99_target_ms=target_ms,
        out=out,
        variant=options.get("variant") or "",
        knobs=dict(options.get("knobs") or {}),
        upstream=bool(options.get("upstream")),
    )


# --- the database -------------------------------------------------------------------


@contextlib.contextmanager
def probe_database(target: Target) -> Iterator[tuple[Database, str]]:
    """The database to sample and the DSN the app gets: the user's (reached with the
    app's own credentials; read-only), or a fresh database on the embedded server owned
    by the app's role."""
    if target.dsn:
        with database.external(target.dsn) as db:
            yield db, target.app_dsn or target.dsn
        return
    with database.provision(None, PG_HOME) as embedded:
        with contextlib.closing(embedded.connect()) as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {PROBE_DATABASE} WITH (FORCE)")
            cur.execute(f"CREATE DATABASE {PROBE_DATABASE} OWNER {embedded.app_role}")
        fresh = replace(
            embedded,
            dsn=_with_database(embedded.dsn, PROBE_DATABASE),
            app_dsn=_with_database(embedded.variant_dsn, PROBE_DATABASE),
        )
        yield fresh, with_driver(fresh.variant_dsn, target.dsn_driver)


# SQLAlchemy's PostgreSQL drivers (the `+driver` of a URL's scheme).
DSN_DRIVERS = ("asyncpg", "pg8000", "psycopg", "psycopg2", "psycopg2cffi")


def _dsn_driver(value: str | None, dsn_given: bool) -> str:
    if not value:
        return ""
    if dsn_given:
        raise BenchError("--dsn-driver names the driver in the embedded server's URL; your database URL keeps its own")
    if value not in DSN_DRIVERS:
        raise BenchError(f"--dsn-driver must be one of {', '.join(DSN_DRIVERS)}, got {value[:40]!r}")
    return value


def with_driver(dsn: str, driver: str) -> str:
    """postgresql://... as postgresql+DRIVER://... (unchanged without a driver)."""
    if not driver:
        return dsn
    return f"postgresql+{driver}://{dsn.split('://', 1)[1]}"


def _with_database(dsn: str, name: str) -> str:
    return dsn.rsplit("/", 1)[0] + f"/{name}"


def explain_database_error(text: str) -> str | None:
    """A one-line reason for the database errors users can fix, or None."""
    if match := _MISSING_EXTENSION.search(text):
        name = match.group(1) or match.group(2)
        return (
            f"the app needs the PostgreSQL extension {name}, which this server does not have "
            "(the embedded one ships no uuid-ossp or pgcrypto); run against a server that has it with --dsn"
        )
    if match := _MISSING_TABLE.search(text):
        return (
            f"the table {match.group(1)} does not exist: the probe expects a prepared database; "
            "prepare it with --seed-sql FILE or --seed-cmd CMD (e.g. your migrations)"
        )
    return None


def seed(target: Target, app_dsn: str, env: dict[str, str]) -> str:
    """Prepare the database as the user asked (only then); returns how, for the report."""
    if target.seed_sql:
        sql = target.seed_sql.read_text()
        try:
            with contextlib.closing(psycopg2.connect(harness_dsn(app_dsn), connect_timeout=5)) as conn:
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute(sql)
        except psycopg2.Error as err:
            reason = explain_database_error(str(err)) or database.first_line(err)
            raise BenchError(f"--seed-sql {target.seed_sql} failed: {reason}") from None
    if target.seed_cmd:
        _run_seed_cmd(target, env)
    if target.seed_sql and target.seed_cmd:
        return f"--seed-sql {target.seed_sql.name}, then --seed-cmd"
    if target.seed_sql:
        return f"--seed-sql {target.seed_sql.name}"
    if target.seed_cmd:
        return "--seed-cmd"
    return "not by the probe: it expects a prepared database, or one the app prepares at start-up"


SEED_TIMEOUT_S = 600


def prepare_variant(target: Target, db: Database) -> str:
    """A suite variant's seeded table, as `bench.py run` creates it; "" for a user's app."""
    if not target.variant:
        return ""
    database.prepare(db, target.ids[1])
    return f"with the suite's {database.TABLE} table ({target.ids[1]:,} rows), as bench.py run does"


def _run_seed_cmd(target: Target, env: dict[str, str]) -> None:
    proc = subprocess.Popen(
        target.seed_cmd,
        shell=True,
        cwd=target.app_dir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # so a timeout ends the whole command, children included
    )
    try:
        output, _ = proc.communicate(timeout=SEED_TIMEOUT_S)
    except BaseException as err:  # a timeout, or Ctrl-C: the command goes too
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if isinstance(err, subprocess.TimeoutExpired):
            raise BenchError(f"--seed-cmd did not finish within {SEED_TIMEOUT_S} s") from None
        raise
    if proc.returncode != 0:
        lines = [line for line in output.splitlines() if line.strip()]
        reason = explain_database_error(output) or (lines[-1].strip() if lines else "no output")
        raise BenchError(f"--seed-cmd exited with status {proc.returncode}: {redact(reason)[:300]}")


# --- the app's server ---------------------------------------------------------------


def app_environment(target: Target, app_dsn: str) -> dict[str, str]:
    """The caller's environment with the env file's variables, and the database URL in
    `dsn_env` where neither sets it (the embedded server's, or --dsn). A suite variant
    gets the settings `bench.py run` passes (apps/common.py reads them)."""
    env = os.environ | target.environment
    env.setdefault(target.dsn_env, app_dsn)
    if target.variant:
        variant = target.variant.partition("/")[2]
        env |= {"BENCH_DSN": harness_dsn(app_dsn), "BENCH_VARIANT": variant, "BENCH_KNOBS": json.dumps(target.knobs)}
    return env


def variant_options(spec: str, settings: Sequence[str] = ()) -> dict[str, Any]:
    """The target options for one of the suite's variants, `pair/variant`, with its
    pair's knobs as `--set KEY=VALUE` leaves them (checked as `bench.py run` checks them)."""
    from harness import pairs as pairs_mod

    pair_name, _, variant_name = spec.partition("/")
    if not variant_name:
        raise BenchError(f"--variant takes pair/variant, e.g. blocking/async-blocking, got {spec!r}")
    pair = pairs_mod.select([spec])[0]  # an unknown pair or variant raises with a hint
    variant = pair.variant(variant_name)
    if variant.verify_ids is not None:  # the probe draws ids at random; this variant answers only some
        raise BenchError(
            f"{spec} answers only some ids with the row, which the probe's random ids cannot respect; "
            f"measure it with bench.py run --pairs {pair_name}"
        )
    return {
        "app": pair.app,
        "app_dir": str(ROOT),
        "paths": [variant.path],
        "ids": f"1-{Scenario(name='default').rows}",
        "python": sys.executable,
        "variant": spec,
        "knobs": resolve_knobs([pair], list(settings))[pair.name],
        "upstream": pair.upstream,
    }


def explain_start_failure(log: Path, port: int, fallback: str) -> str:
    """One line for a server that exited before answering: the wrapper's own message,
    a port in use, a missing extension, or the last line of the traceback."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        if ERROR_MARK in line:
            return line.split(ERROR_MARK, 1)[1].strip()
    if "address already in use" in text.lower():
        return f"127.0.0.1:{port} is in use; choose another --port, or leave --port out"
    if reason := explain_database_error(text):
        return reason
    last = last_exception_line(text)
    if "Application startup failed" in text and last:
        return f"the app's start-up failed: {last}"
    if last:
        return f"the app's server exited: {last}"
    return " ".join(fallback.split())


def last_exception_line(text: str) -> str:
    """The last 'SomeError: message' line of a log, redacted."""
    found = [line.strip() for line in text.splitlines() if _EXCEPTION_LINE.match(line.strip())]
    return redact(found[-1])[:300] if found else ""


def start_app(
    target: Target, env: dict[str, str], folder: Path, prefix: str, timeout_s: float
) -> tuple[ManagedProcess, int]:
    """The app under the wrapper on loopback: on --port, or on a free port (another
    process can take it between the choice and uvicorn's bind; then another one). A
    suite variant that calls the stub upstream gets one, stopped with the app."""
    if not target.upstream:
        return _start_app(target, env, folder, prefix, timeout_s)
    upstream, upstream_port = start_upstream(folder, Scenario(name="probe", start_timeout_s=timeout_s))
    try:
        server, port = _start_app(
            target, env | {"BENCH_UPSTREAM_URL": f"http://127.0.0.1:{upstream_port}"}, folder, prefix, timeout_s
        )
    except BaseException:
        upstream.stop()
        raise
    server.companions.append(upstream)
    return server, port


def _start_app(
    target: Target, env: dict[str, str], folder: Path, prefix: str, timeout_s: float
) -> tuple[ManagedProcess, int]:
    for attempt in range(3):
        port = target.port or free_port()
        if target.port and not port_is_free(port):
            raise BenchError(f"127.0.0.1:{port} is in use; choose another --port, or leave --port out")
        argv = [
            target.python, str(WRAPPER), "--app", target.app, "--app-dir", str(target.app_dir),
            "--port", str(port), "--prefix", prefix, "--out", str(folder), "--stall-ms", f"{target.stall_ms:g}",
        ]  # fmt: skip
        (folder / "server.log").unlink(missing_ok=True)  # each attempt's reason from its own log
        server = ManagedProcess("the app's server", argv, folder / "server.log", env, target.app_dir)
        try:
            return server.serve(f"http://127.0.0.1:{port}{prefix}/ping", timeout_s), port
        except BenchError as err:
            reason = explain_start_failure(folder / "server.log", port, str(err))
            if "is in use" in reason and not target.port and attempt < 2:
                continue
            raise BenchError(reason) from None
    raise AssertionError("unreachable")


def _shown_url(path: str, item_id: int | None) -> str:
    return path.format(id=item_id) if item_id is not None else path


def check_expect(body: bytes, expect: str) -> bool:
    """`json:KEY` (dots for nesting): the JSON body has that key; else the text is in the body."""
    if expect.startswith("json:"):
        try:
            value: Any = json.loads(body)
        except ValueError:
            return False
        for part in expect[5:].split("."):
            if isinstance(value, list) and value:
                value = value[0]  # a list of objects: the first stands for all
            if not isinstance(value, dict) or part not in value:
                return False
            value = value[part]
        return True
    return expect.encode() in body


def verify_path(port: int, path: str, target: Target, log: Path, timeout_s: float) -> dict[str, Any]:
    """One request: status 200, and the --expect text or key when given. 404, 401 and
    403 get their likely reason; a 500 gets the last line of the app's traceback."""
    item_id = random.randint(*target.ids) if "{id}" in path else None
    shown = _shown_url(path, item_id)
    request = urllib.request.Request(f"http://127.0.0.1:{port}{shown}", headers=target.headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, body = err.code, err.read()
    except OSError as err:
        raise BenchError(f"GET {shown} failed: {err}") from None
    excerpt = " ".join(body[:120].decode(errors="replace").split())
    if status == 401:
        raise BenchError(
            f"GET {shown} answered 401: the app wants credentials; send them with --header 'Authorization: ...'"
        )
    if status == 403:
        sent = "the credentials sent" if target.headers else "a request without credentials"
        raise BenchError(f"GET {shown} answered 403: the app refuses {sent}; send ones it accepts with --header")
    if status == 404:
        raise BenchError(
            f"GET {shown} answered 404 ({excerpt}): no such route, or no row with that id (check --path and --ids)"
        )
    if status != 200:
        time.sleep(0.2)  # the traceback reaches the log just after the response
        text = log.read_text(errors="replace") if log.is_file() else ""
        reason = explain_database_error(text) or last_exception_line(text) or excerpt
        raise BenchError(f"GET {shown} answered {status}: {reason}")
    if target.expect and not check_expect(body, target.expect):
        raise BenchError(f"GET {shown} answered 200 without {target.expect!r} in its body: {excerpt}")
    return {"path": path, "id": item_id, "status": status}


def read_counts(port: int, prefix: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{prefix}/counts", timeout=5) as resp:
            return dict(json.loads(resp.read()))
    except (OSError, ValueError):
        return None


# --- the run ------------------------------------------------------------------------


def probe_scenario(target: Target) -> Scenario:
    top = max(target.levels)
    return Scenario(
        name="probe",
        description=f"bench.py probe {target.app}",
        users=top,
        spawn_rate=float(max(50, top)),
        # Pools filled and every user answered once (the runner's rule) after at least this:
        # 2 s, or half of a shorter measured window, so a quick look stays quick.
        warmup_s=min(2.0, target.duration_s / 2),
        warmup_max_s=20.0,
        duration_s=target.duration_s,
        probe_rate=10.0,
        request_timeout_s=10.0,
        sample_interval_s=0.25,
        rows=target.ids[1],
        start_timeout_s=60.0,  # a user's app may import a lot
        settle_timeout_s=10.0,
        levels=target.levels,
        p99_target_ms=target.p99_target_ms,
    )


@dataclass
class ProbeRun:
    target: Target
    run_dir: Path
    command: list[str]
    prefix: str = field(default_factory=lambda: PREFIX_FORMAT.format(secrets.token_hex(4)))
    samples: list[SampleRecord] = field(default_factory=list)

    @property
    def scenario(self) -> Scenario:
        return probe_scenario(self.target)


def measure(
    run: ProbeRun, db: Database, env: dict[str, str], sample: Sample, progress: Progress, first: bool
) -> SampleRecord:
    """One sample in a fresh server. The first sample's start-up and verification are
    the preflight: a problem there is the user's to fix and ends the run (exit 2)."""
    target, scenario = run.target, run.scenario
    folder = run.run_dir / "samples" / sample.id
    folder.mkdir(parents=True, exist_ok=True)
    meta: SampleMeta = {
        "pair": PROBE_PAIR.name,
        "variant": sample.id,
        "role": "reference",
        "sample": sample.id,
        "mode": sample.mode,
        "users": sample.users,
        "rate": sample.rate,
        "block": 1,
        "primary": sample.primary,
        "workers": 0,
        "status": "running",
        "error": None,
    }
    store.write_json(folder / "sample.json", meta)
    extra: dict[str, Any] = {}
    loading = False
    # The preflight is silent: a mistake there is the one line the user sees.
    if not first:
        progress.say("starting the app")
    try:
        # Another client's backends stay where they are: the probe only notes them.
        meta["baseline_connections"] = database.wait_for_backends(db, 0, 0)
        server, port = start_app(target, env, folder, run.prefix, scenario.start_timeout_s)
        try:
            extra["verification"] = [
                verify_path(port, path, target, folder / "server.log", scenario.request_timeout_s)
                for path in target.paths
            ]
            loading = True  # from here on a failure is the sample's, not the user's input
            if first:
                print(f"run folder: {run.run_dir}", file=sys.stderr)
            progress.say("verified; load running")
            sampler = ConnectionSampler(
                db, server.pid, folder / "connections.csv", scenario.sample_interval_s, db.server_pid
            )
            ping = Probe(
                "127.0.0.1", port, folder / "probe.csv", scenario.probe_rate, scenario.request_timeout_s,
                path=f"{run.prefix}/ping",
            )  # fmt: skip
            load = LoadTarget(
                target.paths,
                target.ids[0],
                target.ids[1],
                _load_expect(target.expect),
                target.headers,
                connect_path=f"{run.prefix}/ping",
            )
            with machine_load_lock(progress.say), sampler, ping:
                run_load(port, target.paths[0], scenario, sample, folder, progress, sampler, server, load)
            extra["counts"] = read_counts(port, run.prefix)
        finally:
            server.stop()
            meta["warnings"] = server_warnings(folder / "server.log")
        meta["status"] = "ok"
    except BenchError as err:
        if first and not loading:  # the preflight: the app does not start, or a path does not answer
            raise
        meta |= {"status": "failed", "error": redact(str(err))}
        meta["server_log_tail"] = log_tail(folder / "server.log", 15)
        progress.say(f"FAILED: {meta['error']}")
    except psycopg2.Error as err:
        meta |= {"status": "failed", "error": f"database error: {database.first_line(err)}"}
        progress.say(f"FAILED: {meta['error']}")
    finally:
        if meta["status"] == "running":
            meta |= {"status": "failed", "error": "interrupted"}
        with contextlib.suppress(Exception):  # read-only: wait, never terminate
            meta["settled_connections"] = database.wait_for_backends(
                db, meta.get("baseline_connections") or 0, scenario.settle_timeout_s
            )
        store.compress_raw(folder)
        store.write_json(folder / "sample.json", meta)
        store.write_json(folder / "probe.json", extra)
    record = analysis.summarize_sample(folder)
    if record["status"] == "ok":
        progress.say(runner.sample_line(record))
    return record


def _load_expect(expect: str) -> str:
    """Under load only text is checked (cheap); a json: key is checked at verification."""
    return "" if expect.startswith("json:") else expect


def knee_rate(records: list[SampleRecord], target_ms: float) -> tuple[float, str]:
    """The open loop's rate: OPEN_LOOP_SHARE of the knee's throughput, or of the lowest
    level's when no level kept p99 under the target; and why."""
    levels = [stats.Level(r["users"] or 0, r["rps"] or 0.0, r["p99_ms"] or 0.0) for r in records if r["status"] == "ok"]
    if not levels:
        return 0.0, "no closed-loop level measured"
    found = stats.knee(levels, target_ms)
    if found is not None:
        users = f"{found.users} user" + ("" if found.users == 1 else "s")
        return max(1.0, round(OPEN_LOOP_SHARE * found.rps, 1)), f"70% of the knee ({users})"
    lowest = min(levels, key=lambda level: level.users)
    return max(1.0, round(OPEN_LOOP_SHARE * lowest.rps, 1)), (
        f"70% of the {lowest.users}-user rate: no level kept p99 under {target_ms:g} ms"
    )


# Open loop: enough users that requests due at the rate find a free one while earlier
# ones are still answered (each user sends one at a time), up to this response time.
OPEN_LOOP_COVER_S = 0.05


def open_loop_users(target: Target, rate: float) -> int:
    """The sweep's top level, or more where the rate needs them; 10 at least."""
    needed = math.ceil(rate * OPEN_LOOP_COVER_S)
    return min(MAXIMUM["users"].maximum, max(max(target.levels), 10, needed))


def run_probe(target: Target, command: list[str]) -> Path:
    """Measure the target and write the run folder; rendering is harness.probe_report's."""
    run_dir = store.new_run_dir(f"probe-{_slug(target.app)}", target.out)
    run = ProbeRun(target, run_dir, command)
    manifest = store.new_manifest(run.scenario.to_dict(), {}, command)
    manifest |= {"kind": "probe", "target": target.shown(), "writes_top_report": False, "prefix": run.prefix}
    store.write_json(run_dir / "manifest.json", manifest)
    measured = False
    try:
        with probe_database(target) as (db, app_dsn):
            manifest["database"] = {"source": db.source, "dsn": db.redacted, **database.server_settings(db)}
            env = app_environment(target, app_dsn)
            manifest["database"]["prepared"] = prepare_variant(target, db) or seed(target, app_dsn, env)
            store.write_json(run_dir / "manifest.json", manifest)
            measured = _measure_all(run, db, env, manifest)
        manifest["status"] = "complete"
    except BaseException as err:
        manifest["status"] = "interrupted" if isinstance(err, (KeyboardInterrupt, Interrupted)) else "failed"
        if not measured and isinstance(err, BenchError):
            _remove_unmeasured(run_dir, keep_folder=target.out is not None)
        raise
    finally:
        if (run_dir / "manifest.json").is_file():
            manifest["finished"] = store.now()
            store.write_json(run_dir / "manifest.json", manifest)
            if run.samples:
                write_summary(run, manifest)
    return run_dir


def _remove_unmeasured(run_dir: Path, keep_folder: bool) -> None:
    """A run that measured nothing leaves no run behind (an --out folder stays, empty)."""
    if not keep_folder:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for path in run_dir.iterdir():
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _measure_all(run: ProbeRun, db: Database, env: dict[str, str], manifest: dict[str, Any]) -> bool:
    target = run.target
    plan = [Sample(PROBE_PAIR, PROBE_PAIR.variants[0], "closed", users, 0.0, 1, True) for users in target.levels]
    progress = Progress(len(plan) + 1)
    for index, sample in enumerate(plan):
        progress.step(f"{target.app} closed loop", f"{sample.users} users")
        run.samples.append(measure(run, db, env, sample, progress, first=index == 0))
        write_summary(run, manifest)
    rate, why = knee_rate(run.samples, target.p99_target_ms)
    manifest["open_loop"] = {"rate": rate, "why": why}
    if rate > 0:
        record = _open_loop(run, db, env, progress, rate, why)
        write_summary(run, manifest)
        # Behind its rate, requests queued and its users set the concurrency: a busy moment
        # of a shared machine, or a knee measured optimistically. Once more at half the rate.
        retry = round(OPEN_LOOP_RETRY_SHARE * rate, 1)
        if analysis.fell_behind(record) and retry >= 1:
            achieved = record.get("achieved_rps") or 0.0
            why = f"{OPEN_LOOP_RETRY_SHARE:.0%} of {rate:g} req/s, where it achieved {achieved:.0f}"
            manifest["open_loop"]["retry"] = {"rate": retry, "why": why}
            progress.total += 1
            _open_loop(run, db, env, progress, retry, why)
    return True


def _open_loop(
    run: ProbeRun, db: Database, env: dict[str, str], progress: Progress, rate: float, why: str
) -> SampleRecord:
    target = run.target
    sample = Sample(PROBE_PAIR, PROBE_PAIR.variants[0], "open", open_loop_users(target, rate), rate, 1, False)
    progress.step(f"{target.app} open loop", f"{rate:g} req/s ({why})")
    record = measure(run, db, env, sample, progress, first=False)
    run.samples.append(record)
    return record


# `--ui`: Locust's web UI stays up at most this long (minutes), then everything stops.
UI_MINUTES = 30.0
UI_MAX_MINUTES = Bound(600, "minutes", "a session of 10 hours by hand is a soak; use --duration")


def run_ui(target: Target, minutes: float, say: Callable[[str], None]) -> None:
    """The app under the wrapper and Locust's web UI against it, both on loopback, for
    exploring by hand: until Ctrl-C, the time limit, or either process exits. The
    machine-wide load lock is held meanwhile, so no benchmark measures beside it."""
    prefix = PREFIX_FORMAT.format(secrets.token_hex(4))
    folder = Path(tempfile.mkdtemp(prefix="bench-probe-ui-"))  # the servers' logs and instruments
    died: int | None = None
    with probe_database(target) as (db, app_dsn), machine_load_lock(say):
        prepare_variant(target, db)
        server, port = start_app(target, app_environment(target, app_dsn), folder, prefix, 60.0)
        try:  # started: stop it, do not re-enter
            for path in target.paths:
                verify_path(port, path, target, folder / "server.log", 10.0)
            web_port = free_port()
            argv = [
                python_bin(), "-m", "locust", "-f", str(LOCUSTFILE), "--host", f"http://127.0.0.1:{port}",
                "--web-host", "127.0.0.1", "--web-port", str(web_port), "--bench-paths", json.dumps(target.paths),
                "--bench-id-min", str(target.ids[0]), "--bench-rows", str(target.ids[1]), "--bench-check-body", "0",
            ]  # fmt: skip
            argv += [f"--bench-expect={_load_expect(target.expect)}"] if _load_expect(target.expect) else []
            env = os.environ | {"PYTHONPATH": str(ROOT)}
            if target.headers:
                env["BENCH_HEADERS"] = json.dumps(target.headers)
            with ManagedProcess("Locust's web UI", argv, folder / "locust.log", env, ROOT) as ui:
                ui.wait_until(lambda: http_ok(f"http://127.0.0.1:{web_port}/"), 30.0, "serving its web UI")
                what = target.variant or target.app
                say(
                    f"Locust's web UI: http://127.0.0.1:{web_port} against {what} on 127.0.0.1:{port} "
                    f"(its logs and stalls in {folder}); Ctrl-C stops both, at the latest in {minutes:g} min"
                )
                deadline = time.monotonic() + minutes * 60
                stopped_by = f"the time limit ({minutes:g} min)"
                try:
                    while time.monotonic() < deadline and ui.exited() is None and server.exited() is None:
                        time.sleep(0.5)
                except KeyboardInterrupt:
                    stopped_by = "Ctrl-C"  # the way to end a session by hand, not a failure
                else:
                    if ui.exited() is not None:
                        stopped_by = "Locust's exit"
                died = server.exited()
        finally:
            server.stop()
    if died is not None:
        raise BenchError(f"the app's server exited: {last_exception_line(log_tail(folder / 'server.log', 40))}")
    say(f"stopped by {stopped_by}: Locust's web UI and the app are down (their logs in {folder})")


def _slug(app: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", app.split(":")[0]).strip("-")[:40] or "app"


# --- what the run shows -------------------------------------------------------------


def _probe_extra(folder: Path) -> dict[str, Any]:
    try:
        return dict(store.read_json(folder / "probe.json"))
    except (OSError, ValueError):
        return {}


def server_info(folder: Path) -> dict[str, Any]:
    """What the wrapper wrote at the server's stop (versions, pools, tokens, final counts)."""
    try:
        return dict(store.read_json(folder / "server_info.json"))
    except (OSError, ValueError):
        return {}


def is_app_frame(filename: str, app_dir: Path, library_paths: list[str]) -> bool:
    """A frame in the user's code: under the app's folder, outside any installed package
    (a project's own .venv lives under its folder too) and outside the probe's own files."""
    if not filename.startswith(str(app_dir) + os.sep):
        return False
    if any(filename.startswith(path + os.sep) for path in library_paths if path):
        return False
    parts = Path(filename).parts
    return "site-packages" not in parts and "dist-packages" not in parts and filename not in PROBE_FILES


def blocking_site(stack: list[list[Any]], app_dir: Path, library_paths: list[str]) -> tuple[list[Any], bool]:
    """The innermost frame in the user's code (True), else the innermost frame (False)."""
    for frame in stack:
        if is_app_frame(str(frame[0]), app_dir, library_paths):
            return frame, True
    return stack[0], False


def _where(frame: list[Any], app_dir: Path) -> str:
    path = Path(str(frame[0]))
    shown = path.relative_to(app_dir) if path.is_relative_to(app_dir) else path
    return f"{shown}:{frame[1]}"


def stall_sites(run_dir: Path, samples: list[SampleRecord], app_dir: Path) -> dict[str, Any]:
    """The stacks that blocked the loop, grouped by the line in the user's code they were
    on, most stalls first. Each stall is credited to the stack the watchdog saw most
    often while it lasted, with the lag the loop's next heartbeat measured."""
    sites: dict[tuple[str, int], dict[str, Any]] = {}
    captured = missed = 0
    for record in samples:
        folder = run_dir / "samples" / str(record["sample"])
        info = server_info(folder)
        libraries = [str(p) for p in info.get("library_paths") or []]
        missed += int((info.get("watchdog") or {}).get("stalls_missed") or 0)
        window = analysis.measured_window(folder, analysis.read_tallies(folder))
        for stall in analysis.read_stalls(folder, window):
            if not stall.get("samples"):
                continue
            captured += 1
            stack = stall["samples"][0][1]
            site, in_app = blocking_site(stack, app_dir, libraries)
            key = (str(site[0]), int(site[1] or 0))
            entry = sites.setdefault(
                key,
                {
                    "file": str(site[0]),
                    "where": _where(site, app_dir),
                    "line": int(site[1] or 0),
                    "function": str(site[2]),
                    "in_app": in_app,
                    "code": linecache.getline(str(site[0]), int(site[1] or 0)).strip(),
                    "blocked_in": f"{_where(stack[0], app_dir)} {stack[0][2]}",
                    "stack": [f"{_where(frame, app_dir)} {frame[2]}" for frame in stack[:12]],
                    "stalls": 0,
                    "lag_ms_total": 0.0,
                    "lag_ms_max": 0.0,
                    "samples": [],
                },
            )
            lag = float(stall["lag_ms"])
            entry["stalls"] += 1
            entry["lag_ms_total"] = round(entry["lag_ms_total"] + lag, 2)
            entry["lag_ms_max"] = max(entry["lag_ms_max"], lag)
            if record["sample"] not in entry["samples"]:
                entry["samples"].append(record["sample"])
    ranked = sorted(sites.values(), key=lambda s: (-s["stalls"], -s["lag_ms_total"]))
    return {"captured": captured, "missed": missed, "sites": ranked}


def pool_limit(pool: dict[str, Any]) -> int:
    """The most connections a watched pool lends at once: size + overflow (0: unknown)."""
    return (pool.get("size") or 0) + max(0, pool.get("max_overflow") or 0)


def pool_figures(run_dir: Path, record: SampleRecord) -> dict[str, Any]:
    """The watched pool's checked-out peak in the window, and its limits."""
    folder = run_dir / "samples" / str(record["sample"])
    info = server_info(folder)
    pools = info.get("pools") or []
    out: dict[str, Any] = {"pools": pools, "thread_tokens": info.get("thread_tokens")}
    path = store.raw(folder, "loop_lag.csv")
    window = analysis.measured_window(folder, analysis.read_tallies(folder))
    if pools and path.is_file() and window is not None:
        frame = pd.read_csv(path)
        frame = frame[(frame["time"] >= window[0]) & (frame["time"] <= window[1])]
        if "pool_checked_out" in frame and frame["pool_checked_out"].notna().any():
            checked_out = frame["pool_checked_out"].dropna()
            out["pool_checked_out_peak"] = int(checked_out.max())
            limit = pool_limit(pools[0])
            if limit:
                # How long it stayed at its limit, not only whether it touched it once.
                out["pool_at_limit_share"] = float((checked_out >= limit).mean())
    counts = (info.get("counts") or {}) if info else {}
    out["counts"] = counts
    return out


def idle_in_transaction(run_dir: Path, record: SampleRecord) -> dict[str, Any]:
    """Backends `idle in transaction` in the measured window: the peak and mean count, and
    the share of samples in which one had sat so for HELD_TRANSACTION_MS or more, which
    tells a transaction held across slow work from one caught between two statements."""
    folder = run_dir / "samples" / str(record["sample"])
    path = store.raw(folder, "connections.csv")
    window = analysis.measured_window(folder, analysis.read_tallies(folder))
    out: dict[str, Any] = {
        "idle_in_transaction_peak": None, "idle_in_transaction_mean": None,
        "idle_in_transaction_held_share": None, "idle_in_transaction_oldest_ms": None,
    }  # fmt: skip
    if not path.is_file() or window is None:
        return out
    frame = pd.read_csv(path)
    frame = frame[(frame["time"] >= window[0]) & (frame["time"] <= window[1])]
    values = frame["idle_in_transaction"].dropna() if "idle_in_transaction" in frame else pd.Series(dtype=float)
    if not len(values):
        return out
    out |= {"idle_in_transaction_peak": int(values.max()), "idle_in_transaction_mean": round(float(values.mean()), 2)}
    if "idle_in_transaction_oldest_ms" in frame:  # runs sampled before it was recorded have counts only
        ages = pd.to_numeric(frame.loc[values.index, "idle_in_transaction_oldest_ms"], errors="coerce").fillna(0.0)
        out["idle_in_transaction_held_share"] = round(float((ages >= HELD_TRANSACTION_MS).mean()), 3)
        out["idle_in_transaction_oldest_ms"] = round(float(ages.max()), 1)
    return out


# A backend idle in transaction this long (ms) is held across something slow (an upstream
# call, a stalled loop): a statement's round trip, even with threads queued for the GIL on
# a busy machine, leaves it there for milliseconds.
HELD_TRANSACTION_MS = 100.0


# SQLAlchemy's message when a checkout waited `pool_timeout` for a connection in vain
# (sqlalchemy.exc.TimeoutError), as the server's log prints the exception.
_POOL_TIMEOUT = re.compile(r"TimeoutError: QueuePool limit of size (\d+) overflow (-?\d+) reached")
# A log record's first line in uvicorn's default format: one traceback per record.
_LOG_RECORD = re.compile(r"^(CRITICAL|ERROR|WARNING|INFO|DEBUG):")


def pool_timeouts(folder: Path) -> dict[str, Any]:
    """SQLAlchemy pool checkouts that timed out, counted from the server's log (the whole
    sample, warm-up included: the log has no times), at most one per logged record so a
    chained traceback is not counted twice; with the size and overflow the message names."""
    try:
        lines = (folder / "server.log").read_text(errors="replace").splitlines()
    except OSError:
        return {"pool_timeouts": 0}
    # Without uvicorn's record lines (an app's own log format), each message counts.
    by_record = any(_LOG_RECORD.match(line) for line in lines)
    count, limits, counted = 0, None, False
    for line in lines:
        if _LOG_RECORD.match(line):
            counted = False
        if (match := _POOL_TIMEOUT.search(line)) and not counted:
            count, counted = count + 1, by_record
            limits = [int(match.group(1)), int(match.group(2))]
    out: dict[str, Any] = {"pool_timeouts": count}
    if limits:
        out["pool_timeout_limits"] = {"size": limits[0], "max_overflow": limits[1]}
    return out


def per_path(run_dir: Path, record: SampleRecord) -> list[dict[str, Any]]:
    """Locust's own figures per path (its statistics group requests by path template)."""
    folder = run_dir / "samples" / str(record["sample"])
    path = store.raw(folder, "locust_stats.csv")
    if not path.is_file():
        return []
    frame = pd.read_csv(path)
    rows = frame[frame["Name"] != "Aggregated"]
    return [
        {
            "path": str(row["Name"]).replace(":id", "{id}"),
            "requests": int(row["Request Count"]),
            "failures": int(row["Failure Count"]),
            "p50_ms": float(row["50%"]),
            "p99_ms": float(row["99%"]),
        }
        for _, row in rows.iterrows()
    ]


def write_summary(run: ProbeRun, manifest: dict[str, Any]) -> None:
    """summary.json: one record per load (closed-u1, closed-u10, ..., open-rate...), the
    knee, the stacks that blocked the loop, pool and connection figures, and the diagnosis."""
    from harness import probe_report

    samples = run.samples
    records: list[VariantRecord] = [analysis.combine([sample]) for sample in samples]
    closed = [r for r in samples if r.get("mode") == "closed" and r["status"] == "ok"]
    levels = [stats.Level(r["users"] or 0, r["rps"] or 0.0, r["p99_ms"] or 0.0) for r in closed]
    knee = stats.knee(levels, run.target.p99_target_ms)
    extras = {
        str(r["sample"]): {
            "paths": per_path(run.run_dir, r),
            **idle_in_transaction(run.run_dir, r),
            **pool_figures(run.run_dir, r),
            **pool_timeouts(run.run_dir / "samples" / str(r["sample"])),
        }
        for r in samples
        if r["status"] == "ok"
    }
    first_info = next((info for r in samples if (info := server_info(run.run_dir / "samples" / str(r["sample"])))), {})
    summary: dict[str, Any] = {
        "format_version": store.FORMAT_VERSION,
        "kind": "probe",
        "scenario": "probe",
        "app": run.target.app,
        "confidence": stats.CONFIDENCE,
        "server": {k: v for k, v in first_info.items() if k not in ("counts", "watchdog")},
        "watchdog": {"threshold_ms": run.target.stall_ms},
        "variants": [{k: v for k, v in r.items() if k != "buckets"} for r in records],
        "knee": asdict(knee) if knee else None,
        "open_loop": manifest.get("open_loop"),
        "stalls": stall_sites(run.run_dir, [r for r in samples if r["status"] == "ok"], run.target.app_dir),
        "by_sample": extras,
        "samples": [{k: v for k, v in s.items() if k != "buckets"} for s in samples],
    }
    summary["diagnosis"] = probe_report.diagnose(summary, manifest)
    store.write_json(run.run_dir / "summary.json", summary)


def shell_join(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)
