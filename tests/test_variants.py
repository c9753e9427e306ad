"""Every variant answers correctly against the embedded PostgreSQL, and verification
catches a variant that does not."""

from __future__ import annotations

import dataclasses
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import pytest

from harness import database, procs, runner
from harness.database import Database
from harness.pairs import BenchError, Pair, Variant, discover
from harness.scenario import Scenario

SCENARIO = Scenario(name="test", rows=1000)
CASES = [(pair, variant) for pair in discover().values() for variant in pair.variants]


@pytest.mark.slow
@pytest.mark.parametrize(("pair", "variant"), CASES, ids=[f"{p.name}/{v.name}" for p, v in CASES])
def test_variant_verifies(db: Database, pair: Pair, variant: Variant, tmp_path: Path) -> None:
    server, port = runner.start_server(pair, variant, pair.knobs, db, tmp_path, SCENARIO)
    try:
        checked = runner.verify(port, variant, db, rows=1000)
        hostile = {item: hostile_status(port, variant, item) for item in HOSTILE_IDS}
        listening = {c.laddr.ip for c in psutil.Process(server.pid).net_connections("inet") if c.status == "LISTEN"}
    finally:
        server.stop()
    assert checked["status"] == 200 and checked["body"] == (variant.expect or database.fetch_row)(db, checked["id"])
    assert server.exited() is not None
    assert listening == {"127.0.0.1"}, "servers listen on loopback only"
    # Parameterised queries and typed paths: hostile ids are refused, never a 500.
    assert all(400 <= status < 500 for status in hostile.values()), hostile
    assert database.fetch_row(db, 1000) is not None and database.fetch_row(db, 1001) is None


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
