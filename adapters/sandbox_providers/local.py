"""The local provider: the sandbox server is a PostgreSQL process of this host.

As root (and where the kernel allows namespaces) the server is confined, from `pg_ctl start`
on, by `unshare --net --mount`:

- its own network namespace, with no interface up (not even lo): no TCP or UDP connection
  can leave it or reach it, and abstract unix sockets are the namespace's own. PostgreSQL
  needs none: the sandbox only listens on its unix socket.
- its own mount namespace and root (chroot): /usr, /etc and the /bin, /lib links read-only,
  a private /dev (null, zero, full, random, urandom, a fresh shm), an empty /tmp, its own
  sandbox directory read-write, and the archive read-only at their own paths (those, /tmp and
  /dev/shm noexec: no library or program planted there can be loaded or run).
  No /run, /var/run, /home, /proc, no other sandbox: no host PostgreSQL's unix socket, and
  no file the postgres OS user could write elsewhere.
- as the postgres OS user (setpriv): no supplementary groups, no capabilities, and
  no_new_privs (a setuid binary grants nothing).

The host still sees the server as one of its processes (same pid namespace: pg_ctl stop and
the pid file work from outside) and reaches its socket through the sandbox directory.

An approved recovery reopened with a TCP listener (`listen_addresses` set) runs in the host's
network: the approval is what gives isolation up. Not root: a plain process, and the report
says which properties are therefore not enforced.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pwd
import shlex
import signal
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import structlog

from adapters.os_user import as_server_user
from adapters.pg_runtime import PostgresRuntime
from adapters.pg_server import PostgresServer
from adapters.processes import command_line, is_alive, live_processes
from adapters.sandbox_providers import (
    RECORD,
    HeldSandbox,
    ProviderSettings,
    hardened,
    read_record,
    recorded_warnings,
    stop_for_teardown,
)
from domain.errors import DrillError, ErrorCode
from domain.sandbox import IsolationProperty, Sandbox, SandboxIsolation, SandboxLimits, SandboxMount
from domain.spec import BackupSource, FilesystemSource, PgBackRestSource, SandboxOptions

_log = structlog.get_logger("pitrdrill.sandbox")

# Inside the new namespaces, as root: build the server's root file system, then become the
# server user and exec pg_ctl. Arguments: NEWROOT UID GID [MODE PATH]... -- COMMAND...
_CONFINE = r"""
set -eu
newroot=$1 uid=$2 gid=$3
shift 3
mount -t tmpfs -o mode=0755,size=4m,nosuid,nodev,noexec pitrdrill-sandbox "$newroot"
for top in /usr /etc /bin /sbin /lib /lib32 /lib64 /libx32; do
  if [ -L "$top" ]; then
    ln -s "$(readlink "$top")" "$newroot$top"
  elif [ -d "$top" ]; then
    mkdir -p "$newroot$top"
    mount --bind "$top" "$newroot$top"
    mount -o remount,bind,ro,nosuid "$newroot$top"
  fi
done
mkdir -p "$newroot/dev/shm" "$newroot/tmp"
chmod 1777 "$newroot/tmp"
for node in null zero full random urandom; do
  : > "$newroot/dev/$node"
  mount --bind "/dev/$node" "$newroot/dev/$node"
done
mount -t tmpfs -o mode=1777,nosuid,nodev,noexec pitrdrill-shm "$newroot/dev/shm"
while [ "$1" != "--" ]; do
  mode=$1 path=$2
  shift 2
  if [ -d "$path" ]; then
    mkdir -p "$newroot$path"
  else
    mkdir -p "$newroot$(dirname "$path")"
    : > "$newroot$path"
  fi
  mount --bind "$path" "$newroot$path"
  if [ "$mode" = ro ]; then
    mount -o remount,bind,ro,nosuid,nodev,noexec "$newroot$path"
  else
    mount -o remount,bind,nosuid,nodev,noexec "$newroot$path"
  fi
done
shift
cd /
exec chroot "$newroot" /usr/bin/setpriv --reuid="$uid" --regid="$gid" --clear-groups \
  --no-new-privs --inh-caps=-all --bounding-set=-all -- "$@"
