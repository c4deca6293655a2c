"""Sandbox providers: where and how a sandbox's PostgreSQL runs.

A provider completes a sandbox's record at provision (is it confined, what it sees of the
host, its limits, what isolation holds), hands out its server (the PostgresServer interface:
start with a settings dict, stop, pid, connect over the sandbox's unix socket, read its log),
tears it down, and lists what it holds on this host so that `pitrdrill sandbox reap` can
remove what a drill left behind. The workflow and the activities see only this interface.

- `local` (local.py): a PostgreSQL process of this host. As root it runs confined: its own
  network namespace (no interface up: nothing in or out) and its own mount namespace (only
  the system directories, read-only, its sandbox directory and the archive, read-only).
- `docker` (docker.py): a container of `pitrdrill/sandbox:15` with no network, the sandbox
  directory bind-mounted (its unix socket is reachable from the host), the archive read-only,
  and the spec's memory, CPU and pids limits.

Every provider starts its server with the hardened preload libraries (see
domain.sandbox.preload_settings), read from the restored configuration at each start.
"""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

import psycopg
import structlog

from adapters.pg_runtime import PostgresRuntime
from domain.errors import DrillError, ErrorCode
from domain.sandbox import PRELOAD_SETTINGS, Sandbox, preload_settings
from domain.spec import BackupSource, SandboxOptions

_log = structlog.get_logger("pitrdrill.sandbox")

RECORD = "sandbox.json"
WARNINGS_FILE = "isolation-warnings.json"
# Replay writes WAL segments fetched from the archive into pg_wal (and, once promoted, new
# ones): room for that beyond the restored files.
REPLAY_HEADROOM_BYTES = 64 * 1024 * 1024


class SandboxServer(Protocol):
    """The PostgresServer interface every provider's server has."""

    data_dir: Path
    socket_dir: Path
    port: int
    log_file: Path

    def start(self, settings: dict[str, str], wait: bool = True, timeout_s: int = 60) -> None: ...

    def stop(self, mode: str = "fast") -> None: ...

    def pid(self) -> int | None: ...

    def conninfo(self, dbname: str = "postgres", user: str = "postgres") -> str: ...

    def connect(self, dbname: str = "postgres", user: str = "postgres") -> psycopg.Connection: ...

    def log_size(self) -> int: ...

    def log_since(self, offset: int) -> str: ...

    def log_tail(self, max_bytes: int = 4000) -> str: ...

    def isolation_warnings(self) -> list[str]: ...


@dataclass
class HeldSandbox:
    """What a provider holds on this host for one drill: a directory, a server, a container."""

    drill_id: str
    provider: str
    root: str | None = None
    created_at: datetime | None = None
    kept_until: datetime | None = None
    purpose: str = "drill"
    complete: bool = True  # False: provision was cut short (no sandbox.json yet)
    server_pid: int | None = None
    containers: list[str] = field(default_factory=list)
    container_state: str | None = None

    def age_seconds(self, now: datetime) -> float | None:
        return None if self.created_at is None else (now - self.created_at).total_seconds()

    def as_json(self, now: datetime) -> dict:
        return {
            "drill_id": self.drill_id, "provider": self.provider, "root": self.root,
            "purpose": self.purpose, "complete": self.complete,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "age_seconds": round(age, 1) if (age := self.age_seconds(now)) is not None else None,
            "kept_until": self.kept_until.isoformat() if self.kept_until else None,
            "server_pid": self.server_pid, "containers": self.containers,
            "container_state": self.container_state,
        }


class SandboxProvider(Protocol):
    name: str

    def provision(self, sandbox: Sandbox, options: SandboxOptions,
                  source: BackupSource | None) -> Sandbox:
        """The sandbox record completed for this provider (confinement, mounts, limits,
        isolation). Raises SANDBOX_PROVIDER_UNAVAILABLE before anything is created."""
        ...

    def server(self, sandbox: Sandbox) -> SandboxServer: ...

    def teardown(self, sandbox: Sandbox) -> int | None:
        """Stop the server and release what the provider holds (not the directory); the pid
        that was stopped. Raises while the server is still running (the activity retries)."""
        ...

    def held(self) -> list[HeldSandbox]:
        """Everything this provider holds on this host (for `sandbox list` / `reap`)."""
        ...

    def release(self, held: HeldSandbox) -> None:
        """Stop and remove what `held` names (not the directory)."""
        ...


# --- the registry ------------------------------------------------------------------------------

PROVIDER_NAMES = ("local", "docker")
DEFAULT_IMAGE = "pitrdrill/sandbox:15"


