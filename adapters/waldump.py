"""Indexing the WAL archive with pg_waldump, and predicting where recovery will stop.

Each segment is read by its own pg_waldump in a private scratch directory (compressed segments
are decompressed there, plain ones linked), one worker process per core: parsing the output in
Python is most of the work, so threads would all wait for one interpreter.

pg_waldump reads one segment only up to its end, so a commit record that starts in a segment
and finishes in the next would be lost between the two runs; the next segment's first page
header says how long that record goes on, and the run reads exactly that far into it.

Archived segments are complete, so any read error in one is corruption (WAL_CORRUPT, naming
it). Only a `.partial` segment legitimately ends with an error: that is the end of its WAL.
"""

from __future__ import annotations

import gzip
import multiprocessing
import os
import re
import shutil
import subprocess
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from pydantic import BaseModel

from adapters.commit_store import CommitStore, SegmentKey
from adapters.pg_runtime import PostgresRuntime
from domain.catalog import BaseBackup
from domain.commits import (
    LONG_PAGE_HEADER,
    WAL_PAGE_SIZE,
    Prediction,
    TimelineHistory,
    WalEvent,
    WalRecord,
    choose_timeline,
    continuation_end,
    on_timeline,
    parse_history,
    parse_records,
    parse_waldump,
    predict_stop,
)
from domain.errors import DrillError, ErrorCode
from domain.lsn import DEFAULT_WAL_SEGMENT_SIZE, format_lsn, parse_lsn, parse_segment_name
from domain.targets import ResolvedTarget

# pgBackRest stores segments as NAME[.partial]-SHA1[.gz|.zst|.lz4] under per-log directories.
_SEGMENT_FILE = re.compile(
    r"^(?P<name>[0-9A-F]{24})(?P<partial>\.partial)?(?:-[0-9a-f]{40})?"
    r"(?P<compression>\.gz|\.zst|\.lz4)?$"
)
_HISTORY_FILE = re.compile(r"^(?P<timeline>[0-9A-F]{8})\.history$")
_LSN_IN_ERROR = re.compile(r"\bat ([0-9A-F]+/[0-9A-F]+)")
_CLI_DECOMPRESSORS = {".zst": "zstd", ".lz4": "lz4"}
_CHUNK = 1 << 20
# Not corruption: the archive or the scratch directory is closed to the server user.
_PERMISSION_DENIED = "Permission denied"
# Workers start fresh rather than forking a process whose other threads may hold locks.
_SPAWN = multiprocessing.get_context("spawn")
# Only these resource managers carry commits, aborts and restore points; pg_waldump filters
# before formatting, so the output stays small however busy the WAL is.
_EVENT_RMGRS = ("--rmgr=Transaction", "--rmgr=XLOG")


@dataclass(frozen=True)
class ArchivedSegment:
    path: Path
    name: str  # the 24-character segment name, without .partial or a compression suffix
    timeline: int
    segno: int
    partial: bool
    compression: str | None


@dataclass(frozen=True)
class ArchiveListing:
    segments: list[ArchivedSegment]
    histories: dict[int, TimelineHistory]

    @cached_property
    def _copies(self) -> dict[tuple[int, int], list[ArchivedSegment]]:
        copies: dict[tuple[int, int], list[ArchivedSegment]] = {}
        for segment in self.segments:
            copies.setdefault((segment.timeline, segment.segno), []).append(segment)
        return copies

    def find(self, timeline: int, segno: int) -> ArchivedSegment | None:
        """The best copy of a segment: complete before .partial, plain before compressed."""
        return min(self._copies.get((timeline, segno), []),
                   key=lambda s: (s.partial, s.compression is not None), default=None)


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


def _archive_files(archive: Path) -> list[Path]:
    """Every file under the archive: flat for archive_command copies, nested for pgBackRest."""
    return sorted((Path(root, name) for root, _, names in os.walk(archive) for name in names),
                  key=lambda path: path.name)


def list_archive(archive: Path, segment_size: int = DEFAULT_WAL_SEGMENT_SIZE) -> ArchiveListing:
    segments, histories = [], {}
    for path in _archive_files(archive):
        if match := _SEGMENT_FILE.match(path.name):
            timeline, segno = parse_segment_name(match.group("name"), segment_size)
            segments.append(ArchivedSegment(
                path=path, name=match.group("name"), timeline=timeline, segno=segno,
                partial=bool(match.group("partial")), compression=match.group("compression"),
            ))
        elif match := _HISTORY_FILE.match(path.name):
            timeline = int(match.group("timeline"), 16)
            histories[timeline] = parse_history(path.read_text(), timeline)
    return ArchiveListing(segments, histories)


