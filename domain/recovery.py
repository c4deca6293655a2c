"""A real recovery: the drill's proven path, into a destination data directory, ending in a
promotion that only a human can approve."""

from __future__ import annotations

from datetime import datetime
from pathlib import PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from domain.report import DrillReport
from domain.spec import DrillSpec

# A promoted server takes TCP connections only as the approval says; scram keeps passwords.
DEFAULT_HBA = ["host all all 127.0.0.1/32 scram-sha-256", "host all all ::1/128 scram-sha-256"]


class RecoverySpec(DrillSpec):
    """A drill spec plus where the recovered data directory goes and which host holds it."""

    destination: str
    # The worker host id (PITRDRILL_HOST_ID) that restores into `destination`; any when None.
    host: str | None = None

    @field_validator("destination")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not PurePosixPath(value).is_absolute():
            raise ValueError(f"destination must be an absolute path, not {value!r}")
        return value

    @model_validator(mode="after")
    def _paused_until_approved(self) -> RecoverySpec:
        """Only a human promotes: the target must pause. `latest` would end recovery, and so
        promote, by itself at the end of the archive."""
        if self.target.latest or self.target.action not in (None, "pause"):
            raise ValueError("a recovery stops paused at an exact target and waits for "
                             "`pitrdrill recovery approve`: use time/lsn/xid/name/immediate "
                             "with action pause (`pitrdrill plan` shows the latest exact target)")
        return self


class Approval(BaseModel):
    """`pitrdrill recovery approve`: promote, and open the server as said here."""

    model_config = ConfigDict(extra="forbid")

    by: str = Field(min_length=1)
    reason: str = Field(min_length=1)
    listen_addresses: str = "localhost"
    port: int = Field(default=5432, ge=1, le=65535)
    hba: list[str] = Field(default_factory=lambda: list(DEFAULT_HBA))


class Abort(BaseModel):
    """`pitrdrill recovery abort`: leave the recovered server paused, read-only, to inspect."""

    model_config = ConfigDict(extra="forbid")

    by: str = Field(min_length=1)
    reason: str = Field(min_length=1)


class DecisionRecord(BaseModel):
    action: Literal["approve", "abort"]
    by: str
    reason: str
    at: datetime


class Promotion(BaseModel):
    """Where the promoted server now listens, and from which point it took over."""

    promoted_at: datetime
    data_dir: str
    socket_dir: str
    listen_addresses: str
    port: int
    timeline: int


RecoveryStatus = Literal["verified", "promoted", "paused", "failed", "rejected"]


class RecoveryReport(DrillReport):
    """`verified` is the state while waiting for a human; `promoted` and `paused` (aborted)
    are the two ends a human chooses."""

    status: RecoveryStatus = "verified"
    destination: str = ""
    decision: DecisionRecord | None = None
    promotion: Promotion | None = None
