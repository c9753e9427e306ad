"""Serve a user's FastAPI (or any ASGI) app under the suite's in-server instruments.

`bench.py probe` runs this file with the app's own interpreter (`--python`), from the
app's folder and with the app's environment, unchanged:

    python apps/probe_wrapper.py --app package.module:app --app-dir DIR --port 8123 \
        --prefix /__bench_probe_1a2b3c__ --out RUN/SAMPLE

It needs nothing beyond the standard library, anyio and uvicorn (what `fastapi[standard]`
installs), and imports nothing of the suite's but apps/instruments.py, which it loads
by file path under a private name: a project with its own `apps`, `harness` or
`instruments` package still gets its own.

The app object is served as it is, inside a thin ASGI wrapper that adds:
- `<prefix>/ping`, the probe's `/ping` (an async route doing nothing), and
  `<prefix>/counts`, the instruments' counts, on a prefix the harness draws at random
  per run, so it cannot collide with the app's own routes;
- the loop-lag monitor with anyio's worker-thread tokens (instruments.record_loop);
- SQLAlchemy pool counts, when the app created an engine (instruments.watch_pool);
- the stack watchdog (instruments.StackWatchdog).

A problem the user must fix is printed as one line starting with ERROR_MARK, and the
process exits with status 3; the harness shows that line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import importlib.util
import json
import os
import sys
import sysconfig
import traceback
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
ERROR_MARK = "fastapi-bench-probe: error:"
EXIT_USER_ERROR = 3
# Versions recorded with the run: what the app ran on, from the app's interpreter.
PACKAGES = (
    "fastapi", "starlette", "uvicorn", "anyio", "pydantic", "sqlalchemy", "sqlmodel", "psycopg", "psycopg2",
    "psycopg2-binary", "asyncpg", "uvloop", "httptools",
)  # fmt: skip


def fail(message: str) -> None:
    print(f"{ERROR_MARK} {message}", file=sys.stderr, flush=True)
    sys.exit(EXIT_USER_ERROR)


def load_private(name: str) -> ModuleType:
    """One of the suite's in-server modules by file path, under a name no app uses."""
    spec = importlib.util.spec_from_file_location(f"_fastapi_bench_{name}", HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _missing_variable(err: BaseException) -> str | None:
    """The variable name when the app read os.environ[NAME] and it was not set."""
    if not isinstance(err, KeyError) or not err.args:
        return None
    frames = traceback.extract_tb(err.__traceback__)
    innermost = frames[-1] if frames else None
    if innermost is None or innermost.name != "__getitem__":
        return None
    # os is frozen into the interpreter since 3.11: its frames say "<frozen os>".
    if innermost.filename == "<frozen os>" or Path(innermost.filename).name == "os.py":
        return str(err.args[0])
    return None


def _missing_settings(err: BaseException) -> list[str]:
    """The fields a pydantic-settings class found missing: environment the app needs."""
    if type(err).__name__ != "ValidationError" or not callable(getattr(err, "errors", None)):
        return []
    try:
        return [".".join(map(str, e["loc"])).upper() for e in err.errors() if e.get("type") == "missing"]
    except Exception:  # not pydantic's ValidationError after all
        return []


def one_line(err: BaseException) -> str:
    """'SomeError: message' on one line, however many lines the message has."""
    text = " ".join("".join(traceback.format_exception_only(type(err), err)).split())
    return text if len(text) <= 300 else text[:297] + "..."


def import_app(spec: str, app_dir: Path) -> Any:
    """`module:attribute` from the app's folder (already first on sys.path)."""
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except BaseException as err:  # the app's import may raise anything, SystemExit included
        if isinstance(err, KeyboardInterrupt):
            raise
        if (name := _missing_variable(err)) is not None:
            fail(f"{module_name} needs the environment variable {name}, which is not set (give it with --env-file)")
        if missing := _missing_settings(err):
            fail(f"{module_name} needs settings that are not set: {', '.join(missing)} (give them with --env-file)")
        hint = ""
        if isinstance(err, ModuleNotFoundError) and err.name == module_name.split(".")[0]:
            hint = f" (is --app-dir the project's folder? it is {app_dir})"
        fail(f"{module_name} does not import: {one_line(err)}{hint}")
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            names = ", ".join(n for n in dir(module) if not n.startswith("_"))[:200]
            fail(f"{module_name} has no attribute {attribute!r} (it has: {names})")
        target = getattr(target, part)
    if not callable(target):
        fail(f"{spec} is a {type(target).__name__}, not an ASGI app")
    return target


def sqlalchemy_pools() -> list[Any]:
    """The pools of the SQLAlchemy engines this process has created so far (an AsyncEngine
    wraps a sync Engine, so it is found too), each once."""
    if "sqlalchemy" not in sys.modules:
        return []
    from sqlalchemy.engine import Engine

    pools: dict[int, Any] = {}
    for obj in gc.get_objects():
        if isinstance(obj, Engine):
            pools.setdefault(id(obj.pool), obj.pool)
    return list(pools.values())


def pool_limits(pool: Any) -> dict[str, Any]:
    """What the pool allows: size, overflow and checkout timeout of a QueuePool; the
    class alone for pools without them (NullPool, StaticPool)."""
    limits: dict[str, Any] = {"class": type(pool).__name__}
    for key, read in (("size", "size"), ("timeout_s", "timeout")):
        if callable(getattr(pool, read, None)):
            with contextlib.suppress(Exception):  # a pool class without the figure
                limits[key] = read_number(getattr(pool, read)())
    if isinstance(getattr(pool, "_max_overflow", None), int):
        limits["max_overflow"] = pool._max_overflow
    return limits


def read_number(value: Any) -> float | int:
    return value if isinstance(value, int) else float(value)


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


class ProbeApp:
    """The user's ASGI app, with the probe's routes and instruments around it."""

    def __init__(
        self,
        app: Any,
        prefix: str,
        out: Path,
        instruments: ModuleType,
        stall_ms: float,
    ) -> None:
        self.app = app
        self.prefix = prefix.rstrip("/")
        self.out = out
        self.instruments = instruments
        self.watchdog = instruments.StackWatchdog(str(out / "stalls.jsonl"), threshold_ms=stall_ms)
        self.pools: list[Any] = []
        self._recorder: asyncio.Task[None] | None = None
        self._stopped = False

    # --- instruments -------------------------------------------------------------------
    def _watch_pools(self) -> None:
        """The app's SQLAlchemy pool, once its engine exists (at import, or in its
        lifespan). The instruments watch one pool per process; the others are listed."""
        if self.pools:
            return
        self.pools = sqlalchemy_pools()
        if self.pools:
            self.instruments.watch_pool(self.pools[0])

    def _start(self) -> None:
        if self._recorder is not None:
            return
        self._recorder = asyncio.get_running_loop().create_task(
            self.instruments.record_loop(str(self.out / "loop_lag.csv"))
        )
        self.watchdog.start()

    async def _stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.watchdog.stop()
        if self._recorder is not None:
            self._recorder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recorder
        self._write_counts()

    def _info(self) -> dict[str, Any]:
        import anyio.to_thread

        limiter = anyio.to_thread.current_default_thread_limiter()
        return {
            "python": sys.version.split()[0],
            "executable": sys.executable,
            "loop": type(asyncio.get_running_loop()).__module__,
            "thread_tokens": int(limiter.total_tokens),
            "pools": [pool_limits(pool) for pool in self.pools],
            "packages": versions(),
            # Where this interpreter's own code lives: frames there are not the app's.
            "library_paths": sorted({sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}),
            "watchdog": self.watchdog.summary(),
            "counts": self.instruments.counts(),
        }

    def _write_counts(self) -> None:
        try:
            info = self._info()
        except RuntimeError:  # no running loop: nothing measured
            return
        tmp = self.out / ".server_info.json.tmp"
        tmp.write_text(json.dumps(info, indent=2))
        os.replace(tmp, self.out / "server_info.json")

    # --- ASGI --------------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        self._start()  # an app that ignores lifespan gets its instruments on the first request
        if scope["type"] == "http" and scope["path"].startswith(self.prefix + "/"):
            await self._serve_probe(scope, send)
            return
        await self.app(scope, receive, send)

    async def _lifespan(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The app's own lifespan, with the instruments started before it and the pools
        looked for once its start-up (which may create the engine) is complete."""
        self._start()
        started = False

        async def send_around(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "lifespan.startup.complete":
                started = True
                self._watch_pools()
                self._write_counts()
            elif message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                # Before uvicorn hears it: once it has, it ends the loop and cancels what runs on it.
                await self._stop()
            await send(message)

        try:
            await self.app(scope, receive, send_around)
        except BaseException:
            # An app without lifespan support raises before its start-up completes, and
            # uvicorn ("auto") serves it anyway: the instruments keep running for its requests.
            if started:
                await self._stop()
            raise
        await self._stop()

    async def _serve_probe(self, scope: dict[str, Any], send: Any) -> None:
        route = scope["path"][len(self.prefix) :]
        if route == "/ping":
            body = b'{"pong":true}'
        elif route == "/counts":
            # Also to the file: an app without lifespan support never reaches _stop's write.
            self._write_counts()
            body = json.dumps(self._info()).encode()
        else:
            body, status = b'{"detail":"not a probe route"}', 404
            await _respond(send, status, body)
            return
        await _respond(send, 200, body)


async def _respond(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", required=True, help="package.module:app")
    parser.add_argument("--app-dir", required=True, type=Path)
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--prefix", required=True, help="the probe's own routes live under this path")
    parser.add_argument("--out", required=True, type=Path, help="where the instruments write")
    parser.add_argument("--stall-ms", type=float, default=25.0, help="loop lag that makes the watchdog look")
    args = parser.parse_args()

    # This file's folder is sys.path[0] when run as a script: the app's folder replaces
    # it, so the app imports its own modules exactly as `uvicorn` run from there would.
    sys.path[0] = str(args.app_dir.resolve())
    try:
        import uvicorn
    except ImportError:
        fail(
            f"{sys.executable} has no uvicorn: install it in the app's environment "
            "(`pip install uvicorn`; `fastapi[standard]` brings it)"
        )
    try:
        import anyio  # noqa: F401 - the instruments need it; FastAPI brings it
    except ImportError:
        fail(f"{sys.executable} has no anyio: is FastAPI installed in this environment?")
    instruments = load_private("instruments")
    app = import_app(args.app, args.app_dir.resolve())
    args.out.mkdir(parents=True, exist_ok=True)
    wrapped = ProbeApp(app, args.prefix, args.out, instruments, args.stall_ms)
    wrapped._watch_pools()  # engines created at import
    config = uvicorn.Config(
        wrapped,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=3,
        lifespan="auto",
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
