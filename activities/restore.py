"""Base restore into the sandbox, by whichever adapter owns the backup's source."""

from __future__ import annotations

from temporalio import activity

from activities.boundary import domain_errors
from activities.contracts import RestoreRequest, RestoreResult
from activities.sources import BackupSources


class RestoreActivities:
    def __init__(self, sources: BackupSources) -> None:
        self._sources = sources

    @activity.defn(name="restore_base_backup")
    @domain_errors
    def restore_base_backup(self, request: RestoreRequest) -> RestoreResult:
        adapter = self._sources.adapter(request.source)
        return adapter.restore(request.source, request.backup, request.sandbox)
