"""A pgBackRest repository as a backup source: list its backups, restore one, fetch its WAL,
verify it. Read-only towards the repository.

Every command gets the repository, the stanza and its configuration on its command line, and
`--config` is always given (`/dev/null` when the source names no file): pgBackRest then reads
neither /etc/pgbackrest.conf nor /etc/pgbackrest/conf.d, so the host's own configuration (a
production repository, async spooling, a file log) can never take part in a drill.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from domain.restore import RestoreProgress, RestoreResult
from domain.sandbox import Sandbox
from adapters.pg_runtime import host_environment
from domain.catalog import BaseBackup
from domain.spec import PgBackRestSource
from domain.errors import DrillError, ErrorCode

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


@dataclass(frozen=True)
class PgBackRestRunner:
    """Runs the pgbackrest binary as the PostgreSQL OS user, like every server binary here.

    pgBackRest refuses root for most commands, and what it creates (a restored data directory)
    must belong to the user the sandbox server runs as.
    """

    os_user: str = "postgres"
    binary: str = "/usr/bin/pgbackrest"
    # How often a long command looks up from waiting (cancellation is delivered then).
    poll_every_s: float = 0.5

    def _as_os_user(self) -> dict[str, Any]:
        if os.geteuid() != 0:
            return {"env": host_environment()}
        entry = pwd.getpwnam(self.os_user)
        env = {**host_environment(), "HOME": entry.pw_dir, "USER": self.os_user}
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [], "env": env}

    def run(
        self, args: list[str], timeout_s: float | None = None,
    ) -> subprocess.CompletedProcess[str]:
        command = [self.binary, *args]
        # A session of its own, so that killing it also kills its parallel local processes.
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/",
            start_new_session=True, **self._as_os_user(),
        ) as process:
            try:
                stdout, stderr = self._wait(process, timeout_s)
            except BaseException:
                # A timeout or a cancelled activity must not leave a restore writing behind us.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                _wait_for_group_exit(process.pid)
                raise
        return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)

    def _wait(
        self, process: subprocess.Popen[str], timeout_s: float | None,
    ) -> tuple[str, str]:
        """(stdout, stderr) once it exits. Waits in short slices: a cancelled activity's
        CancelledError is raised in this thread between two of them."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                return process.communicate(timeout=self.poll_every_s)
            except subprocess.TimeoutExpired:
                if deadline is not None and time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired(process.args, timeout_s) from None


def _live_members(group: int) -> list[int]:
    """Processes of a process group that still run (zombies have stopped writing)."""
    members = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == group:
            members.append(int(pid))
    return members


def _wait_for_group_exit(group: int, timeout_s: float = 10.0) -> None:
    """SIGKILL is delivered asynchronously: return only once the whole group is gone."""
    deadline = time.monotonic() + timeout_s
    while _live_members(group) and time.monotonic() < deadline:
        time.sleep(0.01)


def repository_options(source: PgBackRestSource) -> list[str]:
    """The options that point pgbackrest at exactly this stanza and at nothing of the host's."""
    return [
        f"--config={source.config or '/dev/null'}",
        f"--stanza={source.stanza}",
        f"--repo1-path={source.repo_path}",
        # Logs go to our stdout/stderr only: nothing under /var/log/pgbackrest.
        "--log-level-file=off",
    ]


