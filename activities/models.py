"""One pydantic model in and one out for every activity: the workflow's view of the adapters.

Models that adapters also use outside Temporal (the CLI's `plan`) are defined beside them and
named here, so this module lists every activity's contract."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from domain.catalog import BaseBackup
from domain.recovery import Approval, Promotion
from adapters.preflight import PlanRequest, PlanResult
from domain.report import CheckResult, ErrorEntry, Metrics, Recovered
from domain.restore import RestoreProgress, RestoreResult
from domain.sandbox import Sandbox
from domain.spec import BackupSource, Check
from domain.targets import ResolvedTarget, TargetSpec


class ResolveTargetRequest(BaseModel):
    target: TargetSpec


class ResolveTargetResult(BaseModel):
    target: ResolvedTarget
    seconds: float


class SandboxRequest(BaseModel):
    drill_id: str
    # A recovery's data directory (absent or empty); a drill's lives inside its sandbox.
    destination: str | None = None


class PromotionRequest(BaseModel):
    sandbox: Sandbox
    target: ResolvedTarget
    source: BackupSource
    approval: Approval


class RestoreRequest(BaseModel):
    sandbox: Sandbox
    backup: BaseBackup
    source: BackupSource


class ReplayRequest(BaseModel):
    sandbox: Sandbox
    target: ResolvedTarget
    source: BackupSource
    # Checked as soon as the server accepts read-only connections, long before the target.
    database: str = "postgres"
    db_user: str = "postgres"


class ReplayProgress(BaseModel):
    started: bool = False
    restarted_paused: bool = False
    replay_lsn: str | None = None
    polls: int = 0


class ReplayResult(BaseModel):
    recovered: Recovered
    seconds: float


class ChecksRequest(BaseModel):
    sandbox: Sandbox
    database: str
    db_user: str
    checks: list[Check]


class ChecksProgress(BaseModel):
    checks_done: int = 0


class ChecksResult(BaseModel):
    results: list[CheckResult]
    seconds: float


class TeardownResult(BaseModel):
    removed: bool
    stopped_pid: int | None = None
    finished_at: datetime | None = None


class EscalationNotice(BaseModel):
    drill_id: str
    cause: ErrorEntry
    timeout_seconds: float
    how_to_decide: str
    webhook: str | None = None
    command: str | None = None


class NotifyResult(BaseModel):
    delivered: list[str]
    failed: list[str]


__all__ = ["Metrics", "PlanRequest", "PlanResult", "Promotion", "RestoreProgress", "RestoreResult",
           "Sandbox"]
