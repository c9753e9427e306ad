"""Every variant answers correctly against the embedded PostgreSQL, and verification
catches a variant that does not."""

from __future__ import annotations

import dataclasses
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from harness import database, procs, runner
from harness.database import Database
from harness.pairs import ROOT, BenchError, Pair, Variant, discover
from harness.scenario import Scenario

SCENARIO = Scenario(name="test", rows=1000)
CASES = [(pair, variant) for pair in discover().values() for variant in pair.variants]


def reads_its_variant(pair: Pair) -> bool:
    """Whether the pair's server depends on which variant it was started for: an app that
    reads BENCH_VARIANT (apps.common.variant), a per-start database preparation, or
    several worker processes. Such a pair gets a server per variant; the others serve
    every variant's route from one process, as they would with any BENCH_VARIANT."""
    text = (ROOT / "apps" / pair.name / "app.py").read_text()
    return "variant()" in text or "BENCH_VARIANT" in text or pair.prepare is not None or bool(pair.workers_knob)


class Servers:
    """At most one live server: the previous case's, kept while the next case can share it."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.key = folder, ("", "", ())
        self.server: procs.ManagedProcess | None = None
        self.port = 0
        self.stopped: list[procs.ManagedProcess] = []

    def serve(self, db: Database, pair: Pair, variant: Variant) -> tuple[procs.ManagedProcess, int]:
        key = (pair.name, variant.name if reads_its_variant(pair) else "", variant.server_args)
        if key != self.key or self.server is None or self.server.exited() is not None:
            self.close()
            folder = self.folder / f"{pair.name}-{variant.name}"
            folder.mkdir(parents=True, exist_ok=True)
            self.server, self.port = runner.start_server(pair, variant, pair.knobs, db, folder, SCENARIO)
            self.key = key
        return self.server, self.port

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.stopped.append(self.server)
            self.server = None


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    kept = Servers(tmp_path_factory.mktemp("variants"))
    yield kept
    kept.close()
    assert all(server.exited() is not None for server in kept.stopped)


@pytest.mark.slow
@pytest.mark.parametrize(("pair", "variant"), CASES, ids=[f"{p.name}/{v.name}" for p, v in CASES])
def test_variant_verifies(db: Database, pair: Pair, variant: Variant, servers: Servers) -> None:
    server, port = servers.serve(db, pair, variant)
    checked = runner.verify(port, variant, db, rows=1000)
    hostile = {item: hostile_status(port, variant, item) for item in HOSTILE_IDS}
    listening = {c.laddr.ip for c in psutil.Process(server.pid).net_connections("inet") if c.status == "LISTEN"}
    assert checked["status"] == 200 and checked["body"] == (variant.expect or database.fetch_row)(db, checked["id"])
    assert listening == {"127.0.0.1"}, "servers listen on loopback only"
    # Parameterised queries and typed paths: hostile ids are refused, never a 500.
    assert all(400 <= status < 500 for status in hostile.values()), hostile
    assert database.fetch_row(db, 1000) is not None and database.fetch_row(db, 1001) is None


def test_only_pairs_whose_server_is_the_same_for_every_variant_share_one() -> None:
    pairs = discover()
    assert reads_its_variant(pairs["stall"]) and reads_its_variant(pairs["workers_pool"])
    assert not reads_its_variant(pairs["blocking"]) and not reads_its_variant(pairs["control"])


HOSTILE_IDS = ["1;DROP TABLE bench_items", "1' OR '1'='1", "abc", "0", "-1", "9" * 40, "1.5", "%00"]


def hostile_status(port: int, variant: Variant, item: str) -> int:
    url = f"http://127.0.0.1:{port}{variant.path.replace('{id}', urllib.parse.quote(item, safe='%'))}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


@pytest.mark.slow
def test_verification_rejects_a_wrong_body(db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pair = discover()["deps"]
    variant = pair.variant("async-dep")
    server, port = runner.start_server(pair, variant, pair.knobs, db, tmp_path, SCENARIO)
    try:
        monkeypatch.setattr(
            database, "fetch_row", lambda _db, item_id: {"id": item_id, "name": "other", "price_cents": 0}
        )
        with pytest.raises(BenchError, match="verification failed"):
            runner.verify(port, variant, db, rows=1000)
        wrong_route = Variant("missing", "bad", "/missing/items/{id}", "", ())
        with pytest.raises(BenchError, match="status 404"):
            runner.verify(port, wrong_route, db, rows=1000)
    finally:
        server.stop()


@pytest.mark.slow
def test_server_that_dies_at_start_fails_fast_with_its_log(db: Database, tmp_path: Path) -> None:
    pair = discover()["deps"]
    broken = dataclasses.replace(pair, name="no_such_pair")
    with pytest.raises(BenchError, match="exited with status"):
        runner.start_server(broken, pair.variants[0], {}, db, tmp_path, SCENARIO)


@pytest.mark.slow
def test_port_taken_before_the_server_binds_is_retried(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = discover()["deps"]
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken, procs.free_port()])
        monkeypatch.setattr(runner, "free_port", lambda: next(ports))
        server, port = runner.start_server(pair, pair.variants[1], {}, db, tmp_path, SCENARIO)
        server.stop()
    assert port != taken
    assert "address already in use" in (tmp_path / "server.log").read_text().lower()


def test_postgres_settings_listen_on_loopback(db: Database) -> None:
    with db.connect() as conn, conn.cursor() as cur:
        cur.execute("SHOW listen_addresses")
        assert cur.fetchone()[0] == "127.0.0.1"
