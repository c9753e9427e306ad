"""The load on one variant: closed-loop users, each asking for a random seeded row.

The runner sets BENCH_PATH (a URL template with {id}), BENCH_ROWS, BENCH_WARMUP_S,
BENCH_TIMEOUT_S and BENCH_PHASES. Statistics are reset when the warm-up ends, and the
wall-clock times of start, end of warm-up and stop are written to BENCH_PHASES so the
runner can cut its own samples to the same measured window.
"""

from __future__ import annotations

import json
import os
import random
import time
from typing import Any

import gevent
from locust import FastHttpUser, events, task

PATH = os.environ.get("BENCH_PATH", "/ping")
ROWS = int(os.environ.get("BENCH_ROWS", "1"))
WARMUP_S = float(os.environ.get("BENCH_WARMUP_S", "0"))
TIMEOUT_S = float(os.environ.get("BENCH_TIMEOUT_S", "10"))
PHASES_FILE = os.environ.get("BENCH_PHASES", "")
# Locust's statistics group requests by this name, not by the random URL.
NAME = PATH.replace("{id}", ":id")
phases: dict[str, float] = {}


def write_phases() -> None:
    if PHASES_FILE:
        tmp = f"{PHASES_FILE}.tmp"
        with open(tmp, "w") as out:
            json.dump(phases, out)
        os.replace(tmp, PHASES_FILE)


def end_warmup(environment: Any) -> None:
    gevent.sleep(WARMUP_S)
    environment.runner.stats.reset_all()
    phases["measure_start"] = time.time()
    write_phases()


@events.test_start.add_listener
def on_test_start(environment: Any, **_: Any) -> None:
    phases["load_start"] = time.time()
    write_phases()
    gevent.spawn(end_warmup, environment)


@events.test_stop.add_listener
def on_test_stop(environment: Any, **_: Any) -> None:
    phases["load_stop"] = time.time()
    write_phases()


class ItemUser(FastHttpUser):
    # No wait time: each user sends its next request as soon as the last one returns.
    network_timeout = TIMEOUT_S
    connection_timeout = TIMEOUT_S

    @task
    def get_item(self) -> None:
        item_id = random.randint(1, ROWS)
        with self.client.get(PATH.format(id=item_id), name=NAME, catch_response=True) as resp:
            # Status is checked by Locust; a cheap body check catches a wrong row under load.
            if resp.status_code == 200 and f'"id":{item_id},'.encode() not in (resp.content or b""):
                resp.failure(f"wrong body for id {item_id}")
