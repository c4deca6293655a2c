"""The docker provider: the sandbox server runs in a container of `pitrdrill/sandbox:15`.

Each start of the server is one container, named after the drill, whose main process is
`postgres` with the sandbox's settings on its command line (docker's init reaps children):

- network_mode none: no interface but a loopback of its own; nothing in or out;
- the sandbox directory bind-mounted read-write at /sandbox (data/, socket/, the log): the
  host reaches the server through the unix socket in it; the WAL archive read-only at
  /archive (a pgBackRest repository: /backup, its config /etc/pitrdrill/pgbackrest.conf),
  and nothing else of the host. restore_command names the in-container paths;
- a read-only root file system (a tmpfs /tmp), every capability dropped, no-new-privileges,
  the host's postgres uid/gid (the data directory's owner);
- the spec's memory_mb (no swap beyond it), cpus and pids (default 1024) limits;
- labels pitrdrill.drill_id, pitrdrill.created, pitrdrill.ttl (the keep, in seconds),
  pitrdrill.root, pitrdrill.host (the host's task queue): `pitrdrill sandbox reap` finds
  them.

A recovery is refused: it is promoted in place and must be reachable once approved.
"""

from __future__ import annotations

import functools
import os
import pwd
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import structlog

from adapters.pg_server import PostgresServer
from adapters.sandbox_providers import (
    HeldSandbox,
    ProviderSettings,
    hardened,
    recorded_warnings,
    stop_for_teardown,
)
from adapters.sandbox_providers.local import common_properties
from domain.errors import DrillError, ErrorCode
from domain.sandbox import IsolationProperty, Sandbox, SandboxIsolation, SandboxLimits, SandboxMount
from domain.spec import BackupSource, FilesystemSource, PgBackRestSource, SandboxOptions

_log = structlog.get_logger("pitrdrill.sandbox")

LABEL = "pitrdrill.drill_id"
IN_SANDBOX, IN_ARCHIVE, IN_BACKUP = "/sandbox", "/archive", "/backup"
PGBACKREST_CONFIG = "/etc/pitrdrill/pgbackrest.conf"
DEFAULT_PIDS = 1024
SHM_SIZE = "256m"
# pg_ctl's shutdown modes as the signals the postmaster takes them from.
_SIGNALS = {"smart": "SIGTERM", "fast": "SIGINT", "immediate": "SIGQUIT"}
_STOP_WAIT_S = 60
_PM_READY = ("ready", "standby")


def _unavailable(message: str) -> DrillError:
    return DrillError(ErrorCode.SANDBOX_PROVIDER_UNAVAILABLE, message)


@functools.cache
def _sdk():
    try:
        import docker
    except ImportError as exc:
        raise _unavailable("the docker provider needs the `docker` Python package "
                           "(pip install docker)") from exc
    return docker


_clients = threading.local()


def client():
    """A client of the local daemon (DOCKER_HOST etc. from the environment), one per thread
    (activities run in a thread pool; building one asks the daemon for its API version)."""
    docker = _sdk()
    if getattr(_clients, "client", None) is None:
        try:
            _clients.client = docker.from_env(timeout=60)
        except docker.errors.DockerException as exc:
            raise _unavailable(f"Docker is not reachable: {exc}") from exc
    return _clients.client


def _server_user(os_user: str) -> str:
    """uid:gid owning the sandbox's files on the host: the server user's when we are root
    (runtime.give hands them over), else our own."""
    if os.geteuid() == 0:
        entry = pwd.getpwnam(os_user)
        return f"{entry.pw_uid}:{entry.pw_gid}"
    return f"{os.getuid()}:{os.getgid()}"


def container_name(drill_id: str) -> str:
    safe = "".join(c if c.isalnum() or c in "_.-" else "_" for c in drill_id)
    return f"pitrdrill-sandbox-{safe}"[:200]


def _mounts(sandbox: Sandbox, source: BackupSource | None) -> list[SandboxMount]:
    mounts = [SandboxMount(host=sandbox.root, server=IN_SANDBOX, read_only=False)]
    if isinstance(source, FilesystemSource):
        mounts.append(SandboxMount(host=source.wal_archive, server=IN_ARCHIVE))
    elif isinstance(source, PgBackRestSource):
        mounts.append(SandboxMount(host=source.repo_path, server=IN_BACKUP))
        if source.config:
            mounts.append(SandboxMount(host=source.config, server=PGBACKREST_CONFIG))
    return mounts


