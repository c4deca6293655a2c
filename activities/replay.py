"""Replay: start the sandbox server in recovery and wait, with backoff and heartbeats, until it
has reached the target (paused, promoted, or shut down and re-opened paused for inspection).

Idempotent: a retry that finds the server already running keeps polling it instead of
starting a second one.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import psycopg
import structlog
from temporalio import activity

from activities.boundary import activity_boundary
from activities.heartbeat import Heartbeater, resumed
from activities.models import ReplayProgress, ReplayRequest, ReplayResult
from adapters.pg_runtime import PostgresRuntime
from adapters.pg_server import PostgresServer
from activities.sandbox import server_of
from adapters.sources import BackupSources
from domain.errors import DrillError, ErrorCode
from domain.report import Recovered
from domain.sandbox import server_settings
from domain.targets import render_settings

_log = structlog.get_logger("pitrdrill.replay")
_STOP_LINE = re.compile(r"^.*(recovery stopping .*)$", re.MULTILINE)
_STARTUP_GRACE_S = 30.0
_DIED_AFTER_S = 1.0
# What a server says while it is starting or not yet consistent, or while it goes down (the
# main loop then reads why from its log): worth waiting for.
_NOT_YET = ("starting up", "not yet accepting connections", "No such file or directory",
            "Connection refused", "shutting down",
            # The startup process failed (e.g. the archive ended before the target): the
            # postmaster is killing its children and refuses new connections until it exits.
            "server closed the connection unexpectedly", "in recovery mode",
            "terminating connection because of crash of another server process")
# A refusal the server gives while it is stopping on its way out: its exit says more.
_GOING_AWAY_S = 3.0
_NOT_REACHED = "recovery ended before configured recovery target was reached"
_STATE_SQL = """
SELECT pg_is_in_recovery(),
       CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() END,
       pg_last_wal_replay_lsn()::text,
       pg_last_xact_replay_timestamp()
"""


# Lines after which the server's state is worth reading at once: it paused, promoted, or is
# stopping (PostgreSQL 15's wording). Between them the state is read with backoff.
_WAKE_LINES = ("recovery has paused", "pausing at the end of recovery", "recovery stopping ",
               "database system is ready to accept", "consistent recovery state reached",
               "shutdown at recovery target", "database system is shut down", "FATAL:",
               "PANIC:", "terminating any other active server processes")
_LOG_LOOK_S = 0.01  # how often the log's size is looked at while waiting
_AFTER_WAKE_S = 0.01  # the next state reads after a wake line come this soon


class _LogWatch:
    """Notices, from the server's log, the moment worth reading its state: the size is
    looked at every 10 ms (a stat), new text read only when it grew."""

    def __init__(self, server: PostgresServer) -> None:
        self._server = server
        self._offset = server.log_size()
        self._partial = ""

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True as soon as a wake line was logged."""
        deadline = time.monotonic() + seconds
        while True:
            if self._server.log_size() > self._offset and self._woken():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(_LOG_LOOK_S, left))

    def _woken(self) -> bool:
        try:
            with open(self._server.log_file, "rb") as log:
                log.seek(self._offset)
                new = log.read()
        except OSError:
            return False
        self._offset += len(new)
        lines = (self._partial + new.decode(errors="replace")).split("\n")
        self._partial = lines.pop()  # not finished yet: looked at again with the rest
        return any(wake in line for line in lines for wake in _WAKE_LINES)


def _stop_reason(log: str) -> str | None:
    found = _STOP_LINE.findall(log)
    return found[-1].strip() if found else None


def _read_state(server: PostgresServer, database: str, user: str) -> tuple | None:
    """Recovery state, or None while the server does not accept connections yet. Connections
    open at the backup's consistent point, long before the target: a database or role that
    the backup lacks fails then, naming what exists, not after hours of replay."""
    try:
        with server.connect(database, user) as conn:
            return conn.execute(_STATE_SQL).fetchone()
    except psycopg.OperationalError as exc:
        text = str(exc)
        if any(reason in text for reason in _NOT_YET):
            return None
        if f'role "{user}" does not exist' in text:
            roles = _existing(server, "postgres", "SELECT rolname FROM pg_roles WHERE rolcanlogin")
            raise DrillError(ErrorCode.ROLE_NOT_FOUND,
                             f"db_user {user!r} is not a role of the backed-up cluster; "
                             f"login roles: {roles}") from None
        if f'database "{database}" does not exist' in text:
            names = _existing(server, user,
                              "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1")
            raise DrillError(ErrorCode.DATABASE_NOT_FOUND,
                             f"database {database!r} is not in the backup (at its consistent "
                             f"point); databases: {names}") from None
        if _going_away(server):
            return None  # stopped: the main loop classifies its exit from the complete log
        raise DrillError(ErrorCode.RECOVERY_FAILED,
                         f"the sandbox server refuses the connection as {user!r}: {text}") from exc


