"""An app for the probe's tests that, like many projects, reads its database URL from a
variable of its own (SHOP_DATABASE_URL) and its settings from a .env file, and serves a
table it does not create: the probe's --seed-sql creates it and its --seed-cmd fills it."""

import contextlib
import os

import psycopg2
from fastapi import FastAPI, HTTPException

DSN = os.environ["SHOP_DATABASE_URL"]
GREETING = os.environ["SHOP_GREETING"]  # only the --env-file sets it

app = FastAPI()


@app.get("/products/{product_id}")
def product(product_id: int) -> dict[str, object]:
    with contextlib.closing(psycopg2.connect(DSN)) as conn, conn.cursor() as cur:
        cur.execute("SELECT name FROM probe_shop_products WHERE id = %s", (product_id,))
        row = cur.fetchone()
    if row is None:
        raise HTTPException(status_code=404, detail="no such product")
    return {"id": product_id, "name": row[0], "greeting": GREETING}