"""
# The (empty) directory of the sandbox the server's private root is mounted on.
NEWROOT = ".confined-root"


@functools.cache
def namespaces_available() -> str | None:
    """None when this process may confine servers; else why not."""
    if os.geteuid() != 0:
        return "not running as root: unshare and mount need root"
    for tool in ("unshare", "setpriv", "chroot", "mount"):
        if not any(Path(d, tool).exists() for d in ("/usr/bin", "/usr/sbin", "/bin", "/sbin")):
            return f"{tool} is not installed (util-linux / coreutils)"
    probe = subprocess.run(["unshare", "--net", "--mount", "--propagation", "private", "--",
                            "mount", "-t", "tmpfs", "pitrdrill-probe", "/mnt"],
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"the kernel refuses new namespaces here: {probe.stderr.strip()[:200]}"
    return None


def _source_paths(source: BackupSource | None) -> list[str]:
    """What restore_command reads: mounted read-only for a confined server."""
    if isinstance(source, FilesystemSource):
        # Not the base backups: the restore copies them on the host; the server never reads
        # them.
        return [source.wal_archive]
    if isinstance(source, PgBackRestSource):
        return [source.repo_path] + ([source.config] if source.config else [])
    return []


def isolation_of(confined: bool, why_not: str | None, options: SandboxOptions,
                 mounts: list[SandboxMount]) -> SandboxIsolation:
    """The properties a local sandbox has, each enforced or not, in the report's words."""
    unconfined = f"not enforced: the server runs as a plain process of the host ({why_not})"
    read_only = ", ".join(m.host for m in mounts if m.read_only)
    limits = [f"{name}={value}" for name, value in (("memory_mb", options.memory_mb),
                                                    ("cpus", options.cpus),
                                                    ("pids", options.pids)) if value]
    return SandboxIsolation(provider="local", kept_for_seconds=options.keep_seconds(), properties=[
        IsolationProperty(
            name="no_network", enforced=confined,
            detail="own network namespace with no interface up: no TCP/UDP connection out or "
                   "in, no abstract unix socket of the host" if confined else
                   unconfined + ": dblink, postgres_fdw or a background worker can connect "
                   "to any address the host reaches"),
        IsolationProperty(
            name="private_filesystem", enforced=confined,
            detail="own mount namespace and root: /usr and /etc read-only, the sandbox "
                   "directory, the archive read-only; no /run, /tmp, /home or other sandbox, "
                   "so no unix socket of a host PostgreSQL" if confined else
                   unconfined + ": the server sees the host's files and unix sockets as the "
                   "postgres OS user does"),
        IsolationProperty(
            name="archive_read_only", enforced=confined,
            detail=(f"mounted read-only: {read_only}" if read_only else
                    "no archive was named at provision") if confined else
                   unconfined + ": only the restore_command (cp/gzip/zstd/lz4 into %p) and "
                   "the postgres OS user's permissions keep the server from writing to it"),
        IsolationProperty(
            name="no_new_privileges", enforced=confined,
            detail="setpriv: no capabilities, no supplementary groups, no_new_privs"
            if confined else unconfined),
        IsolationProperty(
            name="private_processes", enforced=False,
            detail="shares the host's process table (pg_ctl and the worker watch the "
                   "postmaster by its pid): a program the server runs (COPY ... PROGRAM from a "
                   "superuser session) could signal other processes of the postgres OS user; "
                   "provider docker has its own"),
        *_common_properties(),
        IsolationProperty(
            name="resource_limits", enforced=False,
            detail=("asked " + ", ".join(limits) + ": the local provider enforces no limits; "
                    "use provider docker") if limits else
                   "no limits: the local provider enforces none (provider docker does)"),
    ])


def _common_properties() -> list[IsolationProperty]:
    """What the server's command line enforces, whichever the provider."""
    return [
        IsolationProperty(name="no_tcp_listener", enforced=True,
                          detail="listen_addresses='': a private unix socket only"),
        IsolationProperty(
            name="no_archiving_or_streaming", enforced=True,
            detail="archive_mode=off, no archive_command/library, no primary_conninfo/slot, "
                   "no external_pid_file"),
        IsolationProperty(
            name="no_logical_replication", enforced=True,
            detail="max_logical_replication_workers=0: no subscription starts, also after "
                   "promotion"),
        IsolationProperty(
            name="outward_libraries_removed", enforced=True,
            detail="background-worker libraries that act outward (pg_cron, pg_net, pglogical, "
                   "...) removed from *_preload_libraries; see warnings"),
    ]


