"""What makes a sandbox PostgreSQL isolated, as settings. Pure, so it can be tested line by line.

These go on the server's command line, which beats every configuration file a restored backup
may carry: a production archive_command, primary_conninfo or external_pid_file can never act.
"""

from __future__ import annotations

import shlex
from typing import Literal
from pathlib import PurePosixPath

from pydantic import BaseModel

from domain.targets import ResolvedTarget, recovery_settings


class Sandbox(BaseModel):
    """Everything about one sandbox lives under `root`; nothing it writes goes elsewhere."""

    drill_id: str
    root: str
    data_dir: str
    socket_dir: str
    log_file: str
    port: int
    # The task queue of the worker on the host that holds this sandbox: every later sandbox
    # activity is sent there.
    task_queue: str = ""
    # A drill's data lives in the sandbox and goes with it; a recovery's data_dir is its
    # destination, emptied on failure and kept once a human decides.
    purpose: Literal["drill", "recovery"] = "drill"


# How an archived segment may be stored, and the command that writes it out plain.
_FETCHERS = (("", "cp {src} %p"), (".gz", "gzip -dc {src} > %p"),
             (".zst", "zstd -qdc {src} > %p"), (".lz4", "lz4 -qdc {src} > %p"))


def restore_command(wal_archive: str) -> str:
    """Read-only fetch from the archive, plain or compressed; when no copy exists the command
    fails, which is how PostgreSQL learns the archive has ended."""
    branches = []
    for suffix, fetch in _FETCHERS:
        src = shlex.quote(str(PurePosixPath(wal_archive) / "%f")) + suffix
        branches.append(f"if [ -f {src} ]; then {fetch.format(src=src)}; ")
    return "el".join(branches) + "else exit 1; fi"


def isolation_settings(sandbox_dir: str, data_dir: str, socket_dir: str, port: int,
                       drill_id: str) -> dict[str, str]:
    return {
        # -D only names the configuration directory: a restored postgresql.conf saying
        # data_directory = '/var/lib/postgresql/15/main' would otherwise run the drill there.
        "data_directory": data_dir,
        # Paused in recovery, the server polls this file, deletes it and promotes: an HA
        # standby's trigger path must never reach a sandbox.
        "promote_trigger_file": "",
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


# Every recovery target setting PostgreSQL 15 has: all are set, so none left in a restored
# configuration file can add a second target ("multiple recovery targets specified").
_TARGET_SETTINGS = ("recovery_target", "recovery_target_lsn", "recovery_target_name",
                    "recovery_target_time", "recovery_target_xid")


def server_settings(sandbox: Sandbox, fetch_wal: str, target: ResolvedTarget) -> dict[str, str]:
    """`fetch_wal` is the source's read-only restore_command. The unused target settings are
    blanked before the chosen one is set: their assign hooks refuse a blank after it."""
    chosen = recovery_settings(target)
    blanks = {name: "" for name in _TARGET_SETTINGS if name not in chosen}
    return {
        **isolation_settings(sandbox.root, sandbox.data_dir, sandbox.socket_dir, sandbox.port,
                             sandbox.drill_id),
        "restore_command": fetch_wal,
        **blanks,
        **chosen,
    }
