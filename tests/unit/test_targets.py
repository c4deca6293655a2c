"""Recovery targets: one mode, one normalized form, and the exact settings PostgreSQL reads."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from domain.errors import DrillError, ErrorCode
from domain.targets import (
    ResolvedTarget,
    TargetSpec,
    format_utc,
    quote_setting,
    recovery_settings,
    render_settings,
    resolve_target,
)

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=timezone.utc)


def resolve(**fields: Any) -> ResolvedTarget:
    return resolve_target(TargetSpec(**fields), NOW)


def refusal(**fields: Any) -> DrillError:
    with pytest.raises(DrillError) as caught:
        resolve(**fields)
    return caught.value


def test_no_target_is_refused() -> None:
    error = refusal()
    assert error.code == ErrorCode.TARGET_MISSING
    assert error.message == "the spec names no recovery target"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"time": "2024-01-15 19:30:00Z", "lsn": "0/3000148"},
            "the spec names 2 targets: time, lsn",
        ),
        ({"immediate": True, "latest": True}, "the spec names 2 targets: immediate, latest"),
        (
            {"xid": 745, "name": "before_drop", "latest": True},
            "the spec names 3 targets: xid, name, latest",
        ),
    ],
)
def test_several_targets_are_refused(fields: dict[str, Any], message: str) -> None:
    error = refusal(**fields)
    assert error.code == ErrorCode.TARGET_CONFLICT
    assert error.message == message


MODES = [
    (
        {"time": "2024-01-15 14:30:00.123 America/New_York"},
        {
            "recovery_target_time": "2024-01-15 19:30:00.123000+00",
            "recovery_target_inclusive": "off",
            "recovery_target_action": "pause",
            "recovery_target_timeline": "latest",
        },
        "time 2024-01-15 19:30:00.123000+00 "
        "(= 2024-01-15 14:30:00.123 America/New_York (EST, UTC-05:00)), exclusive, then pause, "
        "timeline latest",
    ),
    (
        {"lsn": "16/b374d848", "inclusive": True, "action": "promote"},
        {
            "recovery_target_lsn": "16/B374D848",
            "recovery_target_inclusive": "on",
            "recovery_target_action": "promote",
            "recovery_target_timeline": "latest",
        },
        "lsn 16/B374D848, inclusive, then promote, timeline latest",
    ),
    (
        {"xid": 745, "action": "shutdown", "timeline": 2},
        {
            "recovery_target_xid": "745",
            "recovery_target_inclusive": "off",
            "recovery_target_action": "shutdown",
            "recovery_target_timeline": "2",
        },
        "xid 745, exclusive, then shutdown, timeline 2",
    ),
    (
        # recovery_target_inclusive is not written: PostgreSQL ignores it for names.
        {"name": "it's C:\\dumps", "inclusive": True},
        {
            "recovery_target_name": "it's C:\\dumps",
            "recovery_target_action": "pause",
            "recovery_target_timeline": "latest",
        },
        "restore point \"it's C:\\\\dumps\", then pause, timeline latest",
    ),
    (
        {"immediate": True, "inclusive": True, "action": "promote", "timeline": "current"},
        {
            "recovery_target": "immediate",
            "recovery_target_action": "promote",
            "recovery_target_timeline": "current",
        },
        "immediate, then promote, timeline current",
    ),
    (
        # No target, so PostgreSQL applies no action: it promotes at the end of the archive.
        {"latest": True, "action": "pause"},
        {"recovery_target_timeline": "latest"},
        "latest, then promote at the end of the archive, timeline latest",
    ),
]


@pytest.mark.parametrize(("fields", "settings", "description"), MODES)
def test_each_mode_maps_to_exact_settings(
    fields: dict[str, Any], settings: dict[str, str], description: str
) -> None:
    target = resolve(**fields)
    assert recovery_settings(target) == settings
    assert target.describe() == description


def test_a_time_target_is_carried_in_utc_with_the_wall_reading() -> None:
    target = resolve(time="2024-01-15 14:30:00.123 America/New_York")
    assert target.utc == datetime(2024, 1, 15, 19, 30, 0, 123000, tzinfo=timezone.utc)
    assert target.local_reading == "2024-01-15 14:30:00.123 America/New_York (EST, UTC-05:00)"


def test_defaults_are_exclusive_pause_and_latest_timeline() -> None:
    target = resolve(time="2024-01-15 19:30:00Z")
    assert (target.inclusive, target.action, target.timeline) == (False, "pause", "latest")
    assert target.describe() == (
        "time 2024-01-15 19:30:00.000000+00, exclusive, then pause, timeline latest"
    )


def test_assume_timezone_and_fold_reach_the_time_parser() -> None:
    target = resolve(
        time="2024-11-03 01:30:00", assume_timezone="America/New_York", fold="earlier"
    )
    assert target.utc == datetime(2024, 11, 3, 5, 30, tzinfo=timezone.utc)


def test_time_refusals_keep_their_code() -> None:
    assert refusal(time="2024-11-03 01:30:00 America/New_York").code == (
        ErrorCode.TARGET_AMBIGUOUS_LOCAL_TIME
    )


def test_a_target_beyond_the_clock_skew_is_in_the_future() -> None:
    error = refusal(time="2025-01-01 12:00:05.000001Z")
    assert error.code == ErrorCode.TARGET_IN_FUTURE
    assert error.message == (
        "target '2025-01-01 12:00:05.000001Z' = 2025-01-01 12:00:05.000001+00 is after now "
        "(2025-01-01 12:00:00.000000+00) by more than the 5s clock-skew tolerance"
    )


def test_a_target_within_the_clock_skew_is_accepted() -> None:
    assert resolve(time="2025-01-01 12:00:05Z").utc == NOW + timedelta(seconds=5)


def test_the_clock_skew_tolerance_is_the_callers() -> None:
    spec = TargetSpec(time="2025-01-01 12:00:01Z")
    with pytest.raises(DrillError) as caught:
        resolve_target(spec, NOW, clock_skew=timedelta(0))
    assert caught.value.code == ErrorCode.TARGET_IN_FUTURE


def test_format_utc_converts_to_utc_with_microseconds() -> None:
    eastern = timezone(timedelta(hours=-5))
    assert format_utc(datetime(2024, 1, 15, 14, 30, tzinfo=eastern)) == (
        "2024-01-15 19:30:00.000000+00"
    )


@pytest.mark.parametrize("lsn", ["3000148", "0/", "0/3000148/1", "G/0", "123456789/0"])
def test_malformed_lsns_are_refused(lsn: str) -> None:
    assert refusal(lsn=lsn).code == ErrorCode.LSN_INVALID


@pytest.mark.parametrize(
    ("xid", "kept"),
    [
        (745, 745),
        ("745", 745),
        (" 3 ", 3),
        (0xFFFFFFFF, 0xFFFFFFFF),
        # Epoch 1, xid 745: kept as given, PostgreSQL 13+ stops at the low 32 bits.
        ((1 << 32) + 745, 4294968041),
        (str((1 << 64) - 1), (1 << 64) - 1),
    ],
)
def test_xids_are_kept_as_given(xid: int | str, kept: int) -> None:
    target = resolve(xid=xid)
    assert target.xid == kept
    assert recovery_settings(target)["recovery_target_xid"] == str(kept)


@pytest.mark.parametrize(
    ("xid", "message"),
    [
        (
            2,
            "xid 2 is not a normal transaction id: 0, 1 and 2 are reserved, normal xids start at 3",
        ),
        (
            1 << 32,
            "xid 4294967296 (epoch 1, xid 0) is not a normal transaction id: 0, 1 and 2 are "
            "reserved, normal xids start at 3",
        ),
        ("abc", "xid 'abc' is not a number from 0 to 2^64-1 in decimal"),
        (-5, "xid -5 is not a number from 0 to 2^64-1 in decimal"),
        ("1_000", "xid '1_000' is not a number from 0 to 2^64-1 in decimal"),
        ("0x2E9", "xid '0x2E9' is not a number from 0 to 2^64-1 in decimal"),
        (str(1 << 64), "xid '18446744073709551616' is not a number from 0 to 2^64-1 in decimal"),
    ],
)
def test_invalid_xids_are_refused(xid: int | str, message: str) -> None:
    error = refusal(xid=xid)
    assert error.code == ErrorCode.XID_INVALID
    assert error.message == message


def test_a_restore_point_name_is_quoted_safely() -> None:
    settings = recovery_settings(resolve(name="it's C:\\dumps"))
    assert render_settings(settings) == (
        "recovery_target_name = 'it''s C:\\\\dumps'\n"
        "recovery_target_action = 'pause'\n"
        "recovery_target_timeline = 'latest'\n"
    )


def test_control_characters_are_written_as_octal_escapes() -> None:
    assert quote_setting("a\nb\tc\x7f") == "'a\\012b\\011c\\177'"


def test_nul_cannot_be_quoted() -> None:
    with pytest.raises(ValueError, match="contains NUL"):
        quote_setting("a\x00b")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "restore point name '' must be 1 to 63 bytes"),
        ("x" * 64, f"restore point name {'x' * 64!r} must be 1 to 63 bytes"),
        ("é" * 32, f"restore point name {'é' * 32!r} must be 1 to 63 bytes"),
        (
            "a\x00b",
            "restore point name 'a\\x00b' contains a NUL byte, which PostgreSQL cannot store",
        ),
    ],
)
def test_invalid_restore_point_names_are_refused(name: str, message: str) -> None:
    error = refusal(name=name)
    assert error.code == ErrorCode.RESTORE_POINT_NAME_INVALID
    assert error.message == message


def test_a_63_byte_name_is_accepted() -> None:
    assert resolve(name="x" * 63).name == "x" * 63


@pytest.mark.parametrize(
    ("timeline", "kept"),
    [
        ("current", "current"),
        ("LATEST", "latest"),
        (2, "2"),
        ("0002", "2"),
        (0xFFFFFFFF, "4294967295"),
    ],
)
def test_timelines_are_normalized(timeline: int | str, kept: str) -> None:
    assert resolve(latest=True, timeline=timeline).timeline == kept


@pytest.mark.parametrize("timeline", [0, "-1", "abc", "1.5", 1 << 32, "²"])
def test_invalid_timelines_are_refused(timeline: int | str) -> None:
    error = refusal(latest=True, timeline=timeline)
    assert error.code == ErrorCode.TIMELINE_INVALID
    assert error.message == (
        f"timeline {timeline!r} is not current, latest or a number from 1 to 4294967295"
    )


@pytest.mark.parametrize(
    "fields", [{"latest": True, "action": "resume"}, {"latest": True, "when": "now"}]
)
def test_the_spec_schema_refuses_unknown_values(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        TargetSpec(**fields)


# postgresql.conf's string token and GUC_scanstr (guc-file.l), to read back what was written.
_CONF_STRING = re.compile(r"'(?:[^'\\\n]|\\.|'')*'")
_CONF_LETTER_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _read_conf_string(literal: str) -> str:
    assert _CONF_STRING.fullmatch(literal), literal
    body, out, i = literal[1:-1], [], 0
    while i < len(body):
        if body[i] == "\\":
            octal = re.match(r"[0-7]{1,3}", body[i + 1 :])
            if octal:
                out.append(chr(int(octal[0], 8)))
                i += 1 + len(octal[0])
                continue
            out.append(_CONF_LETTER_ESCAPES.get(body[i + 1], body[i + 1]))
            i += 2
        else:
            out.append(body[i])
            i += 2 if body[i] == "'" else 1
    return "".join(out)


@given(st.text(alphabet=st.characters(blacklist_characters="\x00")))
def test_any_quoted_value_reads_back_exactly(value: str) -> None:
    assert _read_conf_string(quote_setting(value)) == value
