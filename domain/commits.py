"""Where recovery stops: the commit index read from pg_waldump, and PostgreSQL 15's stop rules.

`parse_waldump` turns pg_waldump's text into `WalEvent`s (commit, abort, their prepared forms,
restore points). `predict_stop` applies xlogrecovery.c's recoveryStopsBefore/recoveryStopsAfter
to those events and says where PostgreSQL will stop: the last commit kept, the first dropped,
`pg_last_wal_replay_lsn()` and `pg_last_xact_replay_timestamp()` at the stop.

Record ends are computed, not read: pg_waldump prints a record's start and total length, and
the reader's EndRecPtr is start + length + the page headers crossed, MAXALIGNed. A stop before
a record leaves replay at the end of the record before it, which is that record's start except
right after a page header. Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel

from domain.catalog import BaseBackup
from domain.errors import DrillError, ErrorCode
from domain.lsn import DEFAULT_WAL_SEGMENT_SIZE, format_lsn, parse_lsn
from domain.targets import ResolvedTarget, format_utc

WAL_PAGE_SIZE = 8192  # XLOG_BLCKSZ
SHORT_PAGE_HEADER = 24  # SizeOfXLogShortPHD
LONG_PAGE_HEADER = 40  # SizeOfXLogLongPHD: the first page of every segment
_MAXALIGN = 8
_XLP_FIRST_IS_CONTRECORD = 0x0001
_XID_MASK = 0xFFFFFFFF  # recovery_target_xid is compared as a 32-bit TransactionId

EventKind = Literal["commit", "abort", "commit_prepared", "abort_prepared", "restore_point"]
_XACT_KINDS = {"COMMIT": "commit", "ABORT": "abort",
               "COMMIT_PREPARED": "commit_prepared", "ABORT_PREPARED": "abort_prepared"}
_COMMIT_KINDS = {"commit", "commit_prepared"}

_RECORD_LINE = re.compile(
    r"^rmgr: (?P<rmgr>\S+)\s+len \(rec/tot\):\s*\d+/\s*(?P<total>\d+), tx:\s*(?P<xid>\d+), "
    r"lsn: (?P<high>[0-9A-F]+)/(?P<low>[0-9A-F]+), prev [0-9A-F]+/[0-9A-F]+, desc: (?P<desc>.*)$"
)
# xactdesc.c: prepared forms print the prepared xid first; then timestamptz_to_str(), which
# pg_waldump renders in its own TZ, so it must run with TZ=UTC. Details follow after "; ".
_XACT_DESC = re.compile(
    r"^(?P<kind>COMMIT|ABORT|COMMIT_PREPARED|ABORT_PREPARED) (?:(?P<prepared>\d+): )?"
    r"(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}) (?P<zone>\S+?)(?:;.*)?$",
    re.DOTALL,
)
_RESTORE_POINT = "RESTORE_POINT "
_SWITCH = "SWITCH"


# --- WAL position arithmetic -------------------------------------------------------------

def _page_header_size(page_start: int, segment_size: int) -> int:
    return LONG_PAGE_HEADER if page_start % segment_size == 0 else SHORT_PAGE_HEADER


def advance(position: int, length: int, segment_size: int = DEFAULT_WAL_SEGMENT_SIZE) -> int:
    """The position after writing `length` record bytes from `position`, skipping the page
    headers in the way (records are split across pages; headers are not record bytes)."""
    while length > 0:
        if position % WAL_PAGE_SIZE == 0:
            position += _page_header_size(position, segment_size)
        room = WAL_PAGE_SIZE - position % WAL_PAGE_SIZE
        step = min(room, length)
        position += step
        length -= step
    return position


def record_end(start: int, total_length: int,
               segment_size: int = DEFAULT_WAL_SEGMENT_SIZE) -> int:
    """The reader's EndRecPtr: where replay stands after applying the record."""
    end = advance(start, total_length, segment_size)
    return (end + _MAXALIGN - 1) & ~(_MAXALIGN - 1)


