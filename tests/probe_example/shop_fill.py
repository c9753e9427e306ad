"""The shop's seed command: fills the table --seed-sql created, through the database URL
the probe hands the app (so it also proves the command runs with the app's environment)."""

import contextlib
import os

import psycopg2

ROWS = int(os.environ["SHOP_ROWS"])

with contextlib.closing(psycopg2.connect(os.environ["SHOP_DATABASE_URL"])) as conn, conn.cursor() as cur:
    cur.executemany(
        "INSERT INTO probe_shop_products (id, name) VALUES (%s, %s)", [(i, f"product {i}") for i in range(1, ROWS + 1)]
    )
    conn.commit()
print(f"filled {ROWS} products")
