"""A resumed restore re-checks what its heartbeat claims; a database or role the backup lacks
fails as soon as the sandbox accepts connections, naming what exists."""

from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.models import ReplayRequest, RestoreRequest, SandboxRequest
from activities.replay import ReplayActivities
from activities.restore import RestoreActivities
from activities.sandbox import SandboxActivities
from adapters.base_copy import restore_plan
from domain.targets import ResolvedTarget
from tests.integration.test_activities import filesystem, first_backup


@pytest.fixture
def sandbox(sandbox_root, runtime):
    sandboxes = SandboxActivities(runtime, sandbox_root, "test@host")
    env = ActivityEnvironment()
    created = env.run(sandboxes.provision, SandboxRequest(drill_id=f"ri-{uuid.uuid4().hex[:8]}"))
    yield created
    env.run(sandboxes.teardown, created)


def _restore(sources, request, claimed: dict | None = None):
    env = ActivityEnvironment()
    if claimed is not None:
        env.info = dataclasses.replace(env.info, heartbeat_details=[claimed])
    return env.run(RestoreActivities(sources).restore_base_backup, request)


def test_a_resumed_restore_recopies_a_claimed_file_that_was_cut_short(sources, scenario, sandbox):
    request = RestoreRequest(sandbox=sandbox, backup=first_backup(scenario),
                             source=filesystem(scenario))
    whole = _restore(sources, request)
    _, planned = restore_plan(Path(request.backup.path))
    manifest = {f["Path"]: f for f in json.loads(
        Path(request.backup.path, "backup_manifest").read_text())["Files"]}
    # Half-way through the plan, a file the manifest checksums: cut it short, as a killed
    # worker would leave a file it was writing.
    victim_index = next(i for i, rel in enumerate(planned)
                        if i > len(planned) // 2 and manifest[rel.as_posix()]["Size"] > 8192)
    victim = Path(sandbox.data_dir, planned[victim_index])
    original = victim.read_bytes()
    victim.write_bytes(original[:4096])
    resumed = _restore(sources, request, {"files_done": whole.files, "bytes_done": 0})
    assert resumed.files_resumed == victim_index
    assert victim.read_bytes() == original
    assert resumed.bytes_restored == whole.bytes_restored

    # Same size, other bytes: only the manifest's checksum can tell.
    victim.write_bytes(b"\0" * len(original))
    resumed = _restore(sources, request, {"files_done": whole.files, "bytes_done": 0})
    assert resumed.files_resumed == victim_index
    assert victim.read_bytes() == original

    # Nothing wrong: every claimed file is kept.
    resumed = _restore(sources, request, {"files_done": whole.files, "bytes_done": 0})
    assert resumed.files_resumed == whole.files


def _replay_error(runtime, sources, scenario, sandbox, **names) -> ApplicationError:
    _restore(sources, RestoreRequest(sandbox=sandbox, backup=first_backup(scenario),
                                     source=filesystem(scenario)))
    request = ReplayRequest(sandbox=sandbox, target=ResolvedTarget(mode="latest"),
                            source=filesystem(scenario), **names)
    with pytest.raises(ApplicationError) as raised:
        ActivityEnvironment().run(ReplayActivities(runtime, sources).replay_to_target, request)
    return raised.value


def test_a_database_the_backup_lacks_fails_naming_those_it_has(runtime, sources, scenario,
                                                               sandbox):
    error = _replay_error(runtime, sources, scenario, sandbox, database="dmeo")
    assert error.type == "DATABASE_NOT_FOUND" and error.non_retryable
    assert "'dmeo'" in error.message and scenario.database in error.message
    assert "postgres" in error.message


def test_a_role_the_backup_lacks_fails_naming_the_login_roles(runtime, sources, scenario,
                                                              sandbox):
    error = _replay_error(runtime, sources, scenario, sandbox, database=scenario.database,
                          db_user="auditor")
    assert error.type == "ROLE_NOT_FOUND" and error.non_retryable
    assert "'auditor'" in error.message and "postgres" in error.message