@dataclass(frozen=True)
class ProviderSettings:
    """How a worker runs sandboxes; from the environment (PITRDRILL_SANDBOX_*)."""

    root: Path = Path("/var/tmp/pitrdrill/sandboxes")
    runtime: PostgresRuntime = field(default_factory=PostgresRuntime)
    default: str = "local"  # PITRDRILL_SANDBOX_PROVIDER
    image: str = DEFAULT_IMAGE  # PITRDRILL_SANDBOX_IMAGE

    def __post_init__(self) -> None:
        if self.default not in PROVIDER_NAMES:
            raise DrillError(ErrorCode.SANDBOX_PROVIDER_UNAVAILABLE,
                             f"PITRDRILL_SANDBOX_PROVIDER={self.default!r}: not one of "
                             f"{', '.join(PROVIDER_NAMES)}")


class SandboxProviders:
    """The providers of one worker, by name; a provider is built when first asked for (the
    docker SDK is only imported, and the daemon only reached, when docker is used)."""

    def __init__(self, settings: ProviderSettings) -> None:
        self.settings = settings
        self._built: dict[str, SandboxProvider] = {}

    @property
    def default(self) -> str:
        return self.settings.default

    def get(self, name: str | None = None) -> SandboxProvider:
        name = name or self.settings.default
        if name not in self._built:
            if name == "local":
                from adapters.sandbox_providers.local import LocalProvider
                self._built[name] = LocalProvider(self.settings)
            elif name == "docker":
                from adapters.sandbox_providers.docker import DockerProvider
                self._built[name] = DockerProvider(self.settings)
            else:
                raise DrillError(ErrorCode.SANDBOX_PROVIDER_UNAVAILABLE,
                                 f"no sandbox provider {name!r} (known: "
                                 f"{', '.join(PROVIDER_NAMES)})")
        return self._built[name]


_BY_RUNTIME: dict[PostgresRuntime, SandboxProviders] = {}


def providers_for(runtime: PostgresRuntime) -> SandboxProviders:
    """The providers a sandbox record needs to be served again (server_of): everything a
    server needs is in the record, so these need no worker configuration."""
    if runtime not in _BY_RUNTIME:
        _BY_RUNTIME[runtime] = SandboxProviders(ProviderSettings(runtime=runtime))
    return _BY_RUNTIME[runtime]


def server_for(sandbox: Sandbox, runtime: PostgresRuntime) -> SandboxServer:
    return providers_for(runtime).get(sandbox.provider).server(sandbox)


# --- what every provider shares ----------------------------------------------------------------


# The files `postgres -D data -C` reads, unless they include others.
_RESTORED_CONFIG = ("postgresql.conf", "postgresql.auto.conf")


def _cannot_preload(data_dir: Path) -> bool:
    """The restored configuration files neither name a preload setting nor include another
    file, so every *_preload_libraries is its default, '' (GUC names are case-insensitive
    words: a file that sets one contains 'preload' in some case). Saves the `postgres -C`
    runs on a backup taken without its configuration (Debian keeps it in /etc)."""
    for name in _RESTORED_CONFIG:
        try:
            text = (data_dir / name).read_text(errors="replace").lower()
            # Only what precedes a '#': a comment sets nothing (initdb's postgresql.conf
            # names every setting in one), and a setting's name comes before any '#' of its
            # line (inside a quoted value or not).
            text = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
        except FileNotFoundError:
            continue
        except OSError:
            return False
        if "preload" in text or "include" in text:
            return False
    return True


def restored_preload(runtime: PostgresRuntime, data_dir: Path) -> dict[str, str | None]:
    """The *_preload_libraries values the restored configuration files give, as PostgreSQL
    itself reads them (`postgres -C`: includes, postgresql.auto.conf, quoting); None for one
    it could not read. Nothing is loaded by `-C`."""
    if _cannot_preload(data_dir):
        return dict.fromkeys(PRELOAD_SETTINGS, "")

    def value(setting: str) -> str | None:
        done = runtime.run("postgres", "-D", str(data_dir), "-C", setting, check=False,
                           timeout=30)
        if done.returncode != 0:
            _log.warning("restored configuration unreadable", setting=setting,
                         error=done.stderr.strip()[-300:])
            return None
        return done.stdout.strip()

    with ThreadPoolExecutor(len(PRELOAD_SETTINGS)) as pool:
        return dict(zip(PRELOAD_SETTINGS, pool.map(value, PRELOAD_SETTINGS)))


def hardened(runtime: PostgresRuntime, sandbox: Sandbox,
             settings: dict[str, str]) -> dict[str, str]:
    """`settings` plus the preload libraries the sandbox may load; the warnings are written
    beside the sandbox for the replay's report (isolation_warnings)."""
    preload, warnings = preload_settings(restored_preload(runtime, Path(sandbox.data_dir)))
    write_json(Path(sandbox.root) / WARNINGS_FILE, warnings)
    for warning in warnings:
        _log.warning("sandbox hardening", change=warning)
    return {**settings, **preload}


def recorded_warnings(sandbox: Sandbox) -> list[str]:
    try:
        return list(json.loads((Path(sandbox.root) / WARNINGS_FILE).read_text()))
    except (OSError, ValueError):
        return []


