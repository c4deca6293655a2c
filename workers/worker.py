"""The composition root: real adapters wired into activities, registered on one worker."""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from temporalio.client import Client
from temporalio.worker import Worker

from activities.catalog import FilesystemCatalog
from activities.checks import CheckActivities
from activities.commit_store import CommitStore
from activities.escalation import EscalationNotifier
from activities.pg_runtime import PostgresRuntime
from activities.pgbackrest import PgBackRest, PgBackRestCatalog, PgBackRestRunner
from activities.planning import DrillPlanner
from activities.replay import ReplayActivities
from activities.restore import RestoreActivities
from activities.sandbox import SandboxActivities
from activities.sources import BackupSources
from activities.targets import TargetActivities
from activities.waldump import WalIndexer
from workflows.drill import DrillWorkflow

TASK_QUEUE = "pitrdrill"


@dataclass(frozen=True)
class WorkerSettings:
    task_queue: str = TASK_QUEUE
    sandbox_root: Path = Path("/var/tmp/pitrdrill/sandboxes")
    # The WAL index cache: never inside a backup repository or archive.
    index_path: Path = Path("/var/tmp/pitrdrill/wal-index.sqlite")
    runtime: PostgresRuntime = PostgresRuntime()
    max_concurrent_activities: int = 16

    @classmethod
    def from_env(cls, **overrides) -> WorkerSettings:
        settings = cls(
            task_queue=os.environ.get("PITRDRILL_TASK_QUEUE", TASK_QUEUE),
            sandbox_root=Path(os.environ.get("PITRDRILL_SANDBOX_ROOT", str(cls.sandbox_root))),
            index_path=Path(os.environ.get("PITRDRILL_INDEX", str(cls.index_path))),
            runtime=PostgresRuntime.from_env(),
        )
        return dataclasses.replace(settings, **overrides)


def build_sources(settings: WorkerSettings) -> BackupSources:
    runtime = settings.runtime
    pgbackrest = PgBackRest(PgBackRestRunner(os_user=runtime.os_user))
    return BackupSources({"filesystem": FilesystemCatalog(runtime),
                          "pgbackrest": PgBackRestCatalog(pgbackrest)})


def build_planner(settings: WorkerSettings, sources: BackupSources) -> DrillPlanner:
    store = CommitStore(settings.index_path)
    return DrillPlanner(sources, WalIndexer(settings.runtime, store), store)


def build_worker(client: Client, settings: WorkerSettings) -> Worker:
    runtime = settings.runtime
    sources = build_sources(settings)
    sandboxes = SandboxActivities(runtime, settings.sandbox_root)
    planner = build_planner(settings, sources)
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[DrillWorkflow],
        activities=[
            TargetActivities().resolve_target,
            planner.plan_drill,
            planner.record_throughput,
            sandboxes.provision,
            sandboxes.teardown,
            RestoreActivities(sources).restore_base_backup,
            ReplayActivities(runtime, sources).replay_to_target,
            CheckActivities(runtime).run_checks,
            EscalationNotifier().notify,
        ],
        activity_executor=ThreadPoolExecutor(settings.max_concurrent_activities),
        max_concurrent_activities=settings.max_concurrent_activities,
    )
