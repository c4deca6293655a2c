"""Target times: every accepted form, and every refusal with its code and its alternatives."""

from __future__ import annotations

import importlib.resources
import zoneinfo
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from domain.errors import DrillError, ErrorCode
from domain.timeparse import ParsedTime, load_zone, parse_target_time, zone_names


def utc(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=timezone.utc)


def refusal(text: str, **options: str) -> DrillError:
    with pytest.raises(DrillError) as caught:
        parse_target_time(text, **options)
    return caught.value


@pytest.mark.parametrize(
    ("text", "instant"),
    [
        ("2024-01-15T19:30:00Z", utc(2024, 1, 15, 19, 30)),
        ("2024-01-15 19:30:00Z", utc(2024, 1, 15, 19, 30)),
        ("2024-01-15 19:30:00z", utc(2024, 1, 15, 19, 30)),
        ("2024-01-15 19:30Z", utc(2024, 1, 15, 19, 30)),
        ("2024-01-15 19:30:00 UTC", utc(2024, 1, 15, 19, 30)),
        ("2024-01-15 19:30:00 utc", utc(2024, 1, 15, 19, 30)),
        ("2024-01-15 19:30:00 GMT", utc(2024, 1, 15, 19, 30)),
        ("2024-01-15 19:30:00+00", utc(2024, 1, 15, 19, 30)),
        ("2024-01-15 19:30:00-00:00", utc(2024, 1, 15, 19, 30)),
        ("  2024-01-15 19:30:00Z  ", utc(2024, 1, 15, 19, 30)),
        ("2024-01-15 19:30:00.1Z", utc(2024, 1, 15, 19, 30, 0, 100000)),
        ("2024-01-15 19:30:00,5Z", utc(2024, 1, 15, 19, 30, 0, 500000)),
        ("2024-01-15 19:30:00.000001Z", utc(2024, 1, 15, 19, 30, 0, 1)),
        ("2024-01-15 19:30:00.123456Z", utc(2024, 1, 15, 19, 30, 0, 123456)),
        # Digits past the microsecond that are all zero lose nothing, so nothing is rounded.
        ("2024-01-15 19:30:00.123456000Z", utc(2024, 1, 15, 19, 30, 0, 123456)),
    ],
)
def test_utc_forms_resolve_without_a_local_reading(text: str, instant: datetime) -> None:
    assert parse_target_time(text) == ParsedTime(instant, None)


