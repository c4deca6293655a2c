"""Parse a human target time into one exact UTC instant, or refuse with a code.

Accepted: an ISO 8601 date and time ('T' or a space between them, seconds optional, at most six
fractional digits) followed by Z / UTC / GMT, an offset (±HH, ±HHMM, ±HH:MM), an IANA zone name
as PostgreSQL prints it after the time, or an offset and then a zone name. A time without a zone
is refused unless the caller names one explicitly.

Nothing is ever shifted or rounded to make a time fit: a wall time a zone skipped or repeated, a
leap second, or a sub-microsecond time is refused with the instants the user can choose between.
Recovering a minute away from the intended point is the incident all over again.

Zones come only from the `tzdata` package (its data files are read, nothing else), so the same
text resolves to the same instant on every host, whatever /usr/share/zoneinfo holds.
"""

from __future__ import annotations

import importlib.resources
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cache
from typing import Literal
from zoneinfo import ZoneInfo

import tzdata

from domain.errors import DrillError, ErrorCode

Fold = Literal["earlier", "later"]

_MICROSECOND = timedelta(microseconds=1)
_MAX_OFFSET_HOURS = 15  # PostgreSQL accepts offsets up to ±15:59
_ZONE_FORMS = (
    "Z, UTC, an offset such as -05, -0500 or -05:00, and/or an IANA zone name such as "
    "America/New_York"
)

_TIME_RE = re.compile(
    r"(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})[T ]"
    r"(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:[.,](?P<fraction>\d+))?)?"
    r"(?P<place>.*)",
    re.ASCII,
)
# A zone name needs a space before it, except when it is all there is (assume_timezone).
_PLACE_RE = re.compile(
    r"\s*(?:(?P<utc>(?i:Z|UTC|GMT))"
    r"|(?P<offset>(?P<sign>[+-])(?P<hours>\d{2})(?::?(?P<minutes>\d{2}))?))?"
    r"(?:(?:^|\s+)(?P<zone>[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+)*))?\s*",
    re.ASCII,
)


@dataclass(frozen=True)
class ParsedTime:
    """One exact instant, and the user's wall-clock reading of it (None when they wrote UTC)."""

    utc: datetime
    local_reading: str | None


@dataclass(frozen=True)
class _Place:
    """Where a wall time was read: an offset, a zone, or both (the offset picks the reading)."""

    offset: timedelta | None
    zone: ZoneInfo | None


# tzdata zones whose names PostgreSQL's default timezone_abbreviations read as fixed offsets.
_FIXED_IN_POSTGRESQL = {"CET": "UTC+01:00", "MET": "UTC+01:00", "EET": "UTC+02:00",
                        "WET": "UTC+00:00"}


@cache
def _zones_by_folded_name() -> dict[str, str]:
    # tzdata's own list, not zoneinfo.available_timezones(), which also walks the host's files.
    listing = importlib.resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8")
    return {name.lower(): name for name in listing.split()}


def zone_names() -> list[str]:
    """Every zone of the bundled tzdata release that pitrdrill accepts, sorted."""
    return sorted(set(_zones_by_folded_name().values()) - set(_FIXED_IN_POSTGRESQL))


@cache
def load_zone(name: str) -> ZoneInfo:
    """The zone from the bundled tzdata, never from the host. Names match case-insensitively,
    as PostgreSQL's do; the zone's key is the canonical spelling."""
    canonical = _zones_by_folded_name().get(name.lower())
    if canonical in _FIXED_IN_POSTGRESQL:
        raise DrillError(
            ErrorCode.TARGET_UNKNOWN_TIMEZONE,
            f"{name!r} is ambiguous: PostgreSQL reads it as the fixed abbreviation "
            f"{_FIXED_IN_POSTGRESQL[canonical]}, tzdata as a zone with summer time, an hour "
            "apart half the year; use a city zone (e.g. Europe/Paris) or an explicit offset",
        )
    if canonical is None:
        raise DrillError(
            ErrorCode.TARGET_UNKNOWN_TIMEZONE,
            f"{name!r} is not a zone in the IANA time zone database (tzdata "
            f"{tzdata.IANA_VERSION}); use a name such as America/New_York or an offset such as "
            "-05:00 (abbreviations such as PST are not zones)",
        )
    resource = importlib.resources.files("tzdata.zoneinfo").joinpath(*canonical.split("/"))
    with resource.open("rb") as data:
        return ZoneInfo.from_file(data, key=canonical)


def format_utc(instant: datetime) -> str:
    """UTC with an explicit +00 offset and microseconds, as PostgreSQL parses unambiguously."""
    utc = instant.astimezone(timezone.utc).replace(tzinfo=None)
    return utc.isoformat(" ", "microseconds") + "+00"


def _format_wall(wall: datetime) -> str:
    """'2024-01-15 14:30:00', or with the fraction and no trailing zeros: '14:30:00.123'."""
    naive = wall.replace(tzinfo=None)
    if not wall.microsecond:
        return naive.isoformat(" ", "seconds")
    return naive.isoformat(" ", "microseconds").rstrip("0")


