"""The WAL index: the archive's commits, aborts and restore points, read with pg_waldump, and
where recovery will stop, predicted from them.

Segments not indexed yet are cut into runs of consecutive segments, a few per core, and each
run is read by one pg_waldump (adapters.waldump) in a worker thread: pg_waldump does the work
in its own process, so threads keep every core busy without starting interpreters. Only the
resource managers that carry events are printed, so the output is small; when a run's output
is large after all (a busy OLTP archive: tens of thousands of commits per segment), parsing it
is handed to a process pool started for the purpose, so Python's parsing also uses every core.
What was found is kept in the WalIndexStore, so a segment is read once.

A segment's identity is its CRC-32C (hardware-accelerated), computed in the run's worker just
before pg_waldump reads the same file (still in the page cache); a file whose path, size and
mtime are known keeps its checksum without being read.

pg_waldump reads a run only up to its last segment's end, so a commit record that starts there
and finishes in the next segment would be lost; the next segment's first page header says how
long that record goes on, and the run reads exactly that far into it.

Archived segments are complete, so any read error in one is corruption (WAL_CORRUPT, naming
it); the segments after it in the run are read again by a run of their own. Only a `.partial`
segment legitimately ends with an error: that is the end of its WAL.
"""

from __future__ import annotations

import contextlib
import mmap
import multiprocessing
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import crc32c
from pydantic import BaseModel

from adapters.os_user import as_server_user
from adapters.reachability import server_user
from adapters.wal_archive import (
    ArchivedSegment,
    ArchiveListing,
    list_archive,
    unreadable_by,
    unreadable_error,
)
from adapters.wal_index_store import IndexedSegment, SegmentKey, WalIndexStore
from adapters.waldump import PgWaldump, segment_bytes
from domain.catalog import BaseBackup
from domain.errors import DrillError, ErrorCode
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
# Runs per worker (more, shorter runs balance the cores when one is slowed down) and the
# longest run: 64 segments of 16 MiB.
_RUNS_PER_WORKER = 2
_MIN_RUN = 2
_MAX_RUN = 64
# Output above this (about 25,000 events, a second of parsing) is parsed in a process.
_PARSE_IN_PROCESS_BYTES = 4 << 20


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


@dataclass
class _File:
    """One archived file and what is known of it: its key once its checksum is known."""

    segment: ArchivedSegment
    size: int
    mtime_ns: int
    checksum: str | None

    @property
    def key(self) -> SegmentKey:
        assert self.checksum is not None
        return SegmentKey(self.segment.timeline, self.segment.path.name, self.size,
                          self.checksum, str(self.segment.path), self.mtime_ns)


@dataclass(frozen=True)
class _RunDone:
    keys: list[SegmentKey]  # every file of the run, checksummed
    indexed: list[IndexedSegment]  # what pg_waldump found in those it read


def _bad_record_lsn(stderr: str, segment_start: int) -> int:
    """Where pg_waldump's complaint says the bad record starts ('... in record at X/Y'; the
    last LSN named is the record it could not read), else the segment's start."""
    named = _LSN_IN_ERROR.findall(stderr)
    return parse_lsn(named[-1]) if named else segment_start


def _checksum(path: Path) -> str:
    """CRC-32C of the file: mapped, not copied, so it costs what the CPU's crc32 does (a
    file that cannot be mapped is read in chunks)."""
    with path.open("rb") as stream:
        try:
            with mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                return f"{crc32c.crc32c(mapped):08x}"
        except (ValueError, OSError):  # empty, or a file system without mmap
            crc = 0
            while chunk := stream.read(_CHUNK):
                crc = crc32c.crc32c(chunk, crc)
            return f"{crc:08x}"


def _checksummed(files: list[_File]) -> None:
    for file in files:
        if file.checksum is None:
            file.checksum = _checksum(file.segment.path)


def _expect_full(file: _File, segment_size: int) -> None:
    """PostgreSQL refuses an archived segment of the wrong size ('archive file ... has wrong
    size'): so does the index, as materialize does."""
    if file.size != segment_size:
        raise DrillError(ErrorCode.WAL_CORRUPT, f"{file.size} bytes, not {segment_size}")