@pytest.mark.parametrize(
    ("text", "instant", "reading"),
    [
        ("2024-01-15 14:30:00-05", utc(2024, 1, 15, 19, 30), "2024-01-15 14:30:00 (UTC-05:00)"),
        ("2024-01-15 14:30:00-0500", utc(2024, 1, 15, 19, 30), "2024-01-15 14:30:00 (UTC-05:00)"),
        ("2024-01-15T14:30:00-05:00", utc(2024, 1, 15, 19, 30), "2024-01-15 14:30:00 (UTC-05:00)"),
        ("2024-01-15 14:30:00 -05:00", utc(2024, 1, 15, 19, 30), "2024-01-15 14:30:00 (UTC-05:00)"),
        ("2024-01-16 01:00:00+05:30", utc(2024, 1, 15, 19, 30), "2024-01-16 01:00:00 (UTC+05:30)"),
        (
            "2024-01-16 08:30:00.25+1300",
            utc(2024, 1, 15, 19, 30, 0, 250000),
            "2024-01-16 08:30:00.25 (UTC+13:00)",
        ),
        (
            "2024-01-15 14:30:00 America/New_York",
            utc(2024, 1, 15, 19, 30),
            "2024-01-15 14:30:00 America/New_York (EST, UTC-05:00)",
        ),
        (
            "2024-01-15 14:30:00.123 America/New_York",
            utc(2024, 1, 15, 19, 30, 0, 123000),
            "2024-01-15 14:30:00.123 America/New_York (EST, UTC-05:00)",
        ),
        (
            "2024-07-15T14:30:00 America/New_York",
            utc(2024, 7, 15, 18, 30),
            "2024-07-15 14:30:00 America/New_York (EDT, UTC-04:00)",
        ),
        (
            "2024-01-15 14:30:00 america/new_york",
            utc(2024, 1, 15, 19, 30),
            "2024-01-15 14:30:00 America/New_York (EST, UTC-05:00)",
        ),
        (
            "2024-07-01 12:00:00 Asia/Kolkata",
            utc(2024, 7, 1, 6, 30),
            "2024-07-01 12:00:00 Asia/Kolkata (IST, UTC+05:30)",
        ),
        # POSIX-style names count west as positive; the zone file, not the name, decides.
        (
            "2024-07-01 12:00:00 Etc/GMT+5",
            utc(2024, 7, 1, 17, 0),
            "2024-07-01 12:00:00 Etc/GMT+5 (-05, UTC-05:00)",
        ),
        (
            "2024-01-15 14:30:00-05:00 America/New_York",
            utc(2024, 1, 15, 19, 30),
            "2024-01-15 14:30:00 America/New_York (EST, UTC-05:00)",
        ),
        (
            "2024-01-15 19:30:00Z Europe/London",
            utc(2024, 1, 15, 19, 30),
            "2024-01-15 19:30:00 Europe/London (GMT, UTC+00:00)",
        ),
    ],
)
def test_offsets_and_zones_resolve_with_the_wall_reading(
    text: str, instant: datetime, reading: str
) -> None:
    assert parse_target_time(text) == ParsedTime(instant, reading)


def test_a_naive_time_is_refused() -> None:
    error = refusal("2024-01-15 14:30:00")
    assert error.code == ErrorCode.TARGET_NAIVE_TIME
    assert error.message == (
        "'2024-01-15 14:30:00' has no zone or offset, so it names no single instant "
        "(PostgreSQL would read it in the recovered server's TimeZone)"
    )


def test_an_empty_assumed_zone_still_refuses_a_naive_time() -> None:
    assert refusal("2024-01-15 14:30:00", assume_timezone="  ").code == (
        ErrorCode.TARGET_NAIVE_TIME
    )


@pytest.mark.parametrize(
    ("assume_timezone", "instant", "reading"),
    [
        (
            "America/New_York",
            utc(2024, 1, 15, 19, 30),
            "2024-01-15 14:30:00 America/New_York (EST, UTC-05:00)",
        ),
        ("-05:00", utc(2024, 1, 15, 19, 30), "2024-01-15 14:30:00 (UTC-05:00)"),
        ("UTC", utc(2024, 1, 15, 14, 30), None),
    ],
)
def test_an_explicit_assumed_zone_reads_a_naive_time(
    assume_timezone: str, instant: datetime, reading: str | None
) -> None:
    parsed = parse_target_time("2024-01-15 14:30:00", assume_timezone=assume_timezone)
    assert parsed == ParsedTime(instant, reading)


def test_a_zone_in_the_text_wins_over_the_assumed_one() -> None:
    parsed = parse_target_time("2024-01-15 19:30:00Z", assume_timezone="America/New_York")
    assert parsed == ParsedTime(utc(2024, 1, 15, 19, 30), None)


@pytest.mark.parametrize("text", ["2024-01-15 14:30:00", "2024-01-15 19:30:00Z"])
def test_an_unknown_assumed_zone_is_refused_even_when_unused(text: str) -> None:
    error = refusal(text, assume_timezone="Nowhere/Land")
    assert error.code == ErrorCode.TARGET_UNKNOWN_TIMEZONE


def test_a_malformed_assumed_zone_is_refused() -> None:
    error = refusal("2024-01-15 14:30:00", assume_timezone="+5")
    assert error.code == ErrorCode.TARGET_UNPARSEABLE
    assert error.message.startswith("cannot read '+5' in assume_timezone: expected Z, UTC")


