"""Pairs and variants: what the suite measures, discovered from apps/*/pair.py.

A pair is one folder under apps/: `app.py` holds the FastAPI variants side by side,
`pair.py` declares a module-level PAIR: the claim it tests, its variants and their
roles, its knobs, and the rule that turns this run's numbers into a verdict.
Adding a pair touches nothing else.
"""

from __future__ import annotations

import ast
import difflib
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from harness.records import Block, JudgedCheck, Record, ShownFigure, VariantRecord

if TYPE_CHECKING:
    from harness.checks import Decision, Rule

ROOT = Path(__file__).resolve().parent.parent
APPS_DIR = ROOT / "apps"

# The claims the articles make (../shared/CLAIMS.md numbers them); each needs a pair.
# Production failures no article claims are numbered after them (C16 on), with
# `sources=()` and the issue threads they reproduce as `references`.
CLAIM_IDS = tuple(f"C{n}" for n in range(1, 16))

Role = Literal["bad", "good", "reference"]
Outcome = Literal["holds", "does not hold", "partly holds", "inconclusive"]

# A summary record (one per variant, as stored in summary.json), keyed by variant name.
Records = Mapping[str, VariantRecord]


class BenchError(Exception):
    """A problem the user can fix; shown as one line, exit status 2."""


@dataclass(frozen=True)
class Article:
    key: str
    title: str


# The articles the claims come from (../shared/seeds); quoted by title only.
ARTICLES = {
    "000": Article("000", "Async generator dependencies in FastAPI: Performance & Optimization"),
    "001": Article("001", "Async generator dependencies in FastAPI: Deep Dive"),
    "002": Article("002", "FastAPI dependency injection and background task bottlenecks"),
    "003": Article("003", "Async Patterns in FastAPI: Beyond the Basics"),
    "004": Article("004", "High latency in FastAPI: causes and fixes"),
}


# What a correct answer for `id` is, given the harness's database (None: the seeded row).
Expectation = Callable[[Any, int], Any]


@dataclass(frozen=True)
class Variant:
    name: str
    role: Role
    path: str  # URL template with {id}, e.g. "/sync-dep/items/{id}"
    summary: str  # one line: what this variant does
    code: tuple[str, ...]  # names of functions or classes in app.py shown in the report
    expect: Expectation | None = None  # verification's expected JSON body; None: the row
    verify_ids: Callable[[int], bool] | None = None  # ids verification may draw (None: any)
    server_args: tuple[str, ...] = ()  # extra uvicorn options, e.g. ("--loop", "asyncio")
    sweep: tuple[str, int] | None = None  # (series, x) when the pair is a sweep, e.g. ("pure ASGI", 5)


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    text: str  # one or two sentences, built from this run's figures
    figures: dict[str, float] = field(default_factory=dict)
    headline: str = ""  # the deciding figure and its comparison, for the ledger
    checks: list[JudgedCheck] = field(default_factory=list)  # each judged check, as harness.checks words it
    shown: list[ShownFigure] = field(default_factory=list)  # figures beside the verdict, with intervals


