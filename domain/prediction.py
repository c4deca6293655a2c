"""Where recovery stops: PostgreSQL 15's stop rules applied to the archive's WAL events.

`predict_stop` applies xlogrecovery.c's recoveryStopsBefore/recoveryStopsAfter to the events
of one timeline path and says where PostgreSQL will stop: the last commit kept, the first
dropped, `pg_last_wal_replay_lsn()` and `pg_last_xact_replay_timestamp()` at the stop. Pure: no
I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel

from domain.catalog import BaseBackup
from domain.errors import DrillError, ErrorCode
from domain.lsn import format_lsn, parse_lsn
from domain.targets import ResolvedTarget, format_utc
from domain.wal_pages import end_before
from domain.wal_records import WalEvent, WalRecord

_XID_MASK = 0xFFFFFFFF  # recovery_target_xid is compared as a 32-bit TransactionId


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