def isolation_of(options: SandboxOptions, limits: SandboxLimits,
                 mounts: list[SandboxMount], image: str) -> SandboxIsolation:
    read_only = ", ".join(f"{m.host} at {m.server}" for m in mounts if m.read_only)
    return SandboxIsolation(provider="docker", kept_for_seconds=options.keep_seconds(), properties=[
        IsolationProperty(name="no_network", enforced=True,
                          detail="container with network_mode none: no TCP/UDP connection out "
                                 "or in"),
        IsolationProperty(name="private_filesystem", enforced=True,
                          detail=f"{image}, root file system read-only; of the host only the "
                                 f"sandbox directory (at {IN_SANDBOX}) and the archive"),
        IsolationProperty(name="archive_read_only", enforced=True,
                          detail=f"mounted read-only: {read_only}" if read_only else
                          "no archive mounted"),
        IsolationProperty(name="no_new_privileges", enforced=True,
                          detail="every capability dropped, no-new-privileges"),
        IsolationProperty(name="private_processes", enforced=True,
                          detail="own pid namespace: sees and signals only its own processes"),
        *common_properties(),
        IsolationProperty(name="resource_limits", enforced=True,
                          detail=f"memory_mb={limits.memory_mb or 'unlimited'}, "
                                 f"cpus={limits.cpus or 'unlimited'}, pids={limits.pids}"),
    ])


@dataclass(frozen=True, eq=False)
class DockerServer(PostgresServer):
    """PostgresServer whose process is a container: the data, socket and log stay on the
    host's paths (bind-mounted), so conninfo, connect and the log readers are inherited."""

    sandbox: Sandbox | None = None

    @property
    def name(self) -> str:
        assert self.sandbox is not None
        return container_name(self.sandbox.drill_id)

    def _container(self):
        docker = _sdk()
        try:
            return client().containers.get(self.name)
        except docker.errors.NotFound:
            return None

    def start(self, settings: dict[str, str], wait: bool = True, timeout_s: int = 60) -> None:
        sandbox = self.sandbox
        assert sandbox is not None
        if not sandbox.mounts:
            raise _unavailable("the docker sandbox was provisioned without its mounts (no "
                               "backup source named): it cannot reach the archive")
        settings = hardened(self.runtime, sandbox, settings)
        existing = self._container()
        if existing is not None:
            existing.reload()
            if existing.status == "running":
                raise RuntimeError(f"container {self.name} is already running")
            existing.remove(force=True)
        docker = _sdk()
        limits = sandbox.limits
        command = ["postgres", "-D", sandbox.server_path(sandbox.data_dir),
                   *[f"-c{key}={value}" for key, value in settings.items()]]
        log = sandbox.server_path(str(self.log_file))
        created = sandbox.created_at or datetime.now(timezone.utc)
        try:
            client().containers.run(
                sandbox.image,
                # The server's stderr goes to the sandbox's log file, as pg_ctl -l does.
                ["/bin/sh", "-c", 'exec "$0" "$@" >>"$PITRDRILL_LOG" 2>&1', *command],
                environment={"PITRDRILL_LOG": log},
                name=self.name, detach=True, init=True,
                user=_server_user(self.runtime.os_user), working_dir=IN_SANDBOX,
                network_mode="none", read_only=True,
                tmpfs={"/tmp": "rw,nosuid,nodev,size=64m"}, shm_size=SHM_SIZE,
                cap_drop=["ALL"], security_opt=["no-new-privileges"],
                mounts=[docker.types.Mount(target=m.server, source=m.host, type="bind",
                                           read_only=m.read_only) for m in sandbox.mounts],
                mem_limit=f"{limits.memory_mb}m" if limits.memory_mb else None,
                memswap_limit=f"{limits.memory_mb}m" if limits.memory_mb else None,
                nano_cpus=int(limits.cpus * 1e9) if limits.cpus else None,
                pids_limit=limits.pids or DEFAULT_PIDS,
                labels={LABEL: sandbox.drill_id, "pitrdrill.created": created.isoformat(),
                        "pitrdrill.ttl": str(int(sandbox.keep_seconds or 0)),
                        "pitrdrill.root": sandbox.root, "pitrdrill.host": sandbox.task_queue,
                        "pitrdrill.purpose": sandbox.purpose},
            )
        except docker.errors.ImageNotFound as exc:
            raise _unavailable(f"image {sandbox.image} is missing: run `make images`") from exc
        except docker.errors.APIError as exc:
            raise subprocess.CalledProcessError(1, ["docker", "run", self.name],
                                                stderr=str(exc)) from exc
        _log.info("sandbox container started", container=self.name, image=sandbox.image)
        if wait:
            self._await_ready(timeout_s)

    def _await_ready(self, timeout_s: float) -> None:
        """As pg_ctl -w: until the pid file says the postmaster is ready (or a standby)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
                if len(lines) >= 8 and lines[7].strip() in _PM_READY:
                    return
            except OSError:
                pass
            if self.pid() is None:
                break
            time.sleep(0.05)
        raise subprocess.CalledProcessError(1, ["docker", "start", self.name],
                                            stderr=self.log_tail(1500))

    def stop(self, mode: str = "fast") -> None:
        container = self._container()
        if container is None:
            return
        docker = _sdk()
        try:
            container.reload()
            if container.status == "running":
                container.kill(signal=_SIGNALS.get(mode, "SIGINT"))
                container.wait(timeout=_STOP_WAIT_S)
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except Exception as exc:  # still running after the wait: the caller sees pid()
            _log.warning("sandbox container did not stop", container=self.name, error=str(exc))

    def pid(self) -> int | None:
        """The container's init (host pid) while it runs: the server lives exactly as long."""
        container = self._container()
        if container is None:
            return None
        state = container.attrs.get("State", {})
        return state.get("Pid") or None if state.get("Running") else None

    def isolation_warnings(self) -> list[str]:
        assert self.sandbox is not None
        return recorded_warnings(self.sandbox)