def test_a_skipped_local_time_names_the_gap_and_the_instants_around_it() -> None:
    error = refusal("2024-03-10 02:30:00 America/New_York")
    assert error.code == ErrorCode.TARGET_NONEXISTENT_LOCAL_TIME
    assert error.message == (
        "2024-03-10 02:30:00 never happened in America/New_York: clocks sprang forward at "
        "2024-03-10 07:00:00.000000+00, skipping 2024-03-10 02:00:00–03:00:00 (EST→EDT). "
        "The instants just before and after the gap are "
        "2024-03-10 06:59:59.999999+00 = 2024-03-10 01:59:59.999999 America/New_York "
        "(EST, UTC-05:00) and "
        "2024-03-10 07:00:00.000000+00 = 2024-03-10 03:00:00 America/New_York (EDT, UTC-04:00)"
    )


def test_a_skipped_day_names_both_dates() -> None:
    error = refusal("2011-12-30 12:00:00 Pacific/Apia")
    assert error.code == ErrorCode.TARGET_NONEXISTENT_LOCAL_TIME
    assert "skipping 2011-12-30 00:00:00–2011-12-31 00:00:00 (-10→+14)" in error.message


@pytest.mark.parametrize("fold", ["earlier", "later"])
def test_fold_does_not_pick_a_side_of_a_gap(fold: str) -> None:
    error = refusal("2024-03-10 02:30:00 America/New_York", fold=fold)
    assert error.code == ErrorCode.TARGET_NONEXISTENT_LOCAL_TIME


def test_an_offset_inside_a_gap_is_still_refused() -> None:
    error = refusal("2024-03-10 02:30:00-05:00 America/New_York")
    assert error.code == ErrorCode.TARGET_NONEXISTENT_LOCAL_TIME
    assert error.message.startswith("2024-03-10 02:30:00 never happened in America/New_York")


def test_an_offset_the_zone_never_had_at_that_time_is_refused() -> None:
    error = refusal("2024-01-15 14:30:00-04:00 America/New_York")
    assert error.code == ErrorCode.TARGET_NONEXISTENT_LOCAL_TIME
    assert error.message == (
        "2024-01-15 14:30:00-04:00 never happened in America/New_York: there "
        "2024-01-15 14:30:00 was only "
        "2024-01-15 19:30:00.000000+00 = 2024-01-15 14:30:00 America/New_York (EST, UTC-05:00)"
    )


def test_a_repeated_local_time_lists_both_instants() -> None:
    error = refusal("2024-11-03 01:30:00 America/New_York")
    assert error.code == ErrorCode.TARGET_AMBIGUOUS_LOCAL_TIME
    assert error.message == (
        "2024-11-03 01:30:00 happened twice in America/New_York (clocks fell back): at "
        "2024-11-03 05:30:00.000000+00 = 2024-11-03 01:30:00 America/New_York (EDT, UTC-04:00) "
        "and at "
        "2024-11-03 06:30:00.000000+00 = 2024-11-03 01:30:00 America/New_York (EST, UTC-05:00). "
        "Add the offset (-04:00 or -05:00) to the time, or set fold: earlier | later"
    )


@pytest.mark.parametrize(
    ("text", "instant"),
    [
        ("2024-11-03 01:30:00-04:00", utc(2024, 11, 3, 5, 30)),
        ("2024-11-03 01:30:00-05:00", utc(2024, 11, 3, 6, 30)),
        ("2024-11-03 01:30:00-04:00 America/New_York", utc(2024, 11, 3, 5, 30)),
        ("2024-11-03 01:30:00-05:00 America/New_York", utc(2024, 11, 3, 6, 30)),
    ],
)
def test_an_explicit_offset_settles_a_repeated_time(text: str, instant: datetime) -> None:
    assert parse_target_time(text).utc == instant


