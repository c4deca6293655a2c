"""What a WAL archive directory holds: its segments (plain, compressed, .partial; flat as
archive_command copies them or nested as pgBackRest stores them) and its timeline histories.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from domain.lsn import DEFAULT_WAL_SEGMENT_SIZE, parse_segment_name
from domain.timelines import TimelineHistory, parse_history

# pgBackRest stores segments as NAME[.partial]-SHA1[.gz|.zst|.lz4] under per-log directories.
_SEGMENT_FILE = re.compile(
    r"^(?P<name>[0-9A-F]{24})(?P<partial>\.partial)?(?:-[0-9a-f]{40})?"
    r"(?P<compression>\.gz|\.zst|\.lz4)?$"
)
_HISTORY_FILE = re.compile(r"^(?P<timeline>[0-9A-F]{8})\.history$")


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