@dataclass
class DockerProvider:
    settings: ProviderSettings
    name: str = "docker"

    def provision(self, sandbox: Sandbox, options: SandboxOptions,
                  source: BackupSource | None) -> Sandbox:
        if sandbox.purpose == "recovery":
            raise _unavailable("a recovery is promoted in place and must be reachable once "
                               "approved: recoveries run on the local provider")
        if source is None:
            raise _unavailable("the docker provider mounts the backup source's archive: "
                               "provision needs the source")
        image = self.settings.image
        docker = _sdk()
        try:
            client().images.get(image)
        except docker.errors.ImageNotFound:
            raise _unavailable(f"image {image} is missing on this host: run `make images`") \
                from None
        except docker.errors.DockerException as exc:
            raise _unavailable(f"Docker is not reachable: {exc}") from exc
        limits = SandboxLimits(memory_mb=options.memory_mb, cpus=options.cpus,
                               pids=options.pids or DEFAULT_PIDS)
        mounts = _mounts(sandbox, source)
        return sandbox.model_copy(update={
            "provider": self.name, "confined": True, "mounts": mounts, "limits": limits,
            "image": image, "isolation": isolation_of(options, limits, mounts, image)})

    def server(self, sandbox: Sandbox) -> DockerServer:
        return DockerServer(runtime=self.settings.runtime, data_dir=Path(sandbox.data_dir),
                            socket_dir=Path(sandbox.socket_dir), port=sandbox.port,
                            log_file=Path(sandbox.log_file), sandbox=sandbox)

    def teardown(self, sandbox: Sandbox) -> int | None:
        server = self.server(sandbox)
        return stop_for_teardown(server, f"container {server.name}")

    def held(self) -> list[HeldSandbox]:
        docker = _sdk()
        try:
            containers = client().containers.list(all=True, filters={"label": LABEL})
        except docker.errors.DockerException as exc:
            raise _unavailable(f"Docker is not reachable: {exc}") from exc
        found = []
        root = self.settings.root.resolve()
        for container in containers:
            labels = container.labels
            # This host's sandbox root only: another worker's root is that worker's business.
            if Path(labels.get("pitrdrill.root", "/")).resolve().parent != root:
                continue
            try:
                created = datetime.fromisoformat(labels.get("pitrdrill.created", ""))
            except ValueError:
                created = None
            state = container.attrs.get("State", {})
            found.append(HeldSandbox(
                drill_id=labels[LABEL], provider=self.name,
                root=labels.get("pitrdrill.root") or None, created_at=created,
                purpose=labels.get("pitrdrill.purpose", "drill"), containers=[container.name],
                container_state=container.status,
                server_pid=state.get("Pid") if state.get("Running") else None))
        return found

    def release(self, held: HeldSandbox) -> None:
        docker = _sdk()
        for name in held.containers:
            try:
                client().containers.get(name).remove(force=True)
            except docker.errors.NotFound:
                pass
