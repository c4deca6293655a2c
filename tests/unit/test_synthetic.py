"""Synthetic targets: the instant a scheduled drill proves, from its window, mode and seed."""

from __future__ import annotations

import py_compile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from domain.errors import DrillError, ErrorCode
from domain.plan import RestorableWindow
from domain.prediction import CommitRef
from domain.spec import DrillSpec
from domain.synthetic import (
    choose,
    parse_duration,
    parse_synthetic,
    synthetic_instant,
    time_window,
)

UTC = timezone.utc
EARLIEST = datetime(2026, 11, 20, 2, 0, 0, tzinfo=UTC)
LATEST = datetime(2026, 11, 27, 1, 59, 58, 123456, tzinfo=UTC)
NIGHT = datetime(2026, 11, 27, 2, 30, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]

instants = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                        timezones=st.just(UTC))


def test_the_same_seed_gives_the_same_instant():
    first = synthetic_instant(EARLIEST, LATEST, "random-in-window", NIGHT)
    assert synthetic_instant(EARLIEST, LATEST, "random-in-window", NIGHT) == first
    # The same moment written in another zone is the same seed.
    paris = NIGHT.astimezone(timezone(timedelta(hours=1)))
    assert synthetic_instant(EARLIEST, LATEST, "random-in-window", paris) == first
    assert first.tzinfo == UTC and EARLIEST <= first <= LATEST


@given(a=instants, b=instants, seed=instants)
def test_a_random_instant_is_always_inside_the_window(a, b, seed):
    earliest, latest = min(a, b), max(a, b)
    instant = synthetic_instant(earliest, latest, "random-in-window", seed)
    assert earliest <= instant <= latest
    assert instant == synthetic_instant(earliest, latest, "random-in-window", seed)


def test_different_seeds_spread_over_the_whole_window():
    nights = [NIGHT + timedelta(days=n) for n in range(200)]
    picked = [synthetic_instant(EARLIEST, LATEST, "random-in-window", n) for n in nights]
    assert len(set(picked)) == len(picked)
    span = LATEST - EARLIEST
    tenths = {int((p - EARLIEST) / span * 10) for p in picked}
    assert tenths == set(range(10)), tenths  # every tenth of the window gets some nights
    # Seeds a few seconds apart (a schedule firing every 5 s) differ too.
    close = {synthetic_instant(EARLIEST, LATEST, "random-in-window", NIGHT + timedelta(seconds=s))
             for s in range(0, 50, 5)}
    assert len(close) == 10


def test_a_one_instant_window_has_one_answer():
    assert synthetic_instant(LATEST, LATEST, "random-in-window", NIGHT) == LATEST


def test_latest_is_the_newest_commit_whatever_the_seed():
    assert synthetic_instant(EARLIEST, LATEST, "latest", NIGHT) == LATEST
    assert synthetic_instant(EARLIEST, LATEST, "latest", EARLIEST) == LATEST


def test_ago_is_the_scheduled_time_minus_the_duration():
    assert synthetic_instant(EARLIEST, LATEST, "ago:2h", NIGHT) == NIGHT - timedelta(hours=2)
    assert synthetic_instant(EARLIEST, LATEST, "ago:1d12h", NIGHT) == NIGHT - timedelta(hours=36)


@pytest.mark.parametrize("mode, side", [("ago:10m", "after the newest commit"),
                                        ("ago:8d", "before the oldest backup is consistent")])
def test_ago_outside_the_window_is_refused_with_its_code(mode, side):
    with pytest.raises(DrillError) as refused:
        synthetic_instant(EARLIEST, LATEST, mode, NIGHT)
    assert refused.value.code == ErrorCode.SYNTHETIC_TARGET_OUTSIDE_WINDOW
    assert refused.value.kind == "input"
    assert side in refused.value.message and "2026-11-20 02:00:00" in refused.value.message


def _window(stop: datetime | None, newest: datetime | None) -> RestorableWindow:
    latest = None if newest is None else CommitRef(xid=812, lsn="0/3028E30", commit_time=newest)
    return RestorableWindow(earliest_lsn="0/2000100", earliest_time=stop, latest=latest)


def test_the_window_starts_a_second_after_the_labelled_backup_end():
    bounds = time_window(_window(EARLIEST, LATEST))
    assert bounds.earliest == EARLIEST + timedelta(seconds=1) and bounds.latest == LATEST
    chosen = choose(_window(EARLIEST, LATEST), "Random-In-Window", NIGHT)
    assert chosen.mode == "random-in-window" and chosen.seed == NIGHT
    assert chosen.window_earliest == bounds.earliest and chosen.window_latest == LATEST
    assert chosen.instant == synthetic_instant(bounds.earliest, LATEST, "random-in-window", NIGHT)


@pytest.mark.parametrize("window", [_window(None, LATEST), _window(EARLIEST, None),
                                    _window(LATEST, LATEST)])
def test_a_window_without_time_bounds_is_refused_with_its_code(window):
    with pytest.raises(DrillError) as refused:
        choose(window, "latest", NIGHT)
    assert refused.value.code == ErrorCode.SYNTHETIC_WINDOW_EMPTY


def test_durations():
    assert parse_duration("2h") == timedelta(hours=2)
    assert parse_duration("1d12h30m") == timedelta(days=1, hours=12, minutes=30)
    assert parse_duration("1.5h") == timedelta(minutes=90)
    assert parse_duration(" 1W ") == timedelta(weeks=1)
    for bad in ("", "2", "h", "2 hours", "-2h", "0s", "2h-"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_the_spec_field_accepts_the_three_forms_and_refuses_others():
    base = {"database": "shop", "source": {"base_backups": "/b", "wal_archive": "/w"},
            "target": {"action": "pause"}}
    for form, canonical in (("random-in-window", "random-in-window"), ("LATEST", "latest"),
                            ("ago:2h", "ago:2h"), (None, None)):
        spec = DrillSpec.model_validate({**base, "synthetic_target": form})
        assert spec.synthetic_target == canonical
    for bad in ("random", "ago:", "ago:soon", "yesterday"):
        with pytest.raises(ValidationError, match="synthetic_target"):
            DrillSpec.model_validate({**base, "synthetic_target": bad})
    assert parse_synthetic("ago:90m") == ("ago", timedelta(minutes=90))


def test_the_docs_input_is_a_complete_drill_spec_and_the_bot_compiles(tmp_path):
    spec = DrillSpec.model_validate_json((REPO / "docs" / "drill-input.json").read_text())
    assert spec.target.time and spec.checks
    py_compile.compile(str(REPO / "docs" / "incident_bot.py"), cfile=str(tmp_path / "bot.pyc"),
                       doraise=True)
