"""Promotion of a recovered server, once a human approved it: reopen it with the listener the
approval names, still paused at the proven point, then promote and wait until it is writable.

Until this runs the recovery keeps the sandbox's isolation (no TCP, no archiving). Idempotent:
a retry that finds the server already promoted only reports it.
"""

from __future__ import annotations

import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import structlog
from temporalio import activity

from activities.boundary import activity_boundary
from activities.heartbeat import Heartbeater
from activities.models import Promotion, PromotionRequest
from activities.sandbox import server_of
from adapters.pg_runtime import PostgresRuntime
from adapters.pg_server import PostgresServer
from adapters.sources import BackupSources
from domain.errors import DrillError, ErrorCode
from domain.sandbox import server_settings
from domain.targets import render_settings

_log = structlog.get_logger("pitrdrill.promotion")
_WAIT_S = 120.0
_IN_RECOVERY = "SELECT pg_is_in_recovery(), pg_get_wal_replay_pause_state()"


def _await(server: PostgresServer, sql: str, done, what: str) -> tuple:
    deadline = time.monotonic() + _WAIT_S
    while time.monotonic() < deadline:
        try:
            with server.connect() as conn:
                row = conn.execute(sql).fetchone()
            if done(row):
                return row
        except psycopg.OperationalError:
            pass  # still starting
        time.sleep(0.1)
    raise DrillError(ErrorCode.PROMOTION_FAILED, f"the recovered server never {what}; "
                     f"server log: {server.log_tail(1500)}")


class PromotionActivities:
    def __init__(self, runtime: PostgresRuntime, sources: BackupSources) -> None:
        self._runtime = runtime
        self._sources = sources

    @activity.defn(name="promote_recovery")
    @activity_boundary
    def promote(self, request: PromotionRequest) -> Promotion:
        approval, sandbox = request.approval, request.sandbox
        opened = sandbox.model_copy(update={"port": approval.port})
        server = server_of(opened, self._runtime)
        with Heartbeater(opened):
            if not self._promoted(server):
                self._reopen(server_of(sandbox, self._runtime), server, request)
                with server.connect() as conn:
                    conn.execute("SELECT pg_promote(true, 60)")
                _await(server, "SELECT pg_is_in_recovery()", lambda row: not row[0],
                       "left recovery after pg_promote")
            with server.connect() as conn:
                # The current WAL file names the new timeline before any checkpoint does.
                current, walfile = conn.execute(
                    "SELECT pg_current_wal_lsn()::text, pg_walfile_name(pg_current_wal_lsn())"
                ).fetchone()
                timeline = int(walfile[:8], 16)
        _log.info("recovery promoted", data_dir=sandbox.data_dir, port=approval.port,
                  listen_addresses=approval.listen_addresses, by=approval.by, lsn=current)
        return Promotion(promoted_at=datetime.now(timezone.utc), data_dir=sandbox.data_dir,
                         socket_dir=sandbox.socket_dir, listen_addresses=approval.listen_addresses,
                         port=approval.port, timeline=timeline)

    @staticmethod
    def _promoted(server: PostgresServer) -> bool:
        if server.pid() is None:
            return False
        try:
            with server.connect() as conn:
                return not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        except psycopg.OperationalError:
            return False

    def _reopen(self, paused: PostgresServer, opened: PostgresServer,
                request: PromotionRequest) -> None:
        """Stop the paused server and start it again listening as approved: it replays to the
        same target and pauses there again (recovery.signal is still in place)."""
        sandbox, approval = request.sandbox, request.approval
        paused.stop("fast")
        if paused.pid() is not None:
            raise RuntimeError("the paused server did not stop; retrying")
        Path(sandbox.root, "pg_hba.conf").write_text(
            "# pitrdrill recovery, promoted on approval\nlocal all all trust\n"
            + "".join(f"{line}\n" for line in approval.hba))
        fetch_wal = self._sources.adapter(request.source).restore_command(request.source, sandbox)
        opened_sandbox = sandbox.model_copy(update={"port": approval.port})
        settings = {
            **server_settings(opened_sandbox, fetch_wal,
                              request.target.model_copy(update={"action": "pause"})),
            "listen_addresses": approval.listen_addresses,
            # Writable once promoted: the approval is the point of it.
            "default_transaction_read_only": "off",
        }
        Path(sandbox.root, "recovery-settings.conf").write_text(render_settings(settings))
        try:
            opened.start(settings, wait=True)
        except subprocess.CalledProcessError as exc:
            raise DrillError(ErrorCode.PROMOTION_FAILED,
                             f"reopening on port {approval.port} failed: {exc}; server log: "
                             f"{opened.log_tail(1500)}") from exc
        _await(opened, _IN_RECOVERY, lambda row: row[0] and row[1] == "paused",
               "paused again at the target")
