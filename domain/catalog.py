"""Base backups and how to choose one for a target. Pure: the adapters hand in file contents.

A backup is usable for a target only if its consistency point (the manifest's End-LSN, the
backup history file's STOP WAL LOCATION) comes before the target: PostgreSQL refuses to stop
before it ("requested recovery stop point is before consistent recovery point").
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Literal

from pydantic import BaseModel

from domain.errors import DrillError, ErrorCode
from domain.lsn import parse_lsn
from domain.targets import ResolvedTarget, format_utc

_LABEL_LINE = re.compile(r"^([A-Z ]+): (.*)$")
_LSN_IN_LABEL = re.compile(r"^([0-9A-F]+/[0-9A-F]+)")
# backup_label and history files print times to the second, in the server's log_timezone.
_PG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (UTC|GMT|[+-]\d\d(?::?\d\d)?)$")
LABEL_TIME_RESOLUTION = timedelta(seconds=1)


class BaseBackup(BaseModel):
    id: str
    path: str
    timeline: int
    start_lsn: str
    stop_lsn: str
    start_time: datetime
    stop_time: datetime | None
    size_bytes: int
    has_manifest: bool
    format: Literal["plain", "tar"] = "plain"  # pg_basebackup -Fp, or -Ft (base.tar[.gz])

    @property
    def stop_time_upper_bound(self) -> datetime | None:
        """Label times are truncated to the second: the backup ended before this instant."""
        return None if self.stop_time is None else self.stop_time + LABEL_TIME_RESOLUTION


def parse_label_fields(text: str) -> dict[str, str]:
    """backup_label / backup history file as KEY -> value."""
    fields = {}
    for line in text.splitlines():
        if match := _LABEL_LINE.match(line.strip()):
            fields[match.group(1)] = match.group(2)
    return fields


def parse_label_time(text: str) -> datetime:
    match = _PG_TIME.match(text.strip())
    if not match:
        raise ValueError(f"unreadable backup time {text!r} (log_timezone must be UTC or numeric)")
    stamp, zone = match.groups()
    offset = "+00:00" if zone in ("UTC", "GMT") else zone
    return datetime.fromisoformat(f"{stamp}{offset}").astimezone(timezone.utc)


def label_lsn(value: str) -> str:
    match = _LSN_IN_LABEL.match(value)
    if not match:
        raise ValueError(f"no LSN in {value!r}")
    return match.group(1)


def manifest_wal_range(manifest_text: str) -> tuple[int, str, str]:
    """(timeline, start LSN, end LSN) from a backup_manifest's WAL-Ranges (last range)."""
    ranges = json.loads(manifest_text)["WAL-Ranges"]
    last = ranges[-1]
    return int(last["Timeline"]), last["Start-LSN"], last["End-LSN"]


def describe_backup(
    backup_id: str,
    path: str,
    label_text: str,
    manifest_text: str | None,
    history_text: str | None,
    size_bytes: int,
) -> BaseBackup:
    """Build a BaseBackup from its files; any unreadable field is BACKUP_METADATA_UNREADABLE."""
    try:
        label = parse_label_fields(label_text)
        start_lsn = label_lsn(label["START WAL LOCATION"])
        timeline = int(label["START TIMELINE"])
        start_time = parse_label_time(label["START TIME"])
        history = parse_label_fields(history_text) if history_text else {}
        stop_time = parse_label_time(history["STOP TIME"]) if "STOP TIME" in history else None
        if manifest_text is not None:
            timeline, _, stop_lsn = manifest_wal_range(manifest_text)
        elif "STOP WAL LOCATION" in history:
            stop_lsn = label_lsn(history["STOP WAL LOCATION"])
        else:
            raise ValueError("neither backup_manifest nor a backup history file gives the end")
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise DrillError(
            ErrorCode.BACKUP_METADATA_UNREADABLE, f"backup {backup_id} at {path}: {exc}"
        ) from None
    return BaseBackup(
        id=backup_id, path=path, timeline=timeline, start_lsn=start_lsn, stop_lsn=stop_lsn,
        start_time=start_time, stop_time=stop_time, size_bytes=size_bytes,
        has_manifest=manifest_text is not None,
    )


def _reaches(backup: BaseBackup, target: ResolvedTarget) -> bool:
    match target.mode:
        case "time":
            bound = backup.stop_time_upper_bound
            return bound is not None and target.utc is not None and bound <= target.utc
        case "lsn":
            return target.lsn is not None and parse_lsn(backup.stop_lsn) <= parse_lsn(target.lsn)
        case _:
            return True


def candidate_backups(backups: list[BaseBackup], target: ResolvedTarget) -> list[BaseBackup]:
    """Backups that may reach the target, newest first. xid and restore point targets name no
    position by themselves: every backup is a candidate until the WAL index rules it out."""
    if not backups:
        raise DrillError(ErrorCode.NO_BASE_BACKUP, "the backup source holds no base backup")
    usable = [b for b in backups if _reaches(b, target)]
    if not usable:
        oldest = min(backups, key=lambda b: parse_lsn(b.stop_lsn))
        ended = format_utc(oldest.stop_time) if oldest.stop_time else "unknown time"
        raise DrillError(
            ErrorCode.TARGET_BEFORE_EARLIEST_BACKUP,
            f"target ({target.describe()}) is before the end of the oldest backup "
            f"{oldest.id} (ended at LSN {oldest.stop_lsn}, {ended})",
        )
    return sorted(usable, key=lambda b: parse_lsn(b.stop_lsn), reverse=True)
