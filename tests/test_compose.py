"""docker-compose.yml cannot be started here (no Docker engine), so check its shape."""

from __future__ import annotations

import re

import yaml

from harness.pairs import ROOT


def test_compose_file_provides_a_loopback_postgres_with_healthcheck() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service = compose["services"]["postgres"]
    assert re.fullmatch(r"postgres:\d+(\.\d+)?", service["image"]), "pin the image version"
    assert all(str(port).startswith("127.0.0.1:") for port in service["ports"]), "bind to loopback only"
    assert "pg_isready" in " ".join(service["healthcheck"]["test"])
    env = service["environment"]
    host_port = service["ports"][0].split(":")[1]
    documented = (
        f"postgresql://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@127.0.0.1:{host_port}/{env['POSTGRES_DB']}"
    )
    assert documented in (ROOT / "Makefile").read_text()
    assert documented in (ROOT / "README.md").read_text()
