"""pg_waldump over archived segments, shared by the WAL index and the investigation.

Each run gets a private scratch directory outside the archive, owned by the server user, that
pg_waldump reads: plain segments are linked into it, compressed ones decompressed there (only
as much as a run needs). pg_waldump prints commit times in its own TZ, so it always runs with
TZ=UTC, the only zone the parser accepts.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from adapters.os_user import as_server_user
from adapters.pg_runtime import PostgresRuntime
from adapters.wal_archive import ArchivedSegment
from domain.errors import DrillError, ErrorCode
from domain.lsn import DEFAULT_WAL_SEGMENT_SIZE
from domain.wal_pages import WAL_PAGE_SIZE

_CLI_DECOMPRESSORS = {".zst": "zstd", ".lz4": "lz4"}
# Not corruption: the archive or the scratch directory is closed to the server user.
_PERMISSION_DENIED = "Permission denied"


def segment_bytes(segment: ArchivedSegment, limit: int | None = None) -> bytes:
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


@dataclass(frozen=True)
class PgWaldump:
    runtime: PostgresRuntime
    scratch_root: Path | None = None  # None: the system's temporary directory
    segment_size: int = DEFAULT_WAL_SEGMENT_SIZE

    def dump(self, timeline: int, segments: Iterable[ArchivedSegment],
             *args: str) -> subprocess.CompletedProcess:
        """pg_waldump `args` over whole archived segments of one timeline."""
        with self.scratch() as scratch:
            for segment in segments:
                self.materialize(segment, scratch)
            return self.run(scratch, timeline, *args)

    def run(self, directory: Path, timeline: int, *args: str,
            meanwhile: Callable[[], object] | None = None) -> subprocess.CompletedProcess:
        """pg_waldump `args` over the segments in `directory`; a failure is the caller's to
        judge (the end of a .partial segment's WAL is one). `meanwhile` runs in this thread
        while pg_waldump does (its output waits in the pipe meanwhile)."""
        command = [self.runtime.tool("pg_waldump"), f"--path={directory}",
                   f"--timeline={timeline}", *args]
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd="/",
                              **as_server_user(self.runtime.os_user, {"TZ": "UTC"})) as process:
            try:
                if meanwhile is not None:
                    meanwhile()
                stdout, stderr = process.communicate()
            except BaseException:
                process.kill()
                raise
        output = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
        if _PERMISSION_DENIED in output.stderr:
            raise PermissionError(
                f"pg_waldump, run as {self.runtime.os_user}, cannot read what it needs in "
                f"{directory}: {output.stderr.strip()}; the archive and the scratch directory "
                "must be readable by that user"
            )
        return output

    @contextmanager
    def scratch(self) -> Iterator[Path]:
        """A private directory the server user owns, outside the archive, removed after."""
        directory = Path(tempfile.mkdtemp(prefix="pitrdrill-waldump-", dir=self.scratch_root))
        try:
            self.runtime.make_private_dir(directory)
            yield directory
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def materialize(self, segment: ArchivedSegment, directory: Path,
                    limit: int | None = None, expect_full: bool = False) -> None:
        """Put the segment under its plain name in `directory`: linked when stored plain,
        else decompressed (only the first `limit` bytes, rounded up to whole pages)."""
        target = directory / segment.name
        if segment.compression is None:
            size = segment.path.stat().st_size
            if expect_full and size != self.segment_size:
                # PostgreSQL refuses it too: 'archive file ... has wrong size'.
                raise DrillError(ErrorCode.WAL_CORRUPT,
                                 f"{size} bytes, not {self.segment_size}")
            target.symlink_to(segment.path.resolve())
            return
        wanted = None if limit is None else -(-limit // WAL_PAGE_SIZE) * WAL_PAGE_SIZE
        data = segment_bytes(segment, wanted)
        if expect_full and len(data) != self.segment_size:
            raise DrillError(
                ErrorCode.WAL_CORRUPT,
                f"decompresses to {len(data)} bytes, not {self.segment_size}",
            )
        target.write_bytes(data)
        self.runtime.give(target)
