"""What pgBackRest says about its repository, read into models: the backups `info
--output=json` lists, and the checksum verdicts `verify --output=text --verbose` prints.
Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel

from domain.catalog import BaseBackup
from domain.errors import DrillError, ErrorCode
from domain.spec import PgBackRestSource

# `info` reports these stanza states in status.code; 2 is a stanza that simply holds no backup.
_STANZA_MISSING, _STANZA_WITHOUT_BACKUPS = 1, 2
_VERIFIED_BACKUP = re.compile(
    r"^\s*backup: (?P<label>\S+), status: (?P<status>[a-z -]+), "
    r"total files checked: (?P<checked>\d+), total valid files: (?P<valid>\d+)$",
    re.MULTILINE,
)
_VERIFIED_ARCHIVE = re.compile(
    r"^\s*archiveId: (?P<archive_id>\S+), total WAL checked: (?P<checked>\d+), "
    r"total valid WAL: (?P<valid>\d+)$",
    re.MULTILINE,
)


class PgBackRestBackup(BaseBackup):
    """A BaseBackup plus what only pgBackRest knows: its kind and the backup it builds on."""

    kind: Literal["full", "diff", "incr"]
    prior: str | None
    wal_start: str
    wal_stop: str
    repo_size_bytes: int


class BackupVerdict(BaseModel):
    label: str
    status: str  # valid | invalid | manifest missing | in-progress, as `verify` prints it
    files_checked: int
    files_valid: int

    @property
    def ok(self) -> bool:
        return self.status == "valid"


class ArchiveVerdict(BaseModel):
    archive_id: str
    wal_checked: int
    wal_valid: int

    @property
    def ok(self) -> bool:
        return self.wal_checked == self.wal_valid


class Verification(BaseModel):
    backups: list[BackupVerdict]
    archives: list[ArchiveVerdict]


def _epoch(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def _timeline_of(segment: str) -> int:
    """A WAL segment name starts with its timeline, 8 hex digits."""
    return int(segment[:8], 16)


def _describe(source: PgBackRestSource, entry: dict[str, Any]) -> PgBackRestBackup:
    label = entry["label"]
    return PgBackRestBackup(
        id=label,
        path=str(PurePosixPath(source.repo_path) / "backup" / source.stanza / label),
        timeline=_timeline_of(entry["archive"]["start"]),
        start_lsn=entry["lsn"]["start"],
        stop_lsn=entry["lsn"]["stop"],
        start_time=_epoch(entry["timestamp"]["start"]),
        # Taken once the backup has stopped, in whole seconds: a safe (late) end for choosing.
        stop_time=_epoch(entry["timestamp"]["stop"]),
        size_bytes=entry["info"]["size"],
        # pgBackRest keeps its own backup.manifest, not PostgreSQL's backup_manifest.
        has_manifest=False,
        kind=entry["type"],
        prior=entry["prior"],
        wal_start=entry["archive"]["start"],
        wal_stop=entry["archive"]["stop"],
        repo_size_bytes=entry["info"]["repository"]["size"],
    )


def _stanza_backups(source: PgBackRestSource, info: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stanza's backup entries from `info --output=json`, refusing a stanza it cannot read."""
    stanza = info[0]
    status = stanza["status"]
    if status["code"] == _STANZA_MISSING:
        raise DrillError(
            ErrorCode.NO_BASE_BACKUP,
            f"stanza {source.stanza!r} does not exist in repository {source.repo_path}",
        )
    if status["code"] not in (0, _STANZA_WITHOUT_BACKUPS):
        raise DrillError(
            ErrorCode.BACKUP_METADATA_UNREADABLE,
            f"pgbackrest info for stanza {source.stanza!r} in {source.repo_path}: "
            f"{status['message']} (status {status['code']})",
        )
    return stanza["backup"]


def parse_info(source: PgBackRestSource, output: str) -> list[PgBackRestBackup]:
    """The stanza's backups in `pgbackrest info --output=json` output."""
    try:
        entries = _stanza_backups(source, json.loads(output))
        return [_describe(source, entry) for entry in entries]
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise DrillError(
            ErrorCode.BACKUP_METADATA_UNREADABLE,
            f"pgbackrest info for stanza {source.stanza!r} in {source.repo_path}: "
            f"unexpected output ({exc!r})",
        ) from None


def parse_verify(report: str) -> Verification:
    """The per-backup and per-archive verdicts in `pgbackrest verify --output=text --verbose`
    output. Damage is a verdict, not an error: verify exits 0 with the invalid counts."""
    return Verification(
        backups=[
            BackupVerdict(
                label=m["label"], status=m["status"], files_checked=m["checked"],
                files_valid=m["valid"],
            )
            for m in _VERIFIED_BACKUP.finditer(report)
        ],
        archives=[
            ArchiveVerdict(
                archive_id=m["archive_id"], wal_checked=m["checked"], wal_valid=m["valid"]
            )
            for m in _VERIFIED_ARCHIVE.finditer(report)
        ],
    )
