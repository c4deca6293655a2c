"""A scripted orders workload that records a marker after every transaction.

Each marker says what the database holds once that commit is replayed, so a test knows the
exact row count at any target between two markers.
"""

from __future__ import annotations

from lab.lab import Lab, Marker

SCHEMA = """
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    customer int NOT NULL,
    amount numeric(12, 2) NOT NULL,
    status text NOT NULL DEFAULT 'ok'
)
"""


class OrdersWorkload:
    def __init__(self, lab: Lab, dbname: str = "demo") -> None:
        self.lab = lab
        self.dbname = dbname
        self.rows = 0
        self.damaged = 0

    def create(self) -> None:
        self.lab.create_database(self.dbname)
        self.lab.sql(SCHEMA, self.dbname)

    def insert_batch(self, rows: int, label: str | None = None) -> Marker:
        start = self.rows
        self.rows += rows
        return self.lab.commit(
            self.dbname,
            [
                "INSERT INTO orders (customer, amount) "
                f"SELECT g % 97, (g % 1000) / 10.0 FROM generate_series({start + 1}, {self.rows}) g"
            ],
            label or f"batch of {rows} (total {self.rows})",
            self.rows,
        )

    def insert_batches(self, batches: int, rows_per_batch: int) -> list[Marker]:
        return [self.insert_batch(rows_per_batch) for _ in range(batches)]

    def damage(self, transactions: int, rows_each: int) -> list[Marker]:
        """The incident: a runaway batch job marking healthy orders as void, one txn a chunk."""
        markers = []
        for n in range(transactions):
            first = self.damaged + 1
            self.damaged += rows_each
            markers.append(self.lab.commit(
                self.dbname,
                [f"UPDATE orders SET status = 'void' WHERE id BETWEEN {first} AND {self.damaged}"],
                f"damage {n + 1}/{transactions}",
                self.rows,
            ))
        return markers
