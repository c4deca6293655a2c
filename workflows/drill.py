"""The drill, as its state machine: resolve → plan → provision → restore → replay/pause →
checks → teardown → report (see domain.stages.Stage).

Deterministic: all I/O is in activities, all rules are pure domain functions. Anything refused
before the sandbox exists yields `rejected` and creates nothing; once a sandbox exists it is
torn down whatever happens. A cancel always ends the drill cancelled, after teardown, even when
the activity it interrupted finished anyway. Sandbox work runs on the host that provisioned
the sandbox (its worker's host queue).
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, TimeoutError, \
    TimeoutType

with workflow.unsafe.imports_passed_through():
    from activities.checks import CheckActivities
    from activities.escalation import EscalationNotifier
    from activities.models import (
        ChecksRequest,
        EscalationNotice,
        PlanRequest,
        ReplayRequest,
        ResolveTargetRequest,
        RestoreRequest,
        Sandbox,
        SandboxRequest,
    )
    from activities.planning import PlanningActivities
    from activities.replay import ReplayActivities
    from activities.restore import RestoreActivities
    from activities.sandbox import SandboxActivities
    from activities.targets import TargetActivities
    from domain.errors import CATALOGUE, DrillError, ErrorCode, kind_of
    from domain.escalation import Decision, EscalationRecord, decide_command, spec_after_decision
    from domain.lsn import parse_lsn
    from domain.plan import verify_prediction
    from domain.report import DrillReport, ErrorEntry, Recovered, mb_per_s
    from domain.spec import DrillSpec
    from domain.stages import DrillProgress, Stage, StageTiming
    from domain.targets import mode_label
    from workflows import options
    from workflows.search_attributes import PITR_DATABASE, PITR_STATUS, PITR_TARGET_MODE

# The workflow id (= drill id) already travels as structured context in every record.
workflow.logger.workflow_info_on_message = False

CATALOGUE_CODES = {str(code) for code in CATALOGUE}
# The code a stage's unexpected failure is reported under.
_STAGE_CODE = {Stage.PROVISION: ErrorCode.SANDBOX_FAILED, Stage.RESTORE: ErrorCode.RESTORE_FAILED,
               Stage.REPLAY: ErrorCode.RECOVERY_FAILED, Stage.CHECKS: ErrorCode.CHECK_ERROR}


@workflow.defn(name="DrillWorkflow")
class DrillWorkflow:
    def __init__(self) -> None:
        self._progress: DrillProgress | None = None
        self._report: DrillReport | None = None
        self._decision: Decision | None = None

    @workflow.query
    def status(self) -> DrillProgress | None:
        return self._progress

    @asynccontextmanager
    async def _stage(self, stage: Stage):
        """Time a stage; record it as done or failed; make a swallowed cancel count."""
        assert self._report is not None and self._progress is not None
        self._progress.stage, self._progress.stage_started_at = stage, workflow.now()
        self._set_status(stage)
        workflow.logger.info("stage started", extra={"stage": str(stage)})
        began = workflow.now()
        try:
            yield
        except BaseException:
            self._progress.failed.append(StageTiming(stage=stage, seconds=self._since(began)))
            self._report.metrics.failed_stages[stage] = self._since(began)
            raise
        self._progress.done.append(StageTiming(stage=stage, seconds=self._since(began)))
        self._report.metrics.stage_seconds[stage] = self._since(began)
        _raise_if_cancel_requested()

    @staticmethod
    def _since(began) -> float:
        return round((workflow.now() - began).total_seconds(), 3)

    def _set_status(self, status: str) -> None:
        workflow.upsert_search_attributes([PITR_STATUS.value_set(str(status))])

    @workflow.run
    async def run(self, spec: DrillSpec) -> DrillReport:
        drill_id = workflow.info().workflow_id
        self._progress = DrillProgress(drill_id=drill_id, database=spec.database)
        workflow.upsert_search_attributes([PITR_DATABASE.value_set(spec.database),
                                           PITR_TARGET_MODE.value_set(mode_label(spec.target))])
        report = self._report = DrillReport(
            drill_id=drill_id, status="verified", database=spec.database,
            started_at=workflow.now(), workflow_run_id=workflow.info().run_id,
        )
        try:
            refusal = await self._validate_or_escalate(spec, report)
            if refusal is not False:
                return self._finish(report, refusal)
            failure = await self._recover_in_sandbox(spec, report)
            if failure is None and not report.errors:
                await self._record_throughput(report)
            return self._finish(report, failure)
        except (asyncio.CancelledError, CancelledError):
            self._set_status("cancelled")
            self._progress.finished = True
            raise

    async def _validate_or_escalate(self, spec: DrillSpec,
                                    report: DrillReport) -> ErrorEntry | None | bool:
        """False when the drill may go on; else the refusal (None: already in the report)."""
        try:
            await self._validate(spec, report)
            return False
        except (ActivityError, DrillError) as exc:
            _reraise_cancellation(exc)
            cause = _error_entry(exc, ErrorCode.PREFLIGHT_FAILED)
        if "escalate" not in spec.fallback or kind_of(cause.code) != "input":
            return cause
        decided = await self._escalate(spec, report, cause)
        if decided is None:
            return None
        try:
            await self._validate(decided, report)
            return False
        except (ActivityError, DrillError) as again:
            _reraise_cancellation(again)
            return _error_entry(again, ErrorCode.PREFLIGHT_FAILED)

    async def _recover_in_sandbox(self, spec: DrillSpec, report: DrillReport) -> ErrorEntry | None:
        sandbox: Sandbox | None = None
        stage = Stage.PROVISION
        try:
            async with self._stage(Stage.PROVISION):
                sandbox = await workflow.execute_activity_method(
                    SandboxActivities.provision, SandboxRequest(drill_id=report.drill_id),
                    **options.PROVISION_SANDBOX)
            self._progress.sandbox_task_queue = sandbox.task_queue

            def host(opts: dict) -> dict:
                return options.host_bound(opts, sandbox.task_queue, spec.sandbox.host_wait_seconds)

            stage = Stage.RESTORE
            await self._restore(spec, sandbox, report, host(options.RESTORE_BASE_BACKUP))
            stage = Stage.REPLAY
            await self._replay(spec, sandbox, report, host(options.REPLAY_TO_TARGET))
            stage = Stage.CHECKS
            await self._check(spec, sandbox, report, host(options.RUN_CHECKS))
            return None
        except ActivityError as exc:
            _reraise_cancellation(exc)
            return _error_entry(exc, _STAGE_CODE[stage])
        finally:
            if sandbox is not None:
                await self._teardown(sandbox, spec)

    async def _record_throughput(self, report: DrillReport) -> None:
        """Feed the next plans' estimates; a drill never fails for want of this."""
        try:
            await workflow.execute_activity_method(
                PlanningActivities.record_throughput, report.metrics,
                **options.RECORD_THROUGHPUT)
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
        notice = EscalationNotice(
            drill_id=report.drill_id, cause=cause, timeout_seconds=spec.escalation.timeout_seconds,
            how_to_decide=decide_command(report.drill_id), webhook=spec.escalation.webhook,
            command=spec.escalation.command,
        )
        try:
            notified = await workflow.execute_activity_method(
                EscalationNotifier.notify, notice, **options.NOTIFY_ESCALATION)
            record.notified, record.notify_failures = notified.delivered, notified.failed
        except ActivityError as exc:
            record.notify_failures.append(str(exc.cause or exc))
        self._progress.stage, self._progress.stage_started_at = Stage.ESCALATED, workflow.now()
        self._set_status(Stage.ESCALATED)
        began = workflow.now()
        try:
            await workflow.wait_condition(
                lambda: self._decision is not None,
                timeout=spec.escalation.timeout_seconds,
            )
        except asyncio.TimeoutError:
            pass  # no decision: a timeout, below
        record.waited_seconds = self._since(began)
        decision = self._decision
        if decision is None or decision.action == "abort":
            record.outcome, record.decision = ("abort", decision) if decision else ("timeout", None)
            code = ErrorCode.ESCALATION_ABORTED if decision else ErrorCode.ESCALATION_TIMEOUT
            report.errors += [cause, ErrorEntry.from_error(DrillError(
                code, f"escalated after {cause.code}; outcome: {record.outcome}"))]
            return None
        record.outcome, record.decision = "proceed", decision
        return spec_after_decision(spec, decision)

    async def _validate(self, spec: DrillSpec, report: DrillReport) -> None:
        async with self._stage(Stage.RESOLVE):
            resolved = await workflow.execute_activity_method(
                TargetActivities.resolve_target, ResolveTargetRequest(target=spec.target),
                **options.RESOLVE_TARGET)
        report.target = resolved.target
        report.metrics.target_resolution_seconds = round(resolved.seconds, 6)
        async with self._stage(Stage.PLAN):
            planned = await workflow.execute_activity_method(
                PlanningActivities.plan_drill, PlanRequest.for_spec(spec, resolved.target),
                **options.PLAN_DRILL)
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
        self._progress.restore_bytes_total = planned.plan.backup.size_bytes
        self._progress.replay_start_lsn = planned.plan.backup.start_lsn
        self._progress.predicted_stop_lsn = planned.plan.predicted.replay_lsn

    async def _restore(self, spec: DrillSpec, sandbox: Sandbox, report: DrillReport,
                       opts: dict) -> None:
        assert report.base_backup is not None
        async with self._stage(Stage.RESTORE):
            restored = await workflow.execute_activity_method(
                RestoreActivities.restore_base_backup,
                RestoreRequest(sandbox=sandbox, backup=report.base_backup, source=spec.source),
                **opts)
        report.metrics.bytes_restored = restored.bytes_restored
        # Over the whole stage, every attempt included: a retry's own seconds would flatter it.
        report.metrics.restore_mb_per_s = mb_per_s(
            restored.bytes_restored, report.metrics.stage_seconds[Stage.RESTORE])

    async def _replay(self, spec: DrillSpec, sandbox: Sandbox, report: DrillReport,
                      opts: dict) -> None:
        assert report.target is not None and report.base_backup is not None
        async with self._stage(Stage.REPLAY):
            replayed = await workflow.execute_activity_method(
                ReplayActivities.replay_to_target,
                ReplayRequest(sandbox=sandbox, target=report.target, source=spec.source,
                              database=spec.database, db_user=spec.db_user),
                **opts)
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
                report.metrics.wal_bytes_replayed, report.metrics.stage_seconds[Stage.REPLAY])
        if report.target.utc and recovered.last_commit_time:
            lost = report.target.utc - recovered.last_commit_time
            report.metrics.data_lost_seconds = round(lost.total_seconds(), 6)

    async def _check(self, spec: DrillSpec, sandbox: Sandbox, report: DrillReport,
                     opts: dict) -> None:
        async with self._stage(Stage.CHECKS):
            checked = await workflow.execute_activity_method(
                CheckActivities.run_checks,
                ChecksRequest(sandbox=sandbox, database=spec.database, db_user=spec.db_user,
                              checks=spec.checks),
                **opts)
        report.checks = checked.results
        passed = sum(result.passed for result in checked.results)
        report.metrics.checks_passed, report.metrics.checks_total = passed, len(checked.results)
        if checked.results:
            report.metrics.validation_pass_rate = round(passed / len(checked.results), 4)
        report.metrics.time_to_verify_seconds = self._since(report.started_at)
        for failed in (r for r in checked.results if not r.passed):
            code = ErrorCode.CHECK_ERROR if failed.error else ErrorCode.CHECK_FAILED
            detail = failed.error or f"observed {failed.observed!r}, expected {failed.expected!r}"
            report.errors.append(ErrorEntry.from_error(
                DrillError(code, f"check {failed.name!r}: {detail}")
            ))

    async def _teardown(self, sandbox: Sandbox, spec: DrillSpec) -> None:
        """Runs on the sandbox's host. When that host is gone for good the sandbox is left to
        the reaper there, and the report says so."""
        try:
            async with self._stage(Stage.TEARDOWN):
                await workflow.execute_activity_method(
                    SandboxActivities.teardown, sandbox,
                    **options.host_bound(options.TEARDOWN_SANDBOX, sandbox.task_queue,
                                         spec.sandbox.host_wait_seconds))
        except ActivityError as exc:
            if not _host_lost(exc):
                raise
            assert self._report is not None
            self._report.errors.append(ErrorEntry.from_error(DrillError(
                ErrorCode.SANDBOX_HOST_LOST,
                f"teardown of {sandbox.root} never started on {sandbox.task_queue}: the "
                "sandbox is left on that host")))

    def _finish(self, report: DrillReport, error: ErrorEntry | None = None) -> DrillReport:
        if error is not None:
            report.errors.append(error)
        if report.errors:
            kinds = {kind_of(error.code) for error in report.errors}
            report.status = "rejected" if kinds == {"input"} and report.recovered is None \
                else "failed"
        report.finished_at = workflow.now()
        assert self._progress is not None
        self._progress.stage, self._progress.finished = None, True
        self._set_status(report.status)
        workflow.logger.info(
            "drill finished", extra={"status": report.status, "errors": len(report.errors)}
        )
        return report


