"""Properties over every tzdata zone, around every offset change from 1970 to 2037: a wall time
resolves to the one instant that reads as it, or is refused with a DST code, never shifted."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from functools import cache
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.errors import DrillError, ErrorCode
from domain.timeparse import Fold, load_zone, parse_target_time, zone_names

# The shortest-lived UTC offset from 1970 to 2037 lasted 6 days 23 hours (America/Boa_Vista,
# October 2000), so a scan this fine sees every change, and at most one between two samples.
SCAN_STEP = 6 * 86400
# Offsets stay within ±16 hours, so any instant reading as a wall time is within this much of
# the wall time taken as UTC; sampling hourly meets every offset in effect there.
OFFSET_REACH = timedelta(hours=16)
OFFSET_SAMPLE = timedelta(hours=1)

FAST = settings(max_examples=300, deadline=None)


def mid_year(year: int) -> datetime:
    return datetime(year, 7, 1, tzinfo=timezone.utc)


def _offset(name: str, timestamp: int) -> timedelta | None:
    return datetime.fromtimestamp(timestamp, load_zone(name)).utcoffset()


@cache
def transitions(name: str, year: int) -> tuple[datetime, ...]:
    """Every instant in `year` at which the zone's UTC offset changes: a scan every SCAN_STEP,
    then a bisection to the second (zoneinfo does not expose its transitions)."""
    first, last = (
        int(datetime(y, 1, 1, tzinfo=timezone.utc).timestamp())
        for y in (year, year + 1)
    )
    points = [*range(first, last, SCAN_STEP), last]
    found = []
    for (before, was), (after, now) in pairwise((p, _offset(name, p)) for p in points):
        if was == now:
            continue
        while after - before > 1:
            middle = (before + after) // 2
            if _offset(name, middle) == was:
                before = middle
            else:
                after = middle
        found.append(datetime.fromtimestamp(after, timezone.utc))
    return tuple(found)


def readings(name: str, wall: datetime) -> list[datetime]:
    """Brute force, independent of the parser: try every offset the zone uses within reach of
    the wall time and keep the instants that read as it."""
    zone = load_zone(name)
    as_utc = wall.replace(tzinfo=timezone.utc)
    samples = range(-OFFSET_REACH // OFFSET_SAMPLE, OFFSET_REACH // OFFSET_SAMPLE + 1)
    offsets = {(as_utc + k * OFFSET_SAMPLE).astimezone(zone).utcoffset() for k in samples}
    instants = sorted({as_utc - offset for offset in offsets if offset is not None})
    return [u for u in instants if u.astimezone(zone).replace(tzinfo=None) == wall]


def written(wall: datetime, name: str, offset: str = "") -> str:
    return f"{wall.isoformat(' ')}{offset} {name}"


def outcome(text: str, fold: Fold | None = None) -> datetime | ErrorCode:
    try:
        return parse_target_time(text, fold=fold).utc
    except DrillError as error:
        return error.code


@st.composite
def near_a_transition(draw: st.DrawFn) -> tuple[str, datetime, timedelta]:
    """A zone, one of its offset changes in a year from 1970 to 2037 (mid-year if that year has
    none), and a distance from it wide enough to cross the whole gap or fold."""
    name = draw(st.sampled_from(zone_names()))
    year = draw(st.integers(1970, 2037))
    anchor = draw(st.sampled_from(transitions(name, year) or (mid_year(year),)))
    second = int(anchor.timestamp())
    jump = abs(_offset(name, second) - _offset(name, second - 1))
    reach = int((jump + timedelta(hours=1)).total_seconds())
    seconds = draw(st.integers(-reach, reach))
    microseconds = draw(st.sampled_from([0, 1, 500000, 999999]))
    return name, anchor, timedelta(seconds=seconds, microseconds=microseconds)


@FAST
@given(near_a_transition())
def test_a_wall_time_names_its_one_instant_or_is_refused(
    case: tuple[str, datetime, timedelta],
) -> None:
    name, anchor, distance = case
    # The wall clock at the transition as read just before it, moved across the gap or fold.
    wall = (anchor - timedelta(seconds=1)).astimezone(load_zone(name)).replace(tzinfo=None)
    wall += timedelta(seconds=1) + distance
    text = written(wall, name)
    expected = readings(name, wall)
    if not expected:
        assert outcome(text) == ErrorCode.TARGET_NONEXISTENT_LOCAL_TIME
    elif len(expected) == 1:
        assert outcome(text) == expected[0]
    else:
        assert outcome(text) == ErrorCode.TARGET_AMBIGUOUS_LOCAL_TIME
        assert [outcome(text, "earlier"), outcome(text, "later")] == expected
    for instant in expected:
        offset = instant.astimezone(load_zone(name)).utcoffset()
        assert offset is not None
        if offset % timedelta(minutes=1):
            continue  # e.g. Africa/Monrovia's -00:44:30 until 1972: no ±HH:MM can name it
        sign, size = ("-", -offset) if offset < timedelta(0) else ("+", offset)
        hours, minutes = divmod(int(size.total_seconds()) // 60, 60)
        assert outcome(written(wall, name, f"{sign}{hours:02d}:{minutes:02d}")) == instant


@FAST
@given(near_a_transition())
def test_every_instant_is_reached_from_its_own_wall_reading(
    case: tuple[str, datetime, timedelta],
) -> None:
    name, anchor, distance = case
    zone = load_zone(name)
    instant = anchor + distance
    wall = instant.astimezone(zone).replace(tzinfo=None)
    text = written(wall, name)
    resolved = outcome(text)
    if resolved == ErrorCode.TARGET_AMBIGUOUS_LOCAL_TIME:
        earlier, later = outcome(text, "earlier"), outcome(text, "later")
        assert isinstance(earlier, datetime) and isinstance(later, datetime)
        assert earlier < later and instant in (earlier, later)
        assert {earlier.astimezone(zone).replace(tzinfo=None)} == {
            later.astimezone(zone).replace(tzinfo=None)
        } == {wall}
    else:
        assert resolved == instant
