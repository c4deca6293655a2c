"""pitrdrill as it runs for real: an embedded Temporal dev server and one worker in this
process (as tests/e2e do), each drill started and awaited through workers.cli.drill.run_drill; and
the restore activity on its own, in Temporal's ActivityEnvironment, for the restore figure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from contextlib import AsyncExitStack
from pathlib import Path

from temporalio.testing import ActivityEnvironment

from activities.models import RestoreRequest, Sandbox, SandboxRequest
from adapters.pg_runtime import PostgresRuntime
from activities.restore import RestoreActivities
from activities.sandbox import SandboxActivities
from adapters.wal_index_store import WalIndexStore
from bench.dataset import RecoverySet, RecoveryTarget
from bench.trials import Timing
from domain.spec import DrillSpec, FilesystemSource
from workers.cli.drill import run_drill
from workers.client import start_embedded
from workers.worker import WorkerSettings, build_sources, running_workers

OUTSIDE_STAGES = "outside stages"


def _drill_id() -> str:
    return f"bench-{uuid.uuid4().hex[:10]}"


class Pitrdrill:
    def __init__(self, runtime: PostgresRuntime, root: Path, timeout_s: float) -> None:
        self._runtime = runtime
        self._root = root
        self._timeout_s = timeout_s
        # Sandboxes, the WAL index cache and the ledger live under the bench root: removed
        # with it (a bench drill is no drill of the host's), and the first drill meets an
        # empty index, as on a new worker.
        self.settings = dataclasses.replace(
            WorkerSettings.from_env(), task_queue="pitrdrill-bench", runtime=runtime,
            sandbox_root=root / "sandboxes", index_path=root / "wal-index.sqlite",
            ledger=str(root / "ledger.sqlite"),
        )
        self._sources = build_sources(self.settings)  # the adapters the worker uses
        self._stack = AsyncExitStack()
        self._client = None

    async def __aenter__(self) -> Pitrdrill:
        env = await self._stack.enter_async_context(await start_embedded(ui=False))
        self._client = env.client
        await self._stack.enter_async_context(running_workers(env.client, self.settings))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def forget(self) -> None:
        """Empty the worker's WAL index and its record of verified backups: the next drill
        meets the archive as a new worker would (untimed)."""
        WalIndexStore(self.settings.index_path).clear()

    async def cold_drill(self, data: RecoverySet, target: RecoveryTarget) -> Timing:
        """A drill that indexes the whole archive and verifies its backup first."""
        await asyncio.to_thread(self.forget)
        return await self.drill(data, target)

    async def drill(self, data: RecoverySet, target: RecoveryTarget,
                    pgbackrest: bool = False) -> Timing:
        """One drill without checks; parts are its stage_seconds plus the time outside them
        (Temporal scheduling, workflow tasks, the client's wait). `pgbackrest`: from the
        data set's pgBackRest repository instead of its plain backup and archive."""
        spec = DrillSpec.model_validate({
            "database": data.database,
            "source": data.pgbackrest_source() if pgbackrest else data.source(),
            "target": {"lsn": target.lsn, "inclusive": False, "action": "pause"},
        })
        drill_id = _drill_id()
        began = time.perf_counter()
        try:
            report = await asyncio.wait_for(
                run_drill(self._client, spec, drill_id, self.settings.task_queue,
                          show_progress=False), self._timeout_s)
        except TimeoutError:
            # A stuck drill (say, a workflow task failing over and over) must not hang the run.
            await self._client.get_workflow_handle(drill_id).terminate("bench timeout")
            raise RuntimeError(f"drill {drill_id} still running after {self._timeout_s:.0f} s")
        wall = time.perf_counter() - began
        if report.status != "verified":
            raise RuntimeError(f"drill {report.drill_id} {report.status}: {report.errors}")
        stages = dict(report.metrics.stage_seconds)
        return Timing(wall, {**stages, OUTSIDE_STAGES: wall - sum(stages.values())})

    def _source(self, data: RecoverySet, tar: bool = False):
        source = FilesystemSource.model_validate(data.source(tar))
        return source, self._sources.adapter(source)

    def restore(self, data: RecoverySet, tar: bool = False) -> Timing:
        """The restore_base_backup activity alone, as the worker wires it, into a fresh
        sandbox (provision and teardown outside the time); `tar`: from the tar copy."""
        env = ActivityEnvironment()
        sandboxes = SandboxActivities(self._runtime, self._root / "restores", "bench@host")
        sandbox = env.run(sandboxes.provision, SandboxRequest(drill_id=_drill_id()))
        source, adapter = self._source(data, tar)
        request = RestoreRequest(sandbox=sandbox, backup=adapter.backups(source)[0], source=source)
        try:
            began = time.perf_counter()
            env.run(RestoreActivities(self._sources).restore_base_backup, request)
            return Timing(time.perf_counter() - began)
        finally:
            env.run(sandboxes.teardown, sandbox)

    def restore_command(self, data: RecoverySet, home: Path, port: int) -> str:
        """The restore_command a drill's sandbox gets from its source, for a server laid out
        as the bare recovery lays it out (data/ and the socket under `home`)."""
        source, adapter = self._source(data)
        sandbox = Sandbox(drill_id="bench", root=str(home), data_dir=str(home / "data"),
                          socket_dir=str(home), log_file=str(home / "postgres.log"), port=port)
        return adapter.restore_command(source, sandbox)
