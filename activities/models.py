"""One pydantic model in and one out for every activity: the workflow's view of the adapters.

Models that adapters also use outside Temporal (the CLI's `plan`) are defined beside them and
named here, so this module lists every activity's contract."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from domain.catalog import BaseBackup
from domain.ledger import KindedReport
from domain.recovery import Approval, Promotion
from adapters.preflight import PlanRequest, PlanResult
from domain.report import CheckResult, ErrorEntry, Metrics, Recovered
from domain.restore import RestoreProgress, RestoreResult
from domain.sandbox import Sandbox
from domain.checks import RecoveredPoint
from domain.spec import BackupSource, SandboxOptions, SmokeCheck, WarmSpec
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
    # The spec's sandbox options (provider, limits, keep) and the backup source, whose
    # archive a confined sandbox server gets to see read-only (and nothing else of the host).
    options: SandboxOptions | None = None
    source: BackupSource | None = None


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
    # What the sandbox took away from the restored cluster at start (domain.sandbox
    # preload_settings): for the report's isolation warnings.
    isolation_warnings: list[str] = []


class ChecksRequest(BaseModel):
    sandbox: Sandbox
    database: str
    db_user: str
    checks: list[SmokeCheck]
    # What `freshness` checks compare with (domain.checks.recovered_point).
    recovered_point: RecoveredPoint | None = None


class ChecksProgress(BaseModel):
    checks_done: int = 0


class ChecksResult(BaseModel):
    results: list[CheckResult]
    seconds: float


class WarmRequest(BaseModel):
    sandbox: Sandbox
    database: str
    db_user: str
    warm: WarmSpec


class LedgerEntry(KindedReport):
    """A finished drill's or recovery's report (kind drill | recovery), to append to the drill
    ledger. A RecoveryReport travels whole: its statuses, destination, decision, promotion."""


class LedgerReceipt(BaseModel):
    ledger: str  # where it went (a redacted DSN or a file path)
    appended: bool  # False: the entry was already there (a retried append)


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


# --- bisect (activities/probe.py) ------------------------------------------------------------

from domain.bisect import Bound, CommitSeen, RelationFilter, Role  # noqa: E402
from domain.plan import DrillPlan, PlanOptions  # noqa: E402


class BisectPlanRequest(BaseModel):
    source: BackupSource
    plan: DrillPlan  # the drill plan for the bad bound (RecoveryPath.validate's)
    bad: ResolvedTarget  # its target; latest: the archive's last commit, inclusive
    good: ResolvedTarget | None = None  # None: the chosen backup's consistent point
    good_given: str | None = None
    bad_given: str | None = None
    options: PlanOptions = PlanOptions()
    zone: str | None = None


class BisectPlan(BaseModel):
    plan: DrillPlan | None  # a new plan when the good bound needs an older backup
    good: Bound
    bad: Bound
    commits: int  # committed transactions between the bounds: the candidates, unfiltered
    aborted: int  # transactions that ended in an abort between them: never candidates
    last_good_bound_commit: CommitSeen | None  # the last commit the good bound keeps
    seconds: float


class CandidatesRequest(BaseModel):
    sandbox: Sandbox
    source: BackupSource
    backup: BaseBackup
    timeline: str
    good_stop_lsn: str
    bad_stop_lsn: str
    relation: str | None = None  # looked up in the sandbox, paused at the good bound
    database: str = "postgres"
    db_user: str = "postgres"
    zone: str | None = None


class CandidatesResult(BaseModel):
    candidates: int
    commits: int  # all commits between the bounds
    aborted: int
    first: CommitSeen | None  # c_1
    last: CommitSeen | None  # the last commit between the bounds (the bad bound keeps it)
    relation: RelationFilter | None = None
    seconds: float


class ProbeRequest(BaseModel):
    sandbox: Sandbox
    source: BackupSource
    database: str
    db_user: str
    predicate: str
    role: Role
    position: int
    # The bounds name their target; a search probe's is the exclusive xid of the candidate at
    # `position` (0-based: c_{position+1}) in the sandbox's candidate list.
    target: ResolvedTarget | None = None
    timeline: str = "latest"
    expect_replay_lsn: str | None = None  # a bound's predicted stop, checked when given
    zone: str | None = None


class ProbeResult(BaseModel):
    position: int
    target: ResolvedTarget
    damaged: bool
    stopped_before: CommitSeen | None = None
    last_kept: CommitSeen | None = None
    commits_kept: int | None = None  # of the commits between the bounds
    replay_lsn: str | None = None
    last_commit_time: datetime | None = None
    stop_reason: str | None = None
    reattached: bool = False  # a retry found the server already started for this probe
    seconds: float


class GoodStateResult(BaseModel):
    full_copy: bool  # the first keep copies everything; later ones only what changed
    files_copied: int
    bytes_copied: int
    files_removed: int
    seconds: float


class StepRequest(ProbeRequest):
    """A probe, and what happens to the data directory first, in the same activity (one round
    trip, one stop): after a clean probe the next one (always forward) keeps the clean state
    first; a probe behind the server returns to the kept state first."""

    keep_first: bool = False
    return_first: bool = False
    # The backup restored into the sandbox: a plain one on the filesystem is where the kept
    # state reads the files replay never changed (see keep_layered).
    backup: BaseBackup | None = None


class StepResult(ProbeResult):
    keep_seconds: float = 0.0  # keeping the state the server stood at (the previous probe's)
    state_seconds: float = 0.0  # bringing the kept clean state back
    files_copied: int = 0  # by the keep or the return
    bytes_copied: int = 0
