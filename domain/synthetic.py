"""Synthetic targets: a scheduled drill proves a different point of the restorable window on
each run, instead of the same fixed target every night.

A spec's `synthetic_target` is one of

- `random-in-window`: an instant drawn from the window, derived from a seed (the run's
  scheduled time) by a hash: the same scheduled time always gives the same instant, so a run
  can be replayed and explained, and different nights spread over the whole window;
- `latest`: the newest instant a time target can reach, the time of the newest commit (a time
  target stops only at a commit: everything committed before it is recovered);
- `ago:<duration>` (e.g. `ago:2h`, `ago:1d12h`, `ago:90m`): the scheduled time minus the
  duration, refused with SYNTHETIC_TARGET_OUTSIDE_WINDOW when that falls outside the window.

The chosen instant becomes an exclusive time target (the spec's action and timeline stay).
Pure: no clock, no randomness of its own, so workflow code may call it.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta, timezone
from typing import Literal

from pydantic import BaseModel

from domain.catalog import LABEL_TIME_RESOLUTION
from domain.errors import DrillError, ErrorCode
from domain.plan import RestorableWindow
from domain.timeparse import format_utc

SyntheticKind = Literal["random-in-window", "latest", "ago"]
FORMS = "random-in-window, latest or ago:<duration> (e.g. ago:2h, ago:1d12h, ago:90m, ago:45s)"

_UNITS = {"w": timedelta(weeks=1), "d": timedelta(days=1), "h": timedelta(hours=1),
          "m": timedelta(minutes=1), "s": timedelta(seconds=1)}
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[wdhms])+", re.ASCII)
_PART = re.compile(r"(\d+(?:\.\d+)?)([wdhms])", re.ASCII)
_MICROSECOND = timedelta(microseconds=1)


def parse_duration(text: str) -> timedelta:
    """`2h`, `90m`, `1d12h`, `1.5h`, `45s`, `1w`: units w d h m s, at least one second."""
    compact = text.strip().lower()
    if not _DURATION.fullmatch(compact):
        raise ValueError(f"{text!r} is not a duration such as 2h, 90m, 1d12h or 45s")
    total = sum((float(number) * _UNITS[unit] for number, unit in _PART.findall(compact)),
                timedelta())
    if total < timedelta(seconds=1):
        raise ValueError(f"duration {text!r} is shorter than a second")
    return total


def parse_synthetic(text: str) -> tuple[SyntheticKind, timedelta | None]:
    """The mode and, for `ago:`, its duration; ValueError naming the accepted forms."""
    value = text.strip().lower()
    if value in ("random-in-window", "latest"):
        return value, None  # type: ignore[return-value]
    if value.startswith("ago:"):
        try:
            return "ago", parse_duration(value[4:])
        except ValueError as exc:
            raise ValueError(f"synthetic_target {text!r}: {exc}") from None
    raise ValueError(f"synthetic_target {text!r} is not one of {FORMS}")


def normalize(text: str) -> str:
    """The canonical spelling of a valid synthetic target (validated on the way)."""
    parse_synthetic(text)
    return text.strip().lower()


class TimeWindow(BaseModel):
    """The instants a time target can name inside a restorable window."""

    earliest: datetime
    latest: datetime


class SyntheticTarget(BaseModel):
    """What a synthetic target chose, for the report: the same seed gives the same instant."""

    mode: str
    seed: datetime  # the run's scheduled time (else its start time), UTC
    instant: datetime  # the time target recovered to (exclusive), UTC
    window_earliest: datetime
    window_latest: datetime


def time_window(window: RestorableWindow) -> TimeWindow:
    """From one second past the oldest backup's labelled end (labels keep whole seconds: only
    then is it surely consistent) to the newest commit's time."""
    if window.earliest_time is None or window.latest is None:
        raise DrillError(
            ErrorCode.SYNTHETIC_WINDOW_EMPTY,
            "the restorable window has no time bounds: "
            + ("the oldest backup's end time is unknown" if window.earliest_time is None
               else "no commit can be replayed after the oldest backup"))
    earliest = _utc(window.earliest_time) + LABEL_TIME_RESOLUTION
    latest = _utc(window.latest.commit_time)
    if latest < earliest:
        raise DrillError(
            ErrorCode.SYNTHETIC_WINDOW_EMPTY,
            f"no commit after the oldest backup is surely consistent ({format_utc(earliest)}): "
            f"the newest commit is at {format_utc(latest)}")
    return TimeWindow(earliest=earliest, latest=latest)


def synthetic_instant(earliest: datetime, latest: datetime, mode: str, seed: datetime) -> datetime:
    """The target instant for `mode` inside [earliest, latest] (UTC, microseconds), from the
    seed alone: the same (window, mode, seed) always gives the same instant."""
    kind, ago = parse_synthetic(mode)
    earliest, latest, seed = _utc(earliest), _utc(latest), _utc(seed)
    if latest < earliest:
        raise DrillError(ErrorCode.SYNTHETIC_WINDOW_EMPTY,
                         f"the window ends ({format_utc(latest)}) before it starts "
                         f"({format_utc(earliest)})")
    if kind == "latest":
        return latest
    if kind == "ago":
        assert ago is not None
        instant = seed - ago
        if not earliest <= instant <= latest:
            side = "before the oldest backup is consistent" if instant < earliest \
                else "after the newest commit"
            raise DrillError(
                ErrorCode.SYNTHETIC_TARGET_OUTSIDE_WINDOW,
                f"{mode} from {format_utc(seed)} is {format_utc(instant)}, {side}: the "
                f"restorable window is {format_utc(earliest)} .. {format_utc(latest)}")
        return instant
    span = (latest - earliest) // _MICROSECOND
    digest = hashlib.sha256(f"pitrdrill:{kind}:{seed.isoformat()}".encode()).digest()
    offset = int.from_bytes(digest[:8], "big") % (span + 1)
    return earliest + offset * _MICROSECOND


def choose(window: RestorableWindow, mode: str, seed: datetime) -> SyntheticTarget:
    """The synthetic target of one run: its window, mode and seed, and the instant chosen."""
    bounds = time_window(window)
    instant = synthetic_instant(bounds.earliest, bounds.latest, mode, seed)
    return SyntheticTarget(mode=normalize(mode), seed=_utc(seed), instant=instant,
                           window_earliest=bounds.earliest, window_latest=bounds.latest)


def _utc(instant: datetime) -> datetime:
    if instant.tzinfo is None:
        raise ValueError(f"{instant!r} has no time zone")
    return instant.astimezone(timezone.utc)
