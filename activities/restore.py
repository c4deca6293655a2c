"""Base restore into the sandbox, by whichever adapter owns the backup's source."""

from __future__ import annotations

from pathlib import Path

from temporalio import activity

from activities.boundary import activity_boundary
from activities.heartbeat import Heartbeater, resumed
from activities.models import RestoreProgress, RestoreRequest, RestoreResult
from adapters.sandbox_providers import ensure_free_space
from adapters.sources import BackupSources


class RestoreActivities:
    def __init__(self, sources: BackupSources) -> None:
        self._sources = sources

    @activity.defn(name="restore_base_backup")
    @activity_boundary
    def restore_base_backup(self, request: RestoreRequest) -> RestoreResult:
        adapter = self._sources.adapter(request.source)
        resume_from = resumed(RestoreProgress)
        # SANDBOX_NO_SPACE, naming needed and free bytes, before a byte is copied.
        ensure_free_space(Path(request.sandbox.data_dir), request.backup.size_bytes)
        with Heartbeater(resume_from) as beat:
            return adapter.restore(request.source, request.backup, request.sandbox,
                                   resume_from, beat)