def _going_away(server: PostgresServer) -> bool:
    """Whether the postmaster exits within a moment: a refusal while it shuts down (after
    its startup process failed) says nothing about why; the log it leaves does."""
    deadline = time.monotonic() + _GOING_AWAY_S
    while server.pid() is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _existing(server: PostgresServer, user: str, sql: str) -> str:
    """What the cluster has, for the message; a best effort."""
    try:
        with server.connect("template1", user) as conn:
            return ", ".join(row[0] for row in conn.execute(sql).fetchall()) or "none"
    except psycopg.Error as exc:
        return f"(could not list: {str(exc).strip()})"


def _exit_error(log: str, target) -> DrillError:
    """Why the sandbox server stopped, from its own log."""
    if _NOT_REACHED in log:
        return DrillError(ErrorCode.RECOVERY_TARGET_NOT_REACHED,
                          f"the archive ends before {target.describe()}; server log: {log[-600:]}")
    return DrillError(ErrorCode.RECOVERY_FAILED,
                      f"the sandbox server stopped during recovery; server log: {log[-1200:]}")


def _awaited_action(request: ReplayRequest) -> str:
    if request.target.mode == "latest":
        return "promote"  # no target: PostgreSQL ends recovery at the end of the archive
    # shutdown: once it has stopped at the target, the server is re-opened paused to verify.
    return "promote" if request.target.action == "promote" else "pause"


def _reached(action: str, in_recovery: bool, pause_state: str | None) -> bool:
    if action == "pause":
        return in_recovery and pause_state == "paused"
    return not in_recovery


class ReplayActivities:
    def __init__(self, runtime: PostgresRuntime, sources: BackupSources,
                 max_poll_interval_s: float = 0.25) -> None:
        self._runtime = runtime
        self._sources = sources
        self._max_poll_interval_s = max_poll_interval_s

    def _start(self, server: PostgresServer, request: ReplayRequest, target) -> None:
        sandbox = request.sandbox
        fetch_wal = self._sources.adapter(request.source).restore_command(request.source, sandbox)
        settings = server_settings(sandbox, fetch_wal, target)
        # The exact settings, for whoever reads the sandbox or the report afterwards.
        Path(sandbox.root, "recovery-settings.conf").write_text(render_settings(settings))
        log_before = server.log_size()
        server.start(settings, wait=False)
        _log.info("sandbox server started in recovery", data_dir=sandbox.data_dir,
                         target=target.describe())
        deadline = time.monotonic() + _STARTUP_GRACE_S
        spoke_at = None
        while server.pid() is None:
            # The pid file comes before any log line; output without a live postmaster for a
            # moment means it died (maybe between two looks at its pid file).
            if spoke_at is None and server.log_since(log_before):
                spoke_at = time.monotonic()
            died = spoke_at is not None and time.monotonic() - spoke_at > _DIED_AFTER_S
            if died or time.monotonic() > deadline:
                # A fast replay can reach its end and stop before its pid file is ever seen.
                raise _exit_error(server.log_tail(20000), request.target)
            time.sleep(0.005)

    def _reopen_or_fail(self, server: PostgresServer, request: ReplayRequest,
                        progress: ReplayProgress) -> None:
        """The server stopped: it shut down at the target as asked (re-open it paused at the
        same point, to verify), or recovery failed."""
        log = server.log_tail(20000)
        if request.target.action == "shutdown" and not progress.restarted_paused \
                and _stop_reason(log):
            self._start(server, request, request.target.model_copy(update={"action": "pause"}))
            progress.restarted_paused = True
            return
        raise _exit_error(log, request.target)

    @activity.defn(name="replay_to_target")
    @activity_boundary
    def replay_to_target(self, request: ReplayRequest) -> ReplayResult:
        with Heartbeater(resumed(ReplayProgress)) as beat:
            return self._replay(request, beat.progress)

    def _replay(self, request: ReplayRequest, progress: ReplayProgress) -> ReplayResult:
        """`progress` is the heartbeated model: updated in place as replay moves."""
        server = server_of(request.sandbox, self._runtime)
        started = time.perf_counter()
        watch = _LogWatch(server)
        if server.pid() is None and not progress.started:
            self._start(server, request, request.target)
            progress.started = True
        interval = 0.05
        while True:
            if server.pid() is None:
                self._reopen_or_fail(server, request, progress)
            state = _read_state(server, request.database, request.db_user)
            if state is not None:
                in_recovery, pause_state, lsn, last_commit = state
                progress.replay_lsn = lsn
                if _reached(_awaited_action(request), in_recovery, pause_state):
                    _log.info("recovery reached the target", replay_lsn=lsn,
                              last_commit_time=str(last_commit))
                    return ReplayResult(
                        recovered=Recovered(
                            replay_lsn=lsn,
                            last_commit_time=last_commit,
                            stop_reason=_stop_reason(server.log_tail(20000)),
                            in_recovery=in_recovery,
                        ),
                        seconds=time.perf_counter() - started,
                        isolation_warnings=server.isolation_warnings(),
                    )
            progress.polls += 1
            # Paused, promoted or stopping is read the moment the server logs it.
            if watch.wait(interval):
                interval = _AFTER_WAKE_S
            else:
                interval = min(interval * 1.5, self._max_poll_interval_s)
