"""Parse a human target time into one exact UTC instant, or refuse with a code.

Skeleton version: ISO 8601 with an offset or an IANA zone name after the time.
(DST gaps/folds, leap seconds and precision checks are being hardened separately.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from domain.errors import DrillError, ErrorCode


@dataclass(frozen=True)
class ParsedTime:
    utc: datetime
    local_reading: str | None


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise DrillError(
            ErrorCode.TARGET_UNKNOWN_TIMEZONE, f"{name!r} is not an IANA time zone"
        ) from None


def parse_target_time(text: str, assume_timezone: str | None, fold: str | None) -> ParsedTime:
    raw = text.strip()
    head, _, tail = raw.rpartition(" ")
    zone_name = tail if head and "/" in tail or tail in ("UTC",) else None
    stamp = head if zone_name else raw
    try:
        parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        raise DrillError(ErrorCode.TARGET_UNPARSEABLE, f"cannot read {text!r} as a time") from None
    if zone_name:
        zone = _zone(zone_name)
        local = parsed.replace(tzinfo=zone)
        return ParsedTime(local.astimezone(timezone.utc), f"{stamp} {zone_name}")
    if parsed.tzinfo is None:
        if assume_timezone is None:
            raise DrillError(ErrorCode.TARGET_NAIVE_TIME, f"{text!r} has no zone or offset")
        local = parsed.replace(tzinfo=_zone(assume_timezone))
        return ParsedTime(local.astimezone(timezone.utc), f"{stamp} {assume_timezone}")
    return ParsedTime(parsed.astimezone(timezone.utc), None)