def end_before(start: int, segment_size: int = DEFAULT_WAL_SEGMENT_SIZE) -> int:
    """EndRecPtr of the record before the one starting at `start`. Records are contiguous, so
    it is `start`, unless `start` directly follows a page header: then the previous record
    ended at the page boundary (an XLOG_SWITCH ends at the next segment's start, the same)."""
    page_start = start - start % WAL_PAGE_SIZE
    header = _page_header_size(page_start, segment_size)
    return page_start if start - page_start == header else start


def continuation_end(segment_start: int, first_page_header: bytes,
                     segment_size: int = DEFAULT_WAL_SEGMENT_SIZE) -> int | None:
    """Where the record continued from the previous segment ends (unaligned), or None when
    this segment starts with a fresh record. Reads XLogLongPageHeaderData's xlp_info and
    xlp_rem_len, both little-endian as PostgreSQL writes them on x86 and ARM."""
    info = int.from_bytes(first_page_header[2:4], "little")
    remaining = int.from_bytes(first_page_header[16:20], "little")
    if not info & _XLP_FIRST_IS_CONTRECORD or remaining == 0:
        return None
    return advance(segment_start, remaining, segment_size)


# --- pg_waldump output ---------------------------------------------------------------------

@dataclass(frozen=True)
class WalRecord:
    """One record as pg_waldump prints it, any resource manager."""

    rmgr: str
    start: int
    end: int
    xid: int
    desc: str


class WalEvent(BaseModel):
    """A record that decides where recovery can stop: a transaction's end or a restore point."""

    kind: EventKind
    timeline: int
    start_lsn: str
    end_lsn: str
    xid: int  # for the prepared forms, the prepared transaction's xid, as recovery compares
    timestamp: datetime | None = None  # UTC; pg_waldump does not print a restore point's time
    name: str | None = None  # restore points
    segment: str

    @property
    def start(self) -> int:
        return parse_lsn(self.start_lsn)

    @property
    def end(self) -> int:
        return parse_lsn(self.end_lsn)

    @property
    def ends_transaction(self) -> bool:
        return self.kind != "restore_point"

    @property
    def is_commit(self) -> bool:
        return self.kind in _COMMIT_KINDS


def parse_records(text: str, segment_size: int = DEFAULT_WAL_SEGMENT_SIZE) -> list[WalRecord]:
    """Every record line; a line that does not start a record continues the previous record's
    description (a restore point name may hold a newline). Other lines ("first record is
    after ...") come before any record and are skipped."""
    parsed: list[dict] = []
    lines = text.split("\n")
    for line in lines[:-1] if lines[-1] == "" else lines:  # output ends with a newline
        if match := _RECORD_LINE.match(line):
            parsed.append(match.groupdict())
        elif parsed:
            parsed[-1]["desc"] += "\n" + line
    return [_record(fields, segment_size) for fields in parsed]


def _record(fields: dict, segment_size: int) -> WalRecord:
    start = int(fields["high"], 16) << 32 | int(fields["low"], 16)
    if fields["rmgr"] == "XLOG" and fields["desc"].rstrip() == _SWITCH:
        # The reader treats a segment switch as extending to the end of its segment.
        end = start - start % segment_size + segment_size
    else:
        end = record_end(start, int(fields["total"]), segment_size)
    return WalRecord(fields["rmgr"], start, end, int(fields["xid"]), fields["desc"])


def parse_pg_time(text: str, zone: str) -> datetime:
    if zone != "UTC":
        raise ValueError(f"pg_waldump printed a time in zone {zone!r}: run it with TZ=UTC")
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def _event(record: WalRecord, timeline: int, segment: str) -> WalEvent | None:
    if record.rmgr == "Transaction" and (match := _XACT_DESC.match(record.desc)):
        prepared = match.group("prepared")
        kind = _XACT_KINDS[match.group("kind")]
        xid = int(prepared) if prepared else record.xid
        timestamp = parse_pg_time(match.group("time"), match.group("zone"))
        name = None
    elif record.rmgr == "XLOG" and record.desc.startswith(_RESTORE_POINT):
        kind, xid, timestamp = "restore_point", record.xid, None
        name = record.desc[len(_RESTORE_POINT):]
    else:
        return None
    return WalEvent(
        kind=kind, timeline=timeline, start_lsn=format_lsn(record.start),
        end_lsn=format_lsn(record.end), xid=xid, timestamp=timestamp, name=name, segment=segment,
    )