def _decompressed_bytes(segment: ArchivedSegment, limit: int | None = None) -> bytes:
    """The segment's bytes (the first `limit` only, if given); unreadable or undecodable data
    is WAL_CORRUPT naming the segment."""
    try:
        if segment.compression in _CLI_DECOMPRESSORS:
            return _cli_decompressed(_CLI_DECOMPRESSORS[segment.compression], segment.path, limit)
        opener = gzip.open if segment.compression == ".gz" else open
        with opener(segment.path, "rb") as stream:
            return stream.read(-1 if limit is None else limit)
    except (OSError, EOFError, zlib.error) as exc:
        raise DrillError(ErrorCode.WAL_CORRUPT,
                         f"segment {segment.path.name} cannot be read: {exc}") from exc


def _cli_decompressed(tool: str, path: Path, limit: int | None) -> bytes:
    if limit is None:
        done = subprocess.run([tool, "-dcq", str(path)], capture_output=True)
        if done.returncode != 0:
            raise OSError(f"{tool}: {done.stderr.decode(errors='replace').strip()}")
        return done.stdout
    with subprocess.Popen([tool, "-dcq", str(path)], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL) as process:
        assert process.stdout is not None
        head = process.stdout.read(limit)
        process.kill()  # the rest is not needed
    return head


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


class WalIndexer:
    def __init__(self, runtime: PostgresRuntime, store: CommitStore,
                 scratch_root: Path | None = None, parallelism: int | None = None,
                 segment_size: int = DEFAULT_WAL_SEGMENT_SIZE) -> None:
        self._runtime = runtime
        self._store = store
        self._scratch_root = scratch_root
        self._parallelism = parallelism or os.cpu_count() or 1
        self._segment_size = segment_size

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
        with self._scratch() as scratch:
            for segment in filter(None, copies):
                self._materialize(segment, scratch)
            output = self._waldump(scratch, timeline, f"--start={format_lsn(lsn)}", "--limit=1")
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
            with self._scratch() as scratch:
                self._materialize(segment, scratch, expect_full=not segment.partial)
                if successor is not None:
                    header = _decompressed_bytes(successor, LONG_PAGE_HEADER)
                    crossing_end = continuation_end(end, header, self._segment_size)
                    if crossing_end is not None:
                        self._materialize(successor, scratch, limit=crossing_end - end)
                        end = crossing_end
                output = self._waldump(scratch, segment.timeline, *_EVENT_RMGRS,
                                       f"--start={format_lsn(start)}", f"--end={format_lsn(end)}")
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

    def _waldump(self, directory: Path, timeline: int, *args: str) -> subprocess.CompletedProcess:
        # pg_waldump prints commit times in its own TZ; the parser accepts only UTC.
        output = self._runtime.run(
            "pg_waldump", f"--path={directory}", f"--timeline={timeline}", *args,
            check=False, env={"TZ": "UTC"},
        )
        if _PERMISSION_DENIED in output.stderr:
            raise PermissionError(
                f"pg_waldump, run as {self._runtime.os_user}, cannot read what it needs in "
                f"{directory}: {output.stderr.strip()}; the archive and the scratch directory "
                "must be readable by that user"
            )
        return output

    @contextmanager
    def _scratch(self) -> Iterator[Path]:
        """A private directory the server user owns, outside the archive, removed after."""
        directory = Path(tempfile.mkdtemp(prefix="pitrdrill-waldump-", dir=self._scratch_root))
        try:
            self._runtime.make_private_dir(directory)
            yield directory
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def _materialize(self, segment: ArchivedSegment, directory: Path,
                     limit: int | None = None, expect_full: bool = False) -> None:
        """Put the segment under its plain name in `directory`: linked when stored plain,
        else decompressed (only the first `limit` bytes, rounded up to whole pages)."""
        target = directory / segment.name
        if segment.compression is None:
            size = segment.path.stat().st_size
            if expect_full and size != self._segment_size:
                # PostgreSQL refuses it too: 'archive file ... has wrong size'.
                raise DrillError(ErrorCode.WAL_CORRUPT,
                                 f"{size} bytes, not {self._segment_size}")
            target.symlink_to(segment.path.resolve())
            return
        wanted = None if limit is None else -(-limit // WAL_PAGE_SIZE) * WAL_PAGE_SIZE
        data = _decompressed_bytes(segment, wanted)
        if expect_full and len(data) != self._segment_size:
            raise DrillError(
                ErrorCode.WAL_CORRUPT,
                f"decompresses to {len(data)} bytes, not {self._segment_size}",
            )
        target.write_bytes(data)
        self._runtime.give(target)