@pytest.mark.parametrize(
    ("fold", "instant", "reading"),
    [
        (
            "earlier",
            utc(2024, 11, 3, 5, 30),
            "2024-11-03 01:30:00 America/New_York (EDT, UTC-04:00)",
        ),
        ("later", utc(2024, 11, 3, 6, 30), "2024-11-03 01:30:00 America/New_York (EST, UTC-05:00)"),
    ],
)
def test_fold_picks_one_reading_of_a_repeated_time(
    fold: str, instant: datetime, reading: str
) -> None:
    parsed = parse_target_time("2024-11-03 01:30:00 America/New_York", fold=fold)
    assert parsed == ParsedTime(instant, reading)


def test_an_offset_outranks_fold() -> None:
    parsed = parse_target_time("2024-11-03 01:30:00-04:00 America/New_York", fold="later")
    assert parsed.utc == utc(2024, 11, 3, 5, 30)


def test_fold_is_ignored_when_the_time_happened_once() -> None:
    parsed = parse_target_time("2024-01-15 14:30:00 America/New_York", fold="later")
    assert parsed.utc == utc(2024, 1, 15, 19, 30)


def test_a_leap_second_names_the_neighbouring_instants() -> None:
    error = refusal("2016-12-31 23:59:60Z")
    assert error.code == ErrorCode.TARGET_LEAP_SECOND
    assert error.message == (
        "'2016-12-31 23:59:60Z' names second :60, a leap second; PostgreSQL timestamps never "
        "hold one. Use one of the neighbouring instants: '2016-12-31 23:59:59.999999Z' or "
        "'2017-01-01 00:00:00Z'"
    )


def test_a_leap_second_in_a_zone_keeps_the_zone_in_the_alternatives() -> None:
    error = refusal("2016-12-31 18:59:60.5 America/New_York")
    assert error.code == ErrorCode.TARGET_LEAP_SECOND
    assert error.message.endswith(
        "'2016-12-31 18:59:59.999999 America/New_York' or '2016-12-31 19:00:00 America/New_York'"
    )


def test_sub_microsecond_digits_are_refused_with_both_roundings() -> None:
    error = refusal("2024-01-15 14:30:00.1234567 UTC")
    assert error.code == ErrorCode.TARGET_PRECISION
    assert error.message == (
        "'2024-01-15 14:30:00.1234567 UTC' has 7 fractional digits; PostgreSQL keeps 6 "
        "(microseconds). Decide which way to round: '2024-01-15 14:30:00.123456 UTC' or "
        "'2024-01-15 14:30:00.123457 UTC'"
    )


def test_rounding_up_can_carry_into_the_next_second() -> None:
    error = refusal("2024-01-15 14:30:59.999999999-05:00")
    assert error.code == ErrorCode.TARGET_PRECISION
    assert error.message.endswith(
        "'2024-01-15 14:30:59.999999-05:00' or '2024-01-15 14:31:00-05:00'"
    )


def test_an_unknown_zone_is_refused_with_the_tzdata_release() -> None:
    error = refusal("2024-01-15 14:30:00 PST")
    assert error.code == ErrorCode.TARGET_UNKNOWN_TIMEZONE
    assert error.message.startswith("'PST' is not a zone in the IANA time zone database (tzdata ")
    assert error.message.endswith(
        "); use a name such as America/New_York or an offset such as -05:00 "
        "(abbreviations such as PST are not zones)"
    )


def test_a_made_up_zone_path_is_unknown() -> None:
    assert refusal("2024-01-15 14:30:00 Mars/Olympus_Mons").code == (
        ErrorCode.TARGET_UNKNOWN_TIMEZONE
    )


