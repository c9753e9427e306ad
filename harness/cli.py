"""`python bench.py run | report | list`.

Problems the user can fix end in one line on stderr and exit status 2; Ctrl-C ends
in exit status 130 with completed variants kept in the run folder.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from harness import pairs as pairs_mod
from harness import report, runner, scenario, store
from harness.database import redact
from harness.pairs import BenchError
from harness.procs import Interrupted, raise_on_sigterm


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise BenchError(message)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bench.py", description="Load-test bad and good FastAPI patterns against PostgreSQL.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="measure pairs and write a run folder and its report")
    run.add_argument("--scenario", default="default", help="quick, default, or a path to a scenario .toml")
    run.add_argument("--pairs", help="comma-separated pair names (default: all)")
    run.add_argument("--users", type=_positive_int, help="concurrent Locust users (overrides the scenario)")
    run.add_argument("--duration", type=_positive_float, help="measured seconds per variant (overrides the scenario)")
    run.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a pair knob, e.g. block_ms=20 (repeatable)",
    )
    run.add_argument(
        "--dsn",
        default=os.environ.get("DATABASE_URL"),
        help="use this PostgreSQL (postgresql://...) instead of the embedded one; default $DATABASE_URL",
    )
    run.add_argument("--out", type=Path, help="write the run here and leave the top-level REPORT.md alone")

    rep = commands.add_parser("report", help="re-render a stored run without running load")
    rep.add_argument("run_dir", nargs="?", type=Path, help="a results/<run-id> folder (default: the newest)")
    rep.add_argument("--no-top", action="store_true", help="do not overwrite the top-level REPORT.md")

    commands.add_parser("list", help="show pairs, variants, roles, knobs and the claim each tests")
    return parser


def cmd_list() -> int:
    for pair in pairs_mod.discover().values():
        knobs = ", ".join(f"{k}={v}" for k, v in pair.knobs.items()) or "none"
        print(f"{pair.name}  [{pair.claim_id}] {pair.claim}")
        print(f"    knobs: {knobs}")
        for variant in pair.variants:
            print(f"    {variant.name:<22} {variant.role:<10} {variant.summary}")
        print()
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    chosen = pairs_mod.select([n.strip() for n in args.pairs.split(",") if n.strip()] if args.pairs else None)
    plan_scenario = scenario.override(scenario.load(args.scenario), users=args.users, duration_s=args.duration)
    knobs = runner.resolve_knobs(chosen, args.settings)
    run_dir = store.new_run_dir(plan_scenario.name, args.out)
    plan = runner.RunPlan(
        scenario=plan_scenario,
        pairs=chosen,
        knobs=knobs,
        dsn=args.dsn,
        run_dir=run_dir,
        write_top_report=args.out is None,
        command=[redact(a) for a in sys.argv],
    )
    try:
        runner.run(plan)
    except BenchError:
        # Nothing was measured: do not leave an empty run folder behind.
        if not any(p.is_dir() for p in run_dir.iterdir()):
            for leftover in run_dir.iterdir():
                leftover.unlink()
            run_dir.rmdir()
        raise
    print(f"report: {run_dir / 'REPORT.md'}" + ("" if args.out else " (and REPORT.md)"))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    run_dir = args.run_dir or store.latest_run()
    if not store.is_run_dir(run_dir):
        raise BenchError(f"{run_dir} is not a run folder (no manifest.json)")
    inside_results = run_dir.resolve().is_relative_to(store.RESULTS_DIR.resolve())
    path = report.rebuild(run_dir, write_top_report=inside_results and not args.no_top)
    print(f"report: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    raise_on_sigterm()
    try:
        args = build_parser().parse_args(argv)
        if args.command == "list":
            return cmd_list()
        if args.command == "report":
            return cmd_report(args)
        return cmd_run(args)
    except BenchError as err:
        print(f"bench.py: error: {redact(str(err))}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Interrupted):
        print("\nbench.py: interrupted; completed variants are kept in the run folder", file=sys.stderr)
        return 130