def _epoch(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def _timeline_of(segment: str) -> int:
    """A WAL segment name starts with its timeline, 8 hex digits."""
    return int(segment[:8], 16)


def _describe(source: PgBackRestSource, entry: dict[str, Any]) -> PgBackRestBackup:
    label = entry["label"]
    return PgBackRestBackup(
        id=label,
        path=str(Path(source.repo_path) / "backup" / source.stanza / label),
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


def _tree_totals(path: Path) -> tuple[int, int]:
    """(files, bytes) under path, following pg_tblspc links into the remapped tablespaces."""
    files = size = 0
    for root, _, names in os.walk(path, followlinks=True):
        for name in names:
            files += 1
            size += os.lstat(os.path.join(root, name)).st_size
    return files, size


def _ensure_server_config(data_dir: Path) -> None:
    """Debian keeps postgresql.conf in /etc, so its backups lack one; PostgreSQL needs the file."""
    config = data_dir / "postgresql.conf"
    if not config.exists():
        config.touch()
        owner = data_dir.stat()
        os.chown(config, owner.st_uid, owner.st_gid)


def server_command(args: list[str]) -> str:
    """args as one archive_command/restore_command line: quoted for the shell PostgreSQL runs
    it with, and with % doubled because PostgreSQL expands %f, %p and %r in it."""
    return " ".join(shlex.quote(arg).replace("%", "%%") for arg in args)


class PgBackRest:
    """The adapter: every command reads the repository; the only writes go to data_dir."""

    def __init__(
        self, runner: PgBackRestRunner, process_max: int = 2, timeout_s: float = 3600
    ) -> None:
        self._runner = runner
        self._process_max = process_max
        self._timeout_s = timeout_s

    def _run(
        self, source: PgBackRestSource, command: str, options: list[str], failure: ErrorCode,
    ) -> str:
        """stdout of a command that must succeed."""
        try:
            done = self._runner.run(
                [*repository_options(source), *options, command], self._timeout_s
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DrillError(failure, f"pgbackrest {command} for stanza {source.stanza!r}: {exc}")
        if done.returncode != 0:
            said = (done.stderr.strip() or done.stdout.strip())[-2000:]
            raise DrillError(
                failure,
                f"pgbackrest {command} for stanza {source.stanza!r} in {source.repo_path} "
                f"exited {done.returncode}: {said}",
            )
        return done.stdout

    def list_backups(self, source: PgBackRestSource) -> list[PgBackRestBackup]:
        output = self._run(
            source, "info", ["--output=json"], ErrorCode.BACKUP_METADATA_UNREADABLE
        )
        try:
            entries = _stanza_backups(source, json.loads(output))
            return [_describe(source, entry) for entry in entries]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise DrillError(
                ErrorCode.BACKUP_METADATA_UNREADABLE,
                f"pgbackrest info for stanza {source.stanza!r} in {source.repo_path}: "
                f"unexpected output ({exc!r})",
            ) from None

    def restore(
        self, source: PgBackRestSource, backup: BaseBackup, data_dir: Path, work_dir: Path,
    ) -> RestoreResult:
        """Restore `backup` into data_dir, an empty (or half-restored) directory the PostgreSQL
        user owns; work_dir holds pgBackRest's lock files and the remapped tablespaces.

        `--delta` makes a retry finish a restore that was cut short instead of refusing the
        non-empty directory. `--type=none` still writes recovery.signal and comments out the
        backup's own recovery_target_* lines, but appends no settings: every other type adds a
        restore_command (and --archive-mode=off an archive_mode) to postgresql.auto.conf
        without escaping quotes, so a repository path with a quote in it leaves a file
        PostgreSQL refuses to start with. The sandbox passes all its settings on the command
        line anyway.
        """
        started = time.perf_counter()
        self._run(source, "restore", [
            f"--set={backup.id}",
            f"--pg1-path={data_dir}",
            "--type=none",
            "--delta",
            # Tablespaces would otherwise go back to their original paths on this host.
            f"--tablespace-map-all={work_dir / 'tablespaces'}",
            f"--lock-path={work_dir / 'lock'}",
            f"--log-path={work_dir / 'log'}",
            f"--process-max={self._process_max}",
        ], ErrorCode.RESTORE_FAILED)
        _ensure_server_config(data_dir)
        files, size = _tree_totals(data_dir)
        return RestoreResult(
            files=files, bytes_restored=size, seconds=time.perf_counter() - started
        )

    def archive_get_command(self, source: PgBackRestSource, data_dir: Path) -> str:
        """The sandbox's restore_command: fetch one file from the repository, write nothing else.

        archive-get reads the restored pg_control (hence pg1-path) to pick the archive of this
        cluster. Asynchronous archive-get would spool ahead into a spool path: forced off.
        A missing file exits non-zero, which is how PostgreSQL learns the archive ended.
        """
        args = [
            self._runner.binary, *repository_options(source),
            f"--pg1-path={data_dir}", "--no-archive-async",
        ]
        return server_command(args) + ' archive-get %f "%p"'

    def verify(self, source: PgBackRestSource) -> Verification:
        """Checksums of every backup file and archived WAL segment, per backup and archive.

        Damage is reported, not an error: verify exits 0 with the invalid counts on stdout.
        """
        report = self._run(
            source, "verify",
            [f"--process-max={self._process_max}", "--output=text", "--verbose"],
            ErrorCode.BACKUP_METADATA_UNREADABLE,
        )
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


class PgBackRestCatalog:
    """The source adapter: the same shape as FilesystemCatalog, everything through pgbackrest."""

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
        return self._pgbackrest.archive_get_command(source, Path(sandbox.data_dir))

    def verify(self, source: PgBackRestSource, backup: BaseBackup) -> DrillError | None:
        verdict = next((v for v in self._pgbackrest.verify(source).backups
                        if v.label == backup.id), None)
        if verdict is None or verdict.ok:
            return None
        return DrillError(ErrorCode.BACKUP_CORRUPT,
                          f"backup {backup.id} fails pgbackrest verify: {verdict.status}, "
                          f"{verdict.files_valid} of {verdict.files_checked} files valid")

