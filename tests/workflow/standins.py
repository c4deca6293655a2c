"""Stand-in activities for DrillWorkflow: the real activity names and pydantic models, canned
results, and behaviours each test picks (fail, block until cancelled, ignore a cancel).

Each test builds its own StandIns with a unique shared queue and host queue, runs them with
`running(...)`, and reads back what every activity was called with (`calls`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime, timedelta, timezone
from typing import Literal

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from activities.models import (
    ChecksRequest,
    ChecksResult,
    EscalationNotice,
    LedgerEntry,
    LedgerReceipt,
    Metrics,
    NotifyResult,
    PlanRequest,
    PlanResult,
    ReplayRequest,
    ReplayResult,
    ResolveTargetRequest,
    ResolveTargetResult,
    RestoreRequest,
    RestoreResult,
    Sandbox,
    SandboxRequest,
    TeardownResult,
)
from domain.catalog import BaseBackup
from domain.lsn import parse_lsn
from domain.plan import DrillPlan, RestorableWindow
from domain.prediction import CommitRef, Prediction, StopPoint
from domain.report import CheckResult, Recovered
from domain.targets import resolve_target
from domain.timelines import TimelineHistory
from workflows.drill import DrillWorkflow

UTC = timezone.utc
# The WAL index summary a plan carries (its model lives with the WAL indexer).
IndexResult = PlanResult.model_fields["index"].annotation

# The demo's incident (README): backup `nightly`, last kept xid 731, first dropped xid 732.
BACKUP = BaseBackup(
    id="nightly", path="/backups/base/nightly", timeline=1, start_lsn="0/2000028",
    stop_lsn="0/2000100", start_time=datetime(2026, 11, 22, 4, 40, 12, tzinfo=UTC),
    stop_time=datetime(2026, 11, 22, 4, 40, 13, tzinfo=UTC), size_bytes=47_800_000,
    has_manifest=True,
)
LAST_KEPT = CommitRef(xid=731, lsn="0/3028E30",
                      commit_time=datetime(2026, 11, 22, 4, 46, 29, 893772, tzinfo=UTC))
FIRST_DROPPED = CommitRef(xid=732, lsn="0/302DC90",
                          commit_time=datetime(2026, 11, 22, 4, 46, 30, 16509, tzinfo=UTC))
PREDICTED_STOP_LSN = "0/302DC90"
PREDICTION = Prediction(
    stop=StopPoint(after=False, record_lsn=FIRST_DROPPED.lsn, record="commit of xid 732"),
    last_kept=LAST_KEPT, first_dropped=FIRST_DROPPED, replay_lsn=PREDICTED_STOP_LSN,
    last_xact_replay_time=LAST_KEPT.commit_time,
    reason="the first commit at or after the target time is xid 732 (exclusive)",
)
INDEX = IndexResult(segments=4, segments_indexed=2, events_indexed=3100, bytes_indexed=2 * (16 << 20),
                    seconds=0.05, timelines=[TimelineHistory(timeline=1)])
REPLAY_CHECK_EVERY_S = 0.05

Restore = Literal["ok", "ignores_cancel"]
Replay = Literal["ok", "blocks", "unreachable"]
Checks = Literal["pass", "crash"]


def canned_plan() -> DrillPlan:
    return DrillPlan(
        backup=BACKUP, predicted=PREDICTION, restore_bytes=BACKUP.size_bytes,
        replay_bytes=parse_lsn(PREDICTED_STOP_LSN) - parse_lsn(BACKUP.start_lsn),
        window=RestorableWindow(earliest_lsn=BACKUP.stop_lsn, earliest_time=BACKUP.stop_time,
                                latest=FIRST_DROPPED),
        estimate_seconds=4.2,
    )


def recovered_as_predicted() -> Recovered:
    return Recovered(replay_lsn=PREDICTED_STOP_LSN, last_commit_time=LAST_KEPT.commit_time,
                     stop_reason="recovery stopping before commit of transaction 732, time "
                                 "2026-11-22 04:46:30.016509+00", in_recovery=True)


def wal_gap() -> ApplicationError:
    """As activities/boundary.py turns DrillError(WAL_GAP) into a Temporal failure."""
    return ApplicationError("segment 000000010000000000000003 is missing from the archive",
                            "Restore the segment into the archive, or use a fallback.",
                            type="WAL_GAP", non_retryable=True)


class StandIns:
    """One test's activities. Behaviours are plain attributes, set before the drill starts."""

    def __init__(self, task_queue: str, *, plan_failures: list[BaseException] | None = None,
                 restore: Restore = "ok", replay: Replay = "ok", checks: Checks = "pass") -> None:
        self.task_queue = task_queue
        self.host_queue = f"{task_queue}@standin-host"
        # Raised by successive plan_drill calls; once empty, plans succeed.
        self.plan_failures = list(plan_failures or [])
        # When set, plan_drill waits for it first (the drill sits in stage `plan`).
        self.plan_gate: asyncio.Event | None = None
        self.restore, self.replay, self.checks = restore, replay, checks
        # Activities (by name) that, once called, wait until they are cancelled.
        self.hang: set[str] = set()
        self.calls: dict[str, list] = defaultdict(list)
        self.replay_release = asyncio.Event()
        self.replay_cancelled = asyncio.Event()
        self.restore_finished = threading.Event()

    def called(self, name: str) -> list:
        return self.calls[name]

    async def _hang_if_asked(self, name: str) -> None:
        if name in self.hang:
            await asyncio.Event().wait()  # until the activity is cancelled

    # --- shared queue --------------------------------------------------------------------------

    @activity.defn(name="resolve_target")
    async def resolve_target(self, request: ResolveTargetRequest) -> ResolveTargetResult:
        self.calls["resolve_target"].append(request)
        resolved = resolve_target(request.target, datetime.now(UTC))
        return ResolveTargetResult(target=resolved, seconds=0.001)

    @activity.defn(name="plan_drill")
    async def plan_drill(self, request: PlanRequest) -> PlanResult:
        self.calls["plan_drill"].append(request)
        if self.plan_gate is not None:
            await self.plan_gate.wait()
        if self.plan_failures:
            raise self.plan_failures.pop(0)
        return PlanResult(plan=canned_plan(), index=INDEX, seconds=0.02)

    @activity.defn(name="record_throughput")
    async def record_throughput(self, metrics: Metrics) -> None:
        self.calls["record_throughput"].append(metrics)
        await self._hang_if_asked("record_throughput")

    @activity.defn(name="provision_sandbox")
    async def provision(self, request: SandboxRequest) -> Sandbox:
        self.calls["provision_sandbox"].append(request)
        root = f"/var/tmp/pitrdrill/sandboxes/{request.drill_id}"
        return Sandbox(drill_id=request.drill_id, root=root, data_dir=f"{root}/data",
                       socket_dir=f"{root}/socket", log_file=f"{root}/postgres.log", port=5432,
                       task_queue=self.host_queue)

    @activity.defn(name="notify_escalation")
    async def notify(self, notice: EscalationNotice) -> NotifyResult:
        self.calls["notify_escalation"].append(notice)
        await self._hang_if_asked("notify_escalation")
        return NotifyResult(delivered=["webhook https://hooks.example/pitr"], failed=[])

    @activity.defn(name="append_to_ledger")
    async def append_to_ledger(self, entry: LedgerEntry) -> LedgerReceipt:
        self.calls["append_to_ledger"].append(entry)
        return LedgerReceipt(ledger="stand-in", appended=True)

    # --- host queue ----------------------------------------------------------------------------

    @activity.defn(name="restore_base_backup")
    async def restore_base_backup(self, request: RestoreRequest) -> RestoreResult:
        self.calls["restore_base_backup"].append(request)
        return RestoreResult(files=1250, bytes_restored=request.backup.size_bytes, seconds=0.01)

    @activity.defn(name="restore_base_backup")
    def restore_ignoring_cancel(self, request: RestoreRequest) -> RestoreResult:
        """A sync activity that never heartbeats: it cannot learn of a cancel, and finishes."""
        self.calls["restore_base_backup"].append(request)
        time.sleep(2)
        self.restore_finished.set()
        return RestoreResult(files=1250, bytes_restored=request.backup.size_bytes, seconds=2.0)

    @activity.defn(name="replay_to_target")
    async def replay_to_target(self, request: ReplayRequest) -> ReplayResult:
        self.calls["replay_to_target"].append(request)
        if self.replay == "unreachable":
            raise ApplicationError(
                "recovery ended before reaching the target: the archive ends at 0/3000000",
                "Check the archive holds every segment up to the target.",
                type="RECOVERY_TARGET_NOT_REACHED", non_retryable=True)
        if self.replay == "blocks":
            try:
                while not self.replay_release.is_set():
                    activity.heartbeat({"replay_lsn": "0/3000000"})
                    await asyncio.sleep(REPLAY_CHECK_EVERY_S)
            except asyncio.CancelledError:
                self.replay_cancelled.set()
                raise
        return ReplayResult(recovered=recovered_as_predicted(), seconds=0.01)

    @activity.defn(name="run_checks")
    async def run_checks(self, request: ChecksRequest) -> ChecksResult:
        self.calls["run_checks"].append(request)
        if self.checks == "crash":
            raise RuntimeError("server closed the connection unexpectedly")
        return ChecksResult(results=[CheckResult(name=c.name, passed=True, observed=c.expect,
                                                 expected=c.expect) for c in request.checks],
                            seconds=0.01)

    @activity.defn(name="teardown_sandbox")
    async def teardown(self, sandbox: Sandbox) -> TeardownResult:
        self.calls["teardown_sandbox"].append(sandbox)
        return TeardownResult(removed=True, stopped_pid=4242, finished_at=datetime.now(UTC))

    # --- workers -------------------------------------------------------------------------------

    def shared_activities(self) -> list:
        return [self.resolve_target, self.plan_drill, self.record_throughput, self.provision,
                self.notify, self.append_to_ledger]

    def host_activities(self) -> list:
        restore = self.restore_ignoring_cancel if self.restore == "ignores_cancel" \
            else self.restore_base_backup
        return [restore, self.replay_to_target, self.run_checks, self.teardown]


@asynccontextmanager
async def running(client: Client, stand_ins: StandIns, *, host: bool = True):
    """The shared-queue worker (DrillWorkflow and the shared activities) and, unless the test
    loses the host, the host-queue worker the stand-in provision names."""
    with ThreadPoolExecutor(4) as executor:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(Worker(
                client, task_queue=stand_ins.task_queue, workflows=[DrillWorkflow],
                activities=stand_ins.shared_activities(), activity_executor=executor))
            if host:
                await stack.enter_async_context(Worker(
                    client, task_queue=stand_ins.host_queue,
                    activities=stand_ins.host_activities(), activity_executor=executor,
                    # Heartbeats reach the server (and cancels reach the activity) promptly.
                    max_heartbeat_throttle_interval=timedelta(milliseconds=200),
                    default_heartbeat_throttle_interval=timedelta(milliseconds=200)))
            yield stand_ins
