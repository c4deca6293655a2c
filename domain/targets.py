"""Recovery targets: what the user asked for, and its one exact normalized form.

`TargetSpec` is what a spec or the CLI says; `resolve_target` turns it into a `ResolvedTarget`
or raises a `DrillError` with a stable code. `recovery_settings` maps a resolved target to the
exact `recovery_target_*` settings PostgreSQL will read. Pure: the caller passes `now`.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict

from domain.errors import DrillError, ErrorCode
from domain.lsn import format_lsn, parse_lsn
from domain.timeparse import parse_target_time

TargetMode = Literal["time", "lsn", "xid", "name", "immediate", "latest"]
TargetAction = Literal["pause", "promote", "shutdown"]
Fold = Literal["earlier", "later"]

DEFAULT_CLOCK_SKEW = timedelta(seconds=5)
_MAX_RESTORE_POINT_NAME = 63  # MAXFNAMELEN - 1 in xlog_internal.h


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
        """One line an SRE can read at 3 a.m."""
        edge = "inclusive" if self.inclusive else "exclusive"
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
            case _:
                what = self.mode
                edge = ""
        parts = [what, edge, f"then {self.action}", f"timeline {self.timeline}"]
        return ", ".join(p for p in parts if p)


def format_utc(instant: datetime) -> str:
    """UTC with an explicit +00 offset and microseconds, as PostgreSQL parses unambiguously."""
    return instant.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def _chosen_modes(spec: TargetSpec) -> list[TargetMode]:
    chosen: list[TargetMode] = []
    if spec.time is not None:
        chosen.append("time")
    if spec.lsn is not None:
        chosen.append("lsn")
    if spec.xid is not None:
        chosen.append("xid")
    if spec.name is not None:
        chosen.append("name")
    if spec.immediate:
        chosen.append("immediate")
    if spec.latest:
        chosen.append("latest")
    return chosen


def _resolve_timeline(value: int | str) -> str:
    text = str(value).strip().lower()
    if text in ("current", "latest"):
        return text
    if text.isdigit() and int(text) >= 1:
        return str(int(text))
    raise DrillError(
        ErrorCode.TIMELINE_INVALID, f"timeline {value!r} is not current, latest or a number >= 1"
    )


def _resolve_xid(value: int | str) -> int:
    try:
        xid = int(str(value).strip(), 10)
    except ValueError:
        raise DrillError(ErrorCode.XID_INVALID, f"xid {value!r} is not a number") from None
    low = xid & 0xFFFFFFFF
    # 0-2 are InvalidTransactionId, BootstrapTransactionId and FrozenTransactionId.
    if xid < 0 or xid >= 1 << 64 or low < 3:
        raise DrillError(ErrorCode.XID_INVALID, f"xid {value!r} is not a normal transaction id")
    return xid


def _resolve_name(value: str) -> str:
    if not value or len(value.encode()) > _MAX_RESTORE_POINT_NAME:
        raise DrillError(
            ErrorCode.RESTORE_POINT_NAME_INVALID,
            f"restore point name {value!r} must be 1 to {_MAX_RESTORE_POINT_NAME} bytes",
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
                    f"target {format_utc(parsed.utc)} is after now ({format_utc(now)}) "
                    f"by more than the {clock_skew.total_seconds():g}s clock-skew tolerance",
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
    if target.mode in ("time", "lsn", "xid"):
        settings["recovery_target_inclusive"] = "on" if target.inclusive else "off"
    if target.mode != "latest":
        settings["recovery_target_action"] = target.action
    settings["recovery_target_timeline"] = target.timeline
    return settings


def quote_setting(value: str) -> str:
    """A postgresql.conf string literal: backslashes and quotes escaped, so any name is safe."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def render_settings(settings: dict[str, str]) -> str:
    return "".join(f"{key} = {quote_setting(value)}\n" for key, value in settings.items())
