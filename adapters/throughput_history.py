"""What finished drills measured on this machine, for the next plans' duration estimates."""

from __future__ import annotations

import statistics
from pathlib import Path

from adapters.sqlite_file import prepare, transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS drill_throughput (
    recorded_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    restore_mb_per_s REAL NOT NULL,
    replay_mb_per_s REAL NOT NULL
);
"""


class ThroughputHistory:
    def __init__(self, path: Path) -> None:
        self._path = path
        prepare(path)
        with transaction(path) as conn:
            conn.executescript(_SCHEMA)

    def record(self, restore_mb_per_s: float, replay_mb_per_s: float) -> None:
        with transaction(self._path) as conn:
            conn.execute("INSERT INTO drill_throughput (restore_mb_per_s, replay_mb_per_s) "
                         "VALUES (?, ?)", (restore_mb_per_s, replay_mb_per_s))

    def recent(self, drills: int = 10) -> tuple[float, float] | None:
        """Median restore and replay MB/s of the last drills (None before the first)."""
        with transaction(self._path) as conn:
            rows = conn.execute("SELECT restore_mb_per_s, replay_mb_per_s FROM drill_throughput "
                                "ORDER BY rowid DESC LIMIT ?", (drills,)).fetchall()
        if not rows:
            return None
        return statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)
