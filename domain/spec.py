"""The drill spec: the contract other tools write (YAML or JSON). Keep these names stable."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

from domain import synthetic
from domain.checks import Expectation, refuse_unsafe_check
from domain.schema import SchemaSnapshot
from domain.targets import TargetSpec


class FilesystemSource(BaseModel):
    """pg_basebackup backups in sub-directories of base_backups; segments in wal_archive."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["filesystem"] = "filesystem"
    base_backups: str
    wal_archive: str


class PgBackRestSource(BaseModel):
    """A pgBackRest repository: backups, restores and WAL all go through pgbackrest itself."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["pgbackrest"] = "pgbackrest"
    stanza: str
    repo_path: str
    # A pgbackrest.conf for what the command line does not say (e.g. repository cipher);
    # without one, the host's /etc/pgbackrest.conf is never read.
    config: str | None = None


BackupSource = FilesystemSource | PgBackRestSource


class Check(BaseModel):
    """kind `sql` (the default when a check names no kind): a read-only query whose first
    column of the first row must equal `expect`, lie in `{min, max}` or match `{regex}`; or,
    with `{rows: [...]}`, whose whole result must equal those rows."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["sql"] = "sql"
    name: str
    sql: str
    expect: Expectation = None


class SchemaCheck(BaseModel):
    """The recovered schema must equal a snapshot (`pitrdrill schema snapshot`). In a spec
    file `snapshot` is the snapshot's path, relative to the spec; the CLI inlines it, so the
    drill's input carries the snapshot itself to whichever host runs the check."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["schema"]
    name: str
    snapshot: SchemaSnapshot


class ReferentialIntegrityCheck(BaseModel):
    """No row may reference a missing row, for each foreign key named (constraint names), or
    for every foreign key in the recovered database when none is named."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["referential_integrity"]
    name: str
    foreign_keys: list[str] | None = Field(default=None, min_length=1)


class AmcheckCheck(BaseModel):
    """amcheck finds no corruption in these relations: a table's heap (verify_heapam) and its
    B-tree indexes, or an index named directly (bt_index_check)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["amcheck"]
    name: str
    relations: list[str] = Field(min_length=1)
    # bt_index_check(index, heapallindexed): also prove every heap tuple has its index entry.
    heapallindexed: bool = False


class FreshnessCheck(BaseModel):
    """The newest `column` of `table` is at most `tolerance` older than the recovered point
    (domain.checks.recovered_point): catches a recovery that replayed too little."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["freshness"]
    name: str
    table: str
    column: str
    tolerance: str  # e.g. 5m, 1h, 30s

    @field_validator("tolerance")
    @classmethod
    def _duration(cls, value: str) -> str:
        synthetic.parse_duration(value)
        return value

    def tolerance_delta(self) -> timedelta:
        return synthetic.parse_duration(self.tolerance)


def _check_kind(value: Any) -> str:
    """Specs written before kinds existed name none: they are `sql` checks."""
    if isinstance(value, dict):
        return value.get("kind", "sql")
    return getattr(value, "kind", "sql")


SmokeCheck = Annotated[
    Annotated[Check, Tag("sql")] | Annotated[SchemaCheck, Tag("schema")]
    | Annotated[ReferentialIntegrityCheck, Tag("referential_integrity")]
    | Annotated[AmcheckCheck, Tag("amcheck")] | Annotated[FreshnessCheck, Tag("freshness")],
    Discriminator(_check_kind)]


class WarmSpec(BaseModel):
    """Load these relations (and, with `indexes`, their indexes) into shared buffers after
    the checks pass: pg_prewarm when the backup has it, else a sequential read."""

    model_config = ConfigDict(extra="forbid")

    relations: list[str] = Field(min_length=1)
    indexes: bool = True


FallbackStep = Literal["earlier_backup", "last_consistent_before_gap", "escalate"]


class Escalation(BaseModel):
    """Stop and wait for a human (Temporal update `decide`), telling them by webhook/command."""

    model_config = ConfigDict(extra="forbid")

    timeout_seconds: float = Field(default=1800, gt=0)
    webhook: str | None = None  # POSTed the escalation as JSON
    command: str | None = None  # run with the escalation as JSON on stdin


class SandboxOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # How long sandbox work waits for the host holding the sandbox (its worker may be
    # restarting) before the drill fails with SANDBOX_HOST_LOST.
    host_wait_seconds: float = Field(default=600, gt=0)
    # local | docker (adapters/sandbox_providers); absent: the worker's
    # PITRDRILL_SANDBOX_PROVIDER (default local).
    provider: Literal["local", "docker"] | None = None
    # Resource limits of the sandbox server (enforced by the docker provider; the local
    # provider reports them as not enforced).
    memory_mb: int | None = Field(default=None, gt=0)
    cpus: float | None = Field(default=None, gt=0)
    pids: int | None = Field(default=None, gt=0)
    # e.g. "2h": keep the sandbox (its server running, paused) this long after the drill for
    # investigation instead of tearing it down; `pitrdrill sandbox reap` removes it after.
    keep: str | None = None

    @field_validator("keep")
    @classmethod
    def _keep_duration(cls, value: str | None) -> str | None:
        if value is not None:
            synthetic.parse_duration(value)
        return value

    def keep_seconds(self) -> float | None:
        return None if self.keep is None else synthetic.parse_duration(self.keep).total_seconds()


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_seconds: float = Field(gt=0)


class DrillSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    database: str
    source: BackupSource
    target: TargetSpec
    checks: list[SmokeCheck] = Field(default_factory=list)
    warm: WarmSpec | None = None
    # The role the checks connect as inside the sandbox (trust auth on a private socket).
    db_user: str = "postgres"
    # What to do, in order, when pre-flight refuses the plan; empty: reject the drill.
    fallback: list[FallbackStep] = Field(default_factory=list)
    escalation: Escalation = Field(default_factory=Escalation)
    budget: Budget | None = None
    verify_backup: bool = True
    sandbox: SandboxOptions = Field(default_factory=SandboxOptions)
    # random-in-window | latest | ago:<duration>: each run picks its own time target in the
    # restorable window (domain/synthetic.py), replacing the target's mode; its action and
    # timeline stay. Meant for scheduled drills: every night proves another point.
    synthetic_target: str | None = None

    @field_validator("synthetic_target")
    @classmethod
    def _synthetic_form(cls, value: str | None) -> str | None:
        return None if value is None else synthetic.normalize(value)

    def automatic_fallback(self) -> list[str]:
        """The steps planning takes by itself; escalate is the workflow's (it waits)."""
        return [step for step in self.fallback if step != "escalate"]


def refuse_unsafe_checks(spec: DrillSpec) -> None:
    """CHECK_UNSAFE for SQL reaching server files or programs or switching role. Called where
    a spec enters (the CLI, the workflow's first stage), not while decoding one: a workflow
    must be able to read any spec it was given, and refuse it as a report."""
    for check in spec.checks:
        if isinstance(check, Check):  # the other kinds run only SQL pitrdrill builds
            refuse_unsafe_check(check.name, check.sql)
