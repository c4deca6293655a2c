"""The WAL index: the archive's commits, aborts and restore points, read with pg_waldump, and
where recovery will stop, predicted from them.

Each segment is read by its own pg_waldump (adapters.waldump), one worker process per core:
parsing the output in Python is most of the work, so threads would all wait for one
interpreter. What was found is kept in the WalIndexStore, so a segment is read once.

pg_waldump reads one segment only up to its end, so a commit record that starts in a segment
and finishes in the next would be lost between the two runs; the next segment's first page
header says how long that record goes on, and the run reads exactly that far into it.

Archived segments are complete, so any read error in one is corruption (WAL_CORRUPT, naming
it). Only a `.partial` segment legitimately ends with an error: that is the end of its WAL.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from adapters.wal_archive import ArchivedSegment, ArchiveListing, list_archive
from adapters.wal_index_store import SegmentKey, WalIndexStore
from adapters.waldump import PgWaldump, segment_bytes
from domain.catalog import BaseBackup
from domain.errors import DrillError
from domain.lsn import format_lsn, parse_lsn, parse_segment_name
from domain.prediction import Prediction, predict_stop
from domain.targets import ResolvedTarget
from domain.timelines import TimelineHistory, choose_timeline, on_timeline
from domain.wal_pages import LONG_PAGE_HEADER, continuation_end
from domain.wal_records import WalEvent, WalRecord, parse_records, parse_waldump

_LSN_IN_ERROR = re.compile(r"\bat ([0-9A-F]+/[0-9A-F]+)")
_CHUNK = 1 << 20
# Workers start fresh rather than forking a process whose other threads may hold locks.
_SPAWN = multiprocessing.get_context("spawn")
# Only these resource managers carry commits, aborts and restore points; pg_waldump filters
# before formatting, so the output stays small however busy the WAL is.
_EVENT_RMGRS = ("--rmgr=Transaction", "--rmgr=XLOG")


@dataclass(frozen=True)
class _SegmentJob:
    segment: ArchivedSegment
    successor: ArchivedSegment | None
    key: SegmentKey


class IndexProgress(BaseModel):
    segments_total: int = 0
    segments_to_index: int = 0
    segments_indexed: int = 0
    events_indexed: int = 0


class CorruptSegment(BaseModel):
    name: str
    timeline: int
    segno: int
    at_lsn: str  # recovery reads every record before this one
    problem: str


class IndexResult(BaseModel):
    segments: int  # in the archive now
    segments_indexed: int  # read by pg_waldump in this run (the rest were already indexed)
    events_indexed: int
    bytes_indexed: int
    seconds: float
    timelines: list[TimelineHistory]
    # Unreadable segments: not an error by themselves, only if recovery needs them.
    corrupt: list[CorruptSegment] = []


def _bad_record_lsn(stderr: str, segment_start: int) -> int:
    """Where pg_waldump's complaint says the bad record starts ('... in record at X/Y'; the
    last LSN named is the record it could not read), else the segment's start."""
    named = _LSN_IN_ERROR.findall(stderr)
    return parse_lsn(named[-1]) if named else segment_start


def _checksum(path: Path) -> str:
    crc = 0
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return f"{crc:08x}"


def _key(segment: ArchivedSegment, known: dict[tuple[str, int, int], str]) -> SegmentKey:
    """The segment's identity. Archived segments are immutable: a file whose path, size and
    mtime are unchanged keeps its checksum, so a large archive is not re-read every plan."""
    stat = segment.path.stat()
    checksum = known.get((str(segment.path), stat.st_size, stat.st_mtime_ns)) \
        or _checksum(segment.path)
    return SegmentKey(segment.timeline, segment.path.name, stat.st_size, checksum,
                      str(segment.path), stat.st_mtime_ns)


def _needs_index(listing: ArchiveListing, segment: ArchivedSegment, key: SegmentKey,
                 tails: dict[tuple[int, str, int, str], bool]) -> bool:
    tail_open = tails.get((key.timeline, key.file_name, key.size, key.checksum))
    if tail_open is None:
        return True
    # Indexed before its successor was archived: a record crossing into it is missing.
    return tail_open and listing.find(segment.timeline, segment.segno + 1) is not None