def _format_offset(offset: timedelta) -> str:
    """'-05:00', '+05:30', or '-04:56:02' for the odd local-mean-time offset."""
    sign = "-" if offset < timedelta(0) else "+"
    minutes, seconds = divmod(int(abs(offset).total_seconds()), 60)
    text = f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
    return f"{text}:{seconds:02d}" if seconds else text


def _reading(local: datetime) -> str:
    """'2024-01-15 14:30:00.123 America/New_York (EST, UTC-05:00)' for a time in a zone."""
    assert isinstance(local.tzinfo, ZoneInfo) and local.utcoffset() is not None
    offset = _format_offset(local.utcoffset())
    return f"{_format_wall(local)} {local.tzinfo.key} ({local.tzname()}, UTC{offset})"


def _at(local: datetime) -> str:
    """An instant as both PostgreSQL's UTC and the zone's reading, for the user to pick."""
    return f"{format_utc(local)} = {_reading(local)}"


def _offset(match: re.Match[str], source: str) -> timedelta:
    hours, minutes = int(match["hours"]), int(match["minutes"] or 0)
    if hours > _MAX_OFFSET_HOURS or minutes > 59:
        raise DrillError(
            ErrorCode.TARGET_UNPARSEABLE,
            f"offset {match['offset']!r} {source} is out of range: offsets run from -15:59 to "
            "+15:59",
        )
    size = timedelta(hours=hours, minutes=minutes)
    return -size if match["sign"] == "-" else size


def _read_place(text: str, source: str) -> _Place | None:
    """The zone and/or offset in `text`; None when it names neither."""
    match = _PLACE_RE.fullmatch(text)
    if match is None:
        raise DrillError(
            ErrorCode.TARGET_UNPARSEABLE,
            f"cannot read {text.strip()!r} {source}: expected {_ZONE_FORMS}",
        )
    offset = timedelta(0) if match["utc"] else _offset(match, source) if match["offset"] else None
    zone = load_zone(match["zone"]) if match["zone"] else None
    if offset is None and zone is None:
        return None
    return _Place(offset, zone)


def _choices(first: datetime, second: datetime, place: str) -> str:
    """Two wall times written back in the user's own notation, ready to paste."""
    return f"'{_format_wall(first)}{place}' or '{_format_wall(second)}{place}'"


def _read_wall(match: re.Match[str], text: str) -> datetime:
    """The naive wall time; refuses a leap second and sub-microsecond digits rather than
    moving the time to make it fit."""
    second, fraction = int(match["second"] or 0), match["fraction"] or ""
    try:
        wall = datetime(
            int(match["year"]),
            int(match["month"]),
            int(match["day"]),
            int(match["hour"]),
            int(match["minute"]),
            59 if second == 60 else second,
            int(fraction[:6].ljust(6, "0")),
        )
    except ValueError as exc:
        raise DrillError(
            ErrorCode.TARGET_UNPARSEABLE, f"{text!r} is not a valid date and time ({exc})"
        ) from None
    if second == 60:
        after = wall.replace(second=0, microsecond=0) + timedelta(minutes=1)
        raise DrillError(
            ErrorCode.TARGET_LEAP_SECOND,
            f"{text!r} names second :60, a leap second; PostgreSQL timestamps never hold one. "
            "Use one of the neighbouring instants: "
            f"{_choices(wall.replace(microsecond=999999), after, match['place'])}",
        )
    if fraction[6:].strip("0"):
        raise DrillError(
            ErrorCode.TARGET_PRECISION,
            f"{text!r} has {len(fraction)} fractional digits; PostgreSQL keeps 6 (microseconds). "
            "Decide which way to round: "
            f"{_choices(wall, wall + _MICROSECOND, match['place'])}",
        )
    return wall


def _candidates(wall: datetime, zone: ZoneInfo) -> list[datetime]:
    """`wall` taken at the offsets before and after the nearest transition (fold=0/1), in UTC,
    earliest first. In a gap these are the instants either side of it."""
    return sorted({wall.replace(tzinfo=zone, fold=f).astimezone(timezone.utc) for f in (0, 1)})


def _readings(wall: datetime, zone: ZoneInfo) -> list[datetime]:
    """Every reading of `wall` in `zone`, earliest first: none in a gap, two in a fold. A
    candidate counts only if the zone's clocks really showed `wall` at that instant."""
    readings = [instant.astimezone(zone) for instant in _candidates(wall, zone)]
    return [local for local in readings if local.replace(tzinfo=None) == wall]


def _transition(zone: ZoneInfo, before: datetime, after: datetime) -> datetime:
    """The first instant on `after`'s offset, for `before` and `after` either side of one
    transition. Bisects to the microsecond because zoneinfo does not expose transitions."""
    target = after.astimezone(zone).utcoffset()
    while after - before > _MICROSECOND:
        middle = before + (after - before) / 2
        if middle.astimezone(zone).utcoffset() == target:
            after = middle
        else:
            before = middle
    return after


