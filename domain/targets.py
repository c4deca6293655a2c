"""Recovery targets: what the user asked for, and its one exact normalized form.

`TargetSpec` is what a spec or the CLI says; `resolve_target` turns it into a `ResolvedTarget`
or raises a `DrillError` with a stable code. `recovery_settings` maps a resolved target to the
exact `recovery_target_*` settings PostgreSQL will read. Pure: the caller passes `now`.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict

from domain.errors import DrillError, ErrorCode
from domain.lsn import format_lsn, parse_lsn
from domain.timeparse import Fold, format_utc, parse_target_time

TargetMode = Literal["time", "lsn", "xid", "name", "immediate", "latest"]
TargetAction = Literal["pause", "promote", "shutdown"]

DEFAULT_CLOCK_SKEW = timedelta(seconds=5)
# The modes recovery_target_inclusive applies to; PostgreSQL ignores it for the others.
_EDGED_MODES = ("time", "lsn", "xid")
_MAX_RESTORE_POINT_NAME = 63  # MAXFNAMELEN - 1 in xlog_internal.h
_MAX_TIMELINE = 0xFFFFFFFF  # TimeLineID is a uint32
_FIRST_NORMAL_XID = 3  # 0-2 are Invalid-, Bootstrap- and FrozenTransactionId
_DIGITS = re.compile(r"[0-9]+")
# A postgresql.conf string literal cannot hold a raw newline; GUC_scanstr reads \ooo octal.
_CONF_ESCAPES = str.maketrans(
    {"\\": "\\\\", "'": "''"} | {chr(c): f"\\{c:03o}" for c in (*range(1, 32), 127)}
)


class TargetSpec(BaseModel):
    """A recovery target as written in a drill spec or on the command line."""

    model_config = ConfigDict(extra="forbid")

    time: str | None = None
    lsn: str | None = None
    xid: int | str | None = None
    name: str | None = None
    immediate: bool = False
    latest: bool = False
    # False is deliberate: in an incident the target transaction is the bad one. PostgreSQL's
    # own default is on, so the setting is always written explicitly.
    inclusive: bool = False
    action: TargetAction = "pause"
    timeline: int | str = "latest"
    assume_timezone: str | None = None
    fold: Fold | None = None


class ResolvedTarget(BaseModel):
    """The normalized target. Time targets are carried in UTC."""

    model_config = ConfigDict(frozen=True)

    mode: TargetMode
    utc: datetime | None = None
    local_reading: str | None = None
    lsn: str | None = None
    xid: int | None = None
    name: str | None = None
    inclusive: bool = False
    action: TargetAction = "pause"
    timeline: str = "latest"

    def describe(self) -> str:
        """One line an SRE can read at 3 a.m., saying only what PostgreSQL will do."""
        then = f"then {self.action}"
        match self.mode:
            case "time":
                assert self.utc is not None
                what = f"time {format_utc(self.utc)}"
                if self.local_reading:
                    what += f" (= {self.local_reading})"
            case "lsn":
                what = f"lsn {self.lsn}"
            case "xid":
                what = f"xid {self.xid}"
            case "name":
                what = f"restore point {self.name!r}"
            case "immediate":
                what = "immediate"
            case "latest":
                # With no target PostgreSQL ignores recovery_target_action and promotes.
                what, then = "latest", "then promote at the end of the archive"
        edge = "inclusive" if self.inclusive else "exclusive"
        parts = [what, edge if self.mode in _EDGED_MODES else "", then, f"timeline {self.timeline}"]
        return ", ".join(p for p in parts if p)


def _chosen_modes(spec: TargetSpec) -> list[TargetMode]:
    given: dict[TargetMode, bool] = {
        "time": spec.time is not None,
        "lsn": spec.lsn is not None,
        "xid": spec.xid is not None,
        "name": spec.name is not None,
        "immediate": spec.immediate,
        "latest": spec.latest,
    }
    return [mode for mode, present in given.items() if present]


def mode_label(spec: TargetSpec) -> str:
    """The mode as drills are listed by it: one mode, or `invalid` (refused at resolve)."""
    modes = _chosen_modes(spec)
    return modes[0] if len(modes) == 1 else "invalid"


def _resolve_timeline(value: int | str) -> str:
    text = str(value).strip().lower()
    if text in ("current", "latest"):
        return text
    if _DIGITS.fullmatch(text) and 1 <= int(text) <= _MAX_TIMELINE:
        return str(int(text))
    raise DrillError(
        ErrorCode.TIMELINE_INVALID,
        f"timeline {value!r} is not current, latest or a number from 1 to {_MAX_TIMELINE}",
    )


def _resolve_xid(value: int | str) -> int:
    """The xid exactly as given. PostgreSQL 13+ reads recovery_target_xid as a 64-bit number
    (epoch << 32 | xid) and stops at its low 32 bits, so those must be a normal xid."""
    text = str(value).strip()
    if not _DIGITS.fullmatch(text) or int(text) >= 1 << 64:
        raise DrillError(
            ErrorCode.XID_INVALID, f"xid {value!r} is not a number from 0 to 2^64-1 in decimal"
        )
    xid = int(text)
    epoch, low = divmod(xid, 1 << 32)
    if low < _FIRST_NORMAL_XID:
        qualified = f" (epoch {epoch}, xid {low})" if epoch else ""
        raise DrillError(
            ErrorCode.XID_INVALID,
            f"xid {value!r}{qualified} is not a normal transaction id: 0, 1 and 2 are reserved, "
            f"normal xids start at {_FIRST_NORMAL_XID}",
        )
    return xid


def _resolve_name(value: str) -> str:
    if not value or len(value.encode()) > _MAX_RESTORE_POINT_NAME:
        raise DrillError(
            ErrorCode.RESTORE_POINT_NAME_INVALID,
            f"restore point name {value!r} must be 1 to {_MAX_RESTORE_POINT_NAME} bytes",
        )
    if "\x00" in value:
        raise DrillError(
            ErrorCode.RESTORE_POINT_NAME_INVALID,
            f"restore point name {value!r} contains a NUL byte, which PostgreSQL cannot store",
        )
    return value


def resolve_target(
    spec: TargetSpec, now: datetime, clock_skew: timedelta = DEFAULT_CLOCK_SKEW
) -> ResolvedTarget:
    modes = _chosen_modes(spec)
    if not modes:
        raise DrillError(ErrorCode.TARGET_MISSING, "the spec names no recovery target")
    if len(modes) > 1:
        raise DrillError(
            ErrorCode.TARGET_CONFLICT, f"the spec names {len(modes)} targets: {', '.join(modes)}"
        )
    common = {
        "mode": modes[0],
        "inclusive": spec.inclusive,
        "action": spec.action,
        "timeline": _resolve_timeline(spec.timeline),
    }
    match modes[0]:
        case "time":
            assert spec.time is not None
            parsed = parse_target_time(spec.time, spec.assume_timezone, spec.fold)
            if parsed.utc > now + clock_skew:
                raise DrillError(
                    ErrorCode.TARGET_IN_FUTURE,
                    f"target {spec.time!r} = {format_utc(parsed.utc)} is after now "
                    f"({format_utc(now)}) by more than the {clock_skew.total_seconds():g}s "
                    "clock-skew tolerance",
                )
            return ResolvedTarget(utc=parsed.utc, local_reading=parsed.local_reading, **common)
        case "lsn":
            assert spec.lsn is not None
            return ResolvedTarget(lsn=format_lsn(parse_lsn(spec.lsn)), **common)
        case "xid":
            assert spec.xid is not None
            return ResolvedTarget(xid=_resolve_xid(spec.xid), **common)
        case "name":
            assert spec.name is not None
            return ResolvedTarget(name=_resolve_name(spec.name), **common)
        case _:
            return ResolvedTarget(**common)


def recovery_settings(target: ResolvedTarget) -> dict[str, str]:
    """The exact recovery_target_* settings (unquoted values) for a resolved target."""
    settings: dict[str, str] = {}
    match target.mode:
        case "time":
            assert target.utc is not None
            settings["recovery_target_time"] = format_utc(target.utc)
        case "lsn":
            assert target.lsn is not None
            settings["recovery_target_lsn"] = target.lsn
        case "xid":
            assert target.xid is not None
            settings["recovery_target_xid"] = str(target.xid)
        case "name":
            assert target.name is not None
            settings["recovery_target_name"] = target.name
        case "immediate":
            settings["recovery_target"] = "immediate"
        case "latest":
            pass  # no recovery_target_*: replay to the end of the archive
    if target.mode in _EDGED_MODES:
        settings["recovery_target_inclusive"] = "on" if target.inclusive else "off"
    if target.mode != "latest":
        settings["recovery_target_action"] = target.action
    settings["recovery_target_timeline"] = target.timeline
    return settings


def quote_setting(value: str) -> str:
    """A postgresql.conf string literal that reads back as exactly `value`: quotes doubled,
    backslashes escaped, control characters as octal escapes. NUL cannot be written at all."""
    if "\x00" in value:
        raise ValueError(f"{value!r} contains NUL, which no postgresql.conf string can hold")
    return "'" + value.translate(_CONF_ESCAPES) + "'"


def render_settings(settings: dict[str, str]) -> str:
    return "".join(f"{key} = {quote_setting(value)}\n" for key, value in settings.items())
