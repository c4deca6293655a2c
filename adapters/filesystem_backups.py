"""Filesystem backups as a backup source: pg_basebackup directories beside a WAL archive.
Read-only."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import structlog

from adapters.base_copy import (
    OnProgress,
    base_tar,
    copy_base_backup,
    extract_tar_backup,
    tar_member_text,
)
from adapters.pg_runtime import PostgresRuntime
from domain.catalog import BaseBackup, describe_backup, parse_label_fields
from domain.errors import DrillError, ErrorCode
from domain.restore import RestoreProgress, RestoreResult
from domain.sandbox import Sandbox, restore_command
from domain.spec import FilesystemSource

_log = structlog.get_logger("pitrdrill.catalog")


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _label(backup: Path) -> tuple[str, str]:
    """backup_label's text and the backup's format: beside the data, or inside base.tar."""
    if (label := _read(backup / "backup_label")) is not None:
        return label, "plain"
    tar = base_tar(backup)
    try:
        label = tar_member_text(tar, "backup_label") if tar else None
    except (OSError, tarfile.TarError) as exc:
        raise DrillError(ErrorCode.BACKUP_METADATA_UNREADABLE, f"{tar}: {exc}") from exc
    if label is None:
        raise DrillError(ErrorCode.BACKUP_METADATA_UNREADABLE,
                         f"{backup} has no backup_label (neither plain nor in base.tar[.gz])")
    return label, "tar"


def _tree_size(path: Path) -> int:
    return sum(
        os.lstat(os.path.join(root, name)).st_size
        for root, _, files in os.walk(path)
        for name in files
    )


def _history_files(wal_archive: Path) -> dict[str, str]:
    """Backup history files (*.backup) by their START WAL LOCATION line, as backup_label has it."""
    found = {}
    for path in wal_archive.glob("*.backup"):
        text = path.read_text()
        if start := parse_label_fields(text).get("START WAL LOCATION"):
            found[start] = text
    return found


class FilesystemBackups:
    """pg_basebackup directories and a WAL archive directory, read with PostgreSQL's own tools."""

    def __init__(self, runtime: PostgresRuntime, copy_parallelism: int = 4) -> None:
        self._runtime = runtime
        self._copy_parallelism = copy_parallelism

    def backups(self, source: FilesystemSource) -> list[BaseBackup]:
        return self.read(Path(source.base_backups), Path(source.wal_archive))

    def wal_directory(self, source: FilesystemSource) -> Path:
        return Path(source.wal_archive)

    def restore(self, source: FilesystemSource, backup: BaseBackup, sandbox: Sandbox,
                resume_from: RestoreProgress, on_progress: OnProgress) -> RestoreResult:
        if backup.format == "tar":
            return extract_tar_backup(Path(backup.path), Path(sandbox.data_dir),
                                      Path(sandbox.root) / "tablespaces", self._runtime,
                                      on_progress)
        return copy_base_backup(Path(backup.path), Path(sandbox.data_dir), self._runtime,
                                resume_from, on_progress, self._copy_parallelism)

    def restore_command(self, source: FilesystemSource, sandbox: Sandbox) -> str:
        # The archive where the sandbox server sees it (docker: /archive).
        return restore_command(sandbox.server_path(source.wal_archive))

    def verify(self, source: FilesystemSource, backup: BaseBackup) -> DrillError | None:
        """pg_verifybackup against the backup's manifest (the WAL is the index's business).
        PostgreSQL 15's pg_verifybackup reads plain backups only: tar backups go unverified."""
        if not backup.has_manifest or backup.format == "tar":
            return None
        verified = self._runtime.run("pg_verifybackup", "--no-parse-wal", "--quiet",
                                     backup.path, check=False)
        if verified.returncode == 0:
            return None
        return DrillError(ErrorCode.BACKUP_CORRUPT,
                          f"backup {backup.id} fails pg_verifybackup: "
                          f"{(verified.stdout + verified.stderr).strip()[:800]}")

    @staticmethod
    def read(source_backups: Path, wal_archive: Path) -> list[BaseBackup]:
        if not source_backups.is_dir():
            raise DrillError(ErrorCode.NO_BASE_BACKUP, f"{source_backups} is not a directory")
        if not wal_archive.is_dir():
            raise DrillError(
                ErrorCode.SPEC_INVALID, f"WAL archive {wal_archive} is not a directory"
            )
        histories = _history_files(wal_archive)
        backups = []
        unreadable: list[str] = []
        for path in sorted(p for p in source_backups.iterdir() if p.is_dir()):
            try:
                label, form = _label(path)
                start = parse_label_fields(label).get("START WAL LOCATION", "")
                backup = describe_backup(
                    path.name, str(path), label, _read(path / "backup_manifest"),
                    histories.get(start), _tree_size(path),
                )
            except DrillError as error:
                # lost+found, a pg_basebackup still running: not a reason to refuse the rest.
                unreadable.append(error.message)
                _log.warning("not a usable base backup", path=str(path), reason=error.message)
                continue
            backups.append(backup.model_copy(update={"format": form}))
        if unreadable and not backups:
            raise DrillError(ErrorCode.BACKUP_METADATA_UNREADABLE, "; ".join(unreadable))
        return backups
