"""The WAL index's store: the events pg_waldump found in each archived segment, kept in the
local SQLite file (adapters.sqlite_file), never inside the WAL archive.

Archived segments are immutable, so each is indexed once, keyed by timeline, file name, size
and checksum; a later run indexes only files it has not seen. An archive's current set of
segments is recorded per run, so a segment deleted from the archive (or one from another
cluster sharing the store) never feeds a prediction.

It also remembers which base backups passed (or failed) verification, keyed by their
manifest's checksum and their files, so a backup is verified once, not on every plan.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from adapters.sqlite_file import prepare, transaction
from domain.lsn import format_lsn
from domain.wal_records import WalEvent

# The store is a cache of immutable facts: a different layout is rebuilt, never migrated.
# 4: segment checksums are CRC-32C (hardware-accelerated); backup verifications are kept.
_SCHEMA_VERSION = 4
_SCHEMA = """
CREATE TABLE IF NOT EXISTS segments (
    id INTEGER PRIMARY KEY,
    timeline INTEGER NOT NULL,
    file_name TEXT NOT NULL,
    size INTEGER NOT NULL,
    checksum TEXT NOT NULL,
    -- indexed while the next segment was missing: a record crossing into it was not readable
    tail_open INTEGER NOT NULL,
    -- unreadable from this LSN on (the events before it are good), and why
    corrupt_at INTEGER,
    problem TEXT,
    UNIQUE (timeline, file_name, size, checksum)
);
CREATE TABLE IF NOT EXISTS events (
    segment_id INTEGER NOT NULL REFERENCES segments (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    timeline INTEGER NOT NULL,
    start_lsn INTEGER NOT NULL,
    end_lsn INTEGER NOT NULL,
    xid INTEGER NOT NULL,
    timestamp TEXT,
    name TEXT
);
CREATE INDEX IF NOT EXISTS events_by_segment ON events (segment_id);
CREATE TABLE IF NOT EXISTS archive_segments (
    archive TEXT NOT NULL,
    segment_id INTEGER NOT NULL REFERENCES segments (id) ON DELETE CASCADE,
    PRIMARY KEY (archive, segment_id)
);
-- Checksums already computed, by file path, size and mtime (segments are immutable).
CREATE TABLE IF NOT EXISTS file_checksums (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    checksum TEXT NOT NULL
);
-- A backup verified (pg_verifybackup, pgbackrest verify) once per manifest and file set: the
-- key is the manifest's checksum and the backup's files (count, bytes, newest mtime).
CREATE TABLE IF NOT EXISTS backup_verifications (
    backup_path TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    ok INTEGER NOT NULL,
    message TEXT,
    PRIMARY KEY (backup_path, fingerprint)
);
"""


@dataclass(frozen=True)
class SegmentKey:
    timeline: int
    file_name: str
    size: int
    checksum: str
    # Where and as what the checksum was last computed (not part of the identity).
    path: str = ""
    mtime_ns: int = 0


@dataclass(frozen=True)
class IndexedSegment:
    """What one reading of a segment found: its events (those before `corrupt_at`, if it is
    damaged, with the problem), and whether its successor was missing then."""

    key: SegmentKey
    events: list[WalEvent] = field(default_factory=list)
    tail_open: bool = False
    corrupt_at: int | None = None
    problem: str | None = None


class WalIndexStore:
    def __init__(self, path: Path) -> None:
        self._path = path
        prepare(path)
        with transaction(path) as conn:
            if conn.execute("PRAGMA user_version").fetchone()[0] != _SCHEMA_VERSION:
                conn.executescript("DROP TABLE IF EXISTS archive_segments;"
                                   "DROP TABLE IF EXISTS file_checksums;"
                                   "DROP TABLE IF EXISTS backup_verifications;"
                                   "DROP TABLE IF EXISTS events; DROP TABLE IF EXISTS segments;")
                conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            conn.executescript(_SCHEMA)

    def clear(self) -> None:
        """Forget everything (a cache: it is all read again). For measuring a cold index."""
        with self._writing() as conn:
            for table in ("archive_segments", "events", "segments", "file_checksums",
                          "backup_verifications"):
                conn.execute(f"DELETE FROM {table}")

    def tails(self) -> dict[tuple[int, str, int, str], bool]:
        """tail_open of every indexed segment, by identity: one query for a whole archive."""
        with transaction(self._path) as conn:
            rows = conn.execute(
                "SELECT timeline, file_name, size, checksum, tail_open FROM segments")
            return {(tl, name, size, checksum): bool(tail) for tl, name, size, checksum, tail
                    in rows}

    def record_segment(self, key: SegmentKey, events: list[WalEvent], tail_open: bool,
                       corrupt_at: int | None = None, problem: str | None = None) -> None:
        """Store a segment's events (those before `corrupt_at`, if it is damaged), replacing
        an earlier indexing of the same file."""
        self.record_segments([IndexedSegment(key, events, tail_open, corrupt_at, problem)])

    def record_segments(self, indexed: list[IndexedSegment]) -> None:
        """Several segments in one transaction (one pg_waldump run's worth)."""
        if not indexed:
            return
        with self._writing() as conn:
            for one in indexed:
                key = one.key
                conn.execute(
                    "DELETE FROM segments"
                    " WHERE timeline = ? AND file_name = ? AND size = ? AND checksum = ?",
                    (key.timeline, key.file_name, key.size, key.checksum),
                )
                segment_id = conn.execute(
                    "INSERT INTO segments (timeline, file_name, size, checksum, tail_open,"
                    " corrupt_at, problem) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (key.timeline, key.file_name, key.size, key.checksum, one.tail_open,
                     one.corrupt_at, one.problem),
                ).lastrowid
                conn.executemany(
                    "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(segment_id, e.kind, e.timeline, e.start, e.end, e.xid,
                      e.timestamp.isoformat() if e.timestamp else None, e.name)
                     for e in one.events],
                )

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """A write transaction. The store is a cache: in WAL mode, synchronous=NORMAL keeps it
        consistent across a crash of the worker and skips an fsync per transaction (an OS
        crash may lose the last indexings, which are simply done again)."""
        with transaction(self._path) as conn:
            conn.execute("PRAGMA synchronous=NORMAL")
            yield conn

    # --- backup verifications ------------------------------------------------------------------

    def backup_verification(self, backup_path: str, fingerprint: str) -> tuple[bool, str] | None:
        """(passed, message) of an earlier verification of this very backup, else None."""
        with transaction(self._path) as conn:
            row = conn.execute(
                "SELECT ok, message FROM backup_verifications"
                " WHERE backup_path = ? AND fingerprint = ?", (backup_path, fingerprint),
            ).fetchone()
        return None if row is None else (bool(row[0]), row[1] or "")

    def record_backup_verification(self, backup_path: str, fingerprint: str, ok: bool,
                                   message: str = "") -> None:
        with self._writing() as conn:
            # One verdict per backup path: an older fingerprint's is stale.
            conn.execute("DELETE FROM backup_verifications WHERE backup_path = ?",
                         (backup_path,))
            conn.execute("INSERT INTO backup_verifications VALUES (?, ?, ?, ?)",
                         (backup_path, fingerprint, ok, message))

    def known_checksums(self) -> dict[tuple[str, int, int], str]:
        with transaction(self._path) as conn:
            rows = conn.execute("SELECT path, size, mtime_ns, checksum FROM file_checksums")
            return {(path, size, mtime): checksum for path, size, mtime, checksum in rows}

    def set_archive_segments(self, archive: str, keys: list[SegmentKey]) -> None:
        """Record which indexed segments the archive holds now, and their checksums."""
        with self._writing() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO file_checksums VALUES (?, ?, ?, ?)",
                [(k.path, k.size, k.mtime_ns, k.checksum) for k in keys if k.path],
            )
            conn.execute("DELETE FROM archive_segments WHERE archive = ?", (archive,))
            conn.executemany(
                "INSERT INTO archive_segments SELECT ?, id FROM segments"
                " WHERE timeline = ? AND file_name = ? AND size = ? AND checksum = ?",
                [(archive, k.timeline, k.file_name, k.size, k.checksum) for k in keys],
            )

    def archive_identities(self, archive: str) -> set[tuple[int, str, int, str]]:
        """(timeline, file name, size, checksum) of the segments recorded for the archive."""
        with transaction(self._path) as conn:
            return set(conn.execute(
                "SELECT s.timeline, s.file_name, s.size, s.checksum"
                " FROM archive_segments a JOIN segments s ON s.id = a.segment_id"
                " WHERE a.archive = ?", (archive,)).fetchall())

    def archive_corruption(self, archive: str) -> list[tuple[int, str, int, str]]:
        """(timeline, file name, first unreadable LSN, problem) of the archive's damaged
        segments."""
        with transaction(self._path) as conn:
            return conn.execute(
                "SELECT s.timeline, s.file_name, s.corrupt_at, s.problem"
                " FROM archive_segments a JOIN segments s ON s.id = a.segment_id"
                " WHERE a.archive = ? AND s.corrupt_at IS NOT NULL ORDER BY s.corrupt_at",
                (archive,),
            ).fetchall()

    def archive_events(self, archive: str) -> list[WalEvent]:
        """Every event of the archive's current segments, in WAL order."""
        with transaction(self._path) as conn:
            rows = conn.execute(
                "SELECT e.kind, e.timeline, e.start_lsn, e.end_lsn, e.xid, e.timestamp, e.name,"
                "       s.file_name"
                " FROM archive_segments a JOIN segments s ON s.id = a.segment_id"
                " JOIN events e ON e.segment_id = s.id"
                " WHERE a.archive = ? ORDER BY e.start_lsn, e.timeline",
                (archive,),
            ).fetchall()
        return [
            WalEvent(kind=kind, timeline=timeline, start_lsn=format_lsn(start),
                     end_lsn=format_lsn(end), xid=xid,
                     timestamp=datetime.fromisoformat(stamp) if stamp else None,
                     name=name, segment=file_name)
            for kind, timeline, start, end, xid, stamp, name, file_name in rows
        ]
