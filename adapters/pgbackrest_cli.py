"""The pgbackrest command line: list a repository's backups, restore one, fetch its WAL,
verify it. Read-only towards the repository.

Every command gets the repository, the stanza and its configuration on its command line, and
`--config` is always given (`/dev/null` when the source names no file): pgBackRest then reads
neither /etc/pgbackrest.conf nor /etc/pgbackrest/conf.d, so the host's own configuration (a
production repository, async spooling, a file log) can never take part in a drill.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from adapters.os_user import as_server_user
from adapters.processes import live_processes
from domain.catalog import BaseBackup
from domain.errors import DrillError, ErrorCode
from domain.pgbackrest_info import PgBackRestBackup, Verification, parse_info, parse_verify
from domain.restore import RestoreResult
from domain.spec import PgBackRestSource


@dataclass(frozen=True)
class PgBackRestRunner:
    """Runs the pgbackrest binary as the PostgreSQL OS user, like every server binary here:
    what it creates (a restored data directory) must belong to the sandbox server's user."""

    os_user: str = "postgres"
    binary: str = "/usr/bin/pgbackrest"
    # How often a long command looks up from waiting (cancellation is delivered then).
    poll_every_s: float = 0.5

    def run(
        self, args: list[str], timeout_s: float | None = None,
    ) -> subprocess.CompletedProcess[str]:
        command = [self.binary, *args]
        # A session of its own, so that killing it also kills its parallel local processes.
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/",
            start_new_session=True, **as_server_user(self.os_user),
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


def _wait_for_group_exit(group: int, timeout_s: float = 10.0) -> None:
    """SIGKILL is delivered asynchronously: return only once the whole group is gone."""
    deadline = time.monotonic() + timeout_s
    while (live_processes(lambda process: process.process_group == group)
           and time.monotonic() < deadline):
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
        return parse_info(source, output)

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

    def archive_get_command(self, source: PgBackRestSource, data_dir: Path,
                            spool: Path | None = None) -> str:
        """The sandbox's restore_command: fetch from the repository, write nothing outside the
        sandbox.

        archive-get reads the restored pg_control (hence pg1-path) to pick the archive of this
        cluster. With `spool` (a directory of the sandbox), pgBackRest's asynchronous
        archive-get fetches and decompresses the next segments ahead, in parallel, into it,
        its locks beside them; without, one segment per call (the host's settings never
        apply: see repository_options). A missing file exits non-zero, which is how PostgreSQL
        learns the archive ended.
        """
        args = [self._runner.binary, *repository_options(source), f"--pg1-path={data_dir}"]
        if spool is None:
            args.append("--no-archive-async")
        else:
            args += ["--archive-async", f"--spool-path={spool}", f"--lock-path={spool / 'lock'}",
                     f"--process-max={self._process_max}"]
        return server_command(args) + ' archive-get %f "%p"'

    def verify(self, source: PgBackRestSource) -> Verification:
        """Checksums of every backup file and archived WAL segment, per backup and archive."""
        return parse_verify(self._run(
            source, "verify",
            [f"--process-max={self._process_max}", "--output=text", "--verbose"],
            ErrorCode.BACKUP_METADATA_UNREADABLE,
        ))