common_properties = _common_properties


@dataclass(frozen=True, eq=False)
class LocalServer(PostgresServer):
    """PostgresServer, started confined when the sandbox says so."""

    sandbox: Sandbox | None = None

    def start(self, settings: dict[str, str], wait: bool = True, timeout_s: int = 60) -> None:
        assert self.sandbox is not None
        settings = hardened(self.runtime, self.sandbox, settings)
        if not self.sandbox.confined or settings.get("listen_addresses"):
            super().start(settings, wait, timeout_s)
            return
        self._start_confined(settings, wait, timeout_s)

    def _start_confined(self, settings: dict[str, str], wait: bool, timeout_s: int) -> None:
        assert self.sandbox is not None
        newroot = Path(self.sandbox.root) / NEWROOT
        if self.sandbox.mounts:
            newroot.mkdir(mode=0o755, exist_ok=True)
        entry = pwd.getpwnam(self.runtime.os_user)
        binds: list[str] = []
        for mount in sorted(self.sandbox.mounts, key=lambda m: len(m.host)):
            if Path(mount.host).exists():
                binds += ["ro" if mount.read_only else "rw", mount.host]
        # PostgreSQL's binaries, when they do not live under /usr.
        if not str(self.runtime.bin_dir).startswith("/usr/"):
            binds += ["ro", str(self.runtime.bin_dir.parent)]
        options = [f"-c{key}={value}" for key, value in settings.items()]
        pg_ctl = ["start", "-D", str(self.data_dir), "-l", str(self.log_file),
                  "-o", " ".join(shlex.quote(option) for option in options)]
        pg_ctl += ["-w", "-t", str(timeout_s)] if wait else ["-W"]
        environment = as_server_user(self.runtime.os_user)["env"]
        command = [self.runtime.tool("pg_ctl"), *pg_ctl]
        if self.sandbox.mounts:
            confine = ["unshare", "--net", "--mount", "--propagation", "private", "--",
                       "/bin/sh", "-c", _CONFINE, "pitrdrill-confine", str(newroot),
                       str(entry.pw_uid), str(entry.pw_gid), *binds, "--"]
        else:  # no mounts recorded: the host's paths, in a network namespace of its own
            confine = ["unshare", "--net", "--", "setpriv", f"--reuid={entry.pw_uid}",
                       f"--regid={entry.pw_gid}", "--clear-groups", "--no-new-privs",
                       "--inh-caps=-all", "--bounding-set=-all", "--"]
        subprocess.run([*confine, *command], check=True, capture_output=True, text=True,
                       cwd="/", env=environment, timeout=timeout_s + 30)

    def isolation_warnings(self) -> list[str]:
        assert self.sandbox is not None
        return recorded_warnings(self.sandbox)


