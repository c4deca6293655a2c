"""A human in the loop: what they decide when pre-flight refuses a drill, and what happened."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from domain.spec import DrillSpec
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


def decide_command(drill_id: str) -> str:
    """How a human answers, as the escalation notice tells them."""
    return (f"pitrdrill drill decide {drill_id} proceed|abort "
            f"[--time T | --lsn L | ... to proceed to another target]")


# Proceeding without a new target accepts what the automatic fallbacks give up.
PROCEED_FALLBACKS = ["earlier_backup", "last_consistent_before_gap"]


def spec_after_decision(spec: DrillSpec, decision: Decision) -> DrillSpec:
    """The spec to plan again after `proceed`: a new stop replaces the old one's mode (its
    timeline, action and the rest stay the spec's); no stop accepts the fallbacks."""
    if decision.target is None:
        return spec.model_copy(update={"fallback": PROCEED_FALLBACKS})
    modes = {"time": None, "lsn": None, "xid": None, "name": None,
             "immediate": False, "latest": False}
    # Defaults are not a human's words (and a decision that crossed Temporal has every field
    # set): only what differs from them replaces the spec's.
    merged = spec.target.model_copy(
        update={**modes, **decision.target.model_dump(exclude_defaults=True)})
    return spec.model_copy(update={"target": merged})