def test_unreadable_text_says_what_was_expected() -> None:
    error = refusal("yesterday at noon")
    assert error.code == ErrorCode.TARGET_UNPARSEABLE
    assert error.message == (
        "'yesterday at noon' is not a date and time: expected ISO 8601 "
        "'YYYY-MM-DD HH:MM[:SS[.ffffff]]' ('T' or a space between date and time) followed by "
        "Z, UTC, an offset such as -05, -0500 or -05:00, and/or an IANA zone name such as "
        "America/New_York"
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2024-01-15",
        "15/01/2024 14:30:00Z",
        "2024-1-15 14:30:00Z",
        "2024-01-15 14:30:00.Z",
        "20240115T143000Z",
        "2024-01-15 14:30:00 +5",
        "2024-01-15 14:30:00 America/New_York extra",
        "2024-01-15 14:30:00 -05:00:00",
    ],
)
def test_malformed_text_is_unparseable(text: str) -> None:
    assert refusal(text).code == ErrorCode.TARGET_UNPARSEABLE


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("2024-02-30 14:30:00Z", "(day is out of range for month)"),
        ("2024-13-01 14:30:00Z", "(month must be in 1..12)"),
        ("2024-01-15 24:00:00Z", "(hour must be in 0..23)"),
        ("2024-01-15 14:60:00Z", "(minute must be in 0..59)"),
        ("2024-01-15 14:30:61Z", "(second must be in 0..59)"),
    ],
)
def test_impossible_fields_are_unparseable(text: str, detail: str) -> None:
    error = refusal(text)
    assert error.code == ErrorCode.TARGET_UNPARSEABLE
    assert error.message == f"{text!r} is not a valid date and time {detail}"


@pytest.mark.parametrize("offset", ["+16", "-16:00", "+05:60"])
def test_offsets_out_of_range_are_unparseable(offset: str) -> None:
    error = refusal(f"2024-01-15 14:30:00{offset}")
    assert error.code == ErrorCode.TARGET_UNPARSEABLE
    assert error.message.endswith("is out of range: offsets run from -15:59 to +15:59")


def test_a_time_beyond_the_representable_years_is_unparseable() -> None:
    error = refusal("9999-12-31 23:00:00-05")
    assert error.code == ErrorCode.TARGET_UNPARSEABLE
    assert error.message == "'9999-12-31 23:00:00-05' lies outside the years 1 to 9999 in UTC"


def test_zones_come_from_tzdata_even_when_the_host_has_other_files(tmp_path: Path) -> None:
    # A host whose America/New_York is really UTC must not change what a target means.
    (tmp_path / "America").mkdir()
    utc_data = importlib.resources.files("tzdata.zoneinfo").joinpath("UTC").read_bytes()
    (tmp_path / "America" / "New_York").write_bytes(utc_data)
    january = datetime(2024, 1, 15, 14, 30)
    zoneinfo.reset_tzpath(to=[str(tmp_path)])
    try:
        host_zone = zoneinfo.ZoneInfo.no_cache("America/New_York")
        zone = load_zone.__wrapped__("America/New_York")
    finally:
        zoneinfo.reset_tzpath()
    assert host_zone.utcoffset(january) == timedelta(0)  # the trap was armed
    assert zone.utcoffset(january) == timedelta(hours=-5)


def test_zone_names_are_the_tzdata_release_sorted() -> None:
    names = zone_names()
    assert names == sorted(names)
    assert {"America/New_York", "Pacific/Apia", "UTC", "Etc/GMT+5"} <= set(names)
    assert "localtime" not in names and "posixrules" not in names


def test_load_zone_is_cached_and_canonical() -> None:
    assert load_zone("Europe/London") is load_zone("Europe/London")
    assert load_zone("europe/london").key == "Europe/London"


@pytest.mark.parametrize("zone", ["CET", "EET", "WET", "MET", "cet"])
def test_zone_names_postgresql_reads_as_fixed_abbreviations_are_refused(zone):
    with pytest.raises(DrillError) as raised:
        parse_target_time(f"2024-07-15 14:30:00 {zone}", None, None)
    assert raised.value.code == ErrorCode.TARGET_UNKNOWN_TIMEZONE
    assert "Europe/Paris" in raised.value.message
