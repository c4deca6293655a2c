"""The baselines: a point-in-time recovery by hand, with nothing of pitrdrill around it, and
pgBackRest's own restore and replay of the same cluster.

What an operator's shell script does: `cp -a` the base backup (or `tar -x` a tar-format one),
touch recovery.signal, `pg_ctl start` with the recovery settings on its command line, poll
`pg_get_wal_replay_pause_state()` every 50 ms until 'paused', then `pg_ctl stop -m immediate`
and `rm -rf` (pitrdrill's teardown does the same, so both sides pay for it).
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from adapters.pg_runtime import PostgresRuntime, remove_tree
from adapters.pg_server import PostgresServer, free_port
from adapters.pgbackrest_cli import repository_options
from bench.dataset import RecoverySet, RecoveryTarget
from bench.trials import Timing, phase

POLL_INTERVAL_S = 0.05
# restore_command for a server whose directory is `home`, listening on `port`.
FetchWal = Callable[[Path, int], str]
_START_GRACE_S = 30.0
_REPLAY_TIMEOUT_S = 1800.0


def plain_restore_command(wal_archive: Path) -> str:
    return f"cp {wal_archive}/%f %p"


def recovery_settings(home: Path, port: int, target: RecoveryTarget,
                      restore_command: str) -> dict[str, str]:
    return {
        "listen_addresses": "",
        "unix_socket_directories": str(home),
        "port": str(port),
        # A copy restored by hand must never archive into the production archive.
        "archive_mode": "off",
        "restore_command": restore_command,
        "recovery_target_lsn": target.lsn,
        "recovery_target_inclusive": "off",
        "recovery_target_action": "pause",
        "recovery_target_timeline": "latest",
    }


def _paused(server: PostgresServer) -> bool:
    try:
        with server.connect() as conn:
            return conn.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()[0] == "paused"
    except psycopg.OperationalError:  # not accepting connections yet (before consistency)
        return False


@dataclass(frozen=True)
class BareRecovery:
    runtime: PostgresRuntime
    root: Path  # one directory per recovery under it

    def _unpack(self, data: RecoverySet, data_dir: Path, tar: bool) -> None:
        if not tar:
            subprocess.run(["cp", "-a", str(data.backup), str(data_dir)], check=True)
            return
        assert data.tar_backup is not None
        self.runtime.make_private_dir(data_dir)
        subprocess.run(["tar", "-xf", str(data.tar_backup / "base.tar"), "-C", str(data_dir)],
                       check=True)
        subprocess.run(["tar", "-xf", str(data.tar_backup / "pg_wal.tar"),
                        "-C", str(data_dir / "pg_wal")], check=True)

    def unpack_only(self, data: RecoverySet, tar: bool = False) -> Timing:
        """`cp -a` or `tar -x` alone, then removal outside the time."""
        home = self.root / uuid.uuid4().hex[:12]
        home.mkdir(parents=True)
        try:
            began = time.perf_counter()
            self._unpack(data, home / "data", tar)
            return Timing(time.perf_counter() - began)
        finally:
            remove_tree(home)

    def _replay(self, server: PostgresServer, settings: dict[str, str]) -> None:
        signal = server.data_dir / "recovery.signal"
        signal.touch()
        self.runtime.give(signal)
        server.start(settings, wait=False)
        _wait_paused(server)

    def recover(self, data: RecoverySet, target: RecoveryTarget,
                fetch_wal: FetchWal | None = None, sync_before_replay: bool = False) -> Timing:
        """cp -a, recover to `target` and pause, stop, remove: timed by phase.

        fetch_wal gives the restore_command for this server (default: plain cp).
        sync_before_replay writes the copy back first (outside the time), so that a figure
        about replay alone is not charged for the copy's writeback."""
        home = self.runtime.make_private_dir(self.root / uuid.uuid4().hex[:12], 0o755)
        server = PostgresServer(self.runtime, data_dir=home / "data", socket_dir=home,
                                port=free_port(), log_file=home / "postgres.log")
        command = (fetch_wal(home, server.port) if fetch_wal
                   else plain_restore_command(data.wal_archive))
        parts: dict[str, float] = {}
        try:
            with phase(parts, "restore"):
                self._unpack(data, server.data_dir, tar=False)
            if sync_before_replay:
                subprocess.run(["sync"], check=True)
            with phase(parts, "replay"):
                self._replay(server, recovery_settings(home, server.port, target, command))
        finally:
            with phase(parts, "teardown"):
                server.stop("immediate")
                remove_tree(home)
        return Timing(sum(parts.values()), parts)


@dataclass(frozen=True)
class PgBackRestRecovery:
    """pgBackRest's own point-in-time recovery, as its documentation runs it: `pgbackrest
    restore --type=lsn --target=... --target-exclusive --target-action=pause` (its defaults
    otherwise: one process, and the restore_command it writes is archive-get), then
    `pg_ctl start` (only the listener and socket on the command line, and no archiving), poll
    until paused, `pg_ctl stop -m immediate`, `rm -rf`."""

    runtime: PostgresRuntime
    root: Path

    def recover(self, data: RecoverySet, target: RecoveryTarget) -> Timing:
        copy = data.pgbackrest
        assert copy is not None
        home = self.runtime.make_private_dir(self.root / uuid.uuid4().hex[:12], 0o755)
        server = PostgresServer(self.runtime, data_dir=home / "data", socket_dir=home,
                                port=free_port(), log_file=home / "postgres.log")
        parts: dict[str, float] = {}
        try:
            with phase(parts, "restore"):
                self.runtime.make_private_dir(server.data_dir)
                done = copy.runner.run([
                    *repository_options(copy.source), f"--pg1-path={server.data_dir}",
                    f"--set={copy.backup_label}", "--type=lsn", f"--target={target.lsn}",
                    "--target-exclusive", "--target-action=pause", "--archive-mode=off",
                    f"--lock-path={home / 'lock'}", "restore"])
                if done.returncode != 0:
                    raise RuntimeError(f"pgbackrest restore failed: {done.stderr or done.stdout}")
            with phase(parts, "replay"):
                server.start({"listen_addresses": "", "unix_socket_directories": str(home),
                              "port": str(server.port), "archive_mode": "off"}, wait=False)
                _wait_paused(server)
        finally:
            with phase(parts, "teardown"):
                server.stop("immediate")
                remove_tree(home)
        return Timing(sum(parts.values()), parts)


def _wait_paused(server: PostgresServer) -> None:
    began = time.monotonic()
    while not _paused(server):
        elapsed = time.monotonic() - began
        if (server.pid() is None and elapsed > _START_GRACE_S) or elapsed > _REPLAY_TIMEOUT_S:
            raise RuntimeError(f"recovery did not pause: {server.log_tail(1500)}")
        time.sleep(POLL_INTERVAL_S)