def parse_waldump(text: str, timeline: int, segment: str,
                  segment_size: int = DEFAULT_WAL_SEGMENT_SIZE) -> list[WalEvent]:
    """The commit, abort and restore point events in pg_waldump's output, in WAL order."""
    events = (_event(r, timeline, segment) for r in parse_records(text, segment_size))
    return [event for event in events if event is not None]


# --- timelines -----------------------------------------------------------------------------

class TimelineSwitch(BaseModel):
    """One line of a .history file: `parent` was left for its child at `switch_lsn`."""

    parent: int
    switch_lsn: str
    reason: str


class TimelineHistory(BaseModel):
    timeline: int
    switches: list[TimelineSwitch] = []  # ancestors, oldest first

    def span_end(self, timeline: int) -> int | None:
        """Where the path leaves `timeline` (None: it is the path's own, open-ended)."""
        for switch in self.switches:
            if switch.parent == timeline:
                return parse_lsn(switch.switch_lsn)
        return None

    def timeline_at(self, lsn: int) -> int:
        """The timeline the path is on at `lsn`."""
        for switch in self.switches:
            if lsn < parse_lsn(switch.switch_lsn):
                return switch.parent
        return self.timeline

    @property
    def timelines(self) -> set[int]:
        return {s.parent for s in self.switches} | {self.timeline}


def parse_history(text: str, timeline: int) -> TimelineHistory:
    """A TTTTTTTT.history file: `parentTLI<tab>switchpoint<tab>reason` lines, # comments."""
    switches = []
    for line in text.splitlines():
        fields = line.strip().split(None, 2)
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) < 2 or not fields[0].isdigit():
            raise ValueError(f"unreadable line in {timeline:08X}.history: {line!r}")
        reason = fields[2] if len(fields) > 2 else ""
        switches.append(TimelineSwitch(parent=int(fields[0]), switch_lsn=fields[1], reason=reason))
    return TimelineHistory(timeline=timeline, switches=switches)


def choose_timeline(setting: str, backup_timeline: int,
                    histories: dict[int, TimelineHistory]) -> TimelineHistory:
    """recovery_target_timeline: current is the backup's; latest is found like
    findNewestTimeLine, probing history files upwards until one is missing."""
    if setting == "current":
        chosen = backup_timeline
    elif setting == "latest":
        chosen = backup_timeline
        while chosen + 1 in histories:
            chosen += 1
    else:
        chosen = int(setting)
    return histories.get(chosen, TimelineHistory(timeline=chosen))


def on_timeline(events: list[WalEvent], history: TimelineHistory) -> list[WalEvent]:
    """The events recovery replays following `history`, in WAL order: each timeline's events
    until the path leaves it. A child's first segment repeats its parent's WAL up to the
    switch point, so copies at the same position are kept once."""
    kept: dict[int, WalEvent] = {}
    for event in events:
        if event.timeline not in history.timelines:
            continue
        leaves_at = history.span_end(event.timeline)
        if leaves_at is None or event.start < leaves_at:
            kept.setdefault(event.start, event)
    return [kept[start] for start in sorted(kept)]


# --- stop prediction -----------------------------------------------------------------------

class CommitRef(BaseModel):
    xid: int
    lsn: str  # start of the commit record
    commit_time: datetime

    @classmethod
    def of(cls, event: WalEvent) -> CommitRef:
        assert event.timestamp is not None
        return cls(xid=event.xid, lsn=event.start_lsn, commit_time=event.timestamp)


class StopPoint(BaseModel):
    """The record recovery stops at (recoveryStopAfter says on which side of it)."""

    after: bool
    record_lsn: str | None  # None when stopping at consistency (recovery_target=immediate)
    record: str  # e.g. "commit of xid 735", as the server's "recovery stopping" line says


class Tie(BaseModel):
    """Several commits share the target's exact microsecond: a time target keeps all of them
    or none. An LSN target can split them."""

    commit_time: datetime
    xids: list[int]
    commit_lsns: list[str]
    advice: str


