"""The composition root: real adapters wired into activities, registered on this host's workers.

A pitrdrill worker process runs two Temporal workers: one on the shared task queue (drill
workflows, target resolution, planning, provisioning a new sandbox) and one on this host's own
queue `<shared>@<host id>` (everything that touches a sandbox this host holds). The host id
must stay the same across restarts of the worker on one host, so that a restarted worker picks
up its sandboxes' work again.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from activities.checks import CheckActivities
from activities.escalation import EscalationNotifier
from activities.ledger import LedgerActivities
from activities.planning import PlanningActivities
from activities.probe import ProbeActivities
from activities.promotion import PromotionActivities
from activities.replay import ReplayActivities
from activities.restore import RestoreActivities
from activities.sandbox import SandboxActivities
from activities.targets import TargetActivities
from activities.warm import WarmActivities
from adapters.filesystem_backups import FilesystemBackups
from adapters.pg_runtime import PostgresRuntime
from adapters.pgbackrest_cli import PgBackRest, PgBackRestRunner
from adapters.pgbackrest_source import PgBackRestBackups
from adapters.preflight import Preflight
from adapters.reachability import ensure_reachable
from adapters.sandbox_providers import ProviderSettings, SandboxProviders
from adapters.sources import BackupSources
from adapters.throughput_history import ThroughputHistory
from adapters.wal_index import WalIndex
from adapters.wal_index_store import WalIndexStore
from adapters.waldump import PgWaldump
from workflows import search_attributes
from workflows.bisect import BisectWorkflow
from workflows.drill import DrillWorkflow
from workflows.recovery import RecoveryWorkflow

TASK_QUEUE = "pitrdrill"
HEARTBEAT_THROTTLE = timedelta(seconds=1)


@dataclass(frozen=True)
class WorkerSettings:
    task_queue: str = TASK_QUEUE
    host_id: str = socket.gethostname()
    sandbox_root: Path = Path("/var/tmp/pitrdrill/sandboxes")
    # The WAL index cache: never inside a backup repository or archive.
    index_path: Path = Path("/var/tmp/pitrdrill/wal-index.sqlite")
    runtime: PostgresRuntime = PostgresRuntime()
    max_concurrent_activities: int = 16
    # PITRDRILL_SANDBOX_PROVIDER (local | docker: a spec's sandbox.provider wins) and
    # PITRDRILL_SANDBOX_IMAGE (docker, default pitrdrill/sandbox:15).
    sandbox_provider: str = "local"
    sandbox_image: str = "pitrdrill/sandbox:15"
    # PITRDRILL_LEDGER: where finished drills are appended: a SQLite file path, or a
    # postgresql:// DSN for a team's shared ledger.
    ledger: str = "/var/tmp/pitrdrill/ledger.sqlite"

    @property
    def host_queue(self) -> str:
        return f"{self.task_queue}@{self.host_id}"

    @classmethod
    def from_env(cls, **overrides) -> WorkerSettings:
        settings = cls(
            task_queue=os.environ.get("PITRDRILL_TASK_QUEUE", TASK_QUEUE),
            host_id=os.environ.get("PITRDRILL_HOST_ID", cls.host_id),
            sandbox_root=Path(os.environ.get("PITRDRILL_SANDBOX_ROOT", str(cls.sandbox_root))),
            index_path=Path(os.environ.get("PITRDRILL_INDEX", str(cls.index_path))),
            runtime=PostgresRuntime.from_env(),
            sandbox_provider=os.environ.get("PITRDRILL_SANDBOX_PROVIDER", cls.sandbox_provider),
            sandbox_image=os.environ.get("PITRDRILL_SANDBOX_IMAGE", cls.sandbox_image),
            ledger=os.environ.get("PITRDRILL_LEDGER", cls.ledger),
        )
        return dataclasses.replace(settings, **overrides)


def build_providers(settings: WorkerSettings) -> SandboxProviders:
    """The sandbox providers of this host (adapters/sandbox_providers)."""
    return SandboxProviders(ProviderSettings(
        root=settings.sandbox_root, runtime=settings.runtime,
        default=settings.sandbox_provider, image=settings.sandbox_image))


def build_sources(settings: WorkerSettings) -> BackupSources:
    runtime = settings.runtime
    pgbackrest = PgBackRest(PgBackRestRunner(os_user=runtime.os_user))
    return BackupSources({"filesystem": FilesystemBackups(runtime),
                          "pgbackrest": PgBackRestBackups(pgbackrest)})


def build_planner(settings: WorkerSettings, sources: BackupSources) -> Preflight:
    index = WalIndex(PgWaldump(settings.runtime), WalIndexStore(settings.index_path))
    return Preflight(sources, index, ThroughputHistory(settings.index_path))


def build_workers(client: Client, settings: WorkerSettings) -> list[Worker]:
    """The shared-queue worker and this host's sandbox worker."""
    runtime = settings.runtime
    sources = build_sources(settings)
    ensure_reachable(settings.sandbox_root, runtime.os_user, setting="PITRDRILL_SANDBOX_ROOT")
    sandboxes = SandboxActivities(runtime, settings.sandbox_root, settings.host_queue,
                                  build_providers(settings))
    planning = PlanningActivities(build_planner(settings, sources),
                                  ThroughputHistory(settings.index_path))
    probes = ProbeActivities(runtime, sources, WalIndex(PgWaldump(runtime),
                                                       WalIndexStore(settings.index_path)))
    executor = ThreadPoolExecutor(settings.max_concurrent_activities)
    shared = Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[DrillWorkflow, RecoveryWorkflow, BisectWorkflow],
        activities=[
            TargetActivities().resolve_target,
            planning.plan_drill,
            planning.restorable_window,
            planning.record_throughput,
            sandboxes.provision,
            EscalationNotifier().notify,
            probes.plan_bisection,
            LedgerActivities(settings.ledger).append_to_ledger,
        ],
        activity_executor=executor,
        max_concurrent_activities=settings.max_concurrent_activities,
        # Progress reaches the server each second (the SDK would wait 0.8 x the heartbeat
        # timeout): a retry resumes from it, `drill status` shows it, a cancel arrives.
        max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
    )
    host = Worker(
        client,
        task_queue=settings.host_queue,
        activities=[
            RestoreActivities(sources).restore_base_backup,
            ReplayActivities(runtime, sources).replay_to_target,
            CheckActivities(runtime).run_checks,
            WarmActivities(runtime).warm_cache,
            sandboxes.teardown,
            # A recovery names the host that restores into its destination.
            sandboxes.provision,
            PromotionActivities(runtime, sources).promote,
            probes.list_candidates,
            probes.probe_before,
        ],
        activity_executor=executor,
        max_concurrent_activities=settings.max_concurrent_activities,
        # Progress reaches the server each second (the SDK would wait 0.8 x the heartbeat
        # timeout): a retry resumes from it, `drill status` shows it, a cancel arrives.
        max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
    )
    return [shared, host]


@asynccontextmanager
async def running_workers(client: Client, settings: WorkerSettings):
    """Both workers of this host, running until the block ends."""
    async with AsyncExitStack() as stack:
        for worker in build_workers(client, settings):
            await stack.enter_async_context(worker)
        yield settings


async def ensure_search_attributes(client: Client) -> None:
    """Register the drill's search attributes (idempotent): the UI filters drills by them,
    and a workflow upserting an unknown attribute would fail its task."""
    request = AddSearchAttributesRequest(
        namespace=client.namespace,
        search_attributes={key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
                           for key in search_attributes.ALL})
    try:
        await client.operator_service.add_search_attributes(request)
    except RPCError as exc:
        if exc.status != RPCStatusCode.ALREADY_EXISTS:
            raise