@dataclass(frozen=True)
class Pair:
    name: str
    claim_id: str
    claim: str
    sources: tuple[str, ...]  # keys into ARTICLES; () for a production failure (see CLAIM_IDS)
    mechanism: str  # prose: why the numbers come out as they do
    variants: tuple[Variant, ...]
    # The verdict rule as checks (harness.checks), built from the knobs in force.
    rule: Callable[[Mapping[str, int]], Rule] | None = None
    knobs: dict[str, int] = field(default_factory=dict)
    order: int = 100  # position in listings and the report
    app_module: str = ""  # where the variants live; apps.<name>.app unless given (tests)
    # Scenario fields the experiment itself needs (e.g. more users than pool slots);
    # they replace the scenario's for this pair and the report says so.
    load: dict[str, float] = field(default_factory=dict)
    upstream: bool = False  # start the stub upstream (harness.upstream) beside each variant
    # Start each server in a fresh interpreter, not forked from the preloaded fork server
    # (harness.forkserver): for a pair whose claim is about what happens at start-up.
    fresh_interpreter: bool = False
    references: tuple[str, ...] = ()  # upstream issues and PRs behind the mechanism
    sweep_label: str = ""  # the x axis of a sweep pair's chart, e.g. "middleware layers"
    # Open loop: the request rate (per second, from the knobs in force) at which scenarios
    # with `open_loop` also measure this pair, beside its closed-loop measurement.
    open_loop_rate: Callable[[Mapping[str, int]], float] | None = None
    # A control measured for a fixed number of blocks (capped by the scenario's maximum),
    # looked at once at the end: its interval is a plain one at the nominal confidence.
    fixed_blocks: int = 0
    soak: bool = False  # the claim is about a leak: `--soak` gives it a long load and a recovery
    # Expected throughput ceilings from first principles (knobs, users, CPUs), by variant,
    # with the reason; the report checks the measured figures against them.
    physics: Callable[[Mapping[str, int], int, int], dict[str, tuple[float, str]]] | None = None
    # The knob naming how long a variant's own work may run after its response has been
    # sent (background tasks, dependency teardown): its counters are read only once they
    # have been still that long, so the last requests' work is in them.
    drain_knob: str = ""
    # The knob naming how many uvicorn worker processes serve each variant (1 without
    # one). Several workers write their loop lag to a file each, and their CPU, memory
    # and descriptors are summed over the process tree; /counters would be one worker's,
    # so it is not read.
    workers_knob: str = ""
    # Database set-up the pair's servers need before they start (e.g. a role with a
    # connection limit), run as the harness's own user; returns environment for the server.
    prepare: Callable[[Any, Mapping[str, int]], dict[str, str]] | None = None

    def drain_s(self, knobs: Mapping[str, int]) -> float:
        """How long work may run after a response (0: none)."""
        return (self.knobs | dict(knobs)).get(self.drain_knob, 0) / 1000 if self.drain_knob else 0.0

    def workers(self, knobs: Mapping[str, int]) -> int:
        """uvicorn worker processes per server (1: uvicorn's default single process)."""
        return max(1, int((self.knobs | dict(knobs)).get(self.workers_knob, 1))) if self.workers_knob else 1

    @property
    def app(self) -> str:
        return f"{self.app_module or f'apps.{self.name}.app'}:app"

    @property
    def app_file(self) -> Path:
        return ROOT / Path(*(self.app_module or f"apps.{self.name}.app").split(".")).with_suffix(".py")

    def judge(self, records: Records, knobs: Mapping[str, int], blocks: Sequence[Block], confidence: float) -> Decision:
        """The verdict on this run's blocks, with every check as judged."""
        from harness import checks

        if self.rule is None:  # a pair that decides nothing (the harness's own fault tests)
            return checks.Decision(Verdict("inconclusive", "This pair has no rule.", headline="no rule"))
        return checks.evaluate(self.rule(self.knobs | dict(knobs)), records, blocks, confidence)

    def decide(
        self,
        records: Records,
        knobs: Mapping[str, int],
        blocks: Sequence[Block] | None = None,
        confidence: float = 0.95,
    ) -> Verdict:
        return self.judge(records, knobs, blocks or [], confidence).verdict

    def how_decided(self, knobs: Mapping[str, int]) -> str:
        """'How the verdict is decided', generated from the rule's checks."""
        if self.rule is None:
            return "This pair has no rule."
        return self.rule(self.knobs | dict(knobs)).describe()

    def variant(self, name: str) -> Variant:
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise BenchError(
            f"pair {self.name!r} has no variant {name!r}{_did_you_mean(name, [v.name for v in self.variants])}"
        )

    def code_excerpt(self, variant: Variant) -> str:
        """The source of the variant's functions in app.py, decorators included."""
        source = self.app_file.read_text()
        lines = source.splitlines()
        found: dict[str, str] = {}
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name in variant.code:
                start = min([d.lineno for d in node.decorator_list] + [node.lineno]) - 1
                found[node.name] = "\n".join(lines[start : node.end_lineno])
        missing = [name for name in variant.code if name not in found]
        if missing:
            raise BenchError(f"{self.app_file}: no function named {', '.join(missing)} for variant {variant.name!r}")
        return "\n\n\n".join(found[name] for name in variant.code)


def _did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (choose from {', '.join(choices)})"


