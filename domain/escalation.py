"""A human in the loop: what they decide when pre-flight refuses a drill, and what happened."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from domain.targets import TargetSpec


class Decision(BaseModel):
    """`proceed` with another target, or without one to accept the automatic fallbacks
    (earlier_backup, last_consistent_before_gap) and the data they give up; or `abort`."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["proceed", "abort"]
    target: TargetSpec | None = None
    by: str | None = None
    note: str | None = None


class EscalationRecord(BaseModel):
    cause_code: str
    cause: str
    notified: list[str]
    notify_failures: list[str]
    waited_seconds: float = 0.0
    outcome: Literal["proceed", "abort", "timeout", "waiting"] = "waiting"
    decision: Decision | None = None
