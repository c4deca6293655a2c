"""The activities against real PostgreSQL, run in the SDK's ActivityEnvironment (no server):
resumable restore, and each runtime failure surfacing as its typed, non-retryable code."""

from __future__ import annotations

import dataclasses
import os
import uuid
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from adapters.filesystem_backups import FilesystemBackups
from activities.models import ReplayRequest, RestoreRequest, Sandbox, SandboxRequest
from adapters.pg_runtime import PostgresRuntime
from activities.replay import ReplayActivities
from adapters.base_copy import restore_plan
from activities.restore import RestoreActivities
from activities.sandbox import SandboxActivities
from domain.spec import FilesystemSource
from domain.targets import ResolvedTarget
from tests.conftest import Scenario, postgres_processes_under


@pytest.fixture
def sandboxes(sandbox_root: Path, runtime: PostgresRuntime) -> SandboxActivities:
    return SandboxActivities(runtime, sandbox_root, "test@host")


@pytest.fixture
def sandbox(sandboxes: SandboxActivities, sandbox_root: Path):
    env = ActivityEnvironment()
    created = env.run(sandboxes.provision, SandboxRequest(drill_id=f"it-{uuid.uuid4().hex[:8]}"))
    yield created
    env.run(sandboxes.teardown, created)
    assert postgres_processes_under(Path(created.root)) == [] and not Path(created.root).exists()


def first_backup(scenario: Scenario):
    backups = FilesystemBackups.read(scenario.lab.base_backups, scenario.lab.wal_archive)
    return next(b for b in backups if b.id == "first")


def raises_code(code: str, fn, *args) -> ApplicationError:
    with pytest.raises(ApplicationError) as raised:
        ActivityEnvironment().run(fn, *args)
    assert raised.value.type == code and raised.value.non_retryable
    return raised.value


def restored(sources, scenario, sandbox: Sandbox) -> None:
    ActivityEnvironment().run(RestoreActivities(sources).restore_base_backup, RestoreRequest(
        sandbox=sandbox, backup=first_backup(scenario), source=filesystem(scenario)))


def filesystem(scenario: Scenario) -> FilesystemSource:
    return FilesystemSource(**{k: v for k, v in scenario.source().items() if k != "kind"})


def test_provision_is_idempotent_per_drill(sandboxes: SandboxActivities, sandbox: Sandbox):
    again = ActivityEnvironment().run(sandboxes.provision, SandboxRequest(drill_id=sandbox.drill_id))
    assert again == sandbox


def test_restore_resumes_after_the_files_its_heartbeat_recorded(sources, scenario, sandbox):
    restore = RestoreActivities(sources).restore_base_backup
    request = RestoreRequest(sandbox=sandbox, backup=first_backup(scenario),
                             source=filesystem(scenario))
    beats = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details[0])
    whole = env.run(restore, request)
    assert beats[-1].files_done == whole.files and whole.bytes_restored > 40_000_000
    _, planned = restore_plan(Path(request.backup.path))
    last = Path(sandbox.data_dir, planned[-1])
    last.unlink()
    # A retry whose heartbeat says all but the last file are done copies only the rest.
    files = sorted(p for p in Path(sandbox.data_dir).rglob("*") if p.is_file())
    untouched = {p: p.stat().st_mtime_ns for p in files}
    retry = ActivityEnvironment()
    retry.info = dataclasses.replace(retry.info, heartbeat_details=[
        {"files_done": whole.files - 1, "bytes_done": whole.bytes_restored - 8192}])
    resumed = retry.run(restore, request)
    assert resumed.files == whole.files and resumed.bytes_restored == whole.bytes_restored
    assert last.exists()
    assert all(p.stat().st_mtime_ns == ns for p, ns in untouched.items() if p.name != "recovery.signal")


def test_restore_of_a_missing_backup_is_restore_failed(sources, scenario, sandbox):
    gone = first_backup(scenario).model_copy(update={"path": "/var/tmp/no-such-backup"})
    error = raises_code("RESTORE_FAILED", RestoreActivities(sources).restore_base_backup,
                        RestoreRequest(sandbox=sandbox, backup=gone, source=filesystem(scenario)))
    assert "/var/tmp/no-such-backup" in error.message


def test_a_sandbox_root_that_cannot_be_created_is_sandbox_failed(runtime, work_root):
    blocker = work_root / "a-file"
    blocker.write_text("")
    error = raises_code("SANDBOX_FAILED", SandboxActivities(runtime, blocker / "sandboxes", "test@host").provision,
                        SandboxRequest(drill_id="x"))
    assert str(blocker) in error.message


def test_a_target_the_archive_never_reaches_is_recovery_target_not_reached(
        runtime, sources, scenario, sandbox):
    restored(sources, scenario, sandbox)
    never = ResolvedTarget(mode="xid", xid=4_000_000_000)
    error = raises_code("RECOVERY_TARGET_NOT_REACHED",
                        ReplayActivities(runtime, sources).replay_to_target,
                        ReplayRequest(sandbox=sandbox, target=never, source=filesystem(scenario),
                                      db_user="postgres"))
    assert "xid 4000000000" in error.message


def test_a_server_that_cannot_start_is_recovery_failed_with_its_log(runtime, sources, scenario,
                                                                   sandbox):
    restored(sources, scenario, sandbox)
    os.remove(Path(sandbox.data_dir, "global", "pg_control"))
    error = raises_code("RECOVERY_FAILED", ReplayActivities(runtime, sources).replay_to_target,
                        ReplayRequest(sandbox=sandbox, target=ResolvedTarget(mode="immediate"),
                                      source=filesystem(scenario), db_user="postgres"))
    assert "pg_control" in error.message
