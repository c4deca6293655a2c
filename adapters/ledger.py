"""The drill ledger's stores: a SQLite file on one host (the default), or a table in a real
PostgreSQL database a team shares (a postgresql:// DSN). One table, `pitrdrill_ledger`: the
report as JSON, plus the columns queries filter and sort on. Appends are keyed by the workflow
run id, so a retried append adds nothing. Where a ledger is named to people, its DSN is
redacted.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Protocol

import psycopg
from psycopg.rows import dict_row

from adapters import sqlite_file
from domain.errors import DrillError, ErrorCode
from domain.ledger import LedgerQuery, LedgerRecord, utc
from domain.redaction import redact

TABLE = "pitrdrill_ledger"
_POSTGRES_PREFIXES = ("postgresql://", "postgres://")
# Serializes the first CREATE TABLE of workers appending at once (an arbitrary, fixed key).
_CREATE_LOCK = 0x7069_7472_6C65_6467
_COLUMNS = "run_id, drill_id, kind, database, status, finished_at, appended_at, report"


class Ledger(Protocol):
    @property
    def where(self) -> str:
        """The ledger, as it may be shown: a path, or a DSN without its password."""

    def append(self, record: LedgerRecord) -> bool:
        """False when that run is already there."""

    def records(self, query: LedgerQuery) -> list[LedgerRecord]:
        """Newest first."""

    def record(self, drill_id: str) -> LedgerRecord | None:
        """The newest run of that drill id."""


def open_ledger(spec: str) -> Ledger:
    """A postgresql:// (or postgres://) DSN opens the team's ledger; anything else is a path."""
    if spec.startswith(_POSTGRES_PREFIXES):
        return PostgresLedger(spec)
    return SqliteLedger(Path(spec))


def _where_clause(query: LedgerQuery, placeholder: str, since: object) -> tuple[str, list]:
    conditions, params = [], []
    for column, value in (("database", query.database), ("kind", query.kind)):
        if value is not None:
            conditions.append(f"{column} = {placeholder}")
            params.append(value)
    if query.since is not None:
        conditions.append(f"finished_at >= {placeholder}")
        params.append(since)
    return (" WHERE " + " AND ".join(conditions)) if conditions else "", params


def _unavailable(where: str, exc: Exception) -> DrillError:
    return DrillError(ErrorCode.LEDGER_UNAVAILABLE, redact(f"ledger {where}: {exc}"))


def _stamp(moment: datetime) -> str:
    """UTC with microseconds, always the same width: SQLite compares these as text."""
    return utc(moment).isoformat(timespec="microseconds")


class SqliteLedger:
    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def where(self) -> str:
        return str(self.path)

    @contextmanager
    def _transaction(self, create: bool) -> Iterator[sqlite3.Connection]:
        # Reading a file that is not there would create an empty ledger and hide a wrong path.
        if not create and not self.path.is_file():
            raise DrillError(ErrorCode.LEDGER_UNAVAILABLE, f"no ledger at {self.path}")
        try:
            if create:
                sqlite_file.prepare(self.path)
            with sqlite_file.transaction(self.path) as conn:
                if create:
                    conn.executescript(f"""
                        CREATE TABLE IF NOT EXISTS {TABLE} (
                            run_id TEXT PRIMARY KEY, drill_id TEXT NOT NULL,
                            kind TEXT NOT NULL, database TEXT NOT NULL, status TEXT NOT NULL,
                            finished_at TEXT NOT NULL, appended_at TEXT NOT NULL,
                            report TEXT NOT NULL);
                        CREATE INDEX IF NOT EXISTS {TABLE}_database
                            ON {TABLE} (database, finished_at);
                        CREATE INDEX IF NOT EXISTS {TABLE}_finished ON {TABLE} (finished_at);
                        CREATE INDEX IF NOT EXISTS {TABLE}_drill ON {TABLE} (drill_id);
                    """)
                yield conn
        except (sqlite3.Error, OSError) as exc:
            raise _unavailable(self.where, exc) from exc

    def append(self, record: LedgerRecord) -> bool:
        with self._transaction(create=True) as conn:
            cursor = conn.execute(
                f"INSERT OR IGNORE INTO {TABLE} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (record.run_id, record.drill_id, record.kind, record.database, record.status,
                 _stamp(record.finished_at), _stamp(record.appended_at),
                 record.report.model_dump_json()))
            return cursor.rowcount == 1

    def _select(self, where: str, params: list, limit: str = "") -> list[LedgerRecord]:
        with self._transaction(create=False) as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM {TABLE}{where} "
                                f"ORDER BY finished_at DESC{limit}", params).fetchall()
        names = _COLUMNS.split(", ")
        return [LedgerRecord.model_validate({**dict(zip(names, row)),
                                             "report": json.loads(row[-1])}) for row in rows]

    def records(self, query: LedgerQuery) -> list[LedgerRecord]:
        since = _stamp(query.since) if query.since else None
        return self._select(*_where_clause(query, "?", since))

    def record(self, drill_id: str) -> LedgerRecord | None:
        found = self._select(" WHERE drill_id = ?", [drill_id], " LIMIT 1")
        return found[0] if found else None


class PostgresLedger:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._created = False

    @property
    def where(self) -> str:
        return redact(self._dsn)

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection]:
        """One transaction; the table is created (once per process) if missing."""
        try:
            with psycopg.connect(self._dsn, connect_timeout=10, row_factory=dict_row,
                                 application_name="pitrdrill-ledger") as conn:
                if not self._created:
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CREATE_LOCK,))
                    conn.execute(f"""
                        CREATE TABLE IF NOT EXISTS {TABLE} (
                            run_id text PRIMARY KEY, drill_id text NOT NULL,
                            kind text NOT NULL, database text NOT NULL, status text NOT NULL,
                            finished_at timestamptz NOT NULL, appended_at timestamptz NOT NULL,
                            report jsonb NOT NULL)""")
                    for name, columns in (("database", "database, finished_at"),
                                          ("finished", "finished_at"), ("drill", "drill_id")):
                        conn.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_{name} "
                                     f"ON {TABLE} ({columns})")
                    conn.commit()
                    self._created = True
                yield conn
        except psycopg.Error as exc:
            raise _unavailable(self.where, exc) from exc

    def append(self, record: LedgerRecord) -> bool:
        with self._transaction() as conn:
            cursor = conn.execute(
                f"INSERT INTO {TABLE} ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb) "
                "ON CONFLICT (run_id) DO NOTHING",
                (record.run_id, record.drill_id, record.kind, record.database, record.status,
                 record.finished_at, record.appended_at, record.report.model_dump_json()))
            return cursor.rowcount == 1

    def _select(self, where: str, params: list, limit: str = "") -> list[LedgerRecord]:
        with self._transaction() as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM {TABLE}{where} "
                                f"ORDER BY finished_at DESC{limit}", params).fetchall()
        return [LedgerRecord.model_validate(row) for row in rows]

    def records(self, query: LedgerQuery) -> list[LedgerRecord]:
        return self._select(*_where_clause(query, "%s", query.since))

    def record(self, drill_id: str) -> LedgerRecord | None:
        found = self._select(" WHERE drill_id = %s", [drill_id], " LIMIT 1")
        return found[0] if found else None
