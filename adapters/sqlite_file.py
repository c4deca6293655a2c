"""The local SQLite file (PITRDRILL_INDEX) that holds the WAL index and the drill throughput
history, each in tables of its own. Never inside a backup repository or WAL archive.

Safe across threads and processes: WAL journal mode, one connection per call, every write one
transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_BUSY_TIMEOUT_S = 30.0


def prepare(path: Path) -> None:
    """Create the file's directory, and let readers and writers work at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with transaction(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


@contextmanager
def transaction(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection whose statements form one transaction: committed on success, rolled back
    on error."""
    conn = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_S)
    try:
        conn.execute("PRAGMA foreign_keys=ON")
        with conn:
            yield conn
    finally:
        conn.close()