def _flat_directory(files: list[_File], listing: ArchiveListing,
                    segment_size: int) -> Path | None:
    """The archive directory, when pg_waldump can read these segments there as they are:
    all complete, uncompressed, under their own names, side by side, and so is the next
    segment (a record crossing into it is read there too)."""
    directory = files[0].segment.path.parent
    last = files[-1].segment
    successor = listing.find(last.timeline, last.segno + 1)
    for segment in [f.segment for f in files] + ([successor] if successor else []):
        if segment.partial or segment.compression is not None \
                or segment.path.name != segment.name or segment.path.parent != directory:
            return None
    return directory


def _needs_index(listing: ArchiveListing, segment: ArchivedSegment, key: SegmentKey,
                 tails: dict[tuple[int, str, int, str], bool]) -> bool:
    tail_open = tails.get((key.timeline, key.file_name, key.size, key.checksum))
    if tail_open is None:
        return True
    # Indexed before its successor was archived: a record crossing into it is missing.
    return tail_open and listing.find(segment.timeline, segment.segno + 1) is not None


def _runs(files: list[_File], listing: ArchiveListing, parallelism: int) -> list[list[_File]]:
    """Consecutive complete segments of one timeline (each the copy recovery would read) form
    runs of about equal length, a few per worker; anything else is a run of its own."""
    chains: list[list[_File]] = []
    for file in sorted(files, key=lambda f: (f.segment.timeline, f.segment.segno)):
        segment = file.segment
        chainable = not segment.partial and listing.find(segment.timeline, segment.segno) \
            is segment
        last = chains[-1][-1].segment if chains else None
        if chainable and last is not None and not last.partial \
                and listing.find(last.timeline, last.segno) is last \
                and (last.timeline, last.segno + 1) == (segment.timeline, segment.segno):
            chains[-1].append(file)
        else:
            chains.append([file])
    total = sum(len(chain) for chain in chains)
    # A few runs per worker, but never a pg_waldump per segment while a worker has two.
    length = min(_MAX_RUN, max(_MIN_RUN, -(-total // (parallelism * _RUNS_PER_WORKER))),
                 max(1, -(-total // parallelism)))
    return [chain[i:i + length] for chain in chains for i in range(0, len(chain), length)]


class WalIndex:
    def __init__(self, waldump: PgWaldump, store: WalIndexStore,
                 parallelism: int | None = None) -> None:
        self._waldump = waldump
        self._store = store
        self._parallelism = parallelism or os.cpu_count() or 1
        self._segment_size = waldump.segment_size
        self._parser: ProcessPoolExecutor | None = None
        self._parser_lock = threading.Lock()

    @property
    def store(self) -> WalIndexStore:
        return self._store

    # --- plain methods ---------------------------------------------------------------------

    def index(self, archive: Path,
              on_progress: Callable[[IndexProgress], None] = lambda _: None) -> IndexResult:
        """Index every segment of the archive not indexed yet, in parallel. An archive the
        server's OS user cannot read is refused first (ARCHIVE_UNREADABLE_BY_SERVER): recovery
        would fail on it, and pg_waldump runs as that user too."""
        started = time.perf_counter()
        listing = list_archive(archive, self._segment_size)
        stats = [(segment.path, segment.path.stat()) for segment in listing.segments]
        self._refuse_unreadable(archive, stats)
        known = self._store.known_checksums()
        tails = self._store.tails()
        files = [_File(segment, stat.st_size, stat.st_mtime_ns,
                       known.get((str(path), stat.st_size, stat.st_mtime_ns)))
                 for segment, (path, stat) in zip(listing.segments, stats)]
        # Known files that are indexed already need nothing; the others go to the workers,
        # which checksum the unknown ones (maybe copies of indexed segments) first.
        pending = [f for f in files
                   if f.checksum is None or _needs_index(listing, f.segment, f.key, tails)]
        progress = IndexProgress(segments_total=len(files), segments_to_index=len(pending))
        keys = {f.segment.path: f.key for f in files if f.checksum is not None}
        bytes_indexed = 0
        try:
            with ThreadPoolExecutor(self._parallelism) as threads:
                futures = [threads.submit(self._index_run, run, listing, tails)
                           for run in _runs(pending, listing, self._parallelism)]
                for future in as_completed(futures):
                    done = future.result()
                    # One writer (this thread), one transaction per run: a retried activity
                    # finds every finished run indexed.
                    self._store.record_segments(done.indexed)
                    keys.update((Path(key.path), key) for key in done.keys)
                    progress.segments_indexed += len(done.indexed)
                    progress.events_indexed += sum(len(one.events) for one in done.indexed)
                    bytes_indexed += sum(one.key.size for one in done.indexed)
                    on_progress(progress)
        finally:
            self._close_parser()
        ordered = [keys[f.segment.path] for f in files]
        # Nothing new, every checksum known by path: the store already says all this.
        unchanged = not pending and self._store.archive_identities(str(archive.resolve())) == {
            (k.timeline, k.file_name, k.size, k.checksum) for k in ordered}
        if not unchanged:
            self._store.set_archive_segments(str(archive.resolve()), ordered)
        corrupt = [
            CorruptSegment(name=name, timeline=timeline, at_lsn=format_lsn(at),
                           segno=parse_segment_name(name[:24], self._segment_size)[1],
                           problem=problem)
            for timeline, name, at, problem in self._store.archive_corruption(
                str(archive.resolve()))
        ]
        return IndexResult(
            segments=len(files), segments_indexed=progress.segments_indexed,
            events_indexed=progress.events_indexed, bytes_indexed=bytes_indexed,
            seconds=time.perf_counter() - started, timelines=list(listing.histories.values()),
            corrupt=corrupt,
        )

    def _refuse_unreadable(self, archive: Path,
                           stats: list[tuple[Path, os.stat_result]]) -> None:
        """ARCHIVE_UNREADABLE_BY_SERVER when the permission bits keep the server's OS user
        out, confirmed by trying as that user (an ACL may let it in after all)."""
        user = server_user(self._waldump.runtime.os_user)
        if user is None or (found := unreadable_by(archive, stats, user)) is None:
            return
        test = "-x" if found.action == "enter" else "-r"
        tried = subprocess.run(["test", test, str(found.path)], cwd="/",
                               **as_server_user(user.name))
        if tried.returncode != 0:
            raise unreadable_error(archive, found, user)

    def predict(self, archive: Path, target: ResolvedTarget, backup: BaseBackup,
                until_lsn: int | None = None, events: list[WalEvent] | None = None,
                listing: ArchiveListing | None = None) -> Prediction:
        """Where recovery from `backup` to `target` stops, from the index of `archive`, on
        the WAL before `until_lsn` (where the archive breaks) if given. `events` and
        `listing`: the archive's, when the caller holds them already."""
        listing = listing or list_archive(archive, self._segment_size)
        history = choose_timeline(target.timeline, backup.timeline, listing.histories)
        # restore_command never fetches a .partial segment: its records are not replayed.
        everything = self.events(archive) if events is None else events
        events = [e for e in on_timeline(everything, history)
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

    # --- one run of segments (a worker thread) ---------------------------------------------

    def _index_run(self, run: list[_File], listing: ArchiveListing,
                   tails: dict[tuple[int, str, int, str], bool]) -> _RunDone:
        # A file first seen here may be a copy of a segment indexed already: only one whose
        # name and size the store knows can be, and only it is checksummed before deciding.
        names = {(tl, name, size) for tl, name, size, _ in tails}
        for file in run:
            if file.checksum is None and (
                    file.segment.timeline, file.segment.path.name, file.size) in names:
                file.checksum = _checksum(file.segment.path)
        todo = [f for f in run
                if f.checksum is None or _needs_index(listing, f.segment, f.key, tails)]
        indexed: list[IndexedSegment] = []
        start = 0
        while start < len(todo):
            # Consecutive segments only: a copy recognised in between splits the run.
            end = start + 1
            while end < len(todo) and todo[end].segment.segno == todo[end - 1].segment.segno + 1:
                end += 1
            indexed += self._read_consecutive(todo[start:end], listing)
            start = end
        _checksummed(run)  # any no pg_waldump run read
        return _RunDone(keys=[f.key for f in run], indexed=indexed)

    def _read_consecutive(self, files: list[_File],
                          listing: ArchiveListing) -> list[IndexedSegment]:
        """pg_waldump over consecutive segments; after a damaged one, again from the next."""
        indexed: list[IndexedSegment] = []
        while files:
            read, files = self._read_from_start(files, listing)
            indexed += read
        return indexed

    def _read_from_start(self, files: list[_File], listing: ArchiveListing
                         ) -> tuple[list[IndexedSegment], list[_File]]:
        """Read as many of `files` as pg_waldump gets through from the first one's start:
        (what was indexed, the files still to read). Plain segments of a flat archive are
        read where they are; anything else through a scratch directory."""
        size = self._segment_size
        first = files[0].segment
        run_start = first.segno * size
        with contextlib.ExitStack() as stack:
            directory = _flat_directory(files, listing, size)
            if directory is None:
                directory = stack.enter_context(self._waldump.scratch())
            readable: list[_File] = []
            for file in files:
                try:
                    if directory == file.segment.path.parent:
                        _expect_full(file, size)
                    else:
                        self._waldump.materialize(file.segment, directory,
                                                  expect_full=not file.segment.partial)
                except DrillError as unusable:  # wrong size, undecodable: unreadable there
                    if not readable:
                        _checksummed([file])
                        successor = listing.find(first.timeline, first.segno + 1)
                        return [IndexedSegment(file.key, [], successor is None, run_start,
                                               unusable.message)], files[1:]
                    break
                readable.append(file)
            last = readable[-1].segment
            end = (last.segno + 1) * size
            successor = listing.find(last.timeline, last.segno + 1)
            if successor is not None:
                header = segment_bytes(successor, LONG_PAGE_HEADER)
                crossing_end = continuation_end(end, header, size)
                if crossing_end is not None:
                    if not (directory / successor.name).exists():
                        self._waldump.materialize(successor, directory,
                                                  limit=crossing_end - end)
                    end = crossing_end
            # The files' checksums are computed while pg_waldump reads them.
            output = self._waldump.run(directory, first.timeline, *_EVENT_RMGRS,
                                       f"--start={format_lsn(run_start)}",
                                       f"--end={format_lsn(end)}",
                                       meanwhile=lambda: _checksummed(readable))
        events = self._parse(output.stdout, first.timeline)
        by_segno = {f.segment.segno: f for f in readable}
        found: dict[int, list[WalEvent]] = {segno: [] for segno in by_segno}
        for event in events:
            segno = event.start // size
            if segno in by_segno:
                event.segment = by_segno[segno].segment.path.name
                found[segno].append(event)
        rest = files[len(readable):]
        indexed = []
        # A .partial segment's error is its end of WAL (it is always a run of its own); in a
        # complete one it is damage, and recovery replays every record before the bad one:
        # keep those, break there, and read the segments after it from their own start.
        if output.returncode != 0 and not last.partial:
            corrupt_at = _bad_record_lsn(output.stderr, run_start)
            bad = min(max(corrupt_at // size, first.segno), last.segno)
            for file in readable:
                segno = file.segment.segno
                if segno < bad:
                    indexed.append(IndexedSegment(file.key, found[segno], False))
                elif segno == bad:
                    kept = [e for e in found[segno] if e.end <= corrupt_at]
                    tail_open = listing.find(last.timeline, segno + 1) is None
                    indexed.append(IndexedSegment(file.key, kept, tail_open, corrupt_at,
                                                  output.stderr.strip()))
            return indexed, [f for f in readable if f.segment.segno > bad] + rest
        for file in readable:
            tail_open = file.segment is last and successor is None
            indexed.append(IndexedSegment(file.key, found[file.segment.segno], tail_open))
        return indexed, rest

    def _parse(self, text: str, timeline: int) -> list[WalEvent]:
        """Events of one run's output; a large output is parsed in a process of the pool."""
        if len(text) < _PARSE_IN_PROCESS_BYTES or self._parallelism < 2:
            return parse_waldump(text, timeline, "", self._segment_size)
        with self._parser_lock:
            if self._parser is None:
                self._parser = ProcessPoolExecutor(self._parallelism, mp_context=_SPAWN)
            parser = self._parser
        future: Future = parser.submit(parse_waldump, text, timeline, "", self._segment_size)
        return future.result()

    def _close_parser(self) -> None:
        with self._parser_lock:
            parser, self._parser = self._parser, None
        if parser is not None:
            parser.shutdown()
