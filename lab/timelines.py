"""A second timeline, made the way an incident makes one.

Someone restores one of the lab's base backups into a new data directory, recovers it to a
target with `recovery_target_action=promote` and lets it run as a new primary. Archiving as
the old primary does, it writes its `.history` file and its timeline's segments into the same
archive, while the old primary may go on committing on the old timeline: past the switch point
the archive then holds two branches of history.

The promoted server is a `Lab` of its own, sharing the original lab's archive, so its commits
record markers exactly as the primary's do.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass

from domain.sandbox import restore_command
from domain.targets import ResolvedTarget, recovery_settings
from domain.timelines import TimelineHistory, parse_history
from lab.lab import Lab

# The primary's own settings as pg_ctl gave them; the promoted server runs with the same ones
# (archive_command above all), except where it listens.
_PRIMARY_SETTINGS_SQL = "SELECT name, setting FROM pg_settings WHERE source = 'command line'"
_OWN_SETTINGS = ("unix_socket_directories", "port")


@dataclass(frozen=True)
class Promotion:
    """Where the new timeline left its parent, read back from its archived history file."""

    timeline: int
    history: TimelineHistory

    @property
    def switch_lsn(self) -> str:
        return self.history.switches[-1].switch_lsn

    @property
    def parent(self) -> int:
        return self.history.switches[-1].parent


class TimelineBranch:
    """One of `lab`'s base backups, restored beside the primary and promoted at a target.

    `promoted` is the new timeline's server as a `Lab`: commit, restore_point, archive_all
    and sql work on it as on the primary. Leaving the `with` block stops it and removes its
    data directory (never anything in the archive)."""

    def __init__(self, lab: Lab, backup: str, name: str = "promoted") -> None:
        self.lab = lab
        self.backup = lab.base_backups / backup
        self.promoted = Lab(lab.root / name, lab.runtime)
        # It archives where the primary does: that is what puts both branches in one archive.
        self.promoted.wal_archive = lab.wal_archive

    def __enter__(self) -> TimelineBranch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.promoted.destroy()

    def promote(self, target: ResolvedTarget, timeout_s: float = 60) -> Promotion:
        """Archive recovery from the backup to `target`, ending in promotion: a new timeline
        whose history file is in the archive when this returns."""
        self._restore_backup()
        server = self.promoted.primary
        server.start({**self._primary_settings(),
                      "restore_command": restore_command(str(self.lab.wal_archive)),
                      **recovery_settings(target.model_copy(update={"action": "promote"}))})
        self._await(timeout_s, "promotion", "SELECT NOT pg_is_in_recovery()")
        # The archiver sends a history file before any segment, so the first file archived
        # is the new timeline's history: no segment switch needed to see it.
        self._await(timeout_s, "archived history file",
                    "SELECT archived_count > 0 FROM pg_stat_archiver")
        return self._promotion()

    def end(self) -> None:
        """Archive everything the new timeline wrote, then shut it down cleanly."""
        self.promoted.archive_all()
        self.promoted.primary.stop("fast")

    def _restore_backup(self) -> None:
        server, runtime = self.promoted.primary, self.lab.runtime
        runtime.make_private_dir(self.promoted.root, 0o755)
        runtime.make_private_dir(server.socket_dir, 0o755)
        # The lab's backups are plain pg_basebackup copies (no -R): nothing to leave out.
        shutil.copytree(self.backup, server.data_dir)
        # Archive recovery, not crash recovery and not a standby waiting for a primary.
        (server.data_dir / "recovery.signal").write_text("")
        server.data_dir.chmod(0o700)
        runtime.give(server.data_dir, recursive=True)

    def _primary_settings(self) -> dict[str, str]:
        settings = dict(self.lab.sql(_PRIMARY_SETTINGS_SQL))
        server = self.promoted.primary
        own = dict(zip(_OWN_SETTINGS, (str(server.socket_dir), str(server.port))))
        return {**settings, **own}

    def _await(self, timeout_s: float, what: str, condition_sql: str) -> None:
        """pg_ctl returns once a hot standby accepts connections, which may be before the
        target is reached: poll the promoted server until `condition_sql` holds."""
        deadline = time.monotonic() + timeout_s
        while not self.promoted.sql(condition_sql)[0][0]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server restored from {self.backup.name}: no {what} "
                                   f"within {timeout_s}s; server log: "
                                   f"{self.promoted.primary.log_tail(1200)}")
            time.sleep(0.05)

    def _promotion(self) -> Promotion:
        current = self.promoted.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0]
        timeline = int(current[:8], 16)
        text = (self.lab.wal_archive / f"{timeline:08X}.history").read_text()
        return Promotion(timeline=timeline, history=parse_history(text, timeline))
