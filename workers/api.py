"""The pitrdrill API for incident tooling and the CLI: start, follow, wait for, cancel and list
drills, and run real recoveries that a human approves, on a Temporal server. Every call takes a client from `workers.client.connect()` (the
one client factory: pydantic data converter, tracing) and raises DrillError with a stable code.

    client = await connect()
    drill_id = await start_drill(client, spec)
    print((await drill_status(client, drill_id)).progress.stage)
    report = await drill_result(client, drill_id)
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone

from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.converter import DataConverter
from pydantic import BaseModel
from temporalio.exceptions import CancelledError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from domain.errors import DrillError, ErrorCode
from domain.escalation import Decision
from domain.recovery import Abort, Approval, RecoveryReport, RecoverySpec
from domain.report import DrillReport
from domain.spec import DrillSpec
from domain.stages import DrillProgress, LiveProgress, live_progress
from domain.targets import mode_label
from workers.worker import TASK_QUEUE
from workflows.drill import DrillWorkflow
from workflows.recovery import RecoveryWorkflow
from workflows.search_attributes import PITR_DATABASE, PITR_STATUS, PITR_TARGET_MODE


# What `drill list` shows: every workflow that restores a backup into a sandbox.
LISTED_KINDS = {"DrillWorkflow": "drill", "RecoveryWorkflow": "recovery",
                "BisectWorkflow": "bisect"}


class DrillListing(BaseModel):
    drill_id: str
    kind: str  # drill | recovery | bisect
    database: str | None
    target_mode: str | None
    status: str | None  # the drill's own (stage, verified, failed, ...)
    workflow_status: str  # Temporal's (RUNNING, COMPLETED, CANCELED, ...)
    started_at: datetime | None
    closed_at: datetime | None


def new_drill_id(spec: DrillSpec) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"drill-{spec.database}-{stamp}-{uuid.uuid4().hex[:6]}"


def _summary(spec: DrillSpec) -> str:
    """The static summary the Temporal UI shows for the drill."""
    return (f"PITR drill of {spec.database} to {mode_label(spec.target)} "
            f"{spec.target.time or spec.target.lsn or spec.target.xid or spec.target.name or ''}"
            f" ({spec.source.kind} source)").replace("  ", " ")


async def start_workflow_once(client: Client, run, argument, workflow_id: str, task_queue: str,
                              database: str, target_mode: str, summary: str) -> str:
    """Start a drill-like workflow (drill, recovery, bisect) with the search attributes the UI
    filters by. Idempotent on its id: an id still running is attached to, and an id that
    already finished is not run again (its result stays readable)."""
    try:
        await client.start_workflow(
            run, argument, id=workflow_id, task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=TypedSearchAttributes([
                SearchAttributePair(PITR_DATABASE, database),
                SearchAttributePair(PITR_TARGET_MODE, target_mode),
                SearchAttributePair(PITR_STATUS, "starting"),
            ]),
            static_summary=summary,
        )
    except WorkflowAlreadyStartedError:
        pass
    return workflow_id


async def start_drill(client: Client, spec: DrillSpec, drill_id: str | None = None,
                      task_queue: str = TASK_QUEUE) -> str:
    """Start a drill and return its id (idempotent on the id)."""
    return await start_workflow_once(client, DrillWorkflow.run, spec,
                                     drill_id or new_drill_id(spec), task_queue, spec.database,
                                     mode_label(spec.target), _summary(spec))


def _handle(client: Client, drill_id: str,
            result_type: type[DrillReport] = DrillReport) -> WorkflowHandle:
    """Drills and recoveries alike: both answer the `status` query and return a report."""
    return client.get_workflow_handle(drill_id, result_type=result_type)


async def drill_result(client: Client, drill_id: str,
                       while_waiting: Callable[[], Awaitable[None]] | None = None,
                       every_s: float = 1.0,
                       result_type: type[DrillReport] = DrillReport) -> DrillReport:
    """Wait for the drill's (or recovery's) report. A cancelled one raises DRILL_CANCELLED; a
    lost server raises TEMPORAL_UNAVAILABLE naming the drill, which goes on without us."""
    handle = _handle(client, drill_id, result_type)
    try:
        result = asyncio.ensure_future(handle.result())
        while not result.done():
            await asyncio.wait([result], timeout=every_s)
            if while_waiting is not None and not result.done():
                await while_waiting()
        return result.result()
    except WorkflowFailureError as exc:
        if isinstance(exc.cause, CancelledError):
            raise DrillError(ErrorCode.DRILL_CANCELLED, f"drill {drill_id} was cancelled; "
                             "its sandbox was torn down") from exc
        raise DrillError(ErrorCode.RECOVERY_FAILED,
                         f"drill {drill_id} failed: {exc.cause}") from exc
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise DrillError(ErrorCode.SPEC_INVALID, f"no drill {drill_id!r} on this server",
                             "List drills with `pitrdrill drill list`.") from exc
        raise DrillError(
            ErrorCode.TEMPORAL_UNAVAILABLE,
            f"lost the Temporal server while waiting for drill {drill_id}: {exc}. The drill "
            "itself goes on (its workers keep working and its history is durable)",
            f"Once the server is back: pitrdrill drill result {drill_id}") from exc


async def drill_progress(client: Client, drill_id: str) -> DrillProgress | None:
    return await _handle(client, drill_id).query("status", result_type=DrillProgress)


async def decide(client: Client, drill_id: str, decision: Decision) -> str:
    """Answer an escalated drill (a Temporal update; refused unless it is waiting)."""
    return await client.get_workflow_handle_for(DrillWorkflow.run, drill_id).execute_update(
        DrillWorkflow.decide, decision)


# --- real recoveries -----------------------------------------------------------------------


async def start_recovery(client: Client, spec: RecoverySpec, recovery_id: str | None = None,
                         task_queue: str = TASK_QUEUE) -> str:
    """Start a recovery into spec.destination; it waits paused for approve_promotion/abort.
    Idempotent on its id like a drill."""
    recovery_id = recovery_id or new_drill_id(spec).replace("drill-", "recovery-", 1)
    return await start_workflow_once(client, RecoveryWorkflow.run, spec, recovery_id, task_queue,
                                     spec.database, mode_label(spec.target),
                                     f"RECOVERY of {spec.database} into {spec.destination}")


async def approve_promotion(client: Client, recovery_id: str, approval: Approval) -> str:
    """Promote a recovery that is waiting (refused before every check passed)."""
    return await _recovery(client, recovery_id).execute_update(RecoveryWorkflow.approve, approval)


async def abort(client: Client, recovery_id: str, abort_: Abort) -> str:
    """Leave a waiting recovery paused and read-only, for inspection."""
    return await _recovery(client, recovery_id).execute_update(RecoveryWorkflow.abort, abort_)


async def recovery_result(client: Client, recovery_id: str) -> RecoveryReport:
    return await drill_result(client, recovery_id, result_type=RecoveryReport)


def _recovery(client: Client, recovery_id: str) -> WorkflowHandle:
    return client.get_workflow_handle_for(RecoveryWorkflow.run, recovery_id)


async def drill_status(client: Client, drill_id: str) -> LiveProgress:
    """The workflow's own status, plus the running activity's last heartbeat (bytes restored,
    replay LSN) turned into a rate and an ETA."""
    handle = _handle(client, drill_id)
    progress = await drill_progress(client, drill_id)
    if progress is None:
        progress = DrillProgress(drill_id=drill_id, database="?")
    description = await handle.describe()
    heartbeat = None
    for pending in description.raw_description.pending_activities:
        if pending.heartbeat_details.payloads:
            values = DataConverter.default.payload_converter.from_payloads(
                pending.heartbeat_details.payloads)
            heartbeat = values[0] if values and isinstance(values[0], dict) else None
    return live_progress(progress, heartbeat, datetime.now(timezone.utc))


async def cancel_drill(client: Client, drill_id: str) -> None:
    """Request cancellation: the drill tears its sandbox down and ends cancelled."""
    await _handle(client, drill_id).cancel()


async def list_drills(client: Client, database: str | None = None,
                      status: str | None = None, limit: int = 100) -> list[DrillListing]:
    query = [f"WorkflowType IN ({', '.join(repr(name) for name in LISTED_KINDS)})"]
    if database:
        query.append(f"PitrDatabase = '{_quoted(database)}'")
    if status:
        query.append(f"PitrStatus = '{_quoted(status)}'")
    found = []
    async for execution in client.list_workflows(" AND ".join(query), limit=limit):
        attributes = execution.typed_search_attributes
        found.append(DrillListing(
            drill_id=execution.id,
            kind=LISTED_KINDS.get(execution.workflow_type, execution.workflow_type),
            database=attributes.get(PITR_DATABASE),
            target_mode=attributes.get(PITR_TARGET_MODE),
            status=attributes.get(PITR_STATUS),
            workflow_status=execution.status.name if execution.status else "UNKNOWN",
            started_at=execution.start_time,
            closed_at=execution.close_time,
        ))
    return found


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")
