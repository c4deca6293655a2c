"""The smoke-check lab: a database with foreign keys, a timestamp column and the amcheck and
pg_prewarm extensions installed before its base backup (a sandbox paused in recovery cannot
install them), beside a database without any extension.

- `shop`: customers ← orders (placed_at timestamptz) ← refunds; 200 orders, backup `nightly`;
- `plain`: items, no extension (amcheck skipped, warming by sequential read);
- after the backup: `fresh` (100 more orders), then `orphans` (3 refunds of orders that do
  not exist, written with the foreign key's triggers off), then everything is archived;
- `unarchived`: 100 more orders whose WAL is never archived: a `latest` drill replays too
  little, as it would from an archive that lags.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from adapters.pg_runtime import PostgresRuntime
from lab.lab import Lab, Marker

SHOP = "shop"
PLAIN = "plain"
SCHEMA = [
    "CREATE EXTENSION amcheck",
    "CREATE EXTENSION pg_prewarm",
    "CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL)",
    """CREATE TABLE orders (
        id bigserial PRIMARY KEY,
        customer_id int NOT NULL REFERENCES customers,
        amount numeric(12, 2) NOT NULL CHECK (amount >= 0),
        placed_at timestamptz NOT NULL DEFAULT clock_timestamp())""",
    "CREATE INDEX orders_placed_at ON orders (placed_at)",
    """CREATE TABLE refunds (
        id bigserial PRIMARY KEY,
        order_id bigint NOT NULL REFERENCES orders,
        amount numeric(12, 2) NOT NULL)""",
    "INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 20) g",
    "INSERT INTO orders (customer_id, amount) SELECT g % 20 + 1, g FROM generate_series(1, 200) g",
    "INSERT INTO refunds (order_id, amount) SELECT g, 1 FROM generate_series(1, 10) g",
]
ORPHANS = 3
MISSING_ORDER = 100_000  # refunds of orders 100001.. : none exists


@dataclass
class SmokeLab:
    lab: Lab
    fresh: Marker  # the last orders before the orphans
    orphans: Marker
    unarchived: Marker  # committed, never archived
    database: str = SHOP
    plain: str = PLAIN

    def source(self) -> dict:
        return {"kind": "filesystem", "base_backups": str(self.lab.base_backups),
                "wal_archive": str(self.lab.wal_archive)}

    def dsn(self, database: str = SHOP) -> str:
        return self.lab.primary.conninfo(database)


def _orders(lab: Lab, rows: int, label: str) -> Marker:
    return lab.commit(SHOP, [
        f"INSERT INTO orders (customer_id, amount) SELECT g % 20 + 1, g "
        f"FROM generate_series(1, {rows}) g"], label, rows)


@contextmanager
def smoke_lab(root: Path, runtime: PostgresRuntime) -> Iterator[SmokeLab]:
    with Lab(root, runtime) as lab:
        lab.create_database(SHOP)
        for statement in SCHEMA:
            lab.sql(statement, SHOP)
        lab.create_database(PLAIN)
        lab.sql("CREATE TABLE items (id int PRIMARY KEY, label text NOT NULL)", PLAIN)
        lab.sql("INSERT INTO items SELECT g, repeat('x', 100) FROM generate_series(1, 2000) g",
                PLAIN)
        lab.base_backup("nightly")
        time.sleep(1.1)  # backup labels carry whole seconds: targets clear of the last one
        fresh = _orders(lab, 100, "fresh")
        time.sleep(0.05)  # room for a target between the two commits
        orphans = lab.commit(SHOP, [
            # Replica mode fires no foreign-key trigger: rows a real bug or a bad restore leaves.
            "SET LOCAL session_replication_role = replica",
            f"INSERT INTO refunds (order_id, amount) SELECT {MISSING_ORDER} + g, 1 "
            f"FROM generate_series(1, {ORPHANS}) g"], "orphans", ORPHANS)
        lab.archive_all()
        unarchived = _orders(lab, 100, "unarchived")
        yield SmokeLab(lab=lab, fresh=fresh, orphans=orphans, unarchived=unarchived)
