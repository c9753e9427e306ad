"""`python bench.py run | probe | report | compare | connections | list`.

Problems the user can fix end in one line on stderr and exit status 2; Ctrl-C ends
in exit status 130 with completed variants kept in the run folder.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

# The commands' own modules (pandas, scipy, matplotlib) are imported by the command that
# needs them: a mistyped option is answered in a fraction of a second, not after 3 s of imports.
from harness import pairs as pairs_mod
from harness import scenario, store
from harness.database import redact
from harness.pairs import BenchError
from harness.procs import Interrupted, raise_on_sigterm

if TYPE_CHECKING:
    from harness import runner


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise BenchError(message)


def _finite(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _within(value: float, text: str, bound: scenario.Bound) -> None:
    if value > bound.maximum:
        raise argparse.ArgumentTypeError(f"must be {bound.text()}, got {text!r}")


def _positive_float(text: str, what: str, bound: scenario.Bound) -> float:
    value = _finite(text, what)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text!r}")
    _within(value, text, bound)
    return value


def _whole_number(text: str, minimum: int, rule: str, bound: scenario.Bound) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}")
    _within(value, text, bound)
    return value


# One parser per option, each bounded by its scenario field's maximum (harness/scenario.py).
def _duration(text: str) -> float:
    return _positive_float(text, "a number of seconds", scenario.MAXIMUM["duration_s"])


def _soak(text: str) -> float:
    return _positive_float(text, "a number of seconds", scenario.MAXIMUM["soak_s"])


def _rate(text: str) -> float:
    return _positive_float(text, "a number of requests per second", scenario.MAXIMUM["rate"])


def _repeats(text: str) -> int:
    return _whole_number(text, 1, "greater than 0", scenario.MAXIMUM["repeats"])


def _max_blocks(text: str) -> int:
    return _whole_number(text, 1, "greater than 0", scenario.MAXIMUM["max_blocks"])


def _budget(text: str) -> float:
    return _finite_at_least_zero(text, scenario.MAXIMUM["budget_s"])


def _finite_at_least_zero(text: str, bound: scenario.Bound) -> float:
    value = _finite(text, "a number of seconds")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    _within(value, text, bound)
    return value


def _workers(text: str) -> int:
    return _whole_number(text, 0, "0 or more", scenario.MAXIMUM["locust_workers"])


def _items(text: str) -> list[str]:
    """Comma-separated items, stripped; an empty list or an empty item between commas is refused."""
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise argparse.ArgumentTypeError("is empty")
    if not all(items):
        raise argparse.ArgumentTypeError(f"has an empty item between commas, got {text!r}")
    return items


def _users(text: str) -> tuple[int, ...]:
    """'50' or a sweep '1,10,50'."""
    parts = _items(text)
    if len(parts) > scenario.MAX_LEVELS:
        raise argparse.ArgumentTypeError(f"a sweep must have at most {scenario.MAX_LEVELS} levels, got {len(parts)}")
    return tuple(_whole_number(part, 1, "greater than 0", scenario.MAXIMUM["users"]) for part in parts)


def _pairs(text: str) -> list[str]:
    try:
        return _items(text)
    except argparse.ArgumentTypeError as err:
        raise argparse.ArgumentTypeError(
            f"{err} (name one or more pairs, e.g. deps,blocking; see bench.py list)"
        ) from None


def _percent(text: str) -> float:
    return _positive_float(text.strip().removesuffix("%"), "a percentage", scenario.MAX_FAIL_ABOVE_PCT)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bench.py", description="Load-test bad and good FastAPI patterns against PostgreSQL.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="measure pairs and write a run folder and its report")
    run.add_argument("--scenario", default="default", help="quick, default, or a path to a scenario .toml")
    run.add_argument(
        "--pairs", type=_pairs, help="comma-separated pairs, or pair/variant for one variant (default: all)"
    )
    run.add_argument(
        "--users", type=_users, help="concurrent Locust users, or a sweep like 1,10,50,100 (overrides the scenario)"
    )
    run.add_argument("--duration", type=_duration, help="measured seconds per sample (overrides the scenario)")
    run.add_argument(
        "--repeats", type=_repeats, help="blocks every pair runs at least (a block: each variant once, back to back)"
    )
    run.add_argument(
        "--max-blocks", type=_max_blocks, help="more blocks, up to this many, for pairs whose intervals still straddle"
    )
    run.add_argument(
        "--budget", type=_budget, metavar="SECONDS", help="the run's time budget for those further blocks (0: none)"
    )
    run.add_argument("--rate", type=_rate, help="open loop: requests per second, on a fixed schedule")
    run.add_argument("--soak", type=_soak, metavar="SECONDS", help="a soak of this length for leak pairs")
    run.add_argument("--locust-workers", type=_workers, help="Locust's distributed mode with N worker processes")
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
    run.add_argument("--shuffle", action="store_true", help="measure variants in a random order (seed recorded)")
    run.add_argument(
        "--resume", type=Path, metavar="RUN_DIR", help="finish an interrupted run: measure what is missing"
    )

    rep = commands.add_parser("report", help="re-render a stored run without running load")
    rep.add_argument("run_dir", nargs="?", type=Path, help="a results/<run-id> folder (default: the newest)")
    rep.add_argument("--no-top", action="store_true", help="do not overwrite the top-level REPORT.md")

    commands.add_parser("list", help="show pairs, variants, roles, knobs and the claim each tests")

    conn = commands.add_parser(
        "connections", help="backends by state per variant of a run, or of two runs side by side"
    )
    conn.add_argument("run_dir", nargs="?", type=Path, help="a results/<run-id> folder (default: the newest)")
    conn.add_argument("run_b", nargs="?", type=Path, help="a second run, shown beside the first")
    conn.add_argument("--pair", type=_pairs, metavar="P[,P...]", help="only these pairs")
    probe = commands.add_parser(
        "probe", help="measure your own FastAPI app under the same load and instruments, in a run folder of its own"
    )
    probe.add_argument("target_file", nargs="?", type=Path, help="a TOML file with any of the options below")
    probe.add_argument("--app", help="the ASGI app as package.module:attribute, e.g. app.main:app")
    probe.add_argument("--variant", help="a suite variant instead, as pair/variant, e.g. blocking/async-blocking")
    probe.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --variant: set a knob of its pair, e.g. block_ms=50 (repeatable)",
    )
    probe.add_argument("--app-dir", help="the project's folder; the app is imported from there (default: .)")
    probe.add_argument("--path", dest="paths", action="append", help="a path to load, e.g. '/items/{id}' (repeatable)")
    probe.add_argument(
        "--header", dest="headers", action="append", help="'Name: value' sent with every request (repeatable)"
    )
    probe.add_argument("--env-file", help="NAME=VALUE lines: the environment the app needs")
    probe.add_argument(
        "--python", help="the app's interpreter, e.g. .venv/bin/python (default: the project's .venv, or this one)"
    )
    probe.add_argument("--dsn", help="the app's PostgreSQL (postgresql://...); default: $DSN_ENV, else embedded")
    probe.add_argument("--dsn-env", help="the variable that holds the app's database URL (default DATABASE_URL)")
    probe.add_argument(
        "--dsn-driver",
        help="with the embedded server: the SQLAlchemy driver its URL names, e.g. psycopg (postgresql+psycopg://)",
    )
    probe.add_argument("--ids", help="the range {id} is drawn from, e.g. 1-1000")
    probe.add_argument("--seed-sql", help="an SQL file run on the app's database before load")
    probe.add_argument("--seed-cmd", help="a command run in the app's folder, with its environment, before load")
    probe.add_argument("--users", help="the closed-loop users sweep (default 1,10,50)")
    probe.add_argument("--duration", help="measured seconds per level (default 10)")
    probe.add_argument("--expect", help="text every 200 body must contain, or json:KEY for a key of its JSON")
    probe.add_argument("--port", help="serve the app on this loopback port (default: a free one)")
    probe.add_argument("--stall-ms", help="loop lag at which the watchdog captures the stack (default 25)")
    probe.add_argument("--p99-target", dest="p99_target_ms", help="the knee's p99 target in ms (default 100)")
    probe.add_argument("--out", help="write the run here (an empty folder) instead of results/<id>-probe-<app>")
    probe.add_argument(
        "--ui", action="store_true", help="open Locust's web UI against the app (loopback) instead of measuring"
    )
    probe.add_argument("--ui-minutes", help="stop the --ui session after this many minutes (default 30)")

    cmp = commands.add_parser("compare", help="compare two stored runs, variant by variant")
    cmp.add_argument("run_a", type=Path, help="the baseline run folder")
    cmp.add_argument("run_b", type=Path, help="the run compared with it")
    cmp.add_argument(
        "--fail-above", type=_percent, metavar="PCT", help="exit 1 if a figure got worse by more than PCT percent"
    )
    return parser


def _checked(option: str, parse: Callable[[str], object]) -> Callable[[str], object]:
    """A command-line parser for a probe field that may come from a target file too."""

    def check(text: str) -> object:
        try:
            return parse(text)
        except argparse.ArgumentTypeError as err:
            raise BenchError(f"argument {option}: {err}") from None

    return check


def _hide_headers(argv: list[str]) -> list[str]:
    """The command as stored: DSN passwords and header values (tokens) hidden."""
    shown, hide_next = [], False
    for arg in argv:
        if hide_next or arg.startswith("--header="):
            name = arg.removeprefix("--header=").split(":", 1)[0]
            arg = f"{'--header=' if arg.startswith('--header=') else ''}{name}: ***"
        hide_next = arg == "--header"
        shown.append(redact(arg))
    return shown


def cmd_probe(args: argparse.Namespace) -> int:
    from harness import probe, probe_report

    options = probe.read_target_file(args.target_file) if args.target_file else {}
    if args.variant:
        if args.app or args.target_file:
            raise BenchError("--variant probes one of the suite's variants; drop --app and the target file")
        options = probe.variant_options(args.variant, args.settings)
    elif args.settings:
        raise BenchError("--set sets a knob of one of the suite's variants: it goes with --variant")
    given = {key: getattr(args, key) for key in (*probe.TARGET_FIELDS, "out") if getattr(args, key, None)}
    if "headers" in given and "headers" in options:  # both: the file's and the command line's
        given["headers"] = [*options["headers"], *given["headers"]]
    target = probe.build_target(
        options | given, {"users": _checked("--users", _users), "duration": _checked("--duration", _duration)}
    )
    if args.ui:
        minutes = probe.bounded_number(args.ui_minutes or str(probe.UI_MINUTES), "--ui-minutes", probe.UI_MAX_MINUTES)
        probe.run_ui(target, minutes, lambda text: print(text, file=sys.stderr, flush=True))
        return 0
    if args.ui_minutes:
        raise BenchError("--ui-minutes goes with --ui")
    run_dir = probe.run_probe(target, _hide_headers(sys.argv))
    print(f"report: {probe_report.render(run_dir)}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from harness import compare

    changes = compare.compare(args.run_a, args.run_b)
    print(compare.render(changes, compare.differences(args.run_a, args.run_b)))
    if args.fail_above is None:
        return 0
    worse = compare.regressions(changes, args.fail_above)
    for change in worse:
        print(
            f"regression: {change.pair}/{change.variant} {change.label} worse by {change.regression_pct:.0f}% "
            f"(> {args.fail_above:g}%)",
            file=sys.stderr,
        )
    return 1 if worse else 0


def cmd_connections(args: argparse.Namespace) -> int:
    from harness import connections

    first = connections.records(args.run_dir or store.latest_run(), args.pair)
    second = connections.records(args.run_b, args.pair) if args.run_b else None
    print(connections.render(first, second))
    return 0


def cmd_list() -> int:
    pairs = pairs_mod.discover()
    for pair in pairs.values():
        knobs = ", ".join(f"{k}={v}" for k, v in pair.knobs.items()) or "none"
        print(f"{pair.name}  [{pair.claim_id}] {pair.claim}")
        print(f"    knobs: {knobs}" + (f"; own load: {pair.load}" if pair.load else ""))
        for variant in pair.variants:
            print(f"    {variant.name:<22} {variant.role:<10} {variant.summary}")
        print()
    print("claims:")
    for claim, names in pairs_mod.claims_index(pairs).items():
        print(f"    {claim:<4} {', '.join(names) if names else 'no pair yet'}")
    return 0


def plan_new(args: argparse.Namespace) -> runner.RunPlan:
    from harness import runner

    chosen = pairs_mod.select(args.pairs)
    users = args.users or ()
    plan_scenario = scenario.override(
        scenario.load(args.scenario),
        users=users[0] if len(users) == 1 else None,
        levels=users if len(users) > 1 else None,
        duration_s=args.duration,
        repeats=args.repeats,
        max_blocks=args.max_blocks,
        budget_s=args.budget,
        rate=args.rate,
        soak_s=args.soak,
        locust_workers=args.locust_workers,
    )
    knobs = runner.resolve_knobs(chosen, args.settings)
    run_dir = store.new_run_dir(plan_scenario.name, args.out)
    return runner.RunPlan(
        scenario=plan_scenario,
        pairs=chosen,
        knobs=knobs,
        dsn=args.dsn,
        run_dir=run_dir,
        write_top_report=args.out is None,
        command=[redact(a) for a in sys.argv],
        # Repeats are always shuffled, so no variant always goes first; one pass only on request.
        shuffle_seed=random.randrange(2**31) if args.shuffle or plan_scenario.repeats > 1 else None,
    )


def plan_resume(args: argparse.Namespace, given: list[str]) -> runner.RunPlan:
    """The stored run's own plan; only --dsn may be given again (it is stored redacted)."""
    run_dir: Path = args.resume
    if not store.is_run_dir(run_dir):
        raise BenchError(f"{run_dir} is not a run folder (no manifest.json)")
    options = ("--scenario", "--pairs", "--users", "--duration", "--set", "--out", "--shuffle", "--repeats", "--rate",
               "--soak", "--locust-workers", "--max-blocks", "--budget")  # fmt: skip
    clashing = [option for option in options
                if any(arg == option or arg.startswith(option + "=") for arg in given)]  # fmt: skip
    if clashing:
        raise BenchError(f"--resume continues the stored plan; drop {', '.join(clashing)}")
    manifest = store.read_json(run_dir / "manifest.json")
    if manifest.get("status") == "complete":
        raise BenchError(f"{run_dir} is already complete; nothing to resume")
    if manifest.get("database", {}).get("source") == "dsn" and not args.dsn:
        raise BenchError(f"{run_dir} ran against --dsn {manifest['database']['dsn']}; pass --dsn again to resume")
    store.check_format(run_dir)
    from harness import runner

    stored = {k: v for k, v in manifest["scenario"].items() if k != "name"}
    plan_scenario = scenario.from_stored(manifest["scenario"]["name"], stored)
    return runner.RunPlan(
        scenario=plan_scenario,
        pairs=pairs_mod.select([f"{p}/{v}" for p, names in manifest["variants"].items() for v in names]),
        knobs=manifest["pairs"],
        dsn=args.dsn,
        run_dir=run_dir,
        write_top_report=store.feeds_top_report(run_dir),
        command=manifest.get("command", []),
        shuffle_seed=manifest.get("shuffle_seed"),
        resume=True,
    )