def _raise_if_cancel_requested() -> None:
    """A cancel that arrived while an activity ran is swallowed when that activity completes
    anyway (a sync activity sees the cancel only at its next heartbeat): the request stays
    counted on the workflow's task, so honour it at the next stage boundary."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError("drill cancelled")


def _reraise_cancellation(exc: BaseException) -> None:
    """A cancelled drill ends cancelled: never reported as bad input, never escalated."""
    if isinstance(exc, ActivityError) and isinstance(exc.cause, CancelledError):
        raise exc


def _host_lost(exc: ActivityError) -> bool:
    cause = exc.cause
    return isinstance(cause, TimeoutError) and cause.type == TimeoutType.SCHEDULE_TO_START


def _error_entry(exc: BaseException, fallback: ErrorCode) -> ErrorEntry:
    if isinstance(exc, DrillError):
        return ErrorEntry.from_error(exc)
    if isinstance(exc, ActivityError) and _host_lost(exc):
        return ErrorEntry.from_error(DrillError(
            ErrorCode.SANDBOX_HOST_LOST,
            f"no worker of the sandbox's host took {exc.activity_type} in time"))
    cause = exc.cause if isinstance(exc, ActivityError) else None
    if isinstance(cause, ApplicationError) and cause.type in CATALOGUE_CODES:
        hint = str(cause.details[0]) if cause.details else ""
        return ErrorEntry(code=cause.type, message=cause.message, hint=hint)
    # Retries exhausted on an unexpected failure: report it under the stage's code.
    detail = f"{type(cause).__name__}: {cause}" if cause else str(exc)
    return ErrorEntry.from_error(DrillError(fallback, detail))
