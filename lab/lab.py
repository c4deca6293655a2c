"""The lab: a real PostgreSQL 15 primary with WAL archiving and pg_basebackup backups.

Used by the tests, `make demo` and the benchmarks. Everything lives under one root directory;
`destroy()` (also run by the context manager on failure) stops the server and removes it all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg

from adapters.pg_runtime import PostgresRuntime, remove_tree
from adapters.pg_server import PostgresServer, free_port
from adapters.reachability import ensure_reachable
from domain.lsn import parse_lsn


@dataclass(frozen=True)
class Marker:
    """One committed transaction of the workload, with what exists once it is replayed."""

    label: str
    xid: int
    commit_time: datetime
    lsn_after: str  # insert position right after the commit: between this and the next commit
    rows: int


class Lab:
    def __init__(self, root: Path, runtime: PostgresRuntime | None = None) -> None:
        self.root = root.resolve()
        self.runtime = runtime or PostgresRuntime.from_env()
        self.wal_archive = self.root / "wal_archive"
        self.base_backups = self.root / "base_backups"
        self.primary = PostgresServer(
            runtime=self.runtime,
            data_dir=self.root / "primary",
            socket_dir=self.root / "socket",
            port=free_port(),
            log_file=self.root / "primary.log",
        )

    def __enter__(self) -> Lab:
        try:
            self.start()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def start(self) -> None:
        # Before anything exists: initdb, run as the server user, must reach the root.
        ensure_reachable(self.root, self.runtime.os_user)
        remove_tree(self.root)
        self.runtime.make_private_dir(self.root, 0o755)
        for path in (self.wal_archive, self.base_backups, self.primary.socket_dir):
            self.runtime.make_private_dir(path, 0o755)
        self.runtime.run(
            "initdb", "-D", str(self.primary.data_dir), "-U", "postgres", "-A", "trust",
            "--no-sync", "-E", "UTF8", "--locale", "C",
        )
        archive = self.wal_archive
        self.primary.start({
            "listen_addresses": "",
            "unix_socket_directories": str(self.primary.socket_dir),
            "port": str(self.primary.port),
            "wal_level": "replica",
            "archive_mode": "on",
            "archive_command": f"test ! -f {archive}/%f && cp %p {archive}/%f",
            "max_wal_senders": "4",
            # Only the workload commits: autovacuum's commits would blur "the last commit
            # before the target" that tests assert exactly.
            "autovacuum": "off",
            "track_commit_timestamp": "on",
            # A server zone far from UTC: pitrdrill must never depend on it.
            "timezone": "Pacific/Auckland",
            "log_timezone": "UTC",
            "fsync": "off",
        })

    def destroy(self) -> None:
        self.primary.stop("immediate")
        remove_tree(self.root)

    def connect(self, dbname: str = "postgres") -> psycopg.Connection:
        return self.primary.connect(dbname)

    def sql(self, query: str, dbname: str = "postgres") -> list[tuple]:
        with self.connect(dbname) as conn:
            cur = conn.execute(query)
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str) -> None:
        self.sql(f'CREATE DATABASE "{name}"')

    def commit(self, dbname: str, statements: list[str], label: str, rows: int) -> Marker:
        """Run statements as one transaction and record exactly where it committed."""
        with psycopg.connect(self.primary.conninfo(dbname)) as conn:
            for statement in statements:
                conn.execute(statement)
            xid = conn.execute("SELECT txid_current()").fetchone()[0]
            conn.commit()
            commit_time, lsn = conn.execute(
                "SELECT pg_xact_commit_timestamp(%s::text::xid), pg_current_wal_insert_lsn()::text",
                (xid,),
            ).fetchone()
        return Marker(label=label, xid=xid, commit_time=commit_time, lsn_after=lsn, rows=rows)

    def restore_point(self, name: str) -> str:
        return self.sql(f"SELECT pg_create_restore_point('{name}')::text")[0][0]

    def base_backup(self, name: str, *options: str) -> Path:
        """pg_basebackup into base_backups/name; options such as -Ft -z pass through."""
        target = self.base_backups / name
        self.runtime.run(
            "pg_basebackup", "-h", str(self.primary.socket_dir), "-p", str(self.primary.port),
            "-U", "postgres", "-D", str(target), "--checkpoint=fast", "--no-sync", *options,
        )
        return target

    def archive_all(self, timeout_s: float = 60) -> str:
        """Switch to a new segment and wait until everything so far is in the archive."""
        switched = self.sql("SELECT pg_walfile_name(pg_switch_wal())")[0][0]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            last = self.sql("SELECT last_archived_wal FROM pg_stat_archiver")[0][0]
            if last is not None and last[:24] >= switched:
                return switched
            time.sleep(0.05)
        raise TimeoutError(f"segment {switched} was not archived within {timeout_s}s")

    def current_lsn(self) -> int:
        return parse_lsn(self.sql("SELECT pg_current_wal_insert_lsn()::text")[0][0])
