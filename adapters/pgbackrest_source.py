"""A pgBackRest repository as a backup source: the adapter shape of adapters.sources, every
step through the pgbackrest command line. Read-only towards the repository."""

from __future__ import annotations

from pathlib import Path

from adapters.pgbackrest_cli import PgBackRest
from domain.catalog import BaseBackup
from domain.errors import DrillError, ErrorCode
from domain.restore import RestoreProgress, RestoreResult
from domain.sandbox import Sandbox
from domain.spec import PgBackRestSource


# Where a drill's asynchronous archive-get spools WAL ahead: inside the sandbox, removed with it.
SPOOL = "pgbackrest-spool"


class PgBackRestBackups:
    """The source adapter: the same shape as FilesystemBackups, everything through pgbackrest."""

    def __init__(self, pgbackrest: PgBackRest) -> None:
        self._pgbackrest = pgbackrest

    def backups(self, source: PgBackRestSource) -> list[BaseBackup]:
        return list(self._pgbackrest.list_backups(source))

    def wal_directory(self, source: PgBackRestSource) -> Path:
        """The stanza's archive: one directory per archive id, segments named NAME-SHA1.gz."""
        return Path(source.repo_path) / "archive" / source.stanza

    def restore(self, source: PgBackRestSource, backup: BaseBackup, sandbox: Sandbox,
                resume_from: RestoreProgress, on_progress) -> RestoreResult:
        """pgbackrest reports no progress of its own; `--delta` makes a retry resume."""
        return self._pgbackrest.restore(source, backup, Path(sandbox.data_dir), Path(sandbox.root))

    def restore_command(self, source: PgBackRestSource, sandbox: Sandbox) -> str:
        # Repository, config and data directory where the sandbox server sees them. A drill
        # fetches WAL ahead into its own spool (a disposable copy may); a recovery fetches
        # each segment as PostgreSQL asks, pgBackRest's default.
        seen = source.model_copy(update={
            "repo_path": sandbox.server_path(source.repo_path),
            "config": sandbox.server_path(source.config) if source.config else None})
        spool = Path(sandbox.server_path(str(Path(sandbox.root) / SPOOL))) \
            if sandbox.purpose == "drill" else None
        return self._pgbackrest.archive_get_command(
            seen, Path(sandbox.server_path(sandbox.data_dir)), spool)

    def verify(self, source: PgBackRestSource, backup: BaseBackup) -> DrillError | None:
        verdict = next((v for v in self._pgbackrest.verify(source).backups
                        if v.label == backup.id), None)
        if verdict is None or verdict.ok:
            return None
        return DrillError(ErrorCode.BACKUP_CORRUPT,
                          f"backup {backup.id} fails pgbackrest verify: {verdict.status}, "
                          f"{verdict.files_valid} of {verdict.files_checked} files valid")