class Prediction(BaseModel):
    stop: StopPoint | None  # None: recovery_target latest replays the whole archive
    last_kept: CommitRef | None
    first_dropped: CommitRef | None
    replay_lsn: str | None  # pg_last_wal_replay_lsn() at the stop; not predicted for latest
    last_xact_replay_time: datetime | None  # pg_last_xact_replay_timestamp() at the stop
    tie: Tie | None = None
    reason: str


@dataclass(frozen=True)
class _Stop:
    point: StopPoint
    replay_lsn: int
    why: str


def _describe(event: WalEvent) -> str:
    if event.kind == "restore_point":
        return f"restore point {event.name!r}"
    verb = "commit" if event.is_commit else "abort"
    return f"{verb} of xid {event.xid}"


def _at_event(event: WalEvent, after: bool, why: str) -> _Stop:
    point = StopPoint(after=after, record_lsn=event.start_lsn, record=_describe(event))
    return _Stop(point, event.end if after else end_before(event.start), why)


def _not_reached(target: ResolvedTarget, what: str) -> DrillError:
    return DrillError(
        ErrorCode.TARGET_BEYOND_ARCHIVE,
        f"the archived WAL after the backup holds no {what}: recovery of "
        f"{target.describe()} would replay everything and then fail",
    )


def _time_stop(replayed: list[WalEvent], target: ResolvedTarget) -> _Stop:
    """recoveryStopsBefore: only transaction ends are checked, before they are applied. Many
    may share a time, so inclusive stops after the last of them, exclusive at the first."""
    assert target.utc is not None
    edge = ">" if target.inclusive else ">="
    for event in replayed:
        if not event.ends_transaction:
            continue
        assert event.timestamp is not None
        if event.timestamp > target.utc or (event.timestamp == target.utc and not target.inclusive):
            why = (f"the first commit or abort with time {edge} {format_utc(target.utc)} "
                   f"is at {format_utc(event.timestamp)}")
            return _at_event(event, after=False, why=why)
    raise _not_reached(target, f"commit or abort with time {edge} {format_utc(target.utc)}")


def _xid_stop(events: list[WalEvent], replayed: list[WalEvent],
              target: ResolvedTarget) -> _Stop:
    """Equality only: xids are numbered at start, not at commit."""
    assert target.xid is not None
    xid = target.xid & _XID_MASK
    ends = [e for e in replayed if e.ends_transaction and e.xid == xid]
    if not ends:
        earlier = [e for e in events if e.ends_transaction and e.xid == xid]
        where = (f"it ended at {earlier[0].start_lsn}, before the backup's redo point, so the "
                 "backup already holds it" if earlier else "it never commits or aborts")
        raise DrillError(ErrorCode.UNKNOWN_XID, f"xid {target.xid} is not in the archived WAL "
                                                f"after the backup: {where}")
    event = ends[0]
    if not event.is_commit:
        raise DrillError(ErrorCode.XID_ABORTED,
                         f"xid {target.xid} aborted at {event.start_lsn} "
                         f"({format_utc(event.timestamp)}); it never committed")
    side = "after" if target.inclusive else "before"
    return _at_event(event, after=target.inclusive, why=f"stops {side} the commit of xid {xid}")


def _name_stop(events: list[WalEvent], replayed: list[WalEvent],
               target: ResolvedTarget) -> _Stop:
    """recoveryStopsAfter: the first restore point replayed with exactly that name."""
    for event in replayed:
        if event.kind == "restore_point" and event.name == target.name:
            return _at_event(event, after=True, why=f"restore point {target.name!r} is created "
                                                    f"at {event.start_lsn}")
    older = [e.start_lsn for e in events if e.kind == "restore_point" and e.name == target.name]
    where = f" (one at {older[0]} is before the backup's redo point)" if older else ""
    raise DrillError(ErrorCode.UNKNOWN_RESTORE_POINT,
                     f"no restore point named {target.name!r} after the backup{where}")


