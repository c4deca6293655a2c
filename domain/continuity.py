"""Is the WAL from a backup to its target all there? The first break decides.

Recovery reads segment after segment along the timeline path; the first segment it cannot
read (missing: WAL_GAP, unreadable: WAL_CORRUPT) is where replay ends, whatever the target.
Everything is judged from that one point: a target before it is reachable, one after it is
refused naming the segment, and `latest` simply stops there.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from domain.errors import DrillError, ErrorCode
from domain.lsn import DEFAULT_WAL_SEGMENT_SIZE, format_lsn, parse_lsn, segment_name
from domain.targets import ResolvedTarget
from domain.timelines import TimelineHistory, on_timeline
from domain.wal_records import WalEvent

SegmentId = tuple[int, int]  # (timeline, segment number)


class WalBreak(BaseModel):
    """The first segment recovery from a backup cannot read."""

    code: Literal["WAL_GAP", "WAL_CORRUPT"]
    segment: str
    lsn: str  # replay cannot go past it: a missing segment's first byte, a bad record
    detail: str

    def error(self, consequence: str) -> DrillError:
        return DrillError(ErrorCode(self.code), f"segment {self.segment} {self.detail}; "
                                                f"{consequence}")


def timeline_begins(history: TimelineHistory) -> list[tuple[int, int]]:
    """(timeline, first LSN) along the path, oldest first."""
    begins, start = [], 0
    for switch in history.switches:
        begins.append((switch.parent, start))
        start = parse_lsn(switch.switch_lsn)
    begins.append((history.timeline, start))
    return begins


def _candidates(history: TimelineHistory, segno: int, segment_size: int) -> list[int]:
    """Timelines whose file may hold this segment, newest first as XLogFileReadAnyTLI tries
    them. A timeline serves from the segment it begins in to the one the path leaves it in:
    past that, its pages carry an older TLI than recovery has seen and are rejected."""
    candidates = []
    for tl, begin in reversed(timeline_begins(history)):
        leaves = history.span_end(tl)
        if begin // segment_size <= segno and (leaves is None or segno <= leaves // segment_size):
            candidates.append(tl)
    return candidates


def first_break(
    history: TimelineHistory, start_lsn: str, present: set[SegmentId],
    corrupt: dict[SegmentId, tuple[str, str]], segment_size: int = DEFAULT_WAL_SEGMENT_SIZE,
) -> WalBreak | None:
    """The first unreadable segment from `start_lsn` on, up to the last archived segment of
    the path (beyond that is simply the end of the archive, not a gap)."""
    # Only segments a timeline serves on this path count: timeline 1's WAL after the switch
    # to timeline 2 is another branch, not WAL this recovery is missing.
    last = max((segno for tl, segno in present
                if tl in _candidates(history, segno, segment_size)), default=-1)
    for segno in range(parse_lsn(start_lsn) // segment_size, last + 1):
        timelines = _candidates(history, segno, segment_size)
        found = next((tl for tl in timelines if (tl, segno) in present), None)
        where = format_lsn(segno * segment_size)
        if found is None:
            name = segment_name(timelines[0], segno, segment_size)
            return WalBreak(code="WAL_GAP", segment=name, lsn=where,
                            detail="is missing from the archive")
        if (found, segno) in corrupt:
            # Recovery replays every good record before the damaged one.
            damaged_at, problem = corrupt[(found, segno)]
            return WalBreak(code="WAL_CORRUPT", segment=segment_name(found, segno, segment_size),
                            lsn=damaged_at, detail=f"is unreadable from {damaged_at} ({problem})")
    return None


def require_timeline(setting: str, histories: dict[int, TimelineHistory],
                     present: set[SegmentId]) -> None:
    """A numbered timeline must exist in the archive: a history file or segments of it."""
    if not setting.isdigit():
        return
    timeline = int(setting)
    if timeline not in histories and not any(tl == timeline for tl, _ in present):
        known = sorted({tl for tl, _ in present} | set(histories))
        raise DrillError(ErrorCode.TIMELINE_NOT_FOUND,
                         f"timeline {timeline} is not in the archive (it holds {known})")


def _names_target(event: WalEvent, target: ResolvedTarget) -> bool:
    if target.mode == "xid":
        return event.ends_transaction and event.xid == (target.xid or 0) & 0xFFFFFFFF
    return target.mode == "name" and event.kind == "restore_point" and event.name == target.name


def diverged(events: list[WalEvent], history: TimelineHistory,
             target: ResolvedTarget) -> DrillError | None:
    """TIMELINE_DIVERGED when an xid or restore point the path lacks exists on another branch
    (e.g. on timeline 1 after the point where timeline 2 left it)."""
    on_path = {e.start for e in on_timeline(events, history) if _names_target(e, target)}
    elsewhere = [e for e in events if _names_target(e, target) and e.start not in on_path]
    if on_path or not elsewhere:
        return None
    found = elsewhere[0]
    return DrillError(ErrorCode.TIMELINE_DIVERGED,
                      f"{target.describe()} is on timeline {found.timeline} at {found.start_lsn}, "
                      f"a branch timeline {history.timeline} does not contain; request "
                      f"timeline {found.timeline}")
