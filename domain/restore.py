"""Base restore progress and outcome: what a retried restore resumes from."""

from __future__ import annotations

from pydantic import BaseModel


class RestoreProgress(BaseModel):
    """A completed prefix of the restore plan: a retry re-checks these files and goes on."""

    files_done: int = 0
    bytes_done: int = 0
    bytes_total: int | None = None


class RestoreResult(BaseModel):
    files: int
    bytes_restored: int
    seconds: float
    # Files a retry found already restored, re-checked and kept.
    files_resumed: int = 0
