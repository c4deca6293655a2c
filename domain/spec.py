"""The drill spec: the contract other tools write (YAML or JSON). Keep these names stable."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from domain.targets import TargetSpec


class FilesystemSource(BaseModel):
    """pg_basebackup backups in sub-directories of base_backups; segments in wal_archive."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["filesystem"] = "filesystem"
    base_backups: str
    wal_archive: str


class Check(BaseModel):
    """A read-only query whose first column of the first row must equal `expect`."""

    model_config = ConfigDict(extra="forbid")

    name: str
    sql: str
    expect: Any = None


class DrillSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    database: str
    source: FilesystemSource
    target: TargetSpec
    checks: list[Check] = Field(default_factory=list)
    # The role the checks connect as inside the sandbox (trust auth on a private socket).
    db_user: str = "postgres"
