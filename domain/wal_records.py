"""WAL records as pg_waldump prints them, and the events among them that decide where
recovery can stop: commits, aborts, their prepared forms, restore points. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel

from domain.lsn import DEFAULT_WAL_SEGMENT_SIZE, format_lsn, parse_lsn
from domain.wal_pages import record_end

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
