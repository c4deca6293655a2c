"""What makes a sandbox PostgreSQL isolated, as settings. Pure, so it can be tested line by line.

These go on the server's command line, which beats every configuration file a restored backup
may carry: a production archive_command, primary_conninfo or external_pid_file can never act.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from datetime import datetime
from typing import Literal
from pathlib import PurePosixPath

from pydantic import BaseModel, Field

from domain.errors import DrillError, ErrorCode

from domain.targets import ResolvedTarget, recovery_settings


SandboxProviderName = Literal["local", "docker"]


class SandboxMount(BaseModel):
    """A host directory the sandbox server sees, and where it sees it (docker: /sandbox,
    /archive, /backup; local: the same path). Only these exist for a confined server."""

    host: str
    server: str
    read_only: bool = True


class SandboxLimits(BaseModel):
    memory_mb: int | None = None
    cpus: float | None = None
    pids: int | None = None


class IsolationProperty(BaseModel):
    """One thing the sandbox promises, and whether this sandbox really enforces it."""

    name: str
    enforced: bool
    detail: str = ""


class SandboxIsolation(BaseModel):
    """What held for a drill's sandbox: written into the report."""

    provider: str
    properties: list[IsolationProperty] = Field(default_factory=list)
    # Anything taken away from the restored cluster so that it cannot act outward (a
    # background worker library removed from shared_preload_libraries, ...).
    warnings: list[str] = Field(default_factory=list)
    # `sandbox.keep`: the sandbox stays (server running) this long after the drill, then
    # `pitrdrill sandbox reap` removes it.
    kept_for_seconds: float | None = None

    def not_enforced(self) -> list[str]:
        return [p.name for p in self.properties if not p.enforced]


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
    # Which provider runs its server (adapters/sandbox_providers), and how.
    provider: SandboxProviderName = "local"
    # True: the server runs confined (local as root: its own network and mount namespaces;
    # docker: a container without network). False: a plain process of the host.
    confined: bool = False
    # What a confined server sees of the host; empty: the host's own paths.
    mounts: list[SandboxMount] = Field(default_factory=list)
    limits: SandboxLimits = Field(default_factory=SandboxLimits)
    image: str | None = None  # docker
    keep_seconds: float | None = None
    created_at: datetime | None = None
    # Set when teardown kept the sandbox (`sandbox.keep`): the reaper removes it after this.
    kept_until: datetime | None = None
    isolation: SandboxIsolation | None = None

    def server_path(self, host_path: str) -> str:
        """`host_path` as the sandbox server sees it. Confined servers see only their mounts:
        a path outside them is refused, never silently left pointing at nothing."""
        if not self.mounts:
            return host_path
        path = PurePosixPath(host_path)
        for mount in sorted(self.mounts, key=lambda m: len(m.host), reverse=True):
            if path == PurePosixPath(mount.host) or PurePosixPath(mount.host) in path.parents:
                return str(PurePosixPath(mount.server) / path.relative_to(mount.host))
        raise DrillError(ErrorCode.SANDBOX_FAILED,
                         f"{host_path} is not visible inside the {self.provider} sandbox "
                         f"(mounted: {', '.join(m.host for m in self.mounts)})")


# How an archived segment may be stored, and the command that writes it out plain.
_FETCHERS = (("", "cp {src} %p"), (".gz", "gzip -dc {src} > %p"),
             (".zst", "zstd -qdc {src} > %p"), (".lz4", "lz4 -qdc {src} > %p"))


def restore_command(wal_archive: str) -> str:
    """Read-only fetch from the archive, plain or compressed; when no copy exists the command
    fails, which is how PostgreSQL learns the archive has ended."""
    branches = []
    # Quoted for the shell, and with the archive path's own % doubled: PostgreSQL expands
    # %f, %p, %r and %% everywhere in the command before the shell sees it.
    archive = str(PurePosixPath(wal_archive)).replace("%", "%%")
    for suffix, fetch in _FETCHERS:
        src = shlex.quote(f"{archive}/%f") + suffix
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
        # A restored subscription must never connect to its publisher, not even after
        # promotion: without workers the logical replication launcher is not even started.
        "max_logical_replication_workers": "0",
        "max_sync_workers_per_subscription": "0",
        # Libraries load only from PostgreSQL's own directory, never from a path the restored
        # configuration names. shared_preload_libraries: see preload_settings.
        "dynamic_library_path": "$libdir",
    }


def drill_speed_settings(sandbox: Sandbox) -> dict[str, str]:
    """Speed for a disposable sandbox only. A drill's copy is thrown away after its checks,
    so nothing it writes needs to survive a crash of the host: no fsync (restartpoints and
    the files replay writes stay in the page cache, and go with the directory), no waiting
    for commits; replay prefetches the blocks its WAL will touch. full_page_writes stays as
    restored. (Measured on 1 GiB of WAL: no fsync takes replay from 5.5 to 4.2 s; fewer
    restartpoints or a larger shared_buffers gained nothing more.) A recovery (purpose
    "recovery") keeps every durability default: its data directory is the one a human
    promotes."""
    if sandbox.purpose != "drill":
        return {}
    return {
        "fsync": "off",
        "synchronous_commit": "off",
        "recovery_prefetch": "on",
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
        **isolation_settings(sandbox.server_path(sandbox.root),
                             sandbox.server_path(sandbox.data_dir),
                             sandbox.server_path(sandbox.socket_dir), sandbox.port,
                             sandbox.drill_id),
        "restore_command": fetch_wal,
        **blanks,
        **chosen,
        **drill_speed_settings(sandbox),
    }


