"""Sandboxes: one private directory per drill holding the data, socket, log and auth files.

Provision and teardown are idempotent: a retried activity finds its own sandbox by drill id.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

import structlog
from temporalio import activity

from activities.boundary import activity_boundary
from activities.models import Sandbox, SandboxRequest, TeardownResult
from adapters.pg_runtime import PostgresRuntime, remove_tree
from adapters.pg_server import PostgresServer, free_port
from domain.errors import DrillError, ErrorCode

_log = structlog.get_logger("pitrdrill.sandbox")
_SAFE_ID = re.compile(r"[^A-Za-z0-9_.-]")


def server_of(sandbox: Sandbox, runtime: PostgresRuntime) -> PostgresServer:
    return PostgresServer(
        runtime=runtime,
        data_dir=Path(sandbox.data_dir),
        socket_dir=Path(sandbox.socket_dir),
        port=sandbox.port,
        log_file=Path(sandbox.log_file),
    )


def _empty_destination(destination: str | None) -> Path | None:
    """A recovery's data directory must be absent or empty: refused before anything is
    written, so nothing that was there can be lost."""
    if destination is None:
        return None
    path = Path(destination)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise DrillError(ErrorCode.DESTINATION_NOT_EMPTY,
                         f"destination {path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        raise DrillError(ErrorCode.DESTINATION_NOT_EMPTY,
                         f"destination {path} is not empty: {len(list(path.iterdir()))} entries")
    return path


class SandboxActivities:
    """`host_queue` is this host's own task queue: provision runs on the shared queue (any
    host may take a new sandbox) and returns it, so that everything after runs here."""

    def __init__(self, runtime: PostgresRuntime, root: Path, host_queue: str) -> None:
        self._runtime = runtime
        self._root = root
        self._host_queue = host_queue

    def _dir_for(self, drill_id: str) -> Path:
        """One directory per drill, always directly under the root: teardown removes it."""
        name = _SAFE_ID.sub("_", drill_id)
        if name.strip(".") == "":
            raise DrillError(ErrorCode.SANDBOX_FAILED,
                             f"drill id {drill_id!r} cannot name a sandbox directory")
        return self._root / name

    @activity.defn(name="provision_sandbox")
    @activity_boundary
    def provision(self, request: SandboxRequest) -> Sandbox:
        root = self._dir_for(request.drill_id)
        record = root / "sandbox.json"
        if record.exists():  # a retry: the same sandbox, not a second one
            existing = Sandbox.model_validate_json(record.read_text())
            if existing.drill_id != request.drill_id:
                raise DrillError(ErrorCode.SANDBOX_FAILED,
                                 f"{root} belongs to drill {existing.drill_id!r}")
            return existing
        destination = _empty_destination(request.destination)
        try:
            self._runtime.make_private_dir(self._root, 0o755)
            self._runtime.make_private_dir(root, 0o755)
            sandbox = Sandbox(
                drill_id=request.drill_id,
                root=str(root),
                data_dir=str(self._runtime.make_private_dir(destination or root / "data")),
                purpose="recovery" if destination else "drill",
                socket_dir=str(self._runtime.make_private_dir(root / "socket")),
                log_file=str(root / "postgres.log"),
                port=free_port(),
                task_queue=self._host_queue,
            )
            (root / "pg_hba.conf").write_text("# pitrdrill sandbox: private socket only\n"
                                              "local all all trust\n")
            (root / "pg_ident.conf").write_text("")
            for name in ("pg_hba.conf", "pg_ident.conf"):
                self._runtime.give(root / name)
            record.write_text(sandbox.model_dump_json(indent=2))
            _log.info("sandbox provisioned", root=str(root), port=sandbox.port)
        except OSError as exc:
            raise DrillError(ErrorCode.SANDBOX_FAILED, f"cannot create {root}: {exc}") from exc
        return sandbox

    @activity.defn(name="teardown_sandbox")
    @activity_boundary
    def teardown(self, sandbox: Sandbox) -> TeardownResult:
        server = server_of(sandbox, self._runtime)
        pid = server.pid()
        # The copy is disposable: no need to wait for a clean shutdown checkpoint.
        server.stop("immediate")
        if server.pid() is not None:
            raise RuntimeError(f"the sandbox server {pid} is still running; retrying")
        remove_tree(Path(sandbox.root))
        if Path(sandbox.root).exists():
            raise RuntimeError(f"{sandbox.root} could not be removed yet; retrying")
        if sandbox.purpose == "recovery":
            # The destination was absent or empty before: leave it empty, never half-restored.
            for entry in Path(sandbox.data_dir).iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    remove_tree(entry)
                else:
                    entry.unlink()
        _log.info("sandbox torn down", root=sandbox.root, stopped_pid=pid)
        return TeardownResult(
            removed=not Path(sandbox.root).exists(),
            stopped_pid=pid,
            finished_at=datetime.now(timezone.utc),
        )
