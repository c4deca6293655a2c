"""A sandbox restored and replayed through the real activities, for tests that need one."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from temporalio.testing import ActivityEnvironment

from activities.models import ReplayRequest, RestoreRequest, Sandbox, SandboxRequest
from activities.replay import ReplayActivities
from activities.restore import RestoreActivities
from activities.sandbox import SandboxActivities
from domain.spec import FilesystemSource
from domain.targets import ResolvedTarget


@contextmanager
def replayed_sandbox(runtime, sources, sandbox_root: Path, source: FilesystemSource,
                     backup_id: str, target: ResolvedTarget, database: str,
                     label: str) -> Iterator[Sandbox]:
    """Backup `backup_id` of `source` restored and replayed to `target`; torn down after."""
    sandboxes = SandboxActivities(runtime, sandbox_root, "test@host")
    env = ActivityEnvironment()
    sandbox = env.run(sandboxes.provision,
                      SandboxRequest(drill_id=f"{label}-{uuid.uuid4().hex[:8]}"))
    try:
        backup = next(b for b in sources.adapter(source).backups(source) if b.id == backup_id)
        env.run(RestoreActivities(sources).restore_base_backup,
                RestoreRequest(sandbox=sandbox, backup=backup, source=source))
        env.run(ReplayActivities(runtime, sources).replay_to_target, ReplayRequest(
            sandbox=sandbox, target=target, source=source, database=database))
        yield sandbox
    finally:
        env.run(sandboxes.teardown, sandbox)