def discover() -> dict[str, Pair]:
    """Every pair under apps/, in declared order."""
    pairs: dict[str, Pair] = {}
    for pair_file in sorted(APPS_DIR.glob("*/pair.py")):
        module = importlib.import_module(f"apps.{pair_file.parent.name}.pair")
        pair = module.PAIR
        if pair.name != pair_file.parent.name:
            raise BenchError(f"{pair_file}: PAIR.name is {pair.name!r}, expected the folder name")
        pairs[pair.name] = pair
    return dict(sorted(pairs.items(), key=lambda item: (item[1].order, item[0])))


def claims_index(pairs: Mapping[str, Pair]) -> dict[str, list[str]]:
    """Claim id -> the pairs that measure it, for every claim in CLAIM_IDS (empty: none yet)."""
    index: dict[str, list[str]] = {claim: [] for claim in CLAIM_IDS}
    for pair in pairs.values():
        index.setdefault(pair.claim_id, []).append(pair.name)
    return index


def select(names: list[str] | None) -> list[Pair]:
    """The pairs named on the command line (all when none), with a hint for typos.
    `pair/variant` keeps only that variant of the pair."""
    pairs = discover()
    if not names:
        return list(pairs.values())
    chosen: dict[str, list[str] | None] = {}  # None: the whole pair
    for name in names:
        pair_name, _, variant_name = name.partition("/")
        if pair_name not in pairs:
            raise BenchError(f"unknown pair {pair_name!r}{_did_you_mean(pair_name, list(pairs))}")
        if not variant_name:
            chosen[pair_name] = None
            continue
        pairs[pair_name].variant(variant_name)  # an unknown variant raises with a hint
        picked = chosen.setdefault(pair_name, [])
        if picked is not None and variant_name not in picked:
            picked.append(variant_name)
    return [
        pairs[name]
        if picked is None
        else replace(pairs[name], variants=tuple(v for v in pairs[name].variants if v.name in picked))
        for name, picked in chosen.items()
    ]


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def counter_ratio(record: Record, numerator: str, denominator: str) -> float | None:
    """One of a variant's own /counters divided by another (None when either is missing)."""
    counters = record.get("counters") or {}
    return ratio(counters.get(numerator), counters.get(denominator))


def cpu_ms_per_request(record: Record) -> float | None:
    """Server CPU time per request in ms (CPU % of one core / req/s): the server's own
    work, which neither a busy machine nor a saturated load generator changes much."""
    share = ratio(record.get("server_cpu_pct"), record["rps"])
    return None if share is None else share * 10


# The speed probe's work unit takes this long on the machine speed-adjusted figures are
# scaled to (about this machine's, when its host is quiet): a scale, not a result.
REFERENCE_UNIT_MS = 1.0


def speed_adjusted_cpu(record: Record) -> float | None:
    """Server CPU per request at the reference speed: the ms measured, times how much
    faster the reference runs the speed probe's work unit than the machine did during
    this window. A shared host that slows every process charges each request more CPU
    time; this reads the same work as the same figure. Without a probe (runs stored
    before it), the CPU time as measured."""
    measured = cpu_ms_per_request(record)
    unit = record.get("speed_unit_ms")
    if measured is None or not unit:
        return measured
    return float(measured) * REFERENCE_UNIT_MS / float(unit)


def speed_adjusted_rps(record: Record) -> float | None:
    """Throughput at the reference speed: requests per second, times how much longer the
    speed probe's work unit took during this window than at the reference. Meaningful
    where the server's CPU is what limits it (the A/A control's pooled lookup), not for a
    variant waiting on a pool, a sleep or the database."""
    rps, unit = record.get("rps"), record.get("speed_unit_ms")
    if rps is None or not unit:
        return None if rps is None else float(rps)
    return float(rps) * float(unit) / REFERENCE_UNIT_MS


# anyio's default limit on worker threads for `def` endpoints and sync dependencies.
ANYIO_TOKENS = 40
# A variant stalls the event loop when its loop lag p99 (measured inside the server) is
# at least this many times the baseline variant's, each read as at least this many
# milliseconds (checks.stall_checks).
STALL_FACTOR = 3.0
STALL_MIN_MS = 20.0


def loop_lag(record: Record) -> float:
    """Loop lag p99, or the /ping p99 for runs made before the server measured its lag."""
    lag = record.get("loop_lag_p99_ms")
    return float(lag if lag is not None else record["ping_p99_ms"])
