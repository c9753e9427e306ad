"""The `middleware` pair: its verdict rule on fixture records (both ways), the sweep it
declares, and that the layers really sit in front of each variant's route."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import pytest

from apps.middleware import pair as middleware
from harness import runner
from harness.database import Database
from harness.scenario import Scenario

PAIR = middleware.PAIR


def rec(rps: float, cpu: float | None = 90.0, p50: float = 6.0, status: str = "ok") -> dict[str, Any]:
    return {"status": status, "rps": rps, "p50_ms": p50, "server_cpu_pct": cpu}


def decide(none: dict[str, Any], base: dict[str, Any], asgi: dict[str, Any]) -> Any:
    return PAIR.decide({"none": none, "base-10": base, "asgi-10": asgi}, PAIR.knobs)


def test_holds_only_for_base_http_middleware_as_on_this_machine() -> None:
    # Trial run figures: none 5,586 req/s at 90% CPU; base-10 247 req/s at 92%; asgi-10 ~5,000.
    verdict = decide(rec(5586, 90.3), rec(247, 91.7, p50=160), rec(5000, 88.0, p50=7))
    assert verdict.outcome == "partly holds"
    assert "Holds only for BaseHTTPMiddleware" in verdict.text
    assert "0.04x" in verdict.headline and "0.90x" in verdict.headline
    assert verdict.figures["base_p50_ms_per_layer"] == pytest.approx(15.4)
    assert verdict.figures["base_cpu_us_per_layer"] == pytest.approx((91.7 / 247 - 90.3 / 5586) * 1000)


def test_holds_for_both_when_pure_asgi_layers_also_cost_server_time() -> None:
    # 10 ASGI layers adding 0.42 ms of server work per request: the article is right for both kinds.
    verdict = decide(rec(5000, 90.0), rec(250, 90.0), rec(1500, 90.0))
    assert verdict.outcome == "holds"
    assert verdict.figures["asgi_added_cpu_ms"] == pytest.approx(0.42)


def test_a_tiny_cost_doubled_is_still_tiny() -> None:
    # asgi-10 at half the throughput of a very cheap route: 0.18 ms more per request, under
    # the absolute threshold: not latency a real endpoint would notice.
    verdict = decide(rec(5000, 90.0), rec(250, 90.0), rec(2500, 90.0))
    assert verdict.outcome == "partly holds"
    assert "only 0.18 ms more server CPU per request" in verdict.text


def test_does_not_hold_when_neither_kind_costs() -> None:
    # Against the article: 10 layers of either kind within noise of none.
    verdict = decide(rec(5000, 90.0), rec(4700, 92.0), rec(4900, 90.0))
    assert verdict.outcome == "does not hold"
    assert "Does not hold" in verdict.text


def test_holds_only_for_pure_asgi_when_only_it_costs() -> None:
    verdict = decide(rec(5000, 90.0), rec(4800, 90.0), rec(1000, 90.0))
    assert verdict.outcome == "partly holds" and "only for pure ASGI" in verdict.text


def test_throughput_drop_without_more_server_work_is_not_counted() -> None:
    # asgi-10 at half the throughput but also half the server CPU: the server did the same
    # work per request, so another process on the machine took the time (seen in a trial run).
    verdict = decide(rec(4785, 90.9), rec(240, 92.2), rec(2213, 54.5))
    assert verdict.outcome == "partly holds"
    assert "only 0.06 ms more server CPU per request" in verdict.text
    assert verdict.figures["asgi_cpu_us_per_layer"] == pytest.approx(5.6, abs=0.1)


def test_small_throughput_loss_is_not_enough_even_with_more_cpu() -> None:
    # 10% slower (under the 15% threshold) although the server works harder per request.
    assert decide(rec(5000, 80.0), rec(4500, 95.0), rec(5000, 80.0)).outcome == "does not hold"


def test_without_cpu_figures_throughput_decides_alone() -> None:
    verdict = decide(rec(5000, None), rec(250, None), rec(4900, None))
    assert verdict.outcome == "partly holds"
    assert verdict.figures["base_added_cpu_ms"] is None and "n/a" in verdict.text


def test_inconclusive_when_a_deciding_variant_failed() -> None:
    verdict = decide(rec(5000), rec(250, status="failed"), rec(4900))
    assert verdict.outcome == "inconclusive" and "base-10" in verdict.text


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
