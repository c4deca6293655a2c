"""The drill report: what was asked, what was recovered, what was proven. Keep these names."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, computed_field

from domain.catalog import BaseBackup
from domain.errors import DrillError
from domain.escalation import EscalationRecord
from domain.plan import DrillPlan
from domain.sandbox import SandboxIsolation
from domain.stages import StageSpan
from domain.synthetic import SyntheticTarget
from domain.targets import ResolvedTarget

DrillStatus = Literal["verified", "failed", "rejected"]


class ErrorEntry(BaseModel):
    code: str
    message: str
    hint: str = ""

    @classmethod
    def from_error(cls, error: DrillError) -> ErrorEntry:
        return cls(code=error.code, message=error.message, hint=error.hint)


CheckStatus = Literal["passed", "failed", "error", "skipped"]


class CheckResult(BaseModel):
    name: str
    passed: bool
    observed: Any = None
    expected: Any = None
    error: str | None = None  # the check ran into an error: neither passed nor judged
    kind: str = "sql"  # sql | schema | referential_integrity | amcheck | freshness
    seconds: float = 0.0
    # Why the check could not run at all (amcheck not installed in the backup, ...): never a
    # pass, not a failure of the drill; left out of the pass rate and counted apart.
    skipped: str | None = None

    @computed_field
    @property
    def status(self) -> CheckStatus:
        if self.skipped is not None:
            return "skipped"
        if self.error is not None:
            return "error"
        return "passed" if self.passed else "failed"


class WarmedRelation(BaseModel):
    name: str
    bytes: int
    method: Literal["pg_prewarm", "sequential_read"]


class WarmReport(BaseModel):
    """The cache-warming stage: what was loaded, how, how many bytes, how long."""

    relations: list[WarmedRelation] = Field(default_factory=list)
    bytes_warmed: int = 0
    seconds: float = 0.0


class Recovered(BaseModel):
    """Where PostgreSQL actually stopped, read from the paused sandbox."""

    replay_lsn: str | None = None
    last_commit_time: datetime | None = None
    stop_reason: str | None = None  # the server's own "recovery stopping ..." log line
    in_recovery: bool | None = None
    matches_prediction: bool | None = None


class Metrics(BaseModel):
    # Stages that finished, and apart from them the one that failed or was cut short.
    stage_seconds: dict[str, float] = Field(default_factory=dict)
    failed_stages: dict[str, float] = Field(default_factory=dict)
    target_resolution_seconds: float | None = None
    plan_seconds: float | None = None
    wal_segments: int = 0
    wal_segments_indexed: int = 0
    bytes_restored: int = 0
    restore_mb_per_s: float | None = None
    wal_bytes_replayed: int = 0
    replay_mb_per_s: float | None = None
    checks_passed: int = 0
    checks_total: int = 0  # every check, skipped ones included
    checks_skipped: int = 0
    # Passed over the checks that ran (skipped ones left out); None when none ran.
    validation_pass_rate: float | None = None
    time_to_verify_seconds: float | None = None
    # Requested moment minus the last commit kept: how much history the target gives up.
    data_lost_seconds: float | None = None
    # Commits replayed from the backup's redo point to the stop (the plan's count, once the
    # server stopped where predicted), and per second of the replay stage.
    transactions_replayed: int | None = None
    replay_transactions_per_s: float | None = None


class DrillReport(BaseModel):
    drill_id: str
    status: DrillStatus
    database: str
    target: ResolvedTarget | None = None
    base_backup: BaseBackup | None = None
    plan: DrillPlan | None = None
    escalation: EscalationRecord | None = None
    recovered: Recovered | None = None
    checks: list[CheckResult] = Field(default_factory=list)
    warm: WarmReport | None = None
    errors: list[ErrorEntry] = Field(default_factory=list)
    metrics: Metrics = Field(default_factory=Metrics)
    # Every stage that began, in order, with its start: the report's timeline.
    stages: list[StageSpan] = Field(default_factory=list)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    workflow_run_id: str | None = None
    # Set when the spec asked for a synthetic target: the window, seed and instant chosen.
    synthetic: SyntheticTarget | None = None
    # What the sandbox enforced (provider, each isolation property with enforced true/false)
    # and what was taken away from the restored cluster so that it could not act outward.
    isolation: SandboxIsolation | None = None

    @computed_field
    @property
    def workflow_id(self) -> str:
        """The Temporal workflow id: the drill id (`workflow_run_id` names the run)."""
        return self.drill_id

    @computed_field
    @property
    def requested_target(self) -> ResolvedTarget | None:
        """What was asked for; `target` is what was used. They differ only when the fallback
        chain moved the target, whose record keeps the request (not stored twice)."""
        fallback = self.plan.fallback if self.plan else None
        return fallback.requested if fallback else self.target


def mb_per_s(size_bytes: int, seconds: float) -> float | None:
    return round(size_bytes / 1e6 / seconds, 3) if seconds > 0 else None