@dataclass
class LocalProvider:
    settings: ProviderSettings
    name: str = "local"

    @property
    def runtime(self) -> PostgresRuntime:
        return self.settings.runtime

    def provision(self, sandbox: Sandbox, options: SandboxOptions,
                  source: BackupSource | None) -> Sandbox:
        why_not = namespaces_available()
        confined = why_not is None
        mounts = [SandboxMount(host=sandbox.root, server=sandbox.root, read_only=False)]
        if not Path(sandbox.data_dir).is_relative_to(sandbox.root):  # a recovery's destination
            mounts.append(SandboxMount(host=sandbox.data_dir, server=sandbox.data_dir,
                                       read_only=False))
        mounts += [SandboxMount(host=path, server=path, read_only=True)
                   for path in _source_paths(source)]
        if not confined:
            _log.warning("sandbox not confined", reason=why_not)
        return sandbox.model_copy(update={
            "provider": self.name,
            "confined": confined,
            # Without a source (an activity called directly) the archive is unknown: the
            # server runs on the host's paths, in its own network namespace only.
            "mounts": mounts if confined and source is not None else [],
            "limits": SandboxLimits(memory_mb=options.memory_mb, cpus=options.cpus,
                                    pids=options.pids),
            "isolation": isolation_of(confined, why_not, options, mounts)
            if source is not None or not confined else _network_only(options),
        })

    def server(self, sandbox: Sandbox) -> LocalServer:
        return LocalServer(runtime=self.runtime, data_dir=Path(sandbox.data_dir),
                           socket_dir=Path(sandbox.socket_dir), port=sandbox.port,
                           log_file=Path(sandbox.log_file), sandbox=sandbox)

    def teardown(self, sandbox: Sandbox) -> int | None:
        pid = stop_for_teardown(self.server(sandbox), f"the sandbox server of {sandbox.root}")
        _stop_stragglers(sandbox)
        return pid

    def held(self) -> list[HeldSandbox]:
        """Every directory under the sandbox root (local and docker sandboxes alike: both
        keep their data there), with its record and any server still running in it."""
        root = self.settings.root
        found = []
        try:
            entries = sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())
        except OSError:
            return []
        for path in entries:
            record = read_record(path)
            if record is None and not _cut_short(path):
                continue  # not a sandbox: never listed, never reaped
            if record is None:
                created = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
                found.append(HeldSandbox(
                    drill_id=path.name, provider="local", root=str(path), created_at=created,
                    complete=False, server_pid=_postmaster(path / "data")))
                continue
            found.append(HeldSandbox(
                drill_id=record.drill_id, provider=record.provider, root=str(path),
                created_at=record.created_at or datetime.fromtimestamp(
                    (path / RECORD).stat().st_mtime, timezone.utc),
                kept_until=record.kept_until, purpose=record.purpose,
                server_pid=_postmaster(Path(record.data_dir)) if record.provider == "local"
                else None))
        return found

    def release(self, held: HeldSandbox) -> None:
        """Stop the server still running in a local sandbox (docker's are containers)."""
        if held.root is None:
            return
        record = read_record(Path(held.root))
        if record is not None and record.provider != self.name:
            return
        data_dir = Path(record.data_dir) if record else Path(held.root) / "data"
        if _postmaster(data_dir) is not None:
            self.runtime.run("pg_ctl", "stop", "-D", str(data_dir), "-m", "immediate", "-w",
                             check=False)
        if _postmaster(data_dir) is not None:
            raise DrillError(ErrorCode.SANDBOX_FAILED,
                             f"the server of {held.root} did not stop")


# What a provision cut short can have made before its record: a directory holding anything
# else is not a sandbox (the sandbox root may be shared), and the reaper leaves it alone.
_PROVISION_MAKES = {"data", "socket", "pg_hba.conf", "pg_ident.conf", f".{RECORD}.partial"}


def _stop_stragglers(sandbox: Sandbox) -> None:
    """Kill what the server started that outlives it, e.g. pgBackRest's asynchronous
    archive-get filling its queue: anything whose command line names a path in the sandbox
    (a container's processes go with the container)."""
    inside = (sandbox.root.rstrip("/") + "/").encode()
    for pid in live_processes(
            lambda state: any(inside in arg for arg in command_line(state.pid))):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            _log.info("sandbox straggler killed", pid=pid, sandbox=sandbox.root)


def _cut_short(path: Path) -> bool:
    try:
        return {entry.name for entry in path.iterdir()} <= _PROVISION_MAKES
    except OSError:
        return False


def _network_only(options: SandboxOptions) -> SandboxIsolation:
    isolation = isolation_of(True, None, options, [])
    for prop in isolation.properties:
        if prop.name in ("private_filesystem", "archive_read_only"):
            prop.enforced = False
            prop.detail = "not enforced: no backup source was named at provision, so the " \
                          "server runs on the host's paths (own network namespace only)"
    return isolation


def _postmaster(data_dir: Path) -> int | None:
    """The live postmaster of data_dir on this host: its pid file names it, and its command
    line names data_dir (a container's pid file names a pid of another namespace)."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    if not is_alive(pid):
        return None
    arguments = command_line(pid)
    return pid if str(data_dir).encode() in b" ".join(arguments) else None
