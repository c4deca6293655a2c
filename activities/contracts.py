"""One pydantic model in and one out for every activity (the workflow's view of the adapters)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from domain.catalog import BaseBackup
from domain.report import CheckResult, Recovered
from domain.spec import BackupSource, Check
from domain.targets import ResolvedTarget, TargetSpec


class ResolveTargetRequest(BaseModel):
    target: TargetSpec


class ResolveTargetResult(BaseModel):
    target: ResolvedTarget
    seconds: float


class SandboxRequest(BaseModel):
    drill_id: str


class Sandbox(BaseModel):
    """Everything about one sandbox lives under `root`; nothing it writes goes elsewhere."""

    drill_id: str
    root: str
    data_dir: str
    socket_dir: str
    log_file: str
    port: int


class RestoreRequest(BaseModel):
    sandbox: Sandbox
    backup: BaseBackup
    source: BackupSource


class RestoreProgress(BaseModel):
    files_done: int = 0
    bytes_done: int = 0


class RestoreResult(BaseModel):
    files: int
    bytes_restored: int
    seconds: float


class ReplayRequest(BaseModel):
    sandbox: Sandbox
    target: ResolvedTarget
    source: BackupSource
    db_user: str


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


class ChecksResult(BaseModel):
    results: list[CheckResult]
    seconds: float


class TeardownResult(BaseModel):
    removed: bool
    stopped_pid: int | None = None
    finished_at: datetime | None = None