def write_json(path: Path, value) -> None:
    """Written whole or not at all: a worker killed mid-write leaves the previous file."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(value, indent=2, default=str))
    os.replace(partial, path)


def read_record(root: Path) -> Sandbox | None:
    try:
        return Sandbox.model_validate_json((root / RECORD).read_text())
    except (OSError, ValueError):
        return None


def write_record(sandbox: Sandbox) -> None:
    write_json(Path(sandbox.root) / RECORD, sandbox.model_dump(mode="json"))


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on path's file system (root's reserve
    excluded: the server writes as its OS user)."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def used_bytes(path: Path) -> int:
    total = 0
    for root, _, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def ensure_free_space(data_dir: Path, backup_bytes: int) -> None:
    """SANDBOX_NO_SPACE, with the numbers, when the backup (less what a retry finds already
    restored) and the replay headroom do not fit where the sandbox's data goes."""
    present = used_bytes(data_dir) if data_dir.exists() else 0
    needed = max(backup_bytes - present, 0) + REPLAY_HEADROOM_BYTES
    free = free_bytes(data_dir if data_dir.exists() else data_dir.parent)
    if free < needed:
        raise DrillError(
            ErrorCode.SANDBOX_NO_SPACE,
            f"{data_dir}: needs {needed} bytes ({_mib(needed)}: backup {backup_bytes}, already "
            f"restored {present}, replay headroom {REPLAY_HEADROOM_BYTES}), free {free} bytes "
            f"({_mib(free)})")


def _mib(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MiB"


def remove_dir(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


# --- what this host holds, and the reaper ------------------------------------------------------


def inventory(providers: SandboxProviders) -> tuple[list[HeldSandbox], list[str]]:
    """Every sandbox this host holds, whichever provider made it: the directories under the
    sandbox root (with their record and any server still running there) and the docker
    containers by label, merged per drill. Also what could not be looked at, and why."""
    notes: list[str] = []
    merged: dict[str, HeldSandbox] = {}
    for name in PROVIDER_NAMES:
        try:
            held = providers.get(name).held()
        except DrillError as error:
            notes.append(f"{name}: not listed: {error.message}")
            continue
        for entry in held:
            known = merged.get(entry.drill_id)
            if known is None:
                merged[entry.drill_id] = entry
                continue
            known.containers += entry.containers
            known.container_state = known.container_state or entry.container_state
            known.root = known.root or entry.root
            known.server_pid = known.server_pid or entry.server_pid
            if known.created_at is None:
                known.created_at = entry.created_at
    return sorted(merged.values(), key=lambda e: (e.created_at is None, e.created_at or 0,
                                                  e.drill_id)), notes


def reap_reason(entry: HeldSandbox, now: datetime, older_than_s: float,
                running: set[str]) -> str | None:
    """None when `entry` is an orphan to remove; else why it stays."""
    if entry.purpose == "recovery":
        return "a recovery's server and destination: never reaped"
    if entry.drill_id in running:
        return "its drill is still running"
    if entry.kept_until is not None:
        if now < entry.kept_until:
            return f"kept until {entry.kept_until.isoformat()} (sandbox.keep)"
        return None
    age = entry.age_seconds(now)
    if age is not None and age < older_than_s:
        return f"younger than {older_than_s:g} s ({age:.0f} s)"
    return None


def reap(providers: SandboxProviders, entries: list[HeldSandbox], now: datetime,
         older_than_s: float, running: set[str]) -> tuple[list[HeldSandbox],
                                                          list[tuple[HeldSandbox, str]]]:
    """Remove the orphans among `entries` (containers, servers, directories); returns the
    removed and the kept with their reason (a failed removal is kept, with its error)."""
    removed, kept = [], []
    root = providers.settings.root.resolve()
    for entry in entries:
        reason = reap_reason(entry, now, older_than_s, running)
        if reason is not None:
            kept.append((entry, reason))
            continue
        try:
            if entry.containers:
                providers.get("docker").release(entry)
            providers.get("local").release(entry)
            if entry.root is not None:
                path = Path(entry.root)
                # Only ever a directory directly under this host's sandbox root.
                if path.resolve().parent == root:
                    remove_dir(path)
                    if path.exists():
                        raise OSError(f"{path} could not be removed")
        except (DrillError, OSError) as exc:
            kept.append((entry, f"removal failed: {exc}"))
            continue
        _log.info("sandbox reaped", drill_id=entry.drill_id, root=entry.root,
                  containers=entry.containers)
        removed.append(entry)
    return removed, kept


def stop_for_teardown(server, what: str) -> int | None:
    """Stop a sandbox's server for good, returning the pid it had. The copy is disposable:
    no clean shutdown checkpoint is waited for. Still running: raise, so teardown retries."""
    pid = server.pid()
    server.stop("immediate")
    if server.pid() is not None:
        raise RuntimeError(f"{what} is still running; retrying")
    return pid
