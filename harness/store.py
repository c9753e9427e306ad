"""The run folder: its layout, atomic writes, and the manifest.

results/<run-id>/
    manifest.json              environment, versions, scenario, knobs, status
    summary.json               one record per variant (+ verdicts), rewritten after each
    REPORT.md, charts/         rendered from the files above and below
    calibration/               what the load generator drove against a bare endpoint
    <pair>/<variant>/
        variant.json           what ran (role, path, code, knobs)
        <sample>/              one measurement in a fresh server, e.g. closed-u50-r2:
            sample.json        its load, status, verification, counters, warnings
            locust_*.csv, probe.csv, connections.csv, loop_lag.csv, phases.json, *.log
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import platform
import shutil
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, cast

from harness.pairs import ROOT, BenchError
from harness.records import Summary

FORMAT_VERSION = 2  # 2: one folder per sample under each variant
RESULTS_DIR = ROOT / "results"
PACKAGES = [
    "fastapi",
    "starlette",
    "uvicorn",
    "anyio",
    "pydantic",
    "locust",
    "asyncpg",
    "psycopg2-binary",
    "SQLAlchemy",
    "sqlmodel",
    "psycopg",
    "uvloop",
    "httptools",
]


def write_json(path: Path, data: Any) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=2, sort_keys=False, default=str)
            out.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def read_summary(run_dir: Path) -> Summary:
    """summary.json as harness.analysis.write_summary writes it: the one place its
    records are taken to be what they say they are."""
    return cast(Summary, read_json(run_dir / "summary.json"))


def new_run_dir(scenario: str, out: Path | None) -> Path:
    if out is not None:
        run_dir = out
        if run_dir.exists() and any(run_dir.iterdir()):
            raise BenchError(f"--out {run_dir} is not empty; choose a new folder (nothing was overwritten)")
    else:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = RESULTS_DIR / f"{stamp}-{scenario}"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".writable"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise BenchError(f"cannot write to {run_dir}: {err.strerror}") from None
    return run_dir


def is_run_dir(path: Path) -> bool:
    return (path / "manifest.json").is_file()


def check_format(run_dir: Path) -> None:
    """A run folder this version of the suite can read, or a one-line error."""
    version = read_json(run_dir / "manifest.json").get("format_version")
    if version != FORMAT_VERSION:
        raise BenchError(
            f"{run_dir} was written in run format {version}; this suite reads format {FORMAT_VERSION} (run it again)"
        )


def feeds_top_report(run_dir: Path) -> bool:
    """Whether the top-level REPORT.md may be built from this run: runs under results/
    made without --out (a sweep or a soak written with --out has a report of its own)."""
    if not run_dir.resolve().is_relative_to(RESULTS_DIR.resolve()):
        return False
    return bool(read_json(run_dir / "manifest.json").get("writes_top_report", True))


def latest_companions(exclude: Path) -> dict[str, tuple[Path, Summary]]:
    """The newest stored users sweep and the newest soak under results/ (runs with their
    own reports), by kind, with their summaries: the top report shows them beside its run."""
    found: dict[str, tuple[Path, Summary]] = {}
    for path in sorted(RESULTS_DIR.glob("*/"), key=lambda p: p.name, reverse=True):
        if path.resolve() == exclude.resolve() or not is_run_dir(path) or feeds_top_report(path):
            continue
        try:
            summary = read_summary(path)
        except (OSError, ValueError):
            continue
        for kind, key in (("sweep", "levels"), ("soak", "soak")):
            if kind not in found and any(r.get(key) for r in summary.get("variants", [])):
                found[kind] = (path, summary)
    return found


def latest_run() -> Path:
    """The newest run that feeds the top-level report."""
    runs = sorted((p for p in RESULTS_DIR.glob("*/") if is_run_dir(p) and feeds_top_report(p)), key=lambda p: p.name)
    if not runs:
        raise BenchError(f"no runs under {RESULTS_DIR}; run `make bench` first")
    return runs[-1]


def read_phases(folder: Path) -> dict[str, float]:
    """A variant's phases.json (load_start, measure_start, load_stop); {} while absent."""
    try:
        return {key: float(value) for key, value in json.loads((folder / "phases.json").read_text()).items()}
    except (OSError, ValueError):
        return {}


def raw(folder: Path, name: str) -> Path:
    """A sample's raw file as stored: `name`, or `name.gz` once the sample is compressed."""
    plain = folder / name
    packed = folder / f"{name}.gz"
    return packed if packed.is_file() and not plain.is_file() else plain


def compress_raw(folder: Path) -> None:
    """Gzip a finished sample's CSVs and JSON lines: the samples of a run with repeats
    add up, and the readers (pandas, analysis.read_stalls) take .gz as they are."""
    for path in [*folder.glob("*.csv"), *folder.glob("*.jsonl")]:
        packed = path.with_name(path.name + ".gz")
        with open(path, "rb") as source, gzip.open(packed, "wb", compresslevel=9) as target:
            shutil.copyfileobj(source, target)
        path.unlink()


def variant_dir(run_dir: Path, pair: str, variant: str) -> Path:
    return run_dir / pair / variant


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment() -> dict[str, Any]:
    commit = _git("rev-parse", "HEAD")
    return {
        "git_commit": commit or "unknown",
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")) if commit else None,
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
    }


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def new_manifest(scenario: dict[str, Any], pairs: dict[str, dict[str, int]], command: list[str]) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "status": "running",
        "started": now(),
        "finished": None,
        "command": command,
        "scenario": scenario,
        "pairs": pairs,  # pair name -> knobs in force
        "environment": environment(),
        "database": {},
    }