def cmd_run(args: argparse.Namespace, argv: list[str]) -> int:
    plan = plan_resume(args, argv) if args.resume else plan_new(args)
    from harness import report, runner

    try:
        runner.run(plan)
    except BenchError:
        # Nothing was measured: do not leave an empty run folder behind.
        run_dir = plan.run_dir
        if not plan.resume and not any(p.is_dir() for p in run_dir.iterdir()):
            for leftover in run_dir.iterdir():
                leftover.unlink()
            run_dir.rmdir()
        raise
    # Measuring ended once the data was stored; publishing reads only what it stored.
    report.render(plan.run_dir, write_top_report=plan.write_top_report)
    print(f"report: {plan.run_dir / 'REPORT.md'}" + (" (and REPORT.md)" if plan.write_top_report else ""))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    run_dir = args.run_dir or store.latest_run()
    if not store.is_run_dir(run_dir):
        raise BenchError(f"{run_dir} is not a run folder (no manifest.json)")
    store.check_format(run_dir)
    if store.read_json(run_dir / "manifest.json").get("kind") == "probe":  # a probe's report is its own
        from harness import probe_report

        print(f"report: {probe_report.render(run_dir)}")
        return 0
    from harness import report

    path = report.rebuild(run_dir, write_top_report=store.feeds_top_report(run_dir) and not args.no_top)
    print(f"report: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    raise_on_sigterm()
    try:
        argv = sys.argv[1:] if argv is None else argv
        args = build_parser().parse_args(argv)
        if args.command == "list":
            return cmd_list()
        if args.command == "report":
            return cmd_report(args)
        if args.command == "compare":
            return cmd_compare(args)
        if args.command == "connections":
            return cmd_connections(args)
        if args.command == "probe":
            return cmd_probe(args)
        return cmd_run(args, argv)
    except BenchError as err:
        print(f"bench.py: error: {redact(str(err))}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Interrupted):
        print("\nbench.py: interrupted; completed variants are kept in the run folder", file=sys.stderr)
        return 130
