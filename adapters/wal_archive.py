"""What a WAL archive directory holds: its segments (plain, compressed, .partial; flat as
archive_command copies them or nested as pgBackRest stores them) and its timeline histories.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

from adapters.reachability import directory_chain
from domain.errors import DrillError, ErrorCode
from domain.lsn import DEFAULT_WAL_SEGMENT_SIZE, parse_segment_name
from domain.reachability import DirectoryFacts, Traverser, blocking_directory, permission_class
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


_READ_BITS = {"u": 0o400, "g": 0o040, "o": 0o004}
_SEARCH_BITS = {"u": 0o100, "g": 0o010, "o": 0o001}


def _facts(path: Path, stat: os.stat_result) -> DirectoryFacts:
    return DirectoryFacts(path=str(path), mode=stat.st_mode & 0o7777, uid=stat.st_uid,
                          gid=stat.st_gid)


@dataclass(frozen=True)
class Unreadable:
    """The first thing in the way, by permission bits, and how many files are unreadable."""

    path: Path
    action: Literal["enter", "read"]
    permission_class: str  # "u", "g" or "o": whose bit is missing
    files: int = 0


def unreadable_by(archive: Path, files: list[tuple[Path, os.stat_result]],
                  user: Traverser) -> Unreadable | None:
    """What keeps `user` (the server's OS user: restore_command and pg_waldump run as it)
    from reading the archive, by POSIX permission bits, or None. `files` are the archive's
    segments and their stat. ACLs are not read: callers confirm a finding by trying as the
    user."""
    if user.uid == 0:
        return None
    chain = directory_chain(archive / "_")  # every directory down to the archive itself
    if (blocked := blocking_directory(chain, user)) is not None:
        return Unreadable(Path(blocked.directory.path), "enter", blocked.permission_class)
    inner = sorted({path.parent for path, _ in files} - {archive})
    for directory in inner:  # pgBackRest's per-timeline directories
        facts = _facts(directory, directory.stat())
        who = permission_class(facts, user)
        if not facts.mode & _SEARCH_BITS[who]:
            return Unreadable(directory, "enter", who)
    closed = []
    for path, stat in files:
        who = permission_class(_facts(path, stat), user)
        if not stat.st_mode & _READ_BITS[who]:
            closed.append((path, who))
    if closed:
        return Unreadable(closed[0][0], "read", closed[0][1], len(closed))
    return None


def unreadable_error(archive: Path, found: Unreadable, user: Traverser) -> DrillError:
    """ARCHIVE_UNREADABLE_BY_SERVER naming the path and the fix."""
    path, action = found.path, found.action
    stat = path.stat()
    others = f" (and {found.files - 1} more segments)" if found.files > 1 else ""
    owner, group = _name(pwd.getpwuid, stat.st_uid), _name(grp.getgrgid, stat.st_gid)
    return DrillError(
        ErrorCode.ARCHIVE_UNREADABLE_BY_SERVER,
        f"the WAL archive {archive} is readable by this worker but {user.name}, the OS user "
        f"the sandbox server's restore_command and pg_waldump run as, cannot {action} "
        f"{path}{others} (mode {stat.st_mode & 0o7777:04o}, owner {owner}, group {group})",
        _fix(archive, found, user),
    )


def _name(lookup, number: int) -> str:
    try:
        return lookup(number)[0]
    except KeyError:
        return str(number)


def _fix(archive: Path, found: Unreadable, user: Traverser) -> str:
    who = found.permission_class
    if found.action == "enter" and not found.path.is_relative_to(archive):
        first = f"`chmod {who}+x {found.path}` (lets {user.name} pass through it, not list it)"
    else:
        first = f"`chmod -R {who}+rX {archive}`"
    return (f"Let {user.name} read the archive (pitrdrill only ever reads it): run {first}, "
            f"or give the archive a group {user.name} belongs to with g+rX; then plan again.")
