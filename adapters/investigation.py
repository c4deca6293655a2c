"""The investigation's I/O: bring the WAL index up to date, follow the archive's newest
timeline, and, to filter by relation, ask pg_waldump which transactions touched it.

A relation is named in WAL block references by its storage (tablespace/database/relfilenode),
not its name, so `schema.table` needs the live cluster's catalog (`--dsn`). The relfilenode is
today's: a TRUNCATE, VACUUM FULL or CLUSTER since the incident gave the table a new one, and
then the old locator must be given directly.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import psycopg
from pydantic import BaseModel

from adapters.wal_archive import ArchiveListing, list_archive
from adapters.wal_index import IndexResult, WalIndex
from adapters.waldump import PgWaldump
from domain.errors import DrillError, ErrorCode
from domain.investigation import (
    BurstRule,
    Investigation,
    RelFileLocator,
    exclude_xid,
    investigate,
    relation_scan_range,
    timeline_spans,
    transactions_touching,
)
from domain.lsn import format_lsn
from domain.timelines import TimelineHistory, choose_timeline, on_timeline
from domain.wal_records import WalEvent, WalRecord, parse_records

_CONNECT_TIMEOUT_S = 10
# The tablespace a relation's blocks are in: its own, or (0) its database's default. Shared
# catalogs are referenced with database 0. pg_relation_filenode also resolves mapped catalogs,
# whose pg_class.relfilenode is 0; pg_relation_filepath would need parsing back into numbers.
_LOCATE = """
SELECT CASE WHEN c.reltablespace = 0 THEN d.dattablespace ELSE c.reltablespace END,
       CASE WHEN c.relisshared THEN 0 ELSE d.oid END,
       pg_relation_filenode(c.oid)
FROM pg_class c JOIN pg_database d ON d.datname = current_database()
WHERE c.oid = %s::regclass
"""
_HEAP_RMGRS = ("--rmgr=Heap", "--rmgr=Heap2")


class InvestigateRequest(BaseModel):
    archive: str
    around: datetime | None = None  # UTC; None: the commit time of exclude_xid
    window_seconds: float
    rule: BurstRule = BurstRule()
    relation: str | None = None  # T/D/R, or a name looked up through dsn
    dsn: str | None = None
    exclude_xid: int | None = None


class RelationFilter(BaseModel):
    relation: str
    locator: str
    scanned_from_lsn: str | None  # None: no commit in the window, nothing read
    scanned_to_lsn: str | None
    transactions: int  # in the scanned WAL, committed or not


class InvestigationReport(BaseModel):
    archive: str
    timeline: int
    index: IndexResult
    relation: RelationFilter | None
    investigation: Investigation


class RelationCatalog:
    """Where a named relation's blocks are, asked of the cluster it lives in."""

    def locate(self, dsn: str, name: str) -> RelFileLocator:
        try:
            with psycopg.connect(dsn, connect_timeout=_CONNECT_TIMEOUT_S) as conn:
                row = conn.execute(_LOCATE, (name,)).fetchone()
        except psycopg.Error as exc:
            raise DrillError(ErrorCode.SPEC_INVALID,
                             f"cannot look up relation {name!r} through --dsn: {exc}".strip(),
                             "Check --dsn connects to the relation's database, and the name "
                             "(schema.table) exists there.") from exc
        if row is None or row[2] is None:
            raise DrillError(ErrorCode.SPEC_INVALID,
                             f"{name!r} has no storage of its own (a view or partitioned "
                             "table)", "Name a table, or each partition of a partitioned one.")
        return RelFileLocator(tablespace=row[0], database=row[1], relfilenode=row[2])


class WalRangeReader:
    """Any records over a WAL range, read from the archive."""

    def __init__(self, waldump: PgWaldump) -> None:
        self._waldump = waldump

    def records(self, listing: ArchiveListing, history: TimelineHistory, start: int, end: int,
                *filters: str) -> list[WalRecord]:
        """Records starting in [start, end) along the timeline path, kept by pg_waldump's
        `filters`; the segment after each piece is read too, for a record crossing into it."""
        segment_size = self._waldump.segment_size
        records = []
        for timeline, low, high in timeline_spans(history, start, end):
            segnos = range(low // segment_size, (high - 1) // segment_size + 2)
            segments = filter(None, (listing.find(timeline, n) for n in segnos))
            output = self._waldump.dump(timeline, segments, f"--start={format_lsn(low)}",
                                        f"--end={format_lsn(high)}", *filters)
            if output.returncode != 0:
                raise DrillError(ErrorCode.WAL_CORRUPT,
                                 f"pg_waldump cannot read timeline {timeline} from "
                                 f"{format_lsn(low)} to {format_lsn(high)}: "
                                 f"{output.stderr.strip()}")
            records += parse_records(output.stdout, segment_size)
        return records


class Investigator:
    def __init__(self, index: WalIndex, reader: WalRangeReader, catalog: RelationCatalog) -> None:
        self._index = index
        self._reader = reader
        self._catalog = catalog

    def investigate(self, request: InvestigateRequest) -> InvestigationReport:
        # The relation is looked up first: a wrong name or DSN is refused before indexing.
        locator = self._locator(request) if request.relation else None
        archive = Path(request.archive)
        indexed = self._index.index(archive)
        listing = list_archive(archive)
        history = _newest_path(listing)
        events = on_timeline(self._index.events(archive), history)
        around = request.around or exclude_xid(events, request.exclude_xid).commit.commit_time
        window = timedelta(seconds=request.window_seconds)
        relation, xids = None, None
        if locator is not None:
            relation, xids = self._relation_filter(request.relation, locator, listing, history,
                                                   events, around, window)
        found = investigate(events, around, window, request.rule, xids, request.exclude_xid)
        return InvestigationReport(archive=str(archive), timeline=history.timeline,
                                   index=indexed, relation=relation, investigation=found)

    def _locator(self, request: InvestigateRequest) -> RelFileLocator:
        assert request.relation is not None
        locator = RelFileLocator.parse(request.relation)
        if locator is not None:
            return locator
        if request.dsn is None:
            raise DrillError(ErrorCode.SPEC_INVALID,
                             f"relation {request.relation!r} is a name: looking up its storage "
                             "needs the live cluster",
                             "Add --dsn 'host=... dbname=...' for the relation's database, or "
                             "give the relation as tablespace/database/relfilenode.")
        return self._catalog.locate(request.dsn, request.relation)

    def _relation_filter(self, name: str, locator: RelFileLocator, listing: ArchiveListing,
                         history: TimelineHistory, events: list[WalEvent], around: datetime,
                         window: timedelta) -> tuple[RelationFilter, set[int]]:
        scan = relation_scan_range(events, around, window)
        if scan is None:
            return RelationFilter(relation=name, locator=str(locator), scanned_from_lsn=None,
                                  scanned_to_lsn=None, transactions=0), set()
        touched = self._reader.records(listing, history, *scan, *_HEAP_RMGRS,
                                       f"--relation={locator}")
        commits = self._reader.records(listing, history, *scan, "--rmgr=Transaction")
        xids = transactions_touching(touched, commits, events)
        return RelationFilter(relation=name, locator=str(locator),
                              scanned_from_lsn=format_lsn(scan[0]),
                              scanned_to_lsn=format_lsn(scan[1]), transactions=len(xids)), xids


def _newest_path(listing: ArchiveListing) -> TimelineHistory:
    """The timeline path recovery_target_timeline = latest follows from the archive's oldest
    timeline."""
    oldest = min((s.timeline for s in listing.segments), default=1)
    return choose_timeline("latest", oldest, listing.histories)
