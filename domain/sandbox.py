"""What makes a sandbox PostgreSQL isolated, as settings. Pure, so it can be tested line by line.

These go on the server's command line, which beats every configuration file a restored backup
may carry: a production archive_command, primary_conninfo or external_pid_file can never act.
"""

from __future__ import annotations

import shlex
from pathlib import PurePosixPath

from domain.targets import ResolvedTarget, recovery_settings


def restore_command(wal_archive: str) -> str:
    """Read-only fetch from the archive; a missing file makes cp fail, which ends the stream."""
    source = shlex.quote(str(PurePosixPath(wal_archive) / "%f"))
    return f"cp {source} %p"


def isolation_settings(sandbox_dir: str, socket_dir: str, port: int, drill_id: str) -> dict[str, str]:
    return {
        # Reachable only through a private unix socket; no TCP at all.
        "listen_addresses": "",
        "unix_socket_directories": socket_dir,
        "port": str(port),
        "hba_file": f"{sandbox_dir}/pg_hba.conf",
        "ident_file": f"{sandbox_dir}/pg_ident.conf",
        "ssl": "off",
        # Writes nothing outside itself: no archiving, no streaming, no pid file elsewhere.
        "archive_mode": "off",
        "archive_command": "",
        "archive_library": "",
        "archive_cleanup_command": "",
        "recovery_end_command": "",
        "primary_conninfo": "",
        "primary_slot_name": "",
        "recovery_min_apply_delay": "0",
        "synchronous_standby_names": "",
        "external_pid_file": "",
        "logging_collector": "off",
        "log_destination": "stderr",
        "log_timezone": "UTC",
        "cluster_name": f"pitrdrill-{drill_id}"[:63],
        # Read-only to clients, and queryable while paused in recovery.
        "hot_standby": "on",
        "default_transaction_read_only": "on",
    }


def server_settings(
    sandbox_dir: str, socket_dir: str, port: int, drill_id: str, fetch_wal: str,
    target: ResolvedTarget,
) -> dict[str, str]:
    """`fetch_wal` is the source's read-only restore_command."""
    return {
        **isolation_settings(sandbox_dir, socket_dir, port, drill_id),
        "restore_command": fetch_wal,
        **recovery_settings(target),
    }
