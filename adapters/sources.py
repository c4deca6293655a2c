"""Backup sources by kind. Every adapter has one shape (backups, wal_directory, restore,
restore_command, verify): a new source (Barman, WAL-G) is a new adapter registered here, and
nothing in the workflow changes."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from adapters.base_copy import OnProgress

from domain.restore import RestoreProgress, RestoreResult
from domain.sandbox import Sandbox
from domain.catalog import BaseBackup
from domain.errors import DrillError
from domain.spec import BackupSource


class SourceAdapter(Protocol):
    def backups(self, source) -> list[BaseBackup]: ...

    def wal_directory(self, source) -> Path: ...

    def restore(self, source, backup: BaseBackup, sandbox: Sandbox,
                resume_from: RestoreProgress, on_progress: OnProgress) -> RestoreResult: ...

    def restore_command(self, source, sandbox: Sandbox) -> str: ...

    def verify(self, source, backup: BaseBackup) -> DrillError | None: ...


class BackupSources:
    def __init__(self, adapters: dict[str, SourceAdapter]) -> None:
        self._adapters = adapters

    def adapter(self, source: BackupSource) -> SourceAdapter:
        return self._adapters[source.kind]
