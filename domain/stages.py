"""The drill's stages, in order, and what a running drill says about itself."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field

from domain.lsn import parse_lsn


class Stage(StrEnum):
    RESOLVE = "resolve_target"
    PLAN = "plan"
    ESCALATED = "escalated"
    PROVISION = "provision"
    RESTORE = "restore"
    REPLAY = "replay"
    PAUSE = "pause"
    CHECKS = "checks"
    WARM = "warm"
    AWAITING_APPROVAL = "awaiting_approval"
    PROMOTE = "promote"
    TEARDOWN = "teardown"


class StageTiming(BaseModel):
    stage: Stage
    seconds: float


class StageSpan(BaseModel):
    """One stage on the drill's timeline: when it began, how long, how it ended."""

    stage: Stage
    started_at: datetime
    seconds: float
    outcome: Literal["done", "failed"]


class DrillProgress(BaseModel):
    """The workflow's `status` query: what the drill knows of itself. Byte and LSN figures
    of the stage in progress come from its activity's heartbeat (see `live_progress`)."""

    drill_id: str
    database: str
    stage: Stage | None = None
    stage_started_at: datetime | None = None
    finished: bool = False
    done: list[StageTiming] = Field(default_factory=list)
    failed: list[StageTiming] = Field(default_factory=list)
    restore_bytes_total: int | None = None
    replay_start_lsn: str | None = None
    predicted_stop_lsn: str | None = None
    sandbox_task_queue: str | None = None


class LiveProgress(BaseModel):
    """DrillProgress plus the running activity's last heartbeat, as `drill status` shows it."""

    progress: DrillProgress
    bytes_restored: int | None = None
    replay_lsn: str | None = None
    bytes_to_stop: int | None = None
    mb_per_s: float | None = None
    eta_seconds: float | None = None


def live_progress(progress: DrillProgress, heartbeat: dict | None, now: datetime) -> LiveProgress:
    """Rate and ETA of the stage in progress, from its last heartbeat and its start time."""
    live = LiveProgress(progress=progress)
    heartbeat = heartbeat or {}
    elapsed = (now - progress.stage_started_at).total_seconds() if progress.stage_started_at \
        else None
    done = left = None
    if progress.stage == Stage.RESTORE and "bytes_done" in heartbeat:
        live.bytes_restored = done = heartbeat["bytes_done"]
        total = heartbeat.get("bytes_total") or progress.restore_bytes_total
        left = None if total is None else max(total - done, 0)
    elif progress.stage == Stage.REPLAY and heartbeat.get("replay_lsn") \
            and progress.replay_start_lsn and progress.predicted_stop_lsn:
        live.replay_lsn = heartbeat["replay_lsn"]
        position = parse_lsn(live.replay_lsn)
        done = max(position - parse_lsn(progress.replay_start_lsn), 0)
        left = max(parse_lsn(progress.predicted_stop_lsn) - position, 0)
        live.bytes_to_stop = left
    if done and elapsed and elapsed > 0:
        rate = done / elapsed
        live.mb_per_s = round(rate / 1e6, 3)
        live.eta_seconds = None if left is None else round(left / rate, 1)
    return live