def _span(start: datetime, end: datetime) -> str:
    """'2024-03-10 02:00:00–03:00:00'; the end's date is repeated only when it differs."""
    end_text = _format_wall(end) if end.date() != start.date() else _format_wall(end)[11:]
    return f"{_format_wall(start)}–{end_text}"


def _skipped(wall: datetime, zone: ZoneInfo) -> DrillError:
    jump = _transition(zone, *_candidates(wall, zone))
    last, first = (jump - _MICROSECOND).astimezone(zone), jump.astimezone(zone)
    return DrillError(
        ErrorCode.TARGET_NONEXISTENT_LOCAL_TIME,
        f"{_format_wall(wall)} never happened in {zone.key}: clocks sprang forward at "
        f"{format_utc(jump)}, skipping {_span(last + _MICROSECOND, first)} "
        f"({last.tzname()}→{first.tzname()}). The instants just before and after the gap are "
        f"{_at(last)} and {_at(first)}",
    )


def _offset_mismatch(wall: datetime, offset: timedelta, readings: list[datetime]) -> DrillError:
    zone = readings[0].tzinfo
    assert isinstance(zone, ZoneInfo)
    return DrillError(
        ErrorCode.TARGET_NONEXISTENT_LOCAL_TIME,
        f"{_format_wall(wall)}{_format_offset(offset)} never happened in {zone.key}: there "
        f"{_format_wall(wall)} was only " + " or ".join(_at(local) for local in readings),
    )


def _repeated(wall: datetime, earlier: datetime, later: datetime) -> DrillError:
    assert isinstance(earlier.tzinfo, ZoneInfo)
    offsets = [_format_offset(local.utcoffset()) for local in (earlier, later)]
    return DrillError(
        ErrorCode.TARGET_AMBIGUOUS_LOCAL_TIME,
        f"{_format_wall(wall)} happened twice in {earlier.tzinfo.key} (clocks fell back): at "
        f"{_at(earlier)} and at {_at(later)}. Add the offset ({offsets[0]} or {offsets[1]}) to "
        "the time, or set fold: earlier | later",
    )


def _in_zone(wall: datetime, place: _Place, fold: Fold | None) -> datetime:
    """The one reading of `wall` in the place's zone. An explicit offset settles a repeated
    wall time; fold is consulted only when nothing in the text does."""
    assert place.zone is not None
    readings = _readings(wall, place.zone)
    if not readings:
        raise _skipped(wall, place.zone)
    matching = [r for r in readings if place.offset is None or r.utcoffset() == place.offset]
    if not matching:
        assert place.offset is not None
        raise _offset_mismatch(wall, place.offset, readings)
    if len(matching) == 1:
        return matching[0]
    if fold is None:
        raise _repeated(wall, *matching)
    return matching[0] if fold == "earlier" else matching[-1]


def _resolve(wall: datetime, place: _Place, fold: Fold | None) -> ParsedTime:
    if place.zone is not None:
        local = _in_zone(wall, place, fold)
        return ParsedTime(local.astimezone(timezone.utc), _reading(local))
    assert place.offset is not None
    utc = wall.replace(tzinfo=timezone(place.offset)).astimezone(timezone.utc)
    if not place.offset:
        return ParsedTime(utc, None)
    return ParsedTime(utc, f"{_format_wall(wall)} (UTC{_format_offset(place.offset)})")


def parse_target_time(
    text: str, assume_timezone: str | None = None, fold: Fold | None = None
) -> ParsedTime:
    """The one UTC instant `text` names. `assume_timezone` (a zone name or offset) is used only
    when the text has neither; `fold` picks the earlier or later of a wall time read twice."""
    match = _TIME_RE.fullmatch(text.strip())
    if match is None:
        raise DrillError(
            ErrorCode.TARGET_UNPARSEABLE,
            f"{text!r} is not a date and time: expected ISO 8601 'YYYY-MM-DD HH:MM[:SS[.ffffff]]' "
            f"('T' or a space between date and time) followed by {_ZONE_FORMS}",
        )
    # Both are read, so a broken assume_timezone is reported even when this text needs none.
    written = _read_place(match["place"], f"after the time in {text!r}")
    assumed = _read_place(assume_timezone or "", "in assume_timezone")
    place = written or assumed
    if place is None:
        raise DrillError(
            ErrorCode.TARGET_NAIVE_TIME,
            f"{text!r} has no zone or offset, so it names no single instant (PostgreSQL would "
            "read it in the recovered server's TimeZone)",
        )
    try:
        return _resolve(_read_wall(match, text), place, fold)
    except OverflowError:
        raise DrillError(
            ErrorCode.TARGET_UNPARSEABLE, f"{text!r} lies outside the years 1 to 9999 in UTC"
        ) from None
