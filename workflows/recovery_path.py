"""The stages every recovery workflow composes: resolve → plan (→ escalate) → provision →
restore → replay/pause → checks → teardown, each timed, recorded as done or failed, and made
visible through the workflow's `status` query and search attributes.

The drill, the recovery and later workflows hold one RecoveryPath and call its stages in
their own order. Workflow code: deterministic, no I/O (activities do that).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime

from temporalio import workflow
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, TimeoutError, \
    TimeoutType

with workflow.unsafe.imports_passed_through():
    from activities.checks import CheckActivities
    from activities.escalation import EscalationNotifier
    from activities.models import (
        ChecksRequest,
        EscalationNotice,
        LedgerEntry,
        PlanRequest,
        ReplayRequest,
        ResolveTargetRequest,
        RestoreRequest,
        Sandbox,
        SandboxRequest,
        WarmRequest,
    )
    from activities.ledger import LedgerActivities
    from activities.planning import PlanningActivities
    from activities.replay import ReplayActivities
    from activities.restore import RestoreActivities
    from activities.sandbox import SandboxActivities
    from activities.targets import TargetActivities
    from activities.warm import WarmActivities
    from domain.errors import CATALOGUE, DrillError, ErrorCode, kind_of
    from domain.escalation import Decision, EscalationRecord, decide_command, spec_after_decision
    from domain.lsn import parse_lsn
    from domain.plan import verify_prediction
    from domain.redaction import redact_report
    from domain.checks import recovered_point
    from domain.report import DrillReport, ErrorEntry, Recovered, mb_per_s
    from domain import synthetic
    from domain.spec import DrillSpec, refuse_unsafe_checks
    from domain.stages import DrillProgress, Stage, StageSpan, StageTiming
    from domain.targets import TargetSpec, mode_label, resolve_target
    from workflows import options
    from workflows.drill_telemetry import record_finished, stage_span
    from workflows.search_attributes import PITR_DATABASE, PITR_STATUS, PITR_TARGET_MODE

CATALOGUE_CODES = {str(code) for code in CATALOGUE}
# The code a stage's unexpected failure is reported under.
STAGE_CODE = {Stage.PROVISION: ErrorCode.SANDBOX_FAILED, Stage.RESTORE: ErrorCode.RESTORE_FAILED,
              Stage.REPLAY: ErrorCode.RECOVERY_FAILED, Stage.CHECKS: ErrorCode.CHECK_ERROR,
              Stage.WARM: ErrorCode.WARM_FAILED,
              Stage.PROMOTE: ErrorCode.PROMOTION_FAILED}
# `validate_or_escalate` returns this when the recovery may go on.
GO_ON = object()
# Set by Temporal on every workflow a schedule starts: the seed of a synthetic target.
SCHEDULED_START = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")


class RecoveryPath:
    def __init__(self, spec: DrillSpec, report_type: type[DrillReport] = DrillReport,
                 **report_fields) -> None:
        info = workflow.info()
        self.spec = spec
        self.progress = DrillProgress(drill_id=info.workflow_id, database=spec.database)
        self.report = report_type(drill_id=info.workflow_id, status="verified",
                                  database=spec.database, started_at=workflow.now(),
                                  workflow_run_id=info.run_id, **report_fields)
        workflow.upsert_search_attributes([PITR_DATABASE.value_set(spec.database),
                                           PITR_TARGET_MODE.value_set(mode_label(spec.target))])

    # --- bookkeeping -------------------------------------------------------------------------

    @asynccontextmanager
    async def stage(self, stage: Stage):
        """Time a stage; record it as done or failed; make a swallowed cancel count."""
        self.progress.stage, self.progress.stage_started_at = stage, workflow.now()
        self.set_status(stage)
        workflow.logger.info("stage started", extra={"stage": str(stage)})
        began = workflow.now()
        with stage_span(stage, self.report.drill_id, self.report.database):
            try:
                yield
            except BaseException:
                self._stage_ended(stage, began, "failed")
                raise
            self._stage_ended(stage, began, "done")
        raise_if_cancel_requested()

    def _stage_ended(self, stage: Stage, began: datetime, outcome: str) -> None:
        seconds = since(began)
        timing = StageTiming(stage=stage, seconds=seconds)
        if outcome == "done":
            self.progress.done.append(timing)
            self.report.metrics.stage_seconds[stage] = seconds
        else:
            self.progress.failed.append(timing)
            self.report.metrics.failed_stages[stage] = seconds
        self.report.stages.append(
            StageSpan(stage=stage, started_at=began, seconds=seconds, outcome=outcome))

    def set_status(self, status: str) -> None:
        workflow.upsert_search_attributes([PITR_STATUS.value_set(str(status))])

    @contextmanager
    def ends_cancelled(self):
        """Around a workflow's run: a cancel shows as `cancelled` in the status and the UI,
        then ends the workflow cancelled."""
        try:
            yield
        except BaseException as exc:
            if is_cancellation(exc):
                self.set_status("cancelled")
                self.progress.stage, self.progress.finished = None, True
            raise

    def finish(self, error: ErrorEntry | None = None, status: str | None = None) -> DrillReport:
        """End the report: `status` (a recovery's promoted or paused) unless errors say
        rejected or failed."""
        report = self.report
        if error is not None:
            report.errors.append(error)
        if report.errors:
            kinds = {kind_of(error.code) for error in report.errors}
            report.status = "rejected" if kinds == {"input"} and report.recovered is None \
                else "failed"
        elif status is not None:
            report.status = status
        report.finished_at = workflow.now()
        redact_report(report)
        self.progress.stage, self.progress.finished = None, True
        self.set_status(report.status)
        workflow.logger.info(
            "finished", extra={"status": report.status, "errors": len(report.errors)})
        record_finished(report)
        return report

    # --- before anything exists ----------------------------------------------------------------

    async def validate(self, spec: DrillSpec) -> None:
        report = self.report
        async with self.stage(Stage.RESOLVE):
            refuse_unsafe_checks(spec)
            if spec.synthetic_target and not self._human_chose_target():
                spec = self.spec = await self._synthetic(spec)
            resolved = await workflow.execute_activity_method(
                TargetActivities.resolve_target, ResolveTargetRequest(target=spec.target),
                **options.RESOLVE_TARGET)
        report.target = resolved.target
        report.metrics.target_resolution_seconds = round(resolved.seconds, 6)
        async with self.stage(Stage.PLAN):
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
        self.progress.restore_bytes_total = planned.plan.backup.size_bytes
        self.progress.replay_start_lsn = planned.plan.backup.start_lsn
        self.progress.predicted_stop_lsn = planned.plan.predicted.replay_lsn

    async def _synthetic(self, spec: DrillSpec) -> DrillSpec:
        """The spec with its synthetic target replaced by the instant chosen in the restorable
        window (an exclusive time target; action and timeline stay the spec's). The seed is the
        run's scheduled time, so a replay, or a rerun of that night, picks the same instant."""
        assert spec.synthetic_target is not None
        # Pure: validates the timeline (TIMELINE_INVALID) the window is read along.
        along = resolve_target(TargetSpec(latest=True, timeline=spec.target.timeline),
                               workflow.now())
        windowed = await workflow.execute_activity_method(
            PlanningActivities.restorable_window, PlanRequest(source=spec.source, target=along),
            **options.PLAN_DRILL)
        chosen = self.report.synthetic = synthetic.choose(
            windowed.window, spec.synthetic_target, scheduled_time())
        workflow.logger.info("synthetic target", extra={
            "mode": chosen.mode, "seed": chosen.seed.isoformat(),
            "instant": chosen.instant.isoformat()})
        workflow.upsert_search_attributes([PITR_TARGET_MODE.value_set("time")])
        target = spec.target.model_copy(update={
            "time": chosen.instant.isoformat(), "lsn": None, "xid": None, "name": None,
            "immediate": False, "latest": False, "inclusive": False, "assume_timezone": None,
            "fold": None})
        return spec.model_copy(update={"target": target, "synthetic_target": None})

    def _human_chose_target(self) -> bool:
        """An escalated drill whose human named a target recovers to that one."""
        escalation = self.report.escalation
        return bool(escalation and escalation.decision and escalation.decision.target)

    async def validate_or_escalate(self, decision: Callable[[], Decision | None]):
        """GO_ON when the recovery may go on; else the refusal for `finish` (None: already in
        the report). `decision` reads the human's answer (the workflow's `decide` update)."""
        try:
            await self.validate(self.spec)
            return GO_ON
        except (ActivityError, DrillError) as exc:
            reraise_cancellation(exc)
            cause = error_entry(exc, ErrorCode.PREFLIGHT_FAILED)
        if "escalate" not in self.spec.fallback or kind_of(cause.code) != "input":
            return cause
        decided = await self._escalate(cause, decision)
        if decided is None:
            return None
        self.spec = decided
        try:
            await self.validate(decided)
            return GO_ON
        except (ActivityError, DrillError) as again:
            reraise_cancellation(again)
            return error_entry(again, ErrorCode.PREFLIGHT_FAILED)

    @property
    def waiting_for_decision(self) -> bool:
        escalation = self.report.escalation
        return escalation is not None and escalation.outcome == "waiting"

    async def _escalate(self, cause: ErrorEntry,
                        decision: Callable[[], Decision | None]) -> DrillSpec | None:
        """Stop and wait for a decision. Returns the spec to plan again, or None (abort, or
        nobody answered in time: both reject, having created nothing)."""
        spec, report = self.spec, self.report
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
            reraise_cancellation(exc)
            record.notify_failures.append(str(exc.cause or exc))
        self.progress.stage, self.progress.stage_started_at = Stage.ESCALATED, workflow.now()
        self.set_status(Stage.ESCALATED)
        began = workflow.now()
        try:
            await workflow.wait_condition(lambda: decision() is not None,
                                          timeout=spec.escalation.timeout_seconds)
        except asyncio.TimeoutError:
            pass  # no decision: a timeout, below
        record.waited_seconds = since(began)
        answer = decision()
        if answer is None or answer.action == "abort":
            record.outcome, record.decision = ("abort", answer) if answer else ("timeout", None)
            code = ErrorCode.ESCALATION_ABORTED if answer else ErrorCode.ESCALATION_TIMEOUT
            report.errors += [cause, ErrorEntry.from_error(DrillError(
                code, f"escalated after {cause.code}; outcome: {record.outcome}"))]
            return None
        record.outcome, record.decision = "proceed", answer
        return spec_after_decision(spec, answer)

    # --- in the sandbox -----------------------------------------------------------------------

    def on_host(self, sandbox: Sandbox, activity_options: dict) -> dict:
        return options.host_bound(activity_options, sandbox.task_queue,
                                  self.spec.sandbox.host_wait_seconds)

    async def provision(self, request: SandboxRequest, host_queue: str | None = None) -> Sandbox:
        """On any host, or on the one whose queue is given (a recovery names its host)."""
        where = options.PROVISION_SANDBOX if host_queue is None else options.host_bound(
            options.PROVISION_SANDBOX, host_queue, self.spec.sandbox.host_wait_seconds)
        # The provider, limits and keep the spec asks for; the archive a confined server sees.
        request = request.model_copy(update={"options": self.spec.sandbox,
                                             "source": self.spec.source})
        async with self.stage(Stage.PROVISION):
            sandbox = await workflow.execute_activity_method(
                SandboxActivities.provision, request, **where)
        self.progress.sandbox_task_queue = sandbox.task_queue
        self.report.isolation = sandbox.isolation
        return sandbox

    async def restore(self, sandbox: Sandbox) -> None:
        report = self.report
        assert report.base_backup is not None
        async with self.stage(Stage.RESTORE):
            restored = await workflow.execute_activity_method(
                RestoreActivities.restore_base_backup,
                RestoreRequest(sandbox=sandbox, backup=report.base_backup, source=self.spec.source),
                **self.on_host(sandbox, options.RESTORE_BASE_BACKUP))
        report.metrics.bytes_restored = restored.bytes_restored
        # Over the whole stage, every attempt included: a retry's own seconds would flatter it.
        report.metrics.restore_mb_per_s = mb_per_s(
            restored.bytes_restored, report.metrics.stage_seconds[Stage.RESTORE])

    async def replay(self, sandbox: Sandbox) -> None:
        spec, report = self.spec, self.report
        assert report.target is not None and report.base_backup is not None
        async with self.stage(Stage.REPLAY):
            replayed = await workflow.execute_activity_method(
                ReplayActivities.replay_to_target,
                ReplayRequest(sandbox=sandbox, target=report.target, source=spec.source,
                              database=spec.database, db_user=spec.db_user),
                **self.on_host(sandbox, options.REPLAY_TO_TARGET))
        recovered: Recovered = replayed.recovered
        report.recovered = recovered
        if report.isolation is not None:
            report.isolation.warnings = list(dict.fromkeys(
                report.isolation.warnings + replayed.isolation_warnings))
        assert report.plan is not None
        mismatch = verify_prediction(
            report.plan.predicted, recovered.replay_lsn, recovered.last_commit_time,
            reopened=report.target.action == "shutdown",
        )
        recovered.matches_prediction = mismatch is None
        if mismatch is not None:
            report.errors.append(ErrorEntry.from_error(mismatch))
        metrics, seconds = report.metrics, report.metrics.stage_seconds[Stage.REPLAY]
        if recovered.replay_lsn:
            replayed_bytes = parse_lsn(recovered.replay_lsn) - parse_lsn(report.base_backup.start_lsn)
            metrics.wal_bytes_replayed = max(replayed_bytes, 0)
            metrics.replay_mb_per_s = mb_per_s(metrics.wal_bytes_replayed, seconds)
        # The plan counted the commits up to the predicted stop: true only if it held.
        if mismatch is None and report.plan.replay_commits is not None:
            metrics.transactions_replayed = report.plan.replay_commits
            metrics.replay_transactions_per_s = \
                round(metrics.transactions_replayed / seconds, 3) if seconds > 0 else None
        # Against what was asked for: a fallback's earlier stop is history given up too.
        requested = report.requested_target
        if requested and requested.utc and recovered.last_commit_time:
            lost = requested.utc - recovered.last_commit_time
            metrics.data_lost_seconds = round(lost.total_seconds(), 6)

    async def check(self, sandbox: Sandbox) -> None:
        spec, report = self.spec, self.report
        async with self.stage(Stage.CHECKS):
            checked = await workflow.execute_activity_method(
                CheckActivities.run_checks,
                ChecksRequest(sandbox=sandbox, database=spec.database, db_user=spec.db_user,
                              checks=spec.checks, recovered_point=recovered_point(
                                  report.target, report.recovered, report.started_at)),
                **self.on_host(sandbox, options.RUN_CHECKS))
        report.checks = checked.results
        # A skipped check (it could not run: amcheck not in the backup) is no pass and no
        # failure: it is counted apart and left out of the pass rate.
        ran = [result for result in checked.results if result.status != "skipped"]
        passed = sum(result.passed for result in ran)
        report.metrics.checks_passed, report.metrics.checks_total = passed, len(checked.results)
        report.metrics.checks_skipped = len(checked.results) - len(ran)
        if ran:
            report.metrics.validation_pass_rate = round(passed / len(ran), 4)
        report.metrics.time_to_verify_seconds = since(report.started_at)
        for failed in (r for r in ran if not r.passed):
            code = ErrorCode.CHECK_ERROR if failed.error else ErrorCode.CHECK_FAILED
            detail = failed.error or f"observed {failed.observed!r}, expected {failed.expected!r}"
            report.errors.append(ErrorEntry.from_error(
                DrillError(code, f"check {failed.name!r}: {detail}")))

    async def warm(self, sandbox: Sandbox) -> None:
        """Load the spec's relations into the sandbox's cache, once every check passed."""
        spec = self.spec
        if spec.warm is None or self.report.errors:
            return
        async with self.stage(Stage.WARM):
            self.report.warm = await workflow.execute_activity_method(
                WarmActivities.warm_cache,
                WarmRequest(sandbox=sandbox, database=spec.database, db_user=spec.db_user,
                            warm=spec.warm),
                **self.on_host(sandbox, options.WARM_CACHE))

    async def teardown(self, sandbox: Sandbox) -> None:
        """Runs on the sandbox's host. When that host is gone for good the sandbox is left
        there, and the report says so."""
        try:
            async with self.stage(Stage.TEARDOWN):
                await workflow.execute_activity_method(
                    SandboxActivities.teardown, sandbox,
                    **self.on_host(sandbox, options.TEARDOWN_SANDBOX))
        except ActivityError as exc:
            if not host_lost(exc):
                raise
            self.report.errors.append(ErrorEntry.from_error(DrillError(
                ErrorCode.SANDBOX_HOST_LOST,
                f"teardown of {sandbox.root} never started on {sandbox.task_queue}: the "
                "sandbox is left on that host")))

    async def leave_evidence(self, kind: str) -> None:
        """Append the finished report to the drill ledger. The recovery's outcome stands
        whether or not this works: a failure is logged, and the report is still returned."""
        try:
            await workflow.execute_activity_method(
                LedgerActivities.append_to_ledger, LedgerEntry(kind=kind, report=self.report),
                **options.APPEND_TO_LEDGER)
        except ActivityError as exc:
            reraise_cancellation(exc)
            workflow.logger.warning("not appended to the ledger", extra={"error": str(exc)})

    async def record_throughput(self) -> None:
        """Feed the next plans' estimates; a recovery never fails for want of this."""
        try:
            await workflow.execute_activity_method(
                PlanningActivities.record_throughput, self.report.metrics,
                **options.RECORD_THROUGHPUT)
        except ActivityError as exc:
            reraise_cancellation(exc)
            workflow.logger.warning("throughput not recorded", extra={"error": str(exc)})


def scheduled_time() -> datetime:
    """When a schedule meant this run to start (TemporalScheduledStartTime), else when it
    started: the same for every replay of the run."""
    info = workflow.info()
    return info.typed_search_attributes.get(SCHEDULED_START) or info.workflow_start_time


def since(began: datetime) -> float:
    return round((workflow.now() - began).total_seconds(), 3)


def raise_if_cancel_requested() -> None:
    """A cancel that arrived while an activity ran is swallowed when that activity completes
    anyway (a sync activity sees the cancel only at its next heartbeat): the request stays
    counted on the workflow's task, so honour it at the next stage boundary."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError("cancelled")


def is_cancellation(exc: BaseException) -> bool:
    return isinstance(exc, (asyncio.CancelledError, CancelledError)) or (
        isinstance(exc, ActivityError) and isinstance(exc.cause, CancelledError))


def reraise_cancellation(exc: BaseException) -> None:
    """A cancelled recovery ends cancelled: never reported as bad input, never escalated."""
    if is_cancellation(exc):
        raise exc


def host_lost(exc: ActivityError) -> bool:
    cause = exc.cause
    return isinstance(cause, TimeoutError) and cause.type == TimeoutType.SCHEDULE_TO_START


def error_entry(exc: BaseException, fallback: ErrorCode) -> ErrorEntry:
    if isinstance(exc, DrillError):
        return ErrorEntry.from_error(exc)
    if isinstance(exc, ActivityError) and host_lost(exc):
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
