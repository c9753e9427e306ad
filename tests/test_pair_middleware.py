"""The `middleware` pair: its verdict rule on fixture records (both ways), the sweep it
declares, and that the layers really sit in front of each variant's route."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import pytest

from apps.middleware import pair as middleware
from harness import runner
from harness.checks import CPU_PER_REQUEST, THROUGHPUT, Difference, Ratio
from harness.database import Database
from harness.scenario import Scenario
from tests.conftest import blocks_of, cpu_jitter

PAIR = middleware.PAIR
BASE_ADDED = Difference(CPU_PER_REQUEST, "base-10", "none").key
ASGI_ADDED = Difference(CPU_PER_REQUEST, "asgi-10", "none").key


def rec(rps: float, cpu: float | None = 90.0, status: str = "ok") -> dict[str, Any]:
    """`cpu` % of a core at `rps`: cpu / rps * 10 ms of server CPU per request."""
    return {"status": status, "rps": rps, "p50_ms": 6.0, "server_cpu_pct": cpu, "failure_rate": 0.0}


def at_ms(ms: float, rps: float = 1000) -> dict[str, Any]:
    """A record whose server CPU per request is `ms`."""
    return rec(rps, ms * rps / 10)


def decide(
    none: dict[str, Any],
    base: dict[str, Any],
    asgi: dict[str, Any],
    base_1: dict[str, Any] | None = None,
    asgi_1: dict[str, Any] | None = None,
    jitter: tuple[float, ...] | None = None,
) -> Any:
    """10 layers of each kind against none; one layer of each costs what none costs
    unless given; 5 layers are not needed to decide."""
    records = {"none": none, "base-1": base_1 or none, "base-10": base, "asgi-1": asgi_1 or none, "asgi-10": asgi}
    blocks = blocks_of(records)
    return PAIR.decide(records, PAIR.knobs, cpu_jitter(blocks, jitter) if jitter else blocks)


# Trial run figures: none 5,586 req/s at 90% CPU; base-10 247 req/s at 92%; asgi-10 ~5,000.
TRIAL = (rec(5586, 90.3), rec(247, 91.7), rec(5000, 88.0))


def test_partly_holds_only_for_base_http_middleware_as_on_this_machine() -> None:
    verdict = decide(*TRIAL)
    assert verdict.outcome == "partly holds"
    assert [check["outcome"] for check in verdict.checks] == [
        "clears",
        "clears",
        "no measurable difference",
        "no measurable difference",
    ]
    assert verdict.figures[BASE_ADDED] == pytest.approx((91.7 / 247 - 90.3 / 5586) * 10)
    assert verdict.figures[ASGI_ADDED] == pytest.approx((88.0 / 5000 - 90.3 / 5586) * 10)
    # Throughput is shown, not deciding.
    assert verdict.figures[Ratio(THROUGHPUT, "base-10", "none").key] == pytest.approx(247 / 5586)


def test_holds_for_both_when_pure_asgi_layers_also_cost_server_time() -> None:
    # 10 ASGI layers adding 0.42 ms of server work per request to a 0.18 ms route.
    verdict = decide(at_ms(0.18), at_ms(3.6, 250), at_ms(0.60))
    assert verdict.outcome == "holds"
    assert verdict.figures[ASGI_ADDED] == pytest.approx(0.42)


def test_a_tiny_cost_doubled_is_still_tiny() -> None:
    # asgi-10 at twice the CPU per request of a very cheap route: 0.10 ms more, under the
    # absolute threshold: not latency a real endpoint would notice.
    verdict = decide(at_ms(0.10), at_ms(3.6, 250), at_ms(0.20))
    assert verdict.outcome == "partly holds"
    assert verdict.checks[2]["outcome"] == "misses" and verdict.checks[3]["outcome"] == "clears"


def test_a_one_off_cost_is_not_a_cost_of_many_layers() -> None:
    # One ASGI layer already costs 0.5 ms and ten cost the same: the number of layers does not matter.
    verdict = decide(at_ms(0.2), at_ms(3.6, 250), at_ms(0.7), asgi_1=at_ms(0.7))
    assert verdict.checks[2]["outcome"] == "clears"
    assert verdict.checks[3]["outcome"] == "no measurable difference"
    assert verdict.outcome == "partly holds"


def test_holds_only_for_pure_asgi_when_only_it_costs() -> None:
    verdict = decide(at_ms(0.2), at_ms(0.21), at_ms(1.0))
    assert verdict.outcome == "partly holds"
    assert [check["outcome"] for check in verdict.checks][::2] == ["no measurable difference", "clears"]


def test_does_not_hold_when_neither_kind_costs() -> None:
    # Against the article: 10 layers of either kind within noise of none.
    verdict = decide(at_ms(0.2), at_ms(0.21), at_ms(0.2))
    assert verdict.outcome == "does not hold"
    assert verdict.figures[BASE_ADDED] == pytest.approx(0.01)


def test_throughput_drop_without_more_server_work_is_not_counted() -> None:
    # asgi-10 at half the throughput but also half the server CPU: the server did the same
    # work per request, so another process on the machine took the time (seen in a trial run).
    verdict = decide(rec(4785, 90.9), rec(240, 92.2), rec(2213, 54.5))
    assert verdict.outcome == "partly holds"
    assert verdict.figures[ASGI_ADDED] == pytest.approx(0.056, abs=0.001)
    assert verdict.figures[Ratio(THROUGHPUT, "asgi-10", "none").key] == pytest.approx(2213 / 4785)


def test_inconclusive_when_the_interval_straddles_the_threshold() -> None:
    # ASGI layers adding 0.25 ms on average, but blocks spread from half to double.
    verdict = decide(at_ms(0.2), at_ms(3.6, 250), at_ms(0.45), jitter=(0.5, 1.0, 2.0))
    assert verdict.outcome == "inconclusive"
    assert verdict.checks[2]["outcome"] == "inconclusive"
    assert verdict.checks[2]["low"] < middleware.ADDED_CPU_MS < verdict.checks[2]["high"]


def test_inconclusive_when_a_deciding_variant_failed() -> None:
    verdict = decide(rec(5000), rec(250, status="failed"), rec(4900))
    assert verdict.outcome == "inconclusive" and "base-10" in verdict.headline


def test_variants_form_the_sweep_the_app_mounts() -> None:
    from apps.middleware.app import STACKS

    assert [v.name for v in PAIR.variants] == list(STACKS)
    for variant in PAIR.variants:
        kind, layers = STACKS[variant.name]
        assert variant.path == f"/{variant.name}/items/{{id}}"
        if layers == 0:
            assert variant.sweep == ("none", 0)
        else:
            assert variant.sweep == (middleware.KINDS[kind], layers)
            assert variant.role == ("good" if layers == 1 else "bad")
        assert PAIR.code_excerpt(variant)  # every named function exists in app.py


@pytest.mark.slow
@pytest.mark.parametrize("name", ["none", "base-1", "base-10", "asgi-5", "asgi-10"])
def test_each_layer_really_runs(db: Database, tmp_path: Path, name: str) -> None:
    from apps.middleware.app import STACKS

    kind, layers = STACKS[name]
    variant = PAIR.variant(name)
    server, port = runner.start_server(PAIR, variant, PAIR.knobs, db, tmp_path, Scenario(name="test", rows=1000))
    try:
        runner.verify(port, variant, db, rows=1000)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/{name}/items/7", timeout=10) as resp:
            stamps = resp.headers.get_all("x-layer") or []
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=10) as resp:
            ping_stamps = resp.headers.get_all("x-layer") or []
    finally:
        server.stop()
    assert stamps == [kind] * layers
    assert ping_stamps == []  # the layers wrap the variant's own app only, not /ping