def _lsn_stop(record: WalRecord | None, target: ResolvedTarget) -> _Stop:
    """Any record counts: stop before (exclusive) or after (inclusive) the first record that
    starts at or after the target."""
    if record is None:
        raise _not_reached(target, f"record at or after {target.lsn}")
    after = target.inclusive
    point = StopPoint(after=after, record_lsn=format_lsn(record.start),
                      record=f"{record.rmgr} record at {format_lsn(record.start)}")
    why = f"the first record at or after {target.lsn} starts at {format_lsn(record.start)}"
    return _Stop(point, record.end if after else end_before(record.start), why)


def _immediate_stop(backup: BaseBackup) -> _Stop:
    point = StopPoint(after=True, record_lsn=None, record="consistency")
    why = f"backup {backup.id} is consistent at {backup.stop_lsn}"
    return _Stop(point, parse_lsn(backup.stop_lsn), why)


def _tie(replayed: list[WalEvent], target: ResolvedTarget) -> Tie | None:
    if target.mode != "time":
        return None
    tied = [e for e in replayed if e.is_commit and e.timestamp == target.utc]
    if len(tied) < 2:
        return None
    kept = "keeps all of them" if target.inclusive else "drops all of them"
    return Tie(
        commit_time=tied[0].timestamp, xids=[e.xid for e in tied],
        commit_lsns=[e.start_lsn for e in tied],
        advice=(f"{len(tied)} commits share the target's exact microsecond; this target {kept}. "
                "To keep only some, target recovery_target_lsn = the commit LSN of the first "
                "one to drop, exclusive."),
    )


def _choose_stop(events: list[WalEvent], replayed: list[WalEvent], target: ResolvedTarget,
                 backup: BaseBackup, record_at_target: WalRecord | None) -> _Stop | None:
    match target.mode:
        case "time":
            return _time_stop(replayed, target)
        case "xid":
            return _xid_stop(events, replayed, target)
        case "name":
            return _name_stop(events, replayed, target)
        case "lsn":
            return _lsn_stop(record_at_target, target)
        case "immediate":
            return _immediate_stop(backup)
        case _:
            return None


def predict_stop(events: list[WalEvent], target: ResolvedTarget, backup: BaseBackup,
                 record_at_target: WalRecord | None = None) -> Prediction:
    """Where PostgreSQL 15 stops replaying `events` (one timeline path, WAL order) from
    `backup` for `target`. Replay starts at the backup's redo point (start_lsn) and is
    consistent at its stop_lsn. For an LSN target, `record_at_target` is the first record of
    any kind starting at or after it (None: the archive has none)."""
    redo, consistent = parse_lsn(backup.start_lsn), parse_lsn(backup.stop_lsn)
    replayed = [e for e in events if e.start >= redo]
    stop = _choose_stop(events, replayed, target, backup, record_at_target)
    if stop is not None and stop.replay_lsn < consistent:
        raise DrillError(
            ErrorCode.TARGET_BEFORE_EARLIEST_BACKUP,
            f"recovery would stop at {format_lsn(stop.replay_lsn)} ({stop.why}), before backup "
            f"{backup.id} is consistent at {backup.stop_lsn}; PostgreSQL refuses with "
            "'requested recovery stop point is before consistent recovery point'",
        )
    # Ends grow with starts, so what is replayed is a prefix of the events.
    kept = [e for e in events if stop is None or e.end <= stop.replay_lsn]
    dropped = [e for e in events[len(kept):] if e.is_commit]
    commits = [e for e in kept if e.is_commit]
    xact_ends = [e for e in kept if e.start >= redo and e.ends_transaction]
    if target.mode == "lsn" and stop is not None and stop.point.after:
        # recoveryStopsAfter returns for an inclusive LSN target before SetLatestXTime: a
        # commit that is itself the stop record is applied but never stamped.
        xact_ends = [e for e in xact_ends if e.start_lsn != stop.point.record_lsn]
    return Prediction(
        stop=stop.point if stop else None,
        last_kept=CommitRef.of(commits[-1]) if commits else None,
        first_dropped=CommitRef.of(dropped[0]) if dropped else None,
        replay_lsn=format_lsn(stop.replay_lsn) if stop else None,
        last_xact_replay_time=xact_ends[-1].timestamp if xact_ends else None,
        tie=_tie(replayed, target),
        reason=stop.why if stop else "no target: replays the whole archive",
    )