class WalIndex:
    def __init__(self, waldump: PgWaldump, store: WalIndexStore,
                 parallelism: int | None = None) -> None:
        self._waldump = waldump
        self._store = store
        self._parallelism = parallelism or os.cpu_count() or 1
        self._segment_size = waldump.segment_size

    # --- plain methods ---------------------------------------------------------------------

    def index(self, archive: Path,
              on_progress: Callable[[IndexProgress], None] = lambda _: None) -> IndexResult:
        """Index every segment of the archive not indexed yet, in parallel."""
        started = time.perf_counter()
        listing = list_archive(archive, self._segment_size)
        known = self._store.known_checksums()
        with ThreadPoolExecutor(self._parallelism) as threads:  # crc32 releases the GIL
            keys = list(threads.map(lambda s: _key(s, known), listing.segments))
        tails = self._store.tails()
        jobs = [_SegmentJob(s, listing.find(s.timeline, s.segno + 1), k)
                for s, k in zip(listing.segments, keys) if _needs_index(listing, s, k, tails)]
        progress = IndexProgress(segments_total=len(keys), segments_to_index=len(jobs))
        with ProcessPoolExecutor(self._parallelism, mp_context=_SPAWN) as processes:
            for events in processes.map(self._index_job, jobs):
                progress.segments_indexed += 1
                progress.events_indexed += events
                on_progress(progress)
        self._store.set_archive_segments(str(archive.resolve()), keys)
        corrupt = [
            CorruptSegment(name=name, timeline=timeline, at_lsn=format_lsn(at),
                           segno=parse_segment_name(name[:24], self._segment_size)[1],
                           problem=problem)
            for timeline, name, at, problem in self._store.archive_corruption(
                str(archive.resolve()))
        ]
        return IndexResult(
            segments=len(keys), segments_indexed=len(jobs), events_indexed=progress.events_indexed,
            bytes_indexed=sum(job.key.size for job in jobs),
            seconds=time.perf_counter() - started, timelines=list(listing.histories.values()),
            corrupt=corrupt,
        )

    def predict(self, archive: Path, target: ResolvedTarget, backup: BaseBackup,
                until_lsn: int | None = None) -> Prediction:
        """Where recovery from `backup` to `target` stops, from the index of `archive`, on
        the WAL before `until_lsn` (where the archive breaks) if given."""
        listing = list_archive(archive, self._segment_size)
        history = choose_timeline(target.timeline, backup.timeline, listing.histories)
        # restore_command never fetches a .partial segment: its records are not replayed.
        events = [e for e in on_timeline(self.events(archive), history)
                  if (until_lsn is None or e.end <= until_lsn) and ".partial" not in e.segment]
        record = None
        if target.mode == "lsn":
            assert target.lsn is not None
            record = self.record_at(listing, history, parse_lsn(target.lsn))
        return predict_stop(events, target, backup, record)

    def events(self, archive: Path) -> list[WalEvent]:
        """Every indexed event of the archive's segments as of its last indexing, WAL order."""
        return self._store.archive_events(str(archive.resolve()))

    def record_at(self, listing: ArchiveListing, history: TimelineHistory,
                  lsn: int) -> WalRecord | None:
        """The first record of any kind starting at or after `lsn` (None: the archive ends
        first). Reads the segment holding `lsn` and the two after it, if archived."""
        timeline = history.timeline_at(lsn)
        first = lsn // self._segment_size
        copies = [listing.find(timeline, segno) for segno in range(first, first + 3)]
        if copies[0] is None:
            return None
        output = self._waldump.dump(timeline, filter(None, copies),
                                    f"--start={format_lsn(lsn)}", "--limit=1")
        records = parse_records(output.stdout, self._segment_size)
        return records[0] if records else None

    # --- one segment -----------------------------------------------------------------------

    def _index_job(self, job: _SegmentJob) -> int:
        return self._index_segment(job.segment, job.successor, job.key)

    def _index_segment(self, segment: ArchivedSegment, successor: ArchivedSegment | None,
                       key: SegmentKey) -> int:
        start = segment.segno * self._segment_size
        end = start + self._segment_size
        try:
            with self._waldump.scratch() as scratch:
                self._waldump.materialize(segment, scratch, expect_full=not segment.partial)
                if successor is not None:
                    header = segment_bytes(successor, LONG_PAGE_HEADER)
                    crossing_end = continuation_end(end, header, self._segment_size)
                    if crossing_end is not None:
                        self._waldump.materialize(successor, scratch, limit=crossing_end - end)
                        end = crossing_end
                output = self._waldump.run(scratch, segment.timeline, *_EVENT_RMGRS,
                                           f"--start={format_lsn(start)}",
                                           f"--end={format_lsn(end)}")
        except DrillError as unusable:  # wrong size, undecodable: unreadable from byte one
            self._store.record_segment(key, [], successor is None, start, unusable.message)
            return 0
        events = parse_waldump(output.stdout, segment.timeline, segment.path.name,
                               self._segment_size)
        corrupt_at = problem = None
        # A .partial segment's error is its end of WAL; in a complete one it is damage, and
        # recovery replays every record before the bad one: keep those, break there.
        if output.returncode != 0 and not segment.partial:
            problem = output.stderr.strip()
            corrupt_at = _bad_record_lsn(output.stderr, start)
            events = [e for e in events if e.end <= corrupt_at]
        self._store.record_segment(key, events, successor is None, corrupt_at, problem)
        return len(events)