# --- preload libraries that act outside the server ---------------------------------------------
#
# A restored postgresql.conf / postgresql.auto.conf names libraries PostgreSQL loads at start.
# Those below start background workers that act on their own, outside the drill's control:
# they are removed from the sandbox's *_preload_libraries, the report says so, and the rest
# is kept. Network isolation (where the provider enforces it) stops them connecting anyway;
# this stops them from running at all, also where it is not enforced.
OUTWARD_LIBRARIES: dict[str, str] = {
    "pg_cron": "runs scheduled jobs (any SQL, also through dblink/libpq to other servers)",
    "pg_net": "sends HTTP requests from a background worker",
    "pglogical": "replication workers connect to providers and subscribers",
    "pg_background": "runs SQL in background workers, detached from any session",
    "citus": "its maintenance daemon connects to worker nodes",
    "bdr": "replication workers connect to the other nodes",
    "pg_failover_slots": "connects to the primary to copy its slots",
    "pg_partman_bgw": "runs partition maintenance (writes) on a schedule",
    "pg_squeeze": "rewrites tables from a background worker",
    "pgsodium": "runs a key-fetching program (getkey_script) at server start",
}
# Kept, because the databases that use them cannot be queried without them, but with their
# background work switched off on the command line (their own settings).
NEUTRALIZED_LIBRARIES: dict[str, dict[str, str]] = {
    # Job scheduler (policies, user-defined actions) and telemetry to timescale.com.
    "timescaledb": {"timescaledb.max_background_workers": "0",
                    "timescaledb.telemetry_level": "off"},
}
PRELOAD_SETTINGS = ("shared_preload_libraries", "session_preload_libraries",
                    "local_preload_libraries")


def library_name(entry: str) -> str:
    """'$libdir/pg_cron.so' -> 'pg_cron' (how a preload list element may name a library)."""
    name = PurePosixPath(entry.strip()).name
    return name[:-3] if name.endswith(".so") else name


def split_library_list(value: str) -> list[str]:
    """A *_preload_libraries value into its elements, as PostgreSQL splits it
    (SplitDirectoriesString): comma-separated, whitespace around an element ignored, an
    element in double quotes may hold commas and spaces, "" inside quotes is one quote."""
    items: list[str] = []
    i, n = 0, len(value)
    while i < n:
        while i < n and value[i].isspace():
            i += 1
        if i >= n:
            break
        if value[i] == '"':
            i += 1
            item = ""
            while i < n:
                end = value.find('"', i)
                if end < 0:  # unterminated: PostgreSQL refuses the whole value
                    item += value[i:]
                    i = n
                    break
                item += value[i:end]
                if end + 1 < n and value[end + 1] == '"':
                    item += '"'
                    i = end + 2
                    continue
                i = end + 1
                break
        else:
            end = value.find(",", i)
            end = n if end < 0 else end
            item, i = value[i:end].rstrip(), end
        items.append(item)
        while i < n and value[i].isspace():
            i += 1
        if i < n and value[i] == ",":
            i += 1
    return items


def join_library_list(items: list[str]) -> str:
    """The elements as one value PostgreSQL splits back into exactly them."""
    plain = [item if item and not any(c in item for c in ', "\t') else
             '"' + item.replace('"', '""') + '"' for item in items]
    return ",".join(plain)


def preload_settings(restored: dict[str, str | None]) -> tuple[dict[str, str], list[str]]:
    """The *_preload_libraries settings for the sandbox's command line, from the restored
    configuration's values (None: could not be read), and a warning per change. Every one is
    always set explicitly, so nothing in the restored files decides what loads."""
    settings: dict[str, str] = {}
    warnings: list[str] = []
    for setting in PRELOAD_SETTINGS:
        value = restored.get(setting)
        if value is None:
            settings[setting] = ""
            warnings.append(f"{setting}: the restored configuration could not be read; "
                            "the sandbox loads no preload library")
            continue
        kept = []
        for entry in split_library_list(value):
            name = library_name(entry)
            if name in OUTWARD_LIBRARIES:
                warnings.append(f"{setting}: {name} removed: {OUTWARD_LIBRARIES[name]}")
                continue
            kept.append(entry)
            if name in NEUTRALIZED_LIBRARIES:
                off = NEUTRALIZED_LIBRARIES[name]
                settings.update(off)
                warnings.append(f"{setting}: {name} kept with its background work off ("
                                + ", ".join(f"{k}={v}" for k, v in off.items()) + ")")
        settings[setting] = join_library_list(kept)
    return settings, warnings


# A unix socket's path holds at most 107 bytes (sun_path); the server's lives in
# <root>/<name>/socket/.s.PGSQL.<port>.
_SUN_PATH_MAX = 107
_SOCKET_TAIL = len("/socket/.s.PGSQL.65535")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def sandbox_dir_name(drill_id: str, sandbox_root: str) -> str:
    """The drill's directory name under the sandbox root: the id made path-safe, shortened
    (and kept unique by a hash of the whole id) when the socket path would not fit."""
    name = _SAFE_NAME.sub("_", drill_id)
    if name.strip(".") == "":
        raise DrillError(ErrorCode.SANDBOX_FAILED,
                         f"drill id {drill_id!r} cannot name a sandbox directory")
    room = _SUN_PATH_MAX - len(sandbox_root.rstrip("/")) - 1 - _SOCKET_TAIL
    if len(name) <= room:
        return name
    if room < 16:
        raise DrillError(ErrorCode.SANDBOX_FAILED,
                         f"sandbox root {sandbox_root} is too long for a unix socket path "
                         f"({_SUN_PATH_MAX} bytes)", "Set PITRDRILL_SANDBOX_ROOT to a shorter "
                         "directory, e.g. /var/tmp/pitrdrill/sandboxes.")
    digest = hashlib.sha256(drill_id.encode()).hexdigest()[:8]
    return f"{name[:room - 9]}-{digest}"
