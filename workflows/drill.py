"""The drill: resolve → choose backup → sandbox → restore → replay → checks → teardown → report.

Deterministic: all I/O is in activities, all rules are pure domain functions. Anything refused
before the sandbox exists yields `rejected` and creates nothing; once a sandbox exists it is
torn down whatever happens, cancellation included.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from datetime import timedelta

from pydantic import BaseModel
from temporalio import workflow
from temporalio.workflow import ActivityCancellationType
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from activities.checks import CheckActivities
    from activities.escalation import EscalationNotice, EscalationNotifier, decide_command
    from activities.contracts import (
        ChecksRequest,
        ReplayRequest,
        ResolveTargetRequest,
        RestoreRequest,
        Sandbox,
        SandboxRequest,
    )
    from activities.planning import DrillPlanner, PlanRequest
    from activities.replay import ReplayActivities
    from activities.restore import RestoreActivities
    from activities.sandbox import SandboxActivities
    from activities.targets import TargetActivities
    from domain.errors import CATALOGUE, DrillError, ErrorCode, kind_of
    from domain.escalation import Decision, EscalationRecord
    from domain.lsn import parse_lsn
    from domain.plan import verify_prediction
    from domain.report import DrillReport, ErrorEntry, Recovered, mb_per_s
    from domain.spec import DrillSpec

QUICK = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)
IO = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=5,
)
# Teardown must happen: keep trying for a long time rather than leave a server behind.
TEARDOWN = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_interval=timedelta(seconds=30))


# The workflow id (= drill id) already travels as structured context in every record.
workflow.logger.workflow_info_on_message = False

CATALOGUE_CODES = {str(code) for code in CATALOGUE}


class DrillProgress(BaseModel):
    stage: str
    stages_done: list[str]


@workflow.defn(name="DrillWorkflow")
class DrillWorkflow:
    def __init__(self) -> None:
        self._stage = "starting"
        self._done: list[str] = []
        self._report: DrillReport | None = None
        self._decision: Decision | None = None

    @workflow.query
    def progress(self) -> DrillProgress:
        return DrillProgress(stage=self._stage, stages_done=list(self._done))

    @asynccontextmanager
    async def _timed(self, stage: str):
        assert self._report is not None
        self._stage = stage
        began = workflow.now()
        workflow.logger.info("stage started", extra={"stage": stage})
        try:
            yield
        finally:
            seconds = (workflow.now() - began).total_seconds()
            self._report.metrics.stage_seconds[stage] = round(seconds, 3)
            self._done.append(stage)

    @workflow.run
    async def run(self, spec: DrillSpec) -> DrillReport:
        report = self._report = DrillReport(
            drill_id=workflow.info().workflow_id,
            status="verified",
            database=spec.database,
            started_at=workflow.now(),
        )
        try:
            await self._validate(spec, report)
        except (ActivityError, DrillError) as exc:
            _reraise_cancellation(exc)
            cause = _error_entry(exc, ErrorCode.PREFLIGHT_FAILED)
            if "escalate" not in spec.fallback or kind_of(cause.code) != "input":
                return self._finish(report, cause)
            decided = await self._escalate(spec, report, cause)
            if decided is None:
                return self._finish(report)
            try:
                await self._validate(decided, report)
            except (ActivityError, DrillError) as again:
                _reraise_cancellation(again)
                return self._finish(report, _error_entry(again, ErrorCode.PREFLIGHT_FAILED))
        sandbox: Sandbox | None = None
        failure: ErrorEntry | None = None
        stage_code = ErrorCode.SANDBOX_FAILED
        try:
            async with self._timed("provision"):
                sandbox = await workflow.execute_activity_method(
                    SandboxActivities.provision,
                    SandboxRequest(drill_id=report.drill_id),
                    start_to_close_timeout=timedelta(minutes=2),
                    retry_policy=IO,
                )
            stage_code = ErrorCode.RESTORE_FAILED
            await self._restore(spec, sandbox, report)
            stage_code = ErrorCode.RECOVERY_FAILED
            await self._replay(spec, sandbox, report)
            stage_code = ErrorCode.CHECK_ERROR
            await self._check(spec, sandbox, report)
        except ActivityError as exc:
            _reraise_cancellation(exc)
            failure = _error_entry(exc, stage_code)
        finally:
            if sandbox is not None:
                await self._teardown(sandbox)
        if failure is None and not report.errors:
            await self._record_throughput(report)
        return self._finish(report, failure)

    async def _record_throughput(self, report: DrillReport) -> None:
        """Feed the next plans' estimates; a drill never fails for want of this."""
        try:
            await workflow.execute_activity_method(
                DrillPlanner.record_throughput, report.metrics,
                start_to_close_timeout=timedelta(seconds=30), retry_policy=QUICK,
            )
        except ActivityError as exc:
            workflow.logger.warning("throughput not recorded", extra={"error": str(exc)})

    @workflow.update
    def decide(self, decision: Decision) -> str:
        """A human's answer to an escalated drill (see `pitrdrill drill decide`)."""
        self._decision = decision
        return f"{decision.action} accepted"

    @decide.validator
    def _waiting_for_decision(self, decision: Decision) -> None:
        waiting = self._report and self._report.escalation and self._decision is None
        if not waiting:
            raise ValueError("this drill is not waiting for a decision")

    async def _escalate(self, spec: DrillSpec, report: DrillReport,
                        cause: ErrorEntry) -> DrillSpec | None:
        """Stop and wait for `decide`. Returns the spec to plan again, or None (abort, or
        nobody answered in time: both reject the drill, having created nothing)."""
        record = report.escalation = EscalationRecord(
            cause_code=cause.code, cause=cause.message, notified=[], notify_failures=[])
        self._stage = "escalating"
        notice = EscalationNotice(
            drill_id=report.drill_id, cause=cause, timeout_seconds=spec.escalation.timeout_seconds,
            how_to_decide=decide_command(report.drill_id), webhook=spec.escalation.webhook,
            command=spec.escalation.command,
        )
        try:
            notified = await workflow.execute_activity_method(
                EscalationNotifier.notify, notice,
                start_to_close_timeout=timedelta(minutes=1), retry_policy=QUICK,
            )
            record.notified, record.notify_failures = notified.delivered, notified.failed
        except ActivityError as exc:
            record.notify_failures.append(str(exc.cause or exc))
        self._stage = "escalated: waiting for a decision"
        began = workflow.now()
        try:
            await workflow.wait_condition(
                lambda: self._decision is not None,
                timeout=timedelta(seconds=spec.escalation.timeout_seconds),
            )
        except asyncio.TimeoutError:
            pass  # no decision: a timeout, below
        record.waited_seconds = round((workflow.now() - began).total_seconds(), 3)
        decision = self._decision
        if decision is None or decision.action == "abort":
            record.outcome, record.decision = ("abort", decision) if decision else ("timeout", None)
            code = ErrorCode.ESCALATION_ABORTED if decision else ErrorCode.ESCALATION_TIMEOUT
            report.errors += [cause, ErrorEntry.from_error(DrillError(
                code, f"escalated after {cause.code}; outcome: {record.outcome}"))]
            return None
        record.outcome, record.decision = "proceed", decision
        if decision.target is not None:
            # The human names a new stop; timeline, action and the rest stay the spec's.
            modes = {"time": None, "lsn": None, "xid": None, "name": None,
                     "immediate": False, "latest": False}
            merged = spec.target.model_copy(
                update={**modes, **decision.target.model_dump(exclude_unset=True)})
            return spec.model_copy(update={"target": merged})
        return spec.model_copy(update={"fallback": ["earlier_backup", "last_consistent_before_gap"]})

    async def _validate(self, spec: DrillSpec, report: DrillReport) -> None:
        async with self._timed("resolve_target"):
            resolved = await workflow.execute_activity_method(
                TargetActivities.resolve_target,
                ResolveTargetRequest(target=spec.target),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=QUICK,
            )
        report.target = resolved.target
        report.metrics.target_resolution_seconds = round(resolved.seconds, 6)
        async with self._timed("plan"):
            planned = await workflow.execute_activity_method(
                DrillPlanner.plan_drill,
                PlanRequest.for_spec(spec, resolved.target),
                start_to_close_timeout=timedelta(hours=2),
                heartbeat_timeout=timedelta(minutes=2),
                retry_policy=IO,
            )
        report.plan, report.base_backup = planned.plan, planned.plan.backup
        if planned.plan.fallback is not None:
            # The fallback chain moved the target: recover to what it chose; the plan keeps
            # the requested one, the reason and the cost.
            report.target = planned.plan.fallback.used
            workflow.logger.warning("fallback used", extra={
                "step": planned.plan.fallback.step, "cause": planned.plan.fallback.cause_code})
        report.metrics.plan_seconds = round(planned.seconds, 6)
        report.metrics.wal_segments = planned.index.segments
        report.metrics.wal_segments_indexed = planned.index.segments_indexed

    async def _restore(self, spec: DrillSpec, sandbox: Sandbox, report: DrillReport) -> None:
        assert report.base_backup is not None
        async with self._timed("restore"):
            restored = await workflow.execute_activity_method(
                RestoreActivities.restore_base_backup,
                RestoreRequest(sandbox=sandbox, backup=report.base_backup, source=spec.source),
                start_to_close_timeout=timedelta(hours=6),
                heartbeat_timeout=timedelta(minutes=2),
                retry_policy=IO,
                # On cancel, teardown must not race a copy still writing into the sandbox.
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
        report.metrics.bytes_restored = restored.bytes_restored
        report.metrics.restore_mb_per_s = mb_per_s(restored.bytes_restored, restored.seconds)

    async def _replay(self, spec: DrillSpec, sandbox: Sandbox, report: DrillReport) -> None:
        assert report.target is not None and report.base_backup is not None
        async with self._timed("replay"):
            replayed = await workflow.execute_activity_method(
                ReplayActivities.replay_to_target,
                ReplayRequest(
                    sandbox=sandbox, target=report.target, source=spec.source,
                    db_user=spec.db_user,
                ),
                start_to_close_timeout=timedelta(hours=12),
                heartbeat_timeout=timedelta(minutes=2),
                retry_policy=IO,
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
        recovered: Recovered = replayed.recovered
        report.recovered = recovered
        assert report.plan is not None
        mismatch = verify_prediction(
            report.plan.predicted, recovered.replay_lsn, recovered.last_commit_time,
            reopened=report.target.action == "shutdown",
        )
        recovered.matches_prediction = mismatch is None
        if mismatch is not None:
            report.errors.append(ErrorEntry.from_error(mismatch))
        if recovered.replay_lsn:
            replayed_bytes = parse_lsn(recovered.replay_lsn) - parse_lsn(report.base_backup.start_lsn)
            report.metrics.wal_bytes_replayed = max(replayed_bytes, 0)
            report.metrics.replay_mb_per_s = mb_per_s(
                report.metrics.wal_bytes_replayed, replayed.seconds
            )
        if report.target.utc and recovered.last_commit_time:
            lost = report.target.utc - recovered.last_commit_time
            report.metrics.data_lost_seconds = round(lost.total_seconds(), 6)

    async def _check(self, spec: DrillSpec, sandbox: Sandbox, report: DrillReport) -> None:
        async with self._timed("checks"):
            checked = await workflow.execute_activity_method(
                CheckActivities.run_checks,
                ChecksRequest(
                    sandbox=sandbox, database=spec.database, db_user=spec.db_user,
                    checks=spec.checks,
                ),
                start_to_close_timeout=timedelta(minutes=30),
                heartbeat_timeout=timedelta(minutes=5),
                retry_policy=QUICK,
            )
        report.checks = checked.results
        passed = sum(result.passed for result in checked.results)
        report.metrics.checks_passed, report.metrics.checks_total = passed, len(checked.results)
        if checked.results:
            report.metrics.validation_pass_rate = round(passed / len(checked.results), 4)
        report.metrics.time_to_verify_seconds = round(
            (workflow.now() - report.started_at).total_seconds(), 3
        )
        for failed in (r for r in checked.results if not r.passed):
            code = ErrorCode.CHECK_ERROR if failed.error else ErrorCode.CHECK_FAILED
            detail = failed.error or f"observed {failed.observed!r}, expected {failed.expected!r}"
            report.errors.append(ErrorEntry.from_error(
                DrillError(code, f"check {failed.name!r}: {detail}")
            ))

    async def _teardown(self, sandbox: Sandbox) -> None:
        async with self._timed("teardown"):
            await workflow.execute_activity_method(
                SandboxActivities.teardown,
                sandbox,
                start_to_close_timeout=timedelta(minutes=5),
                retry_policy=TEARDOWN,
            )

    def _finish(self, report: DrillReport, error: ErrorEntry | None = None) -> DrillReport:
        if error is not None:
            report.errors.append(error)
        if report.errors:
            kinds = {kind_of(error.code) for error in report.errors}
            report.status = "rejected" if kinds == {"input"} and report.recovered is None \
                else "failed"
        report.finished_at = workflow.now()
        self._stage = "done"
        workflow.logger.info(
            "drill finished", extra={"status": report.status, "errors": len(report.errors)}
        )
        return report


def _reraise_cancellation(exc: BaseException) -> None:
    """A cancelled drill ends cancelled: never reported as bad input, never escalated."""
    if isinstance(exc, ActivityError) and isinstance(exc.cause, CancelledError):
        raise exc


def _error_entry(exc: BaseException, fallback: ErrorCode) -> ErrorEntry:
    if isinstance(exc, DrillError):
        return ErrorEntry.from_error(exc)
    cause = exc.cause if isinstance(exc, ActivityError) else None
    if isinstance(cause, ApplicationError) and cause.type in CATALOGUE_CODES:
        hint = str(cause.details[0]) if cause.details else ""
        return ErrorEntry(code=cause.type, message=cause.message, hint=hint)
    # Retries exhausted on an unexpected failure: report it under the stage's code.
    detail = f"{type(cause).__name__}: {cause}" if cause else str(exc)
    return ErrorEntry.from_error(DrillError(fallback, detail))
